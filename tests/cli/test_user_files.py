"""`epochlab fit` and `epochlab sweep` on a user's CSV / .npz file and `module:function` model."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from epochlab.cli import main
from epochlab.store import SQLiteStore

MODEL_PY = """
from torch import nn

def make_model():
    return nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 1))

def not_a_model():
    return 42

NOT_CALLABLE = 3
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A temporary working folder with data.csv, data.npz and a model module of its own name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"usermodels_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODEL_PY)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    lines = ["a,b,c,label"] + [f"{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{t}" for r, t in zip(x, y, strict=True)]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    np.savez(tmp_path / "data.npz", x_train=x[:60], y_train=y[:60], x_test=x[60:], y_test=y[60:])
    return tmp_path, name


def _run(*args):
    res = CliRunner().invoke(main, list(args))
    return res


def test_fit_a_csv_file_with_a_module_function_model(folder):
    tmp, mod = folder
    res = _run("fit", "--data", "data.csv", "--target", "label", "--model", f"{mod}:make_model",
               "--epochs", "2", "--batch-size", "16", "--verbose", "0", "--out", str(tmp / "o"))
    assert res.exit_code == 0, res.output
    assert "data.csv" in res.output and f"{mod}:make_model" in res.output
    assert "training rows: 64" in res.output  # 80 rows, validation 0.2
    assert (tmp / "o" / "history.json").exists()


def test_sweep_a_csv_file_with_a_module_function_model_fuses_and_resumes(folder):
    tmp, mod = folder
    args = ["sweep", "--data", "data.csv", "--target", "label", "--model", f"{mod}:make_model",
            "--epochs", "2", "--batch-size", "16", "--lr", "1e-2,1e-3", "--seed", "0,1",
            "--no-progress", "--store", str(tmp / "s.db"), "--study", "mine"]
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert "fused 4 runs" in res.output and "4 completed" in res.output
    again = _run(*args)
    assert again.exit_code == 0 and "4 already done" in again.output
    with SQLiteStore(tmp / "s.db") as store:
        runs = store.runs("mine")
    assert len(runs) == 4
    assert runs[0].settings["data"] == "data.csv"
    assert runs[0].settings["data_fingerprint"].startswith("train 80x3:float32/80:int64")
    assert runs[0].settings["model_fingerprint"].startswith("Sequential ")
    (tmp / "data.csv").write_text((tmp / "data.csv").read_text().replace("0.", "1.", 1))
    # Other data under the same study is refused, naming what differs (issue 9) ...
    refused = _run(*args)
    assert refused.exit_code == 2 and "created with data_fingerprint" in refused.output
    # ... and in a study of its own it trains new runs, never the stored ones.
    changed = _run(*args[:-1], "mine-changed")
    assert changed.exit_code == 0 and "0 already done" in changed.output


def test_npz_file_with_test_arrays_and_a_registry_model(folder):
    tmp, _ = folder
    res = _run("sweep", "--data", "data.npz", "--model", "mlp", "--epochs", "1",
               "--lr", "1e-2,1e-3", "--no-progress", "--store", str(tmp / "n.db"))
    assert res.exit_code == 0, res.output
    assert "2 completed" in res.output and "fused 2 runs" in res.output
    with SQLiteStore(tmp / "n.db") as store:
        run = store.runs()[0]
    assert run.summary["n_train"] == 48 and "accuracy" in run.summary["test"]


def test_a_model_file_path_and_lowercase_npz_arrays_are_taken_as_written(folder):
    # `--model path/to/file.py:function` (its folder becomes importable, workers too) and
    # np.savez(path, x=..., y=...): what users type before they read the help.
    tmp, mod = folder
    (tmp / "models").mkdir()
    (tmp / "models" / f"{mod}_copy.py").write_text(MODEL_PY)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    np.savez(tmp / "lower.npz", x=x, y=(x[:, 0] > 0).astype(int))
    res = _run("sweep", "--data", "lower.npz", "--model", f"models/{mod}_copy.py:make_model",
               "--epochs", "1", "--lr", "1e-2,1e-3", "--no-progress", "--store", str(tmp / "f.db"))
    assert res.exit_code == 0, res.output
    assert "2 completed" in res.output and "fused 2 runs" in res.output
    res = _run("fit", "--data", "lower.npz", "--model", f"{mod}.py:make_model", "--epochs", "1",
               "--no-store", "--verbose", "0")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "data.csv", "--model", "mlp"], "--target"),
        (["--data", "data.csv", "--target", "nope"], "must be a column"),
        (["--data", "bad.csv", "--target", "label"], "Column 'b' of 'bad.csv' is not numeric"),
        (["--data", "missing.npz"], "does not exist"),
        (["--data", "synthetic", "--target", "label"], "--target"),
        (["--model", "no_such_module_x:make"], "module 'no_such_module_x' not found"),
        (["--model", "no_such_file.py:make"], "file 'no_such_file.py' not found"),
        (["--model", "{mod}:missing"], "has no attribute 'missing'"),
        (["--model", "{mod}:NOT_CALLABLE"], "not callable"),
        (["--model", "{mod}:not_a_model"], "does not return a torch.nn.Module"),
    ],
)
@pytest.mark.parametrize("command", ["fit", "sweep"])
def test_bad_files_and_models_say_what_failed_without_a_traceback(folder, command, args, message):
    tmp, mod = folder
    (tmp / "bad.csv").write_text("a,b,label\n1,x,0\n2,3,1\n")
    args = [a.replace("{mod}", mod) for a in args]
    extra = ["--no-progress"] if command == "sweep" else ["--no-store", "--verbose", "0"]
    res = _run(command, *args, "--epochs", "1", *extra)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_sweep_of_regression_targets_ranks_by_val_loss_and_shows_the_test_loss(folder):
    # Without --metric: regression logs no accuracy, so the default is val_loss (it was
    # val_accuracy, which refused the sweep); the test column shows the test loss.
    tmp, _ = folder
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5])).astype(np.float32)
    np.savez(tmp / "reg.npz", X=x[:70], y=y[:70], X_test=x[70:], y_test=y[70:])
    res = _run("sweep", "--data", "reg.npz", "--lr", "0.01,0.001", "--epochs", "2",
               "--store", str(tmp / "r.db"), "--no-progress")
    assert res.exit_code == 0, res.output
    assert "val_loss: final" in res.output and "test loss" in res.output
    store = SQLiteStore(tmp / "r.db")
    try:
        runs = store.runs()
        assert [r.status for r in runs] == ["completed", "completed"]
        assert all(np.isfinite(r.summary["test"]["loss"]) for r in runs)
        assert store.study(runs[0].study)["spec"]["metric"] == "val_loss"
    finally:
        store.close()


