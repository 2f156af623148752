"""`epochlab sweep` and `epochlab report` end to end on a tiny grid, and their errors."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

from epochlab.cli import main

SPEC = """
data = "synthetic"
epochs = [1, 2]
batch_size = [32, 64]
[data_options]
n_samples = 200
"""


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "spec.toml"
    p.write_text(SPEC)
    return p


def test_sweep_prints_plan_table_and_best_then_report_writes_files(tmp_path, spec_file):
    db = str(tmp_path / "s.db")
    runner = CliRunner()
    res = runner.invoke(main, ["sweep", "--spec", str(spec_file), "--lr", "1e-3,1e-2",
                               "--study", "tiny", "--store", db, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "8 configurations -> 4 training runs" in res.output
    assert "read out at epochs 1,2" in res.output
    assert "trained 4 run(s)" in res.output and "8 completed" in res.output
    assert "Best parameters" in res.output
    assert "best batch size: " in res.output and "best learning rate: " in res.output
    again = runner.invoke(main, ["sweep", "--spec", str(spec_file), "--lr", "1e-3,1e-2",
                                 "--study", "tiny", "--store", db, "--no-progress"])
    assert again.exit_code == 0 and "trained 0 run(s)" in again.output
    assert "8 already done" in again.output

    out = tmp_path / "rep"
    rep = runner.invoke(main, ["report", "--study", "tiny", "--store", db, "--out", str(out)])
    assert rep.exit_code == 0, rep.output
    assert "Best run" in rep.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["advice.txt", "curves_batch_size.png", "curves_lr.png", "heatmap.png",
                     "report.json", "results.csv"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"completed"}
    assert sum(r["shared_from"] != "" for r in rows) == 4


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs", "5,x"], "'x' is not an integer"),
    (["--batch-size", "0"], "`batch_size` is 0"),
    (["--lr", "fast"], "'fast' is not a number"),
    (["--optimizer", "adagrad"], "`optimizer` is 'adagrad'"),
    (["--schedule", "wobbly"], "wobbly"),
    (["--data", "digits", "--model", "lstm"], "Cannot build model 'lstm'"),
])
def test_bad_values_are_clear_usage_errors(tmp_path, args, message):
    res = CliRunner().invoke(main, ["sweep", *args, "--store", str(tmp_path / "x.db"),
                                    "--no-progress"])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_report_on_a_missing_study_lists_the_ones_there_are(tmp_path, spec_file):
    db = str(tmp_path / "s.db")
    CliRunner().invoke(main, ["sweep", "--spec", str(spec_file), "--epochs", "1",
                              "--study", "here", "--store", db, "--no-progress"])
    res = CliRunner().invoke(main, ["report", "--study", "nope", "--store", db])
    assert res.exit_code == 2 and "no study 'nope'" in res.output and "here" in res.output


def test_report_without_study_takes_the_only_one_and_else_names_them(tmp_path, spec_file):
    db = str(tmp_path / "s.db")
    sweep = ["sweep", "--spec", str(spec_file), "--epochs", "1", "--store", db, "--no-progress"]
    CliRunner().invoke(main, [*sweep, "--study", "first"])
    res = CliRunner().invoke(main, ["report", "--store", db, "--out", str(tmp_path / "r1")])
    assert res.exit_code == 0, res.output
    assert "study first (the only one" in res.output and (tmp_path / "r1" / "results.csv").exists()
    CliRunner().invoke(main, [*sweep, "--study", "second"])
    res = CliRunner().invoke(main, ["report", "--store", db])
    assert res.exit_code == 2 and "pass --study NAME" in res.output
    assert "first" in res.output and "second" in res.output


def test_report_of_fit_runs_on_regression_targets_ranks_by_val_loss(tmp_path, monkeypatch):
    # `epochlab fit` stores its runs with no spec; regression runs log no accuracy, so the
    # report's metric comes from what they logged (it was val_accuracy, refused).
    import numpy as np

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    np.savez("reg.npz", X=x, y=(x @ np.array([1.0, 2.0, -1.0])).astype(np.float32))
    fit = CliRunner().invoke(main, ["fit", "--data", "reg.npz", "--epochs", "2", "--verbose", "0",
                                    "--out", "o", "--store", "f.db"])
    assert fit.exit_code == 0, fit.output
    res = CliRunner().invoke(main, ["report", "--store", "f.db", "--out", "r"])
    assert res.exit_code == 0, res.output
    assert "by val_loss" in res.output


def test_a_sweep_whose_reader_goes_away_still_trains_and_stores_every_run(tmp_path):
    # `epochlab sweep ... | head -3`: the pipe closes after the header; the runs still count.
    import subprocess
    import sys

    db = tmp_path / "pipe.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "epochlab.cli", "sweep", "--data", "synthetic", "--epochs", "2",
         "--lr", "0.1,0.01", "--no-progress", "--store", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err
    from epochlab.store import SQLiteStore

    store = SQLiteStore(db, create=False)
    assert sorted(r.status for r in store.runs()) == ["completed", "completed"]
    store.close()
