"""A stored study as files: a heatmap, validation curves per setting, results.csv, the best run.

This module reads a study from any :class:`~epochlab.store.base.Store` and
owns how a sweep is shown:

- :func:`study_rows`: one plain row per run (settings, status, final and
  best value of the metric, test metrics, total updates, ``shared_from``).
- :func:`write_csv`: those rows as ``results.csv``.
- :func:`heatmap_grid` / :func:`plot_heatmap`: the metric over two swept
  settings (slide 14); when more settings are swept, each cell holds the
  best run over the others, and the title says so.
- :func:`plot_validation_curves`: the metric per epoch, one line per
  configuration, coloured by one setting (slide 4: batch size, slide 5:
  learning rate, slide 9: batch norm on/off).
- :func:`write_report`: all of it into one folder, axes chosen
  automatically (the swept settings with more than one value), with
  ``advice.txt`` (:func:`epochlab.diagnose.advice.advise_runs`: the best
  value of each swept setting and the numbers behind it).

Both "final" (at the weights a run ends with) and "best" (max or min over
its epochs, slide 13's ``max(history['val_accuracy'])``) are recorded;
figures and the best run use ``final`` unless asked otherwise.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from epochlab.diagnose.advice import advise_runs, format_advice, runs_from_store  # noqa: E402
from epochlab.report.heatmap import plot_heatmap, save_figure  # noqa: E402
from epochlab.store.base import DONE, RunRecord, Store  # noqa: E402
from epochlab.sweeps.driver import best_run, metric_values  # noqa: E402
from epochlab.sweeps.spec import SWEPT  # noqa: E402
from epochlab.validation import ParameterError, resolve_mode  # noqa: E402

__all__ = [
    "choose_axes", "heatmap_grid", "plot_validation_curves", "study_rows", "swept_settings",
    "write_csv", "write_report",
]


def _runs(store: Store, study: str) -> list[RunRecord]:
    if store.study(study) is None:
        names = [s["name"] for s in store.studies()]
        raise ParameterError(
            f"There is no study {study!r} in this store; it has: {', '.join(names) or '(none)'}."
        )
    return store.runs(study)


def _check_metric(store: Store, runs: Sequence[RunRecord], metric: str) -> None:
    """Refuse a metric that no run of the study logged, listing the ones they did."""
    have: list[str] = []
    for r in runs:
        if r.status not in DONE:
            continue
        rows = store.epochs(r.id)
        if any(metric in row for row in rows):
            return
        for row in rows:
            have += [k for k in row if k not in have and k not in _BOOKKEEPING]
    if have:
        raise ParameterError(
            f"The value of `metric` is {metric!r}, but no run of this study logged it; "
            f"the runs have: {', '.join(have)}."
        )


_BOOKKEEPING = ("epoch", "updates", "samples_seen", "time", "lr")


def swept_settings(runs: Sequence[RunRecord]) -> list[str]:
    """Settings that take more than one value across ``runs``, in the spec's order."""
    out = []
    for n in SWEPT:
        values = {repr(r.settings.get(n)) for r in runs}
        if len(values) > 1:
            out.append(n)
    return out


def choose_axes(swept: Sequence[str], x: str | None = None, y: str | None = None) -> tuple[str, str]:
    """The heatmap's (x, y): as given, else two swept settings, epochs on y as on slide 14.

    Example:
        >>> choose_axes(["epochs", "batch_size"])
        ('batch_size', 'epochs')
        >>> choose_axes(["lr"])
        ('lr', 'epochs')
    """
    for name, v in (("x", x), ("y", y)):
        if v is not None and v not in SWEPT:
            raise ParameterError(f"The value of `{name}` is {v!r}, but must be one of {SWEPT}.")
    fallback = [s for s in ("epochs", "batch_size", *SWEPT)]
    if x is None and y is None:
        if "epochs" in swept and len(swept) >= 2:
            x, y = next(s for s in swept if s != "epochs"), "epochs"
        elif len(swept) >= 2:
            x, y = swept[0], swept[1]
        elif swept:
            x = swept[0]
            y = next(s for s in fallback if s != x)
        else:
            x, y = "batch_size", "epochs"
    elif x is None:
        x = next(s for s in [*swept, *fallback] if s != y)
    elif y is None:
        y = next(s for s in [*(["epochs"] if "epochs" in swept else []), *swept, *fallback]
                 if s != x)
    if x == y:
        raise ParameterError(f"The heatmap's axes must differ; both are {x!r}.")
    return x, y