def test_an_npz_test_split_is_read_beside_X_and_y_and_half_a_pair_is_refused(folder):
    from epochlab.data.files import load_npz

    tmp, _ = folder
    x, y = np.zeros((6, 2)), np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp / "a.npz", X=x, y=y, X_test=x[:2], y_test=y[:2])
    assert load_npz(tmp / "a.npz").x_test.shape == (2, 2)
    np.savez(tmp / "b.npz", x=x, y=y, x_test=x[:2])
    with pytest.raises(ValueError, match="holds x_test but not y_test"):
        load_npz(tmp / "b.npz")
    res = _run("sweep", "--data", "b.npz", "--epochs", "1", "--store", str(tmp / "b.db"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "holds x_test but not y_test" in res.output
    assert not (tmp / "b.db").exists()


@pytest.mark.parametrize("fuse", ["--fuse", "--no-fuse"])
@pytest.mark.parametrize("bad", ["a test class the training rows lack", "a NaN test label",
                                 "an inf training feature"])
def test_data_the_model_cannot_take_is_refused_before_any_training(folder, fuse, bad):
    """Bad values fail the command, before the store exists: not every run one by one, nor
    (the test split is evaluated after training) only after all of the training."""
    tmp, _ = folder
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
    y_test = rng.integers(0, 3, 20).astype(float)
    if bad == "a NaN test label":
        y_test[4] = np.nan
    elif bad == "a test class the training rows lack":
        y_test[4] = 3  # the model is sized for the training rows' 3 classes
    else:
        x[7, 2] = np.inf
    np.savez(tmp / "bad.npz", x_train=x, y_train=y, x_test=rng.normal(size=(20, 3)), y_test=y_test)
    res = CliRunner().invoke(main, ["sweep", "--data", "bad.npz", "--epochs", "2",
                                    "--lr", "1e-2,1e-3", "--store", "s.db", "--no-progress", fuse])
    assert res.exit_code != 0 and "Traceback" not in res.output
    split = "training rows" if bad == "an inf training feature" else "test split"
    assert f"The {split} of the data 'bad.npz' cannot be used with the model" in res.output
    assert {"a NaN test label": "non-finite", "an inf training feature": "rows [7] and columns [2]",
            }.get(bad, "labels must lie in 0..2") in res.output
    assert not (tmp / "s.db").exists()  # nothing created, nothing trained


def test_a_csv_target_of_class_names_trains_as_classes(folder):
    # Iris-style files name their classes; they are encoded 0..K-1 in sorted order.
    tmp, _ = folder
    rows = ["a,b,species"] + [f"{i % 7},{i % 3},{('setosa', 'versicolor', 'virginica')[i % 3]}"
                              for i in range(30)]
    (tmp / "iris.csv").write_text("\n".join(rows) + "\n")
    from epochlab.data.files import load_csv

    d = load_csv(tmp / "iris.csv", "species")
    assert d.task == "multiclass" and d.classes == ("setosa", "versicolor", "virginica")
    assert d.y_train[:4].tolist() == [0, 1, 2, 0]
    for command, extra in (("fit", ["--no-store", "--verbose", "0"]),
                           ("sweep", ["--no-progress", "--store", str(tmp / "i.db")])):
        res = _run(command, "--data", "iris.csv", "--target", "species", "--epochs", "1", *extra)
        assert res.exit_code == 0, res.output
    (tmp / "gap.csv").write_text("a,species\n1,setosa\n2,\n")
    res = _run("fit", "--data", "gap.csv", "--target", "species", "--epochs", "1", "--no-store")
    assert res.exit_code == 2 and "no value on 1 row(s) (line 3: empty)" in res.output


def test_arrays_with_text_labels_encode_train_and_test_alike():
    from epochlab.data.files import from_arrays
    from epochlab.validation import ParameterError

    x = np.zeros((4, 2), np.float32)
    d = from_arrays(x, np.array(["b", "a", "b", "a"]), x_test=x[:2], y_test=np.array(["a", "b"]))
    assert d.classes == ("a", "b") and d.task == "binary"
    assert d.y_train.tolist() == [1, 0, 1, 0] and d.y_test.tolist() == [0, 1]
    with pytest.raises(ParameterError, match=r"test labels \['c'\] are not among"):
        from_arrays(x, np.array(["b", "a", "b", "a"]), x_test=x[:1], y_test=np.array(["c"]))


def test_integer_features_for_a_float_model_say_how_to_convert_them(folder):
    tmp, _ = folder
    x = np.random.default_rng(0).integers(0, 5, (40, 3))
    np.savez(tmp / "ints.npz", x=x, y=(x[:, 0] > 2).astype(int))
    for command, extra in (("fit", ["--no-store"]), ("sweep", ["--no-progress"])):
        res = _run(command, "--data", "ints.npz", "--epochs", "1", *extra)
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert "X holds integers (int64)" in " ".join(res.output.split())


_ROWS = [f"{i % 7}.5,{i % 3},{i % 2}" for i in range(40)]


@pytest.mark.parametrize("text, encoding, match", [
    ("a,a,label\n" + "\n".join(_ROWS), "utf-8", "names 'a' twice"),
    (",a,b,label\n" + "\n".join(f"{i},{r}" for i, r in enumerate(_ROWS)), "utf-8",
     r"Column 1 .* has no name \(pandas writes its index so"),
    ("a,b,label\n" + "\n".join(_ROWS[:5] + ["1,2,0,9"] + _ROWS[5:]), "utf-8",
     "Line 7 .* has 4 fields but the header has 3"),
    ("a,b,label\n" + "\n".join(_ROWS[:5] + ["1,0"] + _ROWS[5:]), "utf-8",
     "Line 7 .* has 2 fields but the header has 3"),
    ("größe,b,label\n" + "\n".join(_ROWS), "latin-1", "is not UTF-8 text .* save it as UTF-8"),
    ("a,b,label\n" + "\n".join(_ROWS[:8] + ["1,2,NA"] + _ROWS[8:]), "utf-8",
     r"target column 'label' .* no value on 1 row\(s\) \(line 10: 'NA'\)"),
    ("a,b,label\n" + "\n".join(f"{i},{i % 3},{200000 + 37 * i}" for i in range(40)), "utf-8",
     "whole numbers up to 201,443: as class ids the model would need 201,444 outputs.*loss='mse'"),
    ("a,b,label\n" + "\n".join(f"{i},{i % 3},{i % 2 - 1}" for i in range(40)), "utf-8",
     r"negative whole numbers \(down to -1\)"),
])
def test_csv_files_that_would_be_misread_are_refused_naming_the_line(folder, text, encoding, match):
    tmp, _ = folder
    (tmp / "bad.csv").write_bytes(text.encode(encoding) + b"\n")
    res = _run("fit", "--data", "bad.csv", "--target", "label", "--epochs", "1", "--no-store")
    assert res.exit_code == 2, res.output
    assert re.search(match, " ".join(res.output.split())), res.output


def test_a_csv_with_a_byte_order_mark_reads_its_first_column(folder):
    tmp, _ = folder
    (tmp / "bom.csv").write_bytes(("a,b,label\n" + "\n".join(_ROWS) + "\n").encode("utf-8-sig"))
    from epochlab.data.files import load_csv

    assert load_csv(tmp / "bom.csv", "a").x_train.shape == (40, 2)


@pytest.mark.parametrize("x_test, y_test, match", [
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 4, np.nan, x), lambda y: y,
     "non-finite values"),
    (lambda x: x[:, :2], lambda y: y, r"input shape \(2, 2\)"),
    (lambda x: x, lambda y: np.where(y == 1, 2, 0), r"values \[0, 2\]"),
])
def test_fit_refuses_a_test_split_it_could_not_evaluate_before_training(folder, x_test, y_test,
                                                                         match):
    tmp, _ = folder
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    np.savez(tmp / "t.npz", x_train=x[:40], y_train=y[:40], x_test=x_test(x[40:]),
             y_test=y_test(y[40:]))
    res = _run("fit", "--data", "t.npz", "--epochs", "1", "--store", str(tmp / "s.db"))
    assert res.exit_code == 2 and "The test split of 't.npz' cannot be evaluated" in res.output
    assert re.search(match, res.output), res.output
    assert not (tmp / "s.db").exists() and not (tmp / "runs").exists()


