"""Study reports: rows per run, automatic axes, heatmap cells, curves and the best run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from epochlab.report.heatmap import plot_heatmap
from epochlab.report.study import choose_axes, heatmap_grid, study_rows, write_report
from epochlab.store import MemoryStore
from epochlab.sweeps.driver import sweep
from epochlab.sweeps.spec import SweepSpec


@pytest.fixture(scope="module")
def study():
    store = MemoryStore()
    spec = SweepSpec(data_options={"n_samples": 200}, epochs=[1, 2, 3], batch_size=[16, 64],
                     batch_norm=["on", "off"], name="st")
    sweep(spec, store, progress=False)
    return store


def test_rows_hold_settings_final_and_best_and_sharing(study):
    rows = study_rows(study, "st")
    assert len(rows) == 12
    for r in rows:
        assert r["val_accuracy_best"] >= r["val_accuracy_final"]
        # 200 rows: 160 for training, of which validation_split=0.2 leaves 128
        assert r["total_updates"] == r["epochs"] * math.ceil(128 / r["batch_size"])
        assert (r["shared_from"] is None) == (r["epochs"] == 3)
        assert "test_accuracy" in r


def test_axes_are_chosen_from_swept_settings_epochs_on_y():
    assert choose_axes(["epochs", "batch_size", "batch_norm"]) == ("batch_size", "epochs")
    assert choose_axes(["batch_size", "lr"]) == ("batch_size", "lr")
    assert choose_axes(["lr"]) == ("lr", "epochs")
    assert choose_axes(["epochs", "lr"], x="epochs") == ("epochs", "lr")
    with pytest.raises(ValueError, match="`x` is 'speed'"):
        choose_axes(["epochs"], x="speed")


def test_heatmap_cell_is_the_best_run_over_other_settings(study):
    rows = study_rows(study, "st")
    grid, xs, ys = heatmap_grid(rows, "batch_size", "epochs", "val_accuracy", "max")
    assert xs == [16, 64] and ys == [1, 2, 3]
    for i, e in enumerate(ys):
        for j, b in enumerate(xs):
            want = max(r["val_accuracy_final"] for r in rows
                       if r["epochs"] == e and r["batch_size"] == b)
            assert grid[i, j] == want


def test_report_writes_heatmap_curves_csv_and_picks_the_best(study, tmp_path):
    out = write_report(study, "st", tmp_path)
    assert sorted(out["files"]) == ["advice.txt", "curves_batch_norm.png",
                                    "curves_batch_size.png", "heatmap.png", "results.csv"]
    assert out["axes"] == ("batch_size", "epochs")
    finals = [r["val_accuracy_final"] for r in out["rows"]]
    best = out["best"]
    best_row = next(r for r in out["rows"] if r["run"] == best.id)
    assert best_row["val_accuracy_final"] == max(finals)
    ties = [r for r in out["rows"] if r["val_accuracy_final"] == max(finals)]
    assert best_row["total_updates"] == min(r["total_updates"] for r in ties)
    for name, f in out["files"].items():
        assert f.stat().st_size > (100 if name == "advice.txt" else 1000)
    # The advice names the best batch size, as the heatmap's axes are swept.
    assert "best batch size: " in (tmp_path / "advice.txt").read_text()
    assert {a.numbers["setting"] for a in out["advice"] if a.topic == "best_setting"} >= {
        "batch_size", "epochs"}


def test_heatmap_checks_shapes_and_draws_empty_cells():
    with pytest.raises(ValueError, match="shape"):
        plot_heatmap(np.zeros((2, 2)), [1, 2, 3], [1, 2], x_name="a", y_name="b", metric="m")
    fig = plot_heatmap([[math.nan, 0.5], [0.7, 0.6]], [1, 2], [1, 2], x_name="a", y_name="b",
                       metric="m")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "—" in texts and "0.7000 ★" in texts