def study_rows(store: Store, study: str, metric: str = "val_accuracy",
               mode: str = "max") -> list[dict[str, Any]]:
    """One row per run: id, settings, status, metric final/best, test metrics, accounting.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> s = MemoryStore(); sid = s.create_study("x")
        >>> rid = s.add_run(sid, "k", {"epochs": 1})
        >>> s.finish_run(rid, "completed", {"total_updates": 5}, [{"epoch": 0, "val_accuracy": 0.5}])
        >>> study_rows(s, "x")[0]["val_accuracy_final"]
        0.5
    """
    rows = []
    for r in _runs(store, study):
        v = metric_values(store.epochs(r.id), metric, mode, r.summary.get("weights_epoch"))
        row: dict[str, Any] = {"run": r.id}
        row.update({k: v2 for k, v2 in r.settings.items() if k != "data_options"})
        if r.settings.get("data_options"):
            row["data_options"] = r.settings["data_options"]
        row.update({
            "status": r.status,
            f"{metric}_final": v["final"], f"{metric}_best": v["best"],
            f"{metric}_best_epoch": v["best_epoch"],
            **{f"final_{k}": x for k, x in (r.summary.get("final") or {}).items()},
            **{f"test_{k}": x for k, x in (r.summary.get("test") or {}).items()},
            "epochs_run": r.summary.get("epochs_run"),
            "total_updates": r.summary.get("total_updates"),
            "samples_seen": r.summary.get("samples_seen"),
            "seconds": r.summary.get("seconds"),
            "shared_from": r.shared_from, "group": r.group,
            "error": r.summary.get("error", ""),
        })
        rows.append(row)
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Rows as CSV; the header is the union of the rows' keys, in first-seen order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def _sort_key(v: Any) -> tuple:
    return (v is None, isinstance(v, str), v if v is not None else 0)


def heatmap_grid(
    rows: Sequence[dict[str, Any]], x: str, y: str, metric: str, mode: str = "max",
    select: str = "final",
) -> tuple[np.ndarray, list, list]:
    """``(values, x_values, y_values)``; each cell the best done run with those two settings."""
    col = f"{metric}_{select}"
    xs = sorted({r[x] for r in rows}, key=_sort_key)
    ys = sorted({r[y] for r in rows}, key=_sort_key)
    grid = np.full((len(ys), len(xs)), math.nan)
    for r in rows:
        v = r.get(col)
        if r["status"] not in DONE or v is None or not math.isfinite(v):
            continue
        i, j = ys.index(r[y]), xs.index(r[x])
        cur = grid[i, j]
        if math.isnan(cur) or (v > cur if mode == "max" else v < cur):
            grid[i, j] = v
    return grid, xs, ys


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return f"{v:g}" if isinstance(v, float) else str(v)