@pytest.mark.parametrize("make, model, match", [
    (lambda p: p.write_text("hello\n"), "mlp", "is not an .npz archive"),
    (lambda p: p.mkdir(), "mlp", "is a folder; give the file in it"),
    (lambda p: np.savez(p, X=np.array([[1, "a"], [2, "b"]], dtype=object), y=np.array([0, 1])),
     "mlp", "holds an object array"),
    (lambda p: np.savez(p, X=np.arange(40.0), y=np.arange(40) % 2), "mlp",
     r"is 1-D, shape \(40,\).*X.reshape\(-1, 1\)"),
    (lambda p: np.savez(p, X=np.random.default_rng(0).random((40, 8, 8)), y=np.arange(40) % 3),
     "cnn_small", r"without their channel axis: add it, X\[:, None\]"),
])
def test_npz_files_that_are_not_what_fit_reads_say_what_they_are(folder, make, model, match):
    tmp, _ = folder
    make(tmp / "bad.npz")
    res = _run("fit", "--data", "bad.npz", "--model", model, "--epochs", "1", "--no-store")
    assert res.exit_code == 2, res.output
    assert re.search(match, " ".join(res.output.split())), res.output


def test_class_ids_that_never_occur_are_warned_about(folder):
    tmp, _ = folder
    rows = [f"{i % 7}.5,{i % 3},{i % 2 + 1}" for i in range(40)]
    (tmp / "from1.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    res = _run("fit", "--data", "from1.csv", "--target", "label", "--epochs", "1", "--no-store",
               "--verbose", "0")
    assert res.exit_code == 0, res.output
    assert "class ids 0 never occur (labels 1..2)" in " ".join(res.output.split())


