"""``epochlab fit`` never loses a run: folders are not reused, what trained is stored first.

Also the error policy of the command line: a failure inside training is not a
usage error, Ctrl-C exits 130 with the run recorded as interrupted, and
EPOCHLAB_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import epochlab as el
from epochlab.cli import main
from epochlab.store import SQLiteStore
from epochlab.train.trainer import Trainer

FIT = ["fit", "--verbose", "0", "--epochs", "2"]


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, [*FIT, *args], env=env)


def test_a_second_fit_into_the_same_out_is_refused_and_the_first_run_kept(tmp_path):
    out, db = tmp_path / "run", tmp_path / "runs.db"
    assert invoke("--out", str(out), "--store", str(db)).exit_code == 0
    first = (out / "model.pt").read_bytes()
    result = invoke("--out", str(out), "--store", str(db), "--seed", "1")
    assert result.exit_code == 2
    assert "already holds a run" in result.output and "--overwrite" in result.output
    assert (out / "model.pt").read_bytes() == first
    assert len(SQLiteStore(db).runs()) == 1


def test_overwrite_replaces_the_files_and_stores_a_second_run(tmp_path):
    out, db = tmp_path / "run", tmp_path / "runs.db"
    assert invoke("--out", str(out), "--store", str(db)).exit_code == 0
    result = invoke("--out", str(out), "--store", str(db), "--overwrite", "--seed", "1")
    assert result.exit_code == 0, result.output
    runs = SQLiteStore(db).runs()
    assert len(runs) == 2 and {r.settings["seed"] for r in runs} == {0, 1}


def test_two_fits_in_the_same_second_with_the_default_out_keep_both_models(tmp_path, monkeypatch):
    import epochlab.cli.common as common

    monkeypatch.chdir(tmp_path)
    # The same time stamp for both: only the unique suffix can keep them apart.
    monkeypatch.setattr(common.time, "strftime", lambda fmt, *a: "20260101-000000")
    for seed in ("0", "1"):
        assert invoke("--seed", seed).exit_code == 0
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2
    assert all(f.name.startswith("fit-20260101-000000-") for f in folders)
    models = [torch.load(f / "model.pt", weights_only=True) for f in folders]
    assert any(not torch.equal(a, b) for a, b in zip(models[0].values(), models[1].values(), strict=True))


def test_a_run_diverged_in_epoch_1_is_stored_as_diverged_with_its_files(tmp_path):
    out, db = tmp_path / "run", tmp_path / "runs.db"
    result = invoke("--optimizer", "sgd", "--lr", "1e12", "--out", str(out), "--store", str(db))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    [run] = SQLiteStore(db).runs()
    assert run.status == "diverged" and SQLiteStore(db).epochs(run.id) == []
    assert (out / "history.json").is_file() and (out / "model.pt").is_file()
    assert not (out / "loss.png").exists()
    assert "no epoch finished" in result.output
    assert el.History.load(out / "history.json").stop_reason == "diverged"


def test_a_figure_that_fails_is_a_warning_and_the_run_is_kept(tmp_path, monkeypatch):
    import epochlab.report.curves as curves  # fit's figures import it when they are drawn

    def broken(*a, **k):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(curves, "plot_curves", broken)
    out, db = tmp_path / "run", tmp_path / "runs.db"
    result = invoke("--out", str(out), "--store", str(db))
    assert result.exit_code == 0, result.output
    assert "Warning: loss.png was not drawn (RuntimeError: no fonts)" in result.output
    assert (out / "model.pt").is_file() and (out / "lr.png").is_file()
    assert SQLiteStore(db).runs()[0].status == "completed"


def test_a_bug_deep_in_training_is_a_failure_not_a_usage_error(tmp_path, monkeypatch):
    def step(self, batch):
        raise ValueError("bad index in my layer")

    monkeypatch.setattr(Trainer, "step", step)
    result = invoke("--out", str(tmp_path / "run"), "--store", str(tmp_path / "runs.db"))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert "ValueError: bad index in my layer" in line and "EPOCHLAB_DEBUG=1" in line


def test_a_parameter_error_raised_inside_training_is_reported_as_a_failure(small_xy):
    class Bad(el.Callback):
        def on_epoch_end(self, trainer, logs):
            el.validation.check_int("patience", -1, 0)  # a bug in a callback

    with pytest.raises(el.train.loop.TrainingError, match=r"Training failed after 8 updates \(1 epochs done\)"):
        el.fit(el.models.mlp(5), small_xy, epochs=2, batch_size=16, callbacks=[Bad()], verbose=0)


def test_epochlab_debug_shows_the_original_exception(tmp_path, monkeypatch):
    def step(self, batch):
        raise ValueError("bad index in my layer")

    monkeypatch.setattr(Trainer, "step", step)
    result = invoke("--out", str(tmp_path / "run"), "--no-store", env={"EPOCHLAB_DEBUG": "1"})
    assert isinstance(result.exception, ValueError)


def test_ctrl_c_exits_130_and_the_run_is_stored_as_interrupted(tmp_path, monkeypatch):
    real = Trainer.step

    def step(self, batch):
        if self.state.global_step == 25:  # in epoch 2
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(Trainer, "step", step)
    out, db = tmp_path / "run", tmp_path / "runs.db"
    result = invoke("--out", str(out), "--store", str(db))
    assert result.exit_code == 130, result.output
    assert "Interrupted" in result.output and "Traceback" not in result.output
    [run] = SQLiteStore(db).runs()
    assert run.status == "interrupted" and run.summary["total_updates"] == 25
    assert (out / "model.pt").is_file()


def test_options_with_no_effect_are_warned_about(tmp_path):
    result = invoke("--model", "cnn_small", "--data", "digits", "--batch-norm", "--no-store",
                    "--study", "x", "--epochs", "1", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "--batch-norm/--no-batch-norm has no effect with --model cnn_small" in result.output
    assert "--study has no effect with --no-store" in result.output


def test_suspicious_data_is_warned_about(tmp_path):
    result = invoke("--batch-size", "1000", "--out", str(tmp_path / "o"), "--no-store")
    assert result.exit_code == 0, result.output
    assert "batch size 1000 >= 640 training rows" in result.output


def test_the_learning_rate_has_one_source(slide1):
    s = el.schedules.exponential_decay(0.01, decay_steps=10, decay_rate=0.5)
    with pytest.raises(el.ParameterError, match=r"Both `lr` \(0.5\) and .*`initial` \(0.01\)"):
        el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=32, lr=0.5, schedule=s,
               verbose=0)
    h = el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=32, schedule=s, verbose=0)
    assert h.params["lr"] == 0.01 and h.iterations["lr"][0] == 0.01
    for bad in (0, -1e-3, float("inf"), float("nan")):
        with pytest.raises(el.ParameterError, match="`lr`"):
            el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=32, lr=bad, verbose=0)


def test_fit_with_the_schedules_own_rate_records_that_rate(tmp_path):
    out = tmp_path / "run"
    result = invoke("--schedule", "exponential:initial=0.01,decay_steps=10,decay_rate=0.5",
                    "--out", str(out), "--no-store")
    assert result.exit_code == 0, result.output
    h = el.History.load(out / "history.json")
    assert h.params["lr"] == 0.01 and h.iterations["lr"][0] == 0.01