def plot_validation_curves(
    store: Store, study: str, by: str, metric: str = "val_accuracy",
    path: str | os.PathLike | None = None,
) -> Figure:
    """``metric`` per epoch, one line per configuration, coloured by the setting ``by``.

    Runs read off a longer one are its prefixes, so each configuration is
    drawn once, from its longest done run.
    """
    runs = [r for r in _runs(store, study) if r.status in DONE]
    swept = swept_settings(runs)
    longest: dict[str, RunRecord] = {}
    for r in runs:
        ident = repr(sorted((k, v) for k, v in r.settings.items() if k != "epochs"))
        if ident not in longest or r.settings["epochs"] > longest[ident].settings["epochs"]:
            longest[ident] = r
    values = sorted({r.settings.get(by) for r in longest.values()}, key=_sort_key)
    colors = plt.get_cmap("viridis" if len(values) > 2 else "tab10")(
        np.linspace(0.05, 0.9, len(values)) if len(values) > 2 else range(len(values)))
    others = [s for s in swept if s not in (by, "epochs")]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    styles = ["-", "--", ":", "-."]
    extras = sorted({" ".join(f"{o}={_show(r.settings[o])}" for o in others)
                     for r in longest.values()})
    seen_labels = set()
    for r in sorted(longest.values(), key=lambda r: _sort_key(r.settings.get(by))):
        rows = store.epochs(r.id)
        ys = [row.get(metric, math.nan) for row in rows]
        k = values.index(r.settings.get(by))
        extra = " ".join(f"{o}={_show(r.settings[o])}" for o in others)
        label = f"{by}={_show(r.settings.get(by))}" + (f" ({extra})" if extra else "")
        style = styles[extras.index(extra) % len(styles)]
        ax.plot(range(1, len(ys) + 1), ys, color=colors[k], ls=style, marker="o", ms=2.5,
                label=None if label in seen_labels else label)
        seen_labels.add(label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, by {by}")
    ax.grid(alpha=0.3)
    if len(seen_labels) <= 16:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(
    store: Store, study: str, out: str | os.PathLike, *, metric: str | None = None,
    mode: str | None = None, x: str | None = None, y: str | None = None, select: str = "final",
) -> dict[str, Any]:
    """Write ``heatmap.png``, ``curves_<setting>.png``, ``results.csv``, ``advice.txt``.

    Returns the paths, the best run and the advice items (``"advice"``).

    ``metric`` and ``mode`` default to the study's spec (else ``val_accuracy``, max).

    Example:
        >>> from epochlab.store import MemoryStore
        >>> from epochlab.sweeps import SweepSpec, sweep
        >>> s = MemoryStore()
        >>> res = sweep(SweepSpec(data_options={"n_samples": 100}, epochs=[1, 2],
        ...             batch_size=[16, 32], name="r"), s, progress=False)
        >>> import tempfile; out = write_report(s, "r", tempfile.mkdtemp())
        >>> sorted(out["files"])
        ['advice.txt', 'curves_batch_size.png', 'heatmap.png', 'results.csv']
    """
    info = store.study(study)
    if info is None:
        _runs(store, study)  # raises, listing the studies there are
    spec = (info or {}).get("spec") or {}
    metric = metric or spec.get("metric", "val_accuracy")
    runs = _runs(store, study)
    _check_metric(store, runs, metric)
    if mode is None:
        # The study's mode belongs to the study's metric; another metric's comes from its name.
        mode = spec["mode"] if metric == spec.get("metric") and "mode" in spec else (
            resolve_mode(metric))
    mode = resolve_mode(metric, mode)
    x, y = choose_axes(swept_settings(runs), x, y)  # checked before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = study_rows(store, study, metric, mode)
    files: dict[str, Path] = {"results.csv": write_csv(rows, out / "results.csv")}
    swept = swept_settings(runs)
    x, y = choose_axes(swept, x, y)
    grid, xs, ys = heatmap_grid(rows, x, y, metric, mode, select)
    rest = [s for s in swept if s not in (x, y)]
    title = f"{metric} ({select}) by {y} and {x}" + (
        f"\neach cell: best over {', '.join(rest)}" if rest else "")
    plot_heatmap(grid, [_show(v) for v in xs], [_show(v) for v in ys], x_name=x, y_name=y,
                 metric=metric, mode=mode, title=title, path=out / "heatmap.png")
    files["heatmap.png"] = out / "heatmap.png"
    for by in [s for s in swept if s != "epochs"] or ["epochs"]:
        name = f"curves_{by}.png"
        plot_validation_curves(store, study, by, metric, out / name)
        files[name] = out / name
    best = best_run(store, runs, metric, mode, select)
    advice = advise_runs(runs_from_store(store, runs), metric=metric, mode=mode, select=select)
    files["advice.txt"] = out / "advice.txt"
    files["advice.txt"].write_text(format_advice(advice) + "\n")
    return {"files": files, "best": best, "metric": metric, "mode": mode, "axes": (x, y),
            "rows": rows, "advice": advice}
