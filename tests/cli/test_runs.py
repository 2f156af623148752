"""``epochlab runs``: listing, one run, studies, JSON output and store errors."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

import epochlab as el
from epochlab.cli import main
from epochlab.store import SQLiteStore, record_history
from epochlab.train.history import History


def _history(lr: float, val_loss: float, stop: str = "completed") -> History:
    rows = [{"epoch": e, "loss": 1.0 / (e + 1), "val_loss": val_loss + 0.1 * (1 - e),
             "lr": lr, "updates": 20 * (e + 1), "samples_seen": 640 * (e + 1), "time": 0.25}
            for e in range(2)]
    return History(n_train=640, n_val=160, batch_size=32, iterations_per_epoch=20,
                   epochs_planned=2, total_updates=40, samples_seen=1280, stop_reason=stop,
                   epochs=rows, iterations={"step": list(range(40)), "loss": [0.5] * 40},
                   extra={"runtime": {"threads": 1, "threads_reason": "set by threads=1",
                                      "precision": "fp32", "precision_reason": "auto"}})


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "runs.db"
    with SQLiteStore(path) as store:
        for lr, val in ((0.001, 0.42), (0.01, 0.31)):
            record_history(store, "lr-sweep", None,
                           {"epochs": 2, "batch_size": 32, "lr": lr, "seed": 0}, _history(lr, val))
        record_history(store, "lr-sweep", None, {"epochs": 2, "batch_size": 32, "lr": 1.0,
                                                 "seed": 0}, _history(1.0, math.nan, "diverged"))
        sid = store.create_study("other")
        store.add_run(sid, "pending-one", {"epochs": 5, "batch_size": 64})
    return path


def _invoke(*args: str, **kwargs):
    return CliRunner().invoke(main, ["runs", *args], catch_exceptions=False, **kwargs)


def test_runs_lists_every_run_with_settings_final_metric_and_updates(store_path):
    result = _invoke("--store", str(store_path))
    assert result.exit_code == 0, result.output
    out = result.output
    for header in ("id", "study", "status", "epochs", "batch_size", "lr", "val_loss", "updates"):
        assert header in out
    lines = [ln for ln in out.splitlines() if "│" in ln]
    assert len(lines) == 4
    assert "completed" in lines[0] and "0.001" in lines[0] and "0.4200" in lines[0]
    assert "40" in lines[0] and "0.5" in lines[0]  # updates, seconds
    assert "diverged" in lines[2] and "nan" in lines[2]
    assert "pending" in lines[3] and "other" in lines[3]


def test_runs_filters_by_study_and_status(store_path):
    out = _invoke("--store", str(store_path), "--study", "lr-sweep", "--status", "completed")
    rows = [ln for ln in out.output.splitlines() if "│" in ln]
    assert len(rows) == 2 and all("completed" in r for r in rows)
    out = _invoke("--store", str(store_path), "--status", "failed")
    assert "No runs match" in out.output


def test_an_unknown_study_is_an_error_listing_the_studies(store_path):
    result = _invoke("--store", str(store_path), "--study", "nope")
    assert result.exit_code == 2
    assert "There is no study 'nope'" in result.output and "lr-sweep, other" in result.output


def test_runs_json_is_strict_json_with_nan_as_null(store_path):
    result = _invoke("--store", str(store_path), "--json")
    runs = json.loads(result.output, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert [r["status"] for r in runs] == ["completed", "completed", "diverged", "pending"]
    assert runs[0]["settings"] == {"epochs": 2, "batch_size": 32, "lr": 0.001, "seed": 0}
    assert runs[0]["summary"]["total_updates"] == 40
    assert runs[0]["summary"]["final"]["val_loss"] == pytest.approx(0.42)
    assert runs[2]["summary"]["final"]["val_loss"] is None
    assert runs[3]["study"] == "other"


def test_runs_show_prints_settings_accounting_and_one_based_epochs(store_path):
    result = _invoke("show", "2", "--store", str(store_path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "run 2" in out and "lr-sweep" in out and "completed" in out
    assert "lr=0.01" in out and "total_updates=40" in out and "iterations_per_epoch=20" in out
    assert "best: epoch=2" in out and "versions: python=" in out  # the 2nd epoch: 1-based, as the table
    assert "iterations stored: 40" in out
    assert "runtime: 1 thread (set by threads=1) · float32 (auto)" in out
    epoch_rows = [ln.split("│")[0].strip() for ln in out.splitlines() if "│" in ln]
    assert epoch_rows == ["1", "2"]


def test_runs_show_json_has_the_run_epochs_and_optionally_iterations(store_path):
    data = json.loads(_invoke("--store", str(store_path), "show", "1", "--json").output)
    assert data["run"]["id"] == 1 and data["n_iterations"] == 40
    assert [e["epoch"] for e in data["epochs"]] == [0, 1] and "iterations" not in data
    data = json.loads(_invoke("show", "1", "--json", "--iterations",
                              "--store", str(store_path)).output)
    assert data["iterations"]["step"] == list(range(40))


def test_runs_show_an_unknown_id_is_an_error_naming_it(store_path):
    result = CliRunner().invoke(main, ["runs", "show", "99", "--store", str(store_path)])
    assert result.exit_code == 2 and "There is no run with id 99" in result.output


def test_runs_studies_counts_runs_per_status(store_path):
    result = _invoke("studies", "--store", str(store_path))
    assert "lr-sweep" in result.output and "completed=2  diverged=1" in result.output
    studies = json.loads(_invoke("--store", str(store_path), "studies", "--json").output)
    assert [(s["name"], s["runs"]) for s in studies] == [
        ("lr-sweep", {"completed": 2, "diverged": 1}), ("other", {"pending": 1})]


@pytest.mark.parametrize("args", [[], ["show", "1"], ["studies"], ["--json"]])
def test_a_missing_store_is_a_clear_error_and_is_not_created(tmp_path, args):
    path = tmp_path / "none.db"
    result = CliRunner().invoke(main, ["runs", "--store", str(path), *args])
    assert result.exit_code == 2  # a bad --store is a usage error
    assert f"No runs stored yet at {path}" in result.output
    assert not path.exists()


def test_the_store_defaults_to_epochlab_store_then_the_working_directory(store_path, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("EPOCHLAB_STORE", str(store_path))
    assert len(json.loads(_invoke("--json").output)) == 4
    monkeypatch.delenv("EPOCHLAB_STORE")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["runs"])
    assert "No runs stored yet at epochlab.db" in result.output
    store_path.rename(tmp_path / "epochlab.db")
    assert len(json.loads(_invoke("--json").output)) == 4


def test_an_empty_store_says_so(tmp_path):
    SQLiteStore(tmp_path / "e.db").close()
    assert "No runs stored yet." in _invoke("--store", str(tmp_path / "e.db")).output


def test_record_history_stores_a_real_fit_with_its_accounting_and_versions(tmp_path, small_xy):
    h = el.fit(el.models.mlp(5), small_xy, epochs=2, batch_size=16, validation_split=0.25,
               verbose=0)
    with SQLiteStore(tmp_path / "fit.db") as store:
        rid = record_history(store, "fit", "first", {"epochs": 2, "batch_size": 16}, h)
        rec = store.run(rid)
        assert rec.status == "completed" and rec.key == "first"
        assert rec.summary["total_updates"] == h.total_updates == 2 * 6  # ceil(90 / 16) = 6
        assert rec.summary["iterations_per_epoch"] == 6
        assert set(rec.summary["versions"]) == {"python", "torch", "numpy", "epochlab"}
        assert rec.summary["final"]["val_loss"] == h.history["val_loss"][-1]
        assert store.epochs(rid) == h.epochs
        assert store.iterations(rid) == h.iterations
        with pytest.raises(ValueError, match="not overwritten"):
            record_history(store, "fit", "first", {}, h)


def test_python_dash_m_epochlab_is_the_epochlab_command():
    # Where the `epochlab` script is not on PATH (a notebook's kernel, a bare venv).
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "epochlab", "runs", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: epochlab runs")


def test_names_and_settings_are_shown_as_written_not_as_markup(tmp_path):
    # A study named with brackets or colons: rich read "[/z]" as a closing tag (the command
    # failed with MarkupError), "[bold]" as a style and ":smile:" as an emoji.
    name = "q[/z] :smile: [bold]b"
    db = str(tmp_path / "s.db")
    res = CliRunner().invoke(main, ["sweep", "--data", "synthetic", "--epochs", "1", "--study", name,
                                    "--store", db, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert f"study {name} in" in res.output
    for args in (["runs", "studies"], ["runs", "--study", name], ["runs", "show", "1"],
                 ["report", "--study", name, "--out", str(tmp_path / "rep")]):
        res = CliRunner().invoke(main, [*args, "--store", db])
        assert res.exit_code == 0, (args, res.output)
        assert "😄" not in res.output and "MarkupError" not in res.output
    res = CliRunner().invoke(main, ["runs", "studies", "--store", db])
    assert name in res.output


def test_status_is_case_blind_and_list_filters_refuse_a_subcommand(store_path):
    result = _invoke("--store", str(store_path), "--status", "COMPLETED")
    assert result.exit_code == 0, result.output
    result = _invoke("--store", str(store_path), "--study", "nope", "studies")
    assert result.exit_code == 2 and "no effect on `runs studies`" in result.output
