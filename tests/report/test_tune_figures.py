"""Tuning figures: fully labelled (the reports' figure check), pruned trials drawn as such."""

from __future__ import annotations

from epochlab.report.figures import check_figure
from epochlab.report.tune import plot_budget, plot_optimization_history, write_trials_csv
from epochlab.tuning import TrialRow, TuneResult, make_budget


def _result() -> TuneResult:
    trials = [
        TrialRow(0, "COMPLETE", {"lr": 0.01}, 0.8, 1, "completed", 10, 10, 200, 200),
        TrialRow(1, "PRUNED", {"lr": 0.1}, 0.6, 2, "pruned", 2, 10, 40, 200),
        TrialRow(2, "COMPLETE", {"lr": 0.001}, 0.85, 3, "completed", 10, 10, 200, 200),
    ]
    return TuneResult(study="s", storage="memory", metric="val_accuracy", mode="max",
                      pruner="hyperband", sampler="tpe",
                      budget=make_budget("epochs", batch_sizes=[32], max_epochs=10, n_train=640),
                      trials=trials, best=trials[2], seconds=1.0)


def test_figures_pass_the_report_check_and_files_are_written(tmp_path):
    r = _result()
    assert (r.total_updates, r.full_updates, r.update_ratio) == (440, 600, 440 / 600)
    check_figure(plot_optimization_history(r, tmp_path / "h.png"), "history")
    check_figure(plot_budget(r, tmp_path / "b.png"), "budget")
    write_trials_csv(r, tmp_path / "t.csv")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[2] == "1,PRUNED,2,0.1,0.6,2,10,40,200"