def test_target_with_an_npz_file_is_warned_about_as_having_no_effect(folder):
    res = _run("fit", "--data", "data.npz", "--target", "label", "--epochs", "1", "--no-store",
               "--verbose", "0")
    assert res.exit_code == 0, res.output
    assert "--target has no effect with data.npz" in res.output


def test_tune_takes_a_data_file_and_a_users_model_and_keeps_their_study(folder):
    tmp, mod = folder
    x = np.random.default_rng(1).normal(size=(80, 3))
    np.savez(tmp / "other.npz", X=x, y=(x[:, 1] > 0).astype(int))
    common = ["tune", "--trials", "2", "--space", "lr=loguniform(1e-3,1e-1)", "--epochs", "1",
              "--model", f"{mod}:make_model", "--store", "s.db", "--study", "mine"]
    res = _run(*common, "--data", "data.npz", "--out", "o")
    assert res.exit_code == 0, res.output
    assert len(SQLiteStore("s.db", create=False).runs("mine")) == 2
    res = _run(*common, "--data", "other.npz", "--out", "o")
    assert res.exit_code == 2 and "was created with data" in res.output


def test_csv_class_names_that_look_missing_train_with_a_warning_and_exporter_quirks_read():
    import tempfile
    import warnings

    from epochlab.data.files import load_csv

    folder = tempfile.mkdtemp()
    p = f"{folder}/regions.csv"
    with open(p, "w", newline="") as f:
        f.write("a,b,region\n1,2,NA\n3,4,EU\n5,6,APAC\n")
    with pytest.warns(UserWarning, match="the class\\(es\\) 'NA', which often mark a missing label"):
        d = load_csv(p, "region")
    assert d.classes == ("APAC", "EU", "NA")
    with open(p, "w", newline="") as f:
        f.write("a,b,label,\r\n1,2,0,\r\n3,4,1,\r\n   \r\n\r\n")  # trailing commas, blank lines
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_csv(p, "label")
    assert d.x_train.tolist() == [[1.0, 2.0], [3.0, 4.0]] and d.y_train.tolist() == [0, 1]
