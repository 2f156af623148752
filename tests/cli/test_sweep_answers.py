"""`epochlab sweep` gives no wrong answer silently: metric direction, one learning rate, failures."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

import epochlab.sweeps.worker as worker
from epochlab.cli import main
from epochlab.store import SQLiteStore
from epochlab.sweeps.driver import metric_values
from epochlab.sweeps.spec import SweepSpec

TINY = ["sweep", "--data", "synthetic", "--epochs", "2", "--no-progress"]


def invoke(tmp_path, *args):
    return CliRunner().invoke(main, [*TINY, "--store", str(tmp_path / "runs.db"), *args])


def test_metric_val_loss_ranks_by_the_lowest_loss(tmp_path):
    result = invoke(tmp_path, "--lr", "1e-4,3e-2", "--metric", "val_loss", "--study", "L")
    assert result.exit_code == 0, result.output
    store = SQLiteStore(tmp_path / "runs.db", create=False)
    runs = store.runs("L")
    finals = {r.id: metric_values(store.epochs(r.id), "val_loss", "min")["final"] for r in runs}
    best_id = min(finals, key=finals.get)
    assert f"run {best_id};" in result.output  # "Best parameters: ... (run N; val_loss ..."
    assert store.study("L")["spec"]["mode"] == "min"
    assert all(math.isfinite(v) for v in finals.values())


@pytest.mark.parametrize(("metric", "mode"), [("val_loss", "min"), ("loss", "min"),
                                              ("val_accuracy", "max"), ("val_auc", "max"),
                                              ("test_mae", "min")])
def test_the_mode_is_read_from_the_metric_name(metric, mode):
    assert SweepSpec(metric=metric).mode == mode


def test_a_metric_whose_direction_is_unknown_needs_mode():
    with pytest.raises(ValueError, match="cannot tell whether 'val_score'"):
        SweepSpec(metric="val_score")
    assert SweepSpec(metric="val_score", mode="min").mode == "min"


def test_an_unknown_metric_is_refused_before_anything_trains(tmp_path):
    result = invoke(tmp_path, "--metric", "val_f1", "--study", "F")
    assert result.exit_code == 2
    assert "the runs of this sweep log only: loss, accuracy, val_loss, val_accuracy" in result.output
    assert SQLiteStore(tmp_path / "runs.db").runs() == []


def test_lr_with_a_schedule_that_has_its_own_rate_is_refused(tmp_path):
    result = invoke(tmp_path, "--lr", "1e-3,1e-2", "--schedule", "exponential:initial=0.01")
    assert result.exit_code == 2
    assert "Both `lr` (0.001, 0.01) and the schedule" in result.output
    with pytest.raises(ValueError, match=r"Both `lr` \(0.5\) and the schedule"):
        SweepSpec(lr=[0.5], schedule=["exponential:initial=0.01,decay_steps=10,decay_rate=0.5"])


def test_a_schedule_with_its_own_rate_is_recorded_at_that_rate():
    spec = SweepSpec(schedule=["exponential:initial=0.01,decay_steps=10,decay_rate=0.5", None])
    assert sorted(c.lr for c in spec.configs()) == [1e-3, 0.01]


def test_a_sweep_whose_every_run_fails_exits_1_with_the_reason(tmp_path, monkeypatch):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("out of disk in my data loader")

    monkeypatch.setattr(worker, "fit", broken_fit)
    result = invoke(tmp_path, "--batch-size", "32,64", "--no-fuse", "--study", "X")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert "All 2 runs failed: RuntimeError: out of disk in my data loader" in line
    assert "run the same command again" in line


def test_with_several_seeds_the_best_parameters_are_the_best_mean_and_agree_with_advice(tmp_path):
    res = invoke(tmp_path, "--lr", "0.1,0.01,0.001", "--seed", "0,1")
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    best = out.split("Best parameters: ")[1]
    assert "'seed'" not in best.split("(")[0] and "mean of 2 seeds" in best
    lr = best.split("'lr': ")[1].split("}")[0]
    assert f"best learning rate: {lr} " in out
    starred = [ln.split("│") for ln in res.output.splitlines()
               if "│" in ln and "*" in ln.split("│")[0]]
    assert [cells[1].strip() for cells in starred] == [f"{float(lr):g}"] * 2  # both its seeds


def test_the_heatmap_marks_the_best_runs_cell_among_ties():
    from epochlab.report.heatmap import plot_heatmap

    fig = plot_heatmap([[0.875, 0.875]], [32, 64], [2], x_name="batch_size", y_name="epochs",
                       metric="val_accuracy", best=(0, 1))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.8750", "0.8750 ★"]
    fig = plot_heatmap([[0.875, 0.5]], [32, 64], [2], x_name="batch_size", y_name="epochs",
                       metric="val_accuracy", best=(0, 1))  # not a best value: the best cell
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.8750 ★", "0.5000"]


def test_report_rewrites_its_own_files_only_and_keeps_study_names_inside_runs(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "runs.db")
    base = ["sweep", "--data", "synthetic", "--epochs", "1", "--no-progress", "--store", db]
    assert CliRunner().invoke(main, [*base, "--lr", "0.01,0.001", "--study", "A"]).exit_code == 0
    assert CliRunner().invoke(main, [*base, "--batch-size", "32,64", "--study", "../../x/B"]
                              ).exit_code == 0
    out = tmp_path / "X"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "curves_mine.png").write_bytes(b"not a report's")  # a name a report could write
    assert CliRunner().invoke(main, ["report", "--store", db, "--study", "A", "--out", str(out),
                                     "--html"]).exit_code == 0
    assert {"curves_lr.png", "index.html"} <= {p.name for p in out.iterdir()}
    res = CliRunner().invoke(main, ["report", "--store", db, "--study", "../../x/B",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "advice.txt", "curves_batch_size.png", "curves_mine.png", "heatmap.png", "notes.txt",
        "report.json", "results.csv"]
    res = CliRunner().invoke(main, ["report", "--store", db, "--study", "../../x/B"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "report-x_B" / "results.csv").is_file()


def test_a_report_of_one_run_advises_on_that_run_and_all_diverged_is_said(tmp_path):
    db = str(tmp_path / "one.db")
    base = ["sweep", "--data", "synthetic", "--no-progress", "--store", db]
    assert CliRunner().invoke(main, [*base, "--epochs", "3", "--study", "one"]).exit_code == 0
    res = CliRunner().invoke(main, ["report", "--store", db, "--study", "one", "--out",
                                    str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert "best val_loss" in (tmp_path / "r" / "advice.txt").read_text()
    res = CliRunner().invoke(main, [*base, "--epochs", "2", "--lr", "1000,5000", "--optimizer",
                                    "sgd", "--study", "dv"])
    assert "Every run diverged" in res.output


def test_report_and_sweep_give_one_answer_over_seeds(tmp_path):
    db = str(tmp_path / "sd.db")
    res = CliRunner().invoke(main, ["sweep", "--data", "synthetic", "--epochs", "2", "--lr",
                                    "0.002,0.003,0.004,0.005", "--seed", "0,1,2", "--store", db,
                                    "--no-progress", "--study", "sd"])
    assert res.exit_code == 0, res.output
    swept = " ".join(res.output.split()).split("Best parameters: {'lr': ")[1].split("}")[0]
    rep = CliRunner().invoke(main, ["report", "--store", db, "--out", str(tmp_path / "r"),
                                    "--x", "lr", "--y", "epochs"])
    assert rep.exit_code == 0, rep.output
    flat = " ".join(rep.output.split())
    assert "Best configuration" in flat and f"'lr': {swept}" in flat
    from epochlab.report.study import heatmap_grid, study_rows

    grid, xs, _ = heatmap_grid(study_rows(SQLiteStore(db, create=False), "sd"), "lr", "epochs",
                               "val_accuracy")
    assert xs[int(grid[0].argmax())] == float(swept)  # the cells are means over seeds
