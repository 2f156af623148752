"""`epochlab tune` end to end on a few short trials, and a malformed --space."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from epochlab.cli import main
from epochlab.store import SQLiteStore


def test_tune_prints_trials_best_and_savings_and_writes_figures(tmp_path):
    db, out = tmp_path / "e.db", tmp_path / "out"
    args = ["tune", "--trials", "6", "--space", "lr=loguniform(1e-3,1e-1),batch_size=choice(32,128)",
            "--epochs", "4", "--pruner", "successive-halving", "--study", "t", "--store", str(db),
            "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "compared trials at equal updates" in res.output
    assert "Best parameters" in res.output and "ratio" in res.output
    assert f"optuna-dashboard sqlite:///{db}" in res.output
    assert {p.name for p in out.iterdir()} == {"history.png", "budget.png", "trials.csv",
                                               "tune.json"}
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    stored = SQLiteStore(db, create=False).runs("t")
    assert sorted(str(r.id) for r in stored) == sorted(r["run"] for r in rows)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "6 were already done" in again.output


def test_a_malformed_space_is_a_usage_error_naming_the_part(tmp_path):
    res = CliRunner().invoke(main, ["tune", "--space", "lr=loguniform(1e-4,1e-1),epochs=int(5)",
                                    "--store", str(tmp_path / "e.db")])
    assert res.exit_code == 2
    assert "wrong at `epochs=int(5)`" in res.output and "Traceback" not in res.output



def test_tune_checks_out_before_training_and_leaves_other_files_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fitrun").mkdir()
    (tmp_path / "fitrun" / "history.json").write_text("{}")
    args = ["tune", "--trials", "1", "--space", "lr=loguniform(1e-3,1e-1)", "--epochs", "1",
            "--store", "s.db"]
    res = CliRunner().invoke(main, [*args, "--out", "fitrun"])
    assert res.exit_code == 2 and "already holds a run" in res.output
    assert not (tmp_path / "s.db").exists()  # refused before a trial trained
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "trials.csv").write_text("my own\n")
    res = CliRunner().invoke(main, [*args, "--out", "mine"])
    assert res.exit_code == 0 and "this study's go to runs" in " ".join(res.output.split())
    assert (tmp_path / "mine" / "trials.csv").read_text() == "my own\n"
    res = CliRunner().invoke(main, [*args, "--metric", "val_acc"])
    assert res.exit_code == 2 and "did you mean 'val_accuracy'" in res.output


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_tune_takes_threads_and_precision_and_says_them(tmp_path):
    # Not what auto gives an MLP (1 thread, float32): the trials must get them from the CLI.
    db = tmp_path / "e.db"
    args = ["tune", "--trials", "2", "--space", "lr=choice(0.01,0.001)", "--sampler", "grid",
            "--pruner", "none", "--epochs", "2", "--study", "t", "--store", str(db),
            "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(main, [*args, "--threads", "2", "--precision", "bf16"])
    assert res.exit_code == 0, res.output
    assert "runtime: 2 threads (set by --threads) · bfloat16 mixed precision" in res.output
    runs = SQLiteStore(db, create=False).runs("t")
    assert {(r.summary["extra"]["runtime"]["threads"], r.summary["extra"]["runtime"]["precision"])
            for r in runs} == {(2, "bf16")}
    res = CliRunner().invoke(main, ["tune", "--precision", "fp16", "--store", str(db)])
    assert res.exit_code == 2 and "--precision" in res.output
    # the same study with other choices: refused with what to do, before any trial
    res = CliRunner().invoke(main, [*args[:4], "lr=choice(0.1,0.01)", *args[5:]])
    assert res.exit_code == 2 and "another study name" in res.output, res.output
    assert "Traceback" not in res.output and len(SQLiteStore(db, create=False).runs("t")) == 2
