"""Every command, given what a new user might type wrong: one clear line, the right exit code.

Each row of ``CASES`` is ``(arguments, exit code, regex)``: the command must
exit with that code (2: a bad parameter or usage; 1: a failure), print one
``Error:`` line that matches the regex, and never a traceback. Placeholders
in the arguments are paths the fixtures make:

- ``{tmp}``: an empty folder; ``{file}``: a plain text file;
- ``{store}``: a store with a study ``s`` (data synthetic, model mlp, two runs);
- ``{notstore}``: an SQLite file of another program; ``{newer}``: a store of a
  newer format; ``{run}``: a folder that holds a finished run.

To cover a new command or option, add a row.
"""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

import epochlab as el
from epochlab.cli import main
from epochlab.store import SQLiteStore, record_history
from epochlab.store.sqlite import APPLICATION_ID

FIT = ["fit", "--verbose", "0", "--epochs", "1"]
SWEEP = ["sweep", "--no-progress", "--epochs", "1"]

CASES: list[tuple[list[str], int, str]] = [
    # -- fit: numbers out of range --------------------------------------------------------
    ([*FIT, "--batch-size", "0"], 2, r"`batch_size` is 0, but must be `batch_size >= 1`"),
    ([*FIT, "--batch-size", "-5"], 2, r"`batch_size` is -5"),
    (["fit", "--epochs", "0"], 2, r"`epochs` is 0, but must be `epochs >= 1`"),
    (["fit", "--epochs", "abc"], 2, r"'abc' is not a valid integer"),
    ([*FIT, "--lr", "0"], 2, r"`lr` is 0.0, but must be `lr > 0`"),
    ([*FIT, "--lr", "-0.1"], 2, r"`lr` is -0.1, but must be `lr > 0`"),
    ([*FIT, "--lr", "inf"], 2, r"`lr` is inf, but must be `lr > 0` \(a finite number\)"),
    ([*FIT, "--lr", "nan"], 2, r"`lr` is nan"),
    ([*FIT, "--validation-split", "1"], 2, r"`validation_split` is 1.0, but must be `0 <= validation_split < 1`"),
    ([*FIT, "--validation-split", "-0.1"], 2, r"`validation_split` is -0.1"),
    ([*FIT, "--validation-split", "nan"], 2, r"`validation_split` is nan"),
    ([*FIT, "--seed", "-1"], 2, r"`seed` is -1, but must be `0 <= seed <= 4294967295`"),
    ([*FIT, "--seed", "99999999999999999999"], 2, r"`0 <= seed <= 4294967295`"),
    ([*SWEEP, "--seed", "0,4294967296", "--store", "{tmp}/s.db"], 2,
     r"`seed` is 4294967296, but must be an integer `0 <= seed <= 4294967295`"),
    ([*FIT, "--verbose", "5"], 2, r"5 is not in the range 0<=x<=2"),
    ([*FIT, "--drop-last", "--batch-size", "100000"], 2, r"leaves no full batch"),
    # -- fit: names ---------------------------------------------------------------------------
    ([*FIT, "--data", "nosuchdata"], 2, r"Unknown dataset 'nosuchdata': the datasets are synthetic, digits"),
    ([*FIT, "--data", "digit"], 2, r"did you mean 'digits'"),
    ([*FIT, "--model", "cnnn"], 2, r"Unknown model 'cnnn'.*did you mean 'cnn'"),
    ([*FIT, "--model", "nosuchmodel"], 2, r"nosuchmodel"),
    ([*FIT, "--optimizer", "adamm"], 2, r"'adamm' is not one of 'adam', 'adamw', 'sgd', 'rmsprop'"),
    ([*FIT, "--bogus"], 2, r"No such option '--bogus'"),
    ([*FIT, "extra"], 2, r"unexpected extra argument \(extra\)"),
    # -- fit: schedules and the one learning rate -----------------------------------------------
    ([*FIT, "--schedule", "expo"], 2, r"Unknown schedule 'expo'"),
    ([*FIT, "--schedule", "exponential:initial=0"], 2, r"`initial` is 0.0, but must be `initial > 0`"),
    ([*FIT, "--schedule", "exponential:initial=inf"], 2, r"`initial` is inf, but must be a finite number"),
    ([*FIT, "--schedule", "one_cycle:max_lr=-1"], 2, r"`max_lr` is -1.0, but must be `max_lr > 0`"),
    ([*FIT, "--schedule", "cosine:warmup_steps=-1"], 2, r"`warmup_steps` is -1"),
    ([*FIT, "--schedule", "step:factor"], 2, r"expected key=value"),
    ([*FIT, "--lr", "0.5", "--schedule", "exponential:initial=0.01"], 2,
     r"Both --lr \(0.5\) and the schedule's own initial learning rate initial=0.01"),
    ([*FIT, "--lr", "0.5", "--schedule", "one_cycle:max_lr=0.1"], 2,
     r"Both --lr \(0.5\) and .* max_lr=0.1"),
    # -- fit: early stopping ----------------------------------------------------------------
    ([*FIT, "--early-stopping", "val_loss:patience=-1"], 2, r"`patience` is -1"),
    ([*FIT, "--early-stopping", "val_score"], 2, r"cannot tell whether 'val_score' should go down or up"),
    ([*FIT, "--early-stopping", "val_los:patience=2"], 2,
     r"if you meant 'val_loss', correct the name. Otherwise set `mode='min'` or `mode='max'` "
     r"\(on the command line: `--mode min` with --metric, `val_los:mode=min` in --early-stopping\)"),
    ([*FIT, "--early-stopping", "val_loss:mode=lowest"], 2, r"`mode` is 'lowest'"),
    ([*FIT, "--validation-split", "0", "--early-stopping", "val_loss"], 2,
     r"validation metrics need --validation-split > 0"),
    # -- fit: paths -------------------------------------------------------------------------
    ([*FIT, "--store", "{tmp}"], 2, r"`store` is '.*', a folder; it must be a store file"),
    ([*FIT, "--store", "{tmp}/missing/x.db"], 2, r"its folder '.*missing' does not exist"),
    ([*FIT, "--store", "{notstore}"], 2, r"is not an epochlab store"),
    ([*FIT, "--store", "{newer}"], 2, r"newer than this epochlab reads .* upgrade epochlab"),
    ([*FIT, "--store", "{file}"], 2, r"is not an epochlab store"),
    ([*FIT, "--out", "{file}"], 2, r"`out` is '.*', a file; it must be a folder"),
    ([*FIT, "--out", "{file}/sub"], 2, r"is a file, not a folder"),
    ([*FIT, "--out", "{run}"], 2, r"already holds a run \(history.json\); .* --overwrite"),
    ([*FIT, "--study", ""], 2, r"`study` is '', but must be a non-empty name"),
    ([*FIT, "--study", " padded"], 2, r"`study` is ' padded'"),
    ([*FIT, "--store", "{store}", "--study", "s", "--data", "digits"], 2,
     r"study 's' was created with data 'synthetic' \(this run: 'digits'\)"),
    ([*FIT, "--store", "{store}", "--study", "s", "--model", "cnn_small", "--data", "digits"], 2,
     r"study 's' was created with data 'synthetic' \(this run: 'digits'\), model 'mlp' \(this run: 'cnn_small'\)"),
    # -- runs ---------------------------------------------------------------------------------
    (["runs", "--store", "{tmp}/missing.db"], 2, r"No runs stored yet at .*missing.db"),
    (["runs", "--store", "{tmp}"], 2, r"a folder; it must be a store file"),
    (["runs", "--store", "{notstore}"], 2, r"is not an epochlab store"),
    (["runs", "--store", "{newer}"], 2, r"upgrade epochlab"),
    (["runs", "--store", "{store}", "--study", "nope"], 2, r"There is no study 'nope' .*studies: s"),
    (["runs", "--store", "{store}", "--status", "weird"], 2, r"'weird' is not one of"),
    (["runs", "show", "999", "--store", "{store}"], 2, r"There is no run with id 999"),
    (["runs", "show", "abc"], 2, r"'abc' is not a valid integer"),
    (["runs", "studies", "--store", "{tmp}/missing.db"], 2, r"No runs stored yet"),
    # -- report -------------------------------------------------------------------------------
    (["report", "--study", "none", "--store", "{tmp}/x.db"], 2, r"No runs stored yet at .*x.db"),
    (["report", "--study", "none", "--store", "{store}"], 2, r"There is no study 'none' .*: s"),
    (["report", "--study", "", "--store", "{store}"], 2, r"`study` is ''"),
    (["report", "--study", "s", "--store", "{store}", "--metric", "val_f2"], 2,
     r"no run of this study logged it; the runs have: loss, accuracy, val_loss"),
    (["report", "--study", "s", "--store", "{store}", "--mode", "up"], 2, r"'up' is not one of 'max', 'min'"),
    (["report", "--study", "s", "--store", "{store}", "--x", "colour"], 2, r"`x` is 'colour'"),
    (["report", "--study", "s", "--store", "{store}", "--out", "{file}"], 2, r"a file; it must be a folder"),
    # -- sweep --------------------------------------------------------------------------------
    ([*SWEEP, "--lr", "0.1,abc"], 2, r"'abc' is not a number"),
    ([*SWEEP, "--workers", "-1"], 2, r"-1 is not in the range x>=0"),
    ([*SWEEP, "--lr", "0"], 2, r"`lr` is 0.0, but must be a finite number `lr > 0`"),
    ([*SWEEP, "--lr", "inf"], 2, r"`lr` is inf"),
    ([*SWEEP, "--lr", "1e-3,1e-3"], 2, r"given twice in `lr`"),
    ([*SWEEP, "--epochs", "0"], 2, r"`epochs` is 0"),
    ([*SWEEP, "--batch-size", "0,32"], 2, r"`batch_size` is 0"),
    ([*SWEEP, "--seed", "-1"], 2, r"`seed` is -1"),
    ([*SWEEP, "--weight-decay", "-1"], 2, r"`weight_decay` is -1.0"),
    ([*SWEEP, "--optimizer", "adamm"], 2, r"`optimizer` is 'adamm'"),
    ([*SWEEP, "--batch-norm", "maybe"], 2, r"`batch_norm` is 'maybe'"),
    ([*SWEEP, "--schedule", "one_cycle:max_lr=0"], 2, r"`max_lr` is 0.0"),
    ([*SWEEP, "--lr", "1e-3,1e-2", "--schedule", "exponential:initial=0.01"], 2,
     r"Both `lr` \(0.001, 0.01\) and the schedule"),
    ([*SWEEP, "--metric", "val_score"], 2, r"cannot tell whether 'val_score' should go down or up"),
    ([*SWEEP, "--metric", "val_f1"], 2, r"the runs of this sweep log only: loss, accuracy"),
    ([*SWEEP, "--validation-split", "0", "--metric", "val_loss"], 2,
     r"validation metrics need validation_split > 0"),
    ([*SWEEP, "--validation-split", "1"], 2, r"`validation_split` is 1.0"),
    ([*SWEEP, "--model", "nosuchmodel"], 2, r"nosuchmodel"),
    ([*SWEEP, "--data", "nosuchdata"], 2, r"nosuchdata"),
    ([*SWEEP, "--spec", "{tmp}/missing.toml"], 2, r"missing.toml' does not exist"),
    ([*SWEEP, "--spec", "{file}"], 2, r"is not valid TOML"),
    ([*SWEEP, "--store", "{tmp}"], 2, r"a folder; it must be a store file"),
    ([*SWEEP, "--store", "{notstore}"], 2, r"is not an epochlab store"),
    ([*SWEEP, "--study", "", "--store", "{tmp}/a.db"], 2, r"`name` is ''"),
    ([*SWEEP, "--study", "s", "--store", "{store}", "--data", "digits", "--model", "cnn_small"], 2,
     r"study 's' was created with data 'synthetic' \(this run: 'digits'\), model 'mlp'"),
    ([*SWEEP, "--early-stopping", "val_loss:patience=x"], 2, r"`patience` is 'x'"),
    (["lr-find", "--model", "nosuch"], 2, r"Unknown model 'nosuch': the models are mlp"),
    (["batch-size", "--data", "nosuch"], 2, r"Unknown dataset 'nosuch': the datasets are synthetic"),
    (["tune", "--trials", "0"], 2, r"`trials` is 0, but must be `trials >= 1`"),
    (["tune", "--model", "nosuch"], 2, r"Unknown model 'nosuch': the models are mlp"),
    ([*FIT, "--data", "missing.csv"], 2, r"The data file 'missing.csv' does not exist"),
    ([*SWEEP, "--executor", "ray", "--ray-address", "127.0.0.1:1"], 2, r"nothing answers at 127.0.0.1:1"),
    # -- the group ----------------------------------------------------------------------------
    (["nosuchcommand"], 2, r"No such command 'nosuchcommand'"),
    # -- damaged stores and spec files, found and named (not "a bug in epochlab") ---------------
    (["runs", "--store", "{torn}"], 2, r"The store .*torn.db is damaged .*sqlite3 .*torn.db .recover"),
    (["report", "--store", "{garbled}", "--out", "{tmp}/r"], 1,
     r"The store .*garbled.db is damaged .* \.recover"),
    ([*SWEEP, "--spec", "{binspec}", "--store", "{tmp}/s.db"], 2, r"is not UTF-8 text"),
    ([*SWEEP, "--spec", "{fpspec}", "--store", "{tmp}/s.db"], 2,
     r"sets 'data_fingerprint', which epochlab computes"),
    ([*SWEEP, "--spec", "{tablespec}", "--store", "{tmp}/s.db"], 2,
     r"In the sweep spec file .*`lr` is a table \(\[lr\] section\)"),
    (["lr-find", "--optimizer", "sgd", "--momentum", "-1"], 2, r"`momentum` is -1.0"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "empty").mkdir()
    (root / "file.txt").write_text("not a store\n")
    other = sqlite3.connect(root / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    newer = root / "newer.db"
    SQLiteStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    store = SQLiteStore(root / "runs.db")
    d = el.data.synthetic(n_samples=200)
    for lr in (1e-3, 1e-2):
        h = el.fit(el.models.mlp(20), d.train, epochs=2, batch_size=32, lr=lr,
                   validation_split=0.2, verbose=0)
        settings = {"data": "synthetic", "model": "mlp", "epochs": 2, "batch_size": 32, "lr": lr}
        record_history(store, "s", None, settings, h,
                       study_spec={"data": "synthetic", "model": "mlp", "metric": "val_accuracy",
                                   "mode": "max"})
    store.close()
    torn, garbled = root / "torn.db", root / "garbled.db"
    conn = sqlite3.connect(root / "runs.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray((root / "runs.db").read_bytes())
    garbled.write_bytes(bytes(data[:8192]) + b"\xab" * 3000 + bytes(data[11192:]))
    torn.write_bytes(bytes(data[: len(data) // 2][:100]) + b"\xab" * (len(data) // 2 - 100))
    (root / "bin.toml").write_bytes(b"\xff\xfe\x00bad")
    (root / "fp.toml").write_text('data = "synthetic"\ndata_fingerprint = "x"\n')
    (root / "table.toml").write_text('data = "synthetic"\n[lr]\na = 1\n')
    run = root / "run"
    run.mkdir()
    (run / "history.json").write_text("{}")
    return {"tmp": str(root / "empty"), "file": str(root / "file.txt"),
            "notstore": str(root / "other.db"), "newer": str(newer),
            "store": str(root / "runs.db"), "run": str(run), "torn": str(torn),
            "garbled": str(garbled), "binspec": str(root / "bin.toml"),
            "fpspec": str(root / "fp.toml"), "tablespec": str(root / "table.toml")}


def run_cli(args: list[str], paths: dict[str, str]):
    args = [a.format(**paths) for a in args]
    return CliRunner().invoke(main, args)


def _id(case: tuple[list[str], int, str]) -> str:
    return " ".join(case[0])[:60]


@pytest.mark.parametrize(("args", "code", "pattern"), CASES, ids=[_id(c) for c in CASES])
def test_bad_input_is_one_line_with_the_right_exit_code(args, code, pattern, paths, tmp_path,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would land here
    result = run_cli(args, paths)
    out = result.output
    assert "Traceback" not in out, out
    assert result.exit_code == code, out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    assert re.search(pattern, errors[0]), errors[0]
    # Refused before any work: nothing left behind (no runs/ folder, no epochlab.db).
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_table_covers_at_least_fifty_cases():
    assert len(CASES) >= 50


def test_the_store_given_is_not_created_when_a_command_is_refused(paths, tmp_path):
    target = tmp_path / "new.db"
    result = run_cli([*FIT, "--lr", "0", "--store", str(target)], paths)
    assert result.exit_code == 2 and not target.exists()


@pytest.mark.parametrize("command", [["fit", "--epochs", "1"], ["sweep", "--epochs", "1"],
                                     ["lr-find"], ["batch-size", "--epochs", "1"]],
                         ids=lambda c: c[0])
def test_a_users_model_that_cannot_take_the_data_is_one_line_and_leaves_nothing(
        command, tmp_path, monkeypatch):
    # Flat 8x8 rows and a CNN that wants (N, 1, 8, 8): a usage error naming both, with
    # the model's own hint, before a store, a runs/ folder or a figure exists.
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).random((60, 64), dtype=np.float32),
             y=np.arange(60) % 3)
    (tmp_path / "cnnmod.py").write_text(
        "import epochlab as el\n\ndef make():\n"
        "    return el.models.cnn('small', n_classes=3, input_size=8)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(main, [*command, "--data", "d.npz", "--model", "cnnmod:make"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(r"Error: The model 'cnnmod:make' cannot run on the data 'd.npz'.*reshape",
                     result.output.replace("\n", " "))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == [
        "cnnmod.py", "d.npz"]
