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
- :func:`plot_metric_by`: the metric per epoch per value of one setting,
  averaged over the others (seeds), with a min-max band.
- :func:`write_report`: all of it into one folder, axes chosen
  automatically (the swept settings with more than one value), with
  ``advice.txt`` (:func:`epochlab.diagnose.advice.advise_runs`: the best
  value of each swept setting and the numbers behind it).
- :func:`study_sections` / :func:`write_html_report`: the same as one
  self-contained HTML page (``epochlab report --html``); the tour is built
  from these parts.

Both "final" (at the weights a run ends with) and "best" (max or min over
its epochs, slide 13's ``max(history['val_accuracy'])``) are recorded;
figures and the best run use ``final`` unless asked otherwise.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from epochlab.diagnose.advice import (
    advise_history,
    advise_runs,
    best_configuration_over_seeds,
    format_advice,
    runs_from_store,
)
from epochlab.report.curves import metric_label
from epochlab.report.figures import integer_ticks, new_figure, save_figure
from epochlab.report.heatmap import plot_heatmap
from epochlab.report.html import Section, Table
from epochlab.store.base import DONE, RunRecord, Store
from epochlab.sweeps.ranking import SWEPT, best_run, metric_values
from epochlab.train.history import History
from epochlab.validation import ParameterError, resolve_mode

__all__ = [
    "choose_axes", "heatmap_grid", "history_of", "plot_metric_by", "plot_validation_curves",
    "advice_section", "study_rows", "study_sections", "swept_settings", "write_csv", "write_html_report",
    "write_report",
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


def _study_metric(store: Store, study: str, spec: dict[str, Any]) -> str:
    """The study's own metric; for runs stored without one (``epochlab fit``), the first of
    val_accuracy, val_loss, accuracy, loss that a finished run logged."""
    if spec.get("metric"):
        return str(spec["metric"])
    logged: set[str] = set()
    for r in _runs(store, study):
        if r.status in DONE:
            for row in store.epochs(r.id)[:1]:
                logged.update(row)
    return next((m for m in ("val_accuracy", "val_loss", "accuracy", "loss") if m in logged),
                "val_accuracy")


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
    """``(values, x_values, y_values)``; each cell the best configuration with those two
    settings, a configuration's value the mean over its seeds (one seed: its run's)."""
    col = f"{metric}_{select}"
    xs = sorted({r[x] for r in rows}, key=_sort_key)
    ys = sorted({r[y] for r in rows}, key=_sort_key)
    grid = np.full((len(ys), len(xs)), math.nan)
    configs: dict[str, list] = {}
    for r in rows:
        v = r.get(col)
        if r["status"] not in DONE or v is None or not math.isfinite(v):
            continue
        key = repr([(k, r.get(k)) for k in SWEPT if k != "seed" or "seed" in (x, y)])
        configs.setdefault(key, [r, []])[1].append(v)
    for r, values in configs.values():
        v = statistics.fmean(values)
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
    colors = matplotlib.colormaps["viridis" if len(values) > 2 else "tab10"](
        np.linspace(0.05, 0.9, len(values)) if len(values) > 2 else range(len(values)))
    others = [s for s in swept if s not in (by, "epochs")]
    fig, (ax,) = new_figure(8, 4.5)
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
    integer_ticks(ax)
    ax.set_ylabel(metric_label(metric))
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

    ``metric`` and ``mode`` default to the study's spec (else the first of val_accuracy,
    val_loss, accuracy, loss that its runs logged; the mode from the name).

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
    metric = metric or _study_metric(store, study, spec)
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
    best = best_run(store, runs, metric, mode, select)
    config = best_configuration_over_seeds(store, runs, metric, mode, select)
    plot_heatmap(grid, [_show(v) for v in xs], [_show(v) for v in ys], x_name=x, y_name=y,
                 metric=metric, mode=mode, title=_heatmap_title(metric, select, x, y, swept),
                 path=out / "heatmap.png", best=_cell_of(_starred(config, best, x, y), x, y, xs, ys))
    files["heatmap.png"] = out / "heatmap.png"
    for by in [s for s in swept if s != "epochs"] or ["epochs"]:
        name = f"curves_{by}.png"
        plot_validation_curves(store, study, by, metric, out / name)
        files[name] = out / name
    advice = advise_runs(runs_from_store(store, runs), metric=metric, mode=mode, select=select)
    done = [r for r in runs if r.status in DONE]
    if not advice and len(done) == 1:  # nothing to compare: the one run's own advice
        advice = advise_history(history_of(store, done[0]))
    files["advice.txt"] = out / "advice.txt"
    files["advice.txt"].write_text(format_advice(advice) + "\n")
    return {"files": files, "best": best, "config": config, "metric": metric, "mode": mode,
            "axes": (x, y), "rows": rows, "advice": advice}


def _starred(config: dict[str, Any] | None, best: Any, x: str, y: str) -> Any:
    """The run whose cell the heatmap marks: the best configuration's (its best seed), or
    the best run where the seed is an axis (each cell one run then)."""
    return config["runs"][0] if config and "seed" not in (x, y) else best


def _heatmap_title(metric: str, select: str, x: str, y: str, swept: Sequence[str]) -> str:
    rest = [s for s in swept if s not in (x, y, "seed")]
    parts = ([f"best over {', '.join(rest)}"] if rest else []) + (
        ["mean over seeds"] if "seed" in swept and "seed" not in (x, y) else [])
    return f"{metric} ({select}) by {y} and {x}" + (
        f"\neach cell: {'; '.join(parts)}" if parts else "")


def _cell_of(run: Any, x: str, y: str, xs: list, ys: list) -> tuple[int, int] | None:
    """The heatmap cell ``(row, column)`` of ``run`` (None when it has none)."""
    if run is None:
        return None
    try:
        return ys.index(run.settings.get(y)), xs.index(run.settings.get(x))
    except ValueError:
        return None


def history_of(store: Store, run: RunRecord | int) -> History:
    """A stored run as a :class:`~epochlab.History` (epochs, iterations, accounting), for figures.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> s = MemoryStore(); sid = s.create_study("x"); rid = s.add_run(sid, "k", {})
        >>> s.finish_run(rid, "completed", {"total_updates": 4, "iterations_per_epoch": 2},
        ...              [{"epoch": 0, "loss": 0.5}, {"epoch": 1, "loss": 0.4}])
        >>> h = history_of(s, rid); h.total_updates, len(h.epochs)
        (4, 2)
    """
    r = store.run(run) if isinstance(run, int) else run
    s = r.summary
    h = History(
        n_train=int(s.get("n_train") or 0), n_val=int(s.get("n_val") or 0),
        batch_size=int(s.get("batch_size") or r.settings.get("batch_size") or 0),
        iterations_per_epoch=int(s.get("iterations_per_epoch") or 0),
        epochs_planned=int(s.get("epochs_planned") or r.settings.get("epochs") or 0),
        total_updates=int(s.get("total_updates") or 0), samples_seen=int(s.get("samples_seen") or 0),
        stop_reason=s.get("stop_reason") or "completed", loss_name=s.get("loss_name") or "",
        weights_epoch=s.get("weights_epoch"), params=dict(s.get("params") or r.settings),
        epochs=store.epochs(r.id),
    )
    its = store.iterations(r.id)
    if its:
        h.iterations = its
    return h


def _longest_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    # A run read off a longer one is that run's prefix: draw each training once.
    return [r for r in runs if r.status in DONE and r.shared_from is None]


def plot_metric_by(
    store: Store, study: str, by: str, metric: str = "val_accuracy", *,
    runs: Sequence[RunRecord] | None = None, title: str | None = None,
    names: dict[Any, str] | None = None, path: str | os.PathLike | None = None,
) -> Figure:
    """``metric`` per epoch, one line per value of ``by``: the mean over the runs with that
    value (other seeds, other settings), a band from their minimum to their maximum.
    ``names`` maps a value to its legend text (default ``"<by>=<value>"``).

    Example:
        >>> from epochlab.store import MemoryStore
        >>> from epochlab.sweeps import SweepSpec, sweep
        >>> s = MemoryStore()
        >>> _ = sweep(SweepSpec(data_options={"n_samples": 100}, epochs=[2],
        ...                  lr=[1e-3, 1e-2], seed=[0, 1], name="m"), s, progress=False)
        >>> fig = plot_metric_by(s, "m", "lr")
        >>> sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts())
        ['band: min to max over those runs', 'lr=0.001 (mean of 2 runs)', 'lr=0.01 (mean of 2 runs)']
    """
    runs = _longest_runs(runs if runs is not None else _runs(store, study))
    groups: dict[Any, list[list[float]]] = {}
    for r in runs:
        ys = [float(row.get(metric, math.nan)) for row in store.epochs(r.id)]
        groups.setdefault(r.settings.get(by), []).append(ys)
    values = sorted(groups, key=_sort_key)
    cmap = matplotlib.colormaps["viridis" if len(values) > 3 else "tab10"]
    colors = cmap(np.linspace(0.05, 0.85, len(values))) if len(values) > 3 else \
        [cmap(i) for i in range(len(values))]
    fig, (ax,) = new_figure(8, 4.3)
    banded = False
    for k, v in enumerate(values):
        curves = groups[v]
        n = max(len(c) for c in curves)
        arr = np.full((len(curves), n), np.nan)
        for i, c in enumerate(curves):
            arr[i, : len(c)] = c
        with warnings.catch_warnings():  # an epoch no run reached is NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = np.nanmean(arr, 0), np.nanmin(arr, 0), np.nanmax(arr, 0)
        x = np.arange(1, n + 1)
        label = (names or {}).get(v, f"{by}={_show(v)}") + (
            f" (mean of {len(curves)} runs)" if len(curves) > 1 else "")
        ax.plot(x, mean, color=colors[k], marker="o", ms=2.5, label=label)
        if len(curves) > 1:
            ax.fill_between(x, lo, hi, color=colors[k], alpha=0.15)
            banded = True
    if banded:  # one legend entry for all bands, after the lines
        ax.fill_between([], [], [], color="grey", alpha=0.2, label="band: min to max over those runs")
    ax.set_xlabel("epoch")
    integer_ticks(ax)
    ax.set_ylabel(metric_label(metric, next((r.summary.get("loss_name") for r in runs), None)))
    ax.set_title(title or f"{metric} per epoch, by {by}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def study_sections(
    store: Store, study: str, *, metric: str | None = None, mode: str | None = None,
    select: str = "final",
) -> list[Section]:
    """The sections of a study's HTML page: overview and results, heatmap, curves, best run,
    advice. ``epochlab report --html`` renders them; the tour uses the same parts.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> from epochlab.sweeps import SweepSpec, sweep
        >>> s = MemoryStore()
        >>> _ = sweep(SweepSpec(data_options={"n_samples": 100}, epochs=[1, 2],
        ...                  batch_size=[16, 32], name="h"), s, progress=False)
        >>> [x.title for x in study_sections(s, "h")]
        ['Study h', 'Heatmap: val_accuracy by epochs and batch_size', 'Curves by batch_size', 'The best run', 'Advice']
    """
    from epochlab.report.curves import plot_curves

    info = store.study(study)
    if info is None:
        _runs(store, study)  # raises, naming the studies there are
    spec = (info or {}).get("spec") or {}
    metric = metric or _study_metric(store, study, spec)
    if mode is None:  # the study's mode belongs to its metric; another's comes from the name
        mode = spec["mode"] if metric == spec.get("metric") and "mode" in spec else (
            resolve_mode(metric))
    mode = resolve_mode(metric, mode)
    runs = _runs(store, study)
    rows = study_rows(store, study, metric, mode)
    swept = swept_settings(runs)
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    shared = sum(r.shared_from is not None for r in runs)
    cols = ["run", *swept, "status", f"{metric}_final", f"{metric}_best", f"{metric}_best_epoch",
            "total_updates", "shared_from"]
    test_cols = sorted({k for row in rows for k in row if k.startswith("test_")})
    cols += test_cols
    overview = Section(
        f"Study {study}",
        f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}); "
        f"swept: {', '.join(swept) or 'nothing'}. Ranked by {metric} ({select}, {mode}).",
        facts=[("runs", len(runs)), ("read off a longer run (epoch-prefix sharing)", shared),
               ("metric", f"{metric} ({mode})")] + [
            (k, _show(v)) for k, v in spec.items() if k in ("data", "model", "validation_split",
                                                             "early_stopping") and v is not None],
        tables=[Table(cols, [[row.get(c) for c in cols] for row in rows],
                      caption=f"every run of {study}")],
    )
    sections = [overview]
    done = [r for r in runs if r.status in DONE]
    if swept and done:
        x, y = choose_axes(swept)
        if all(x in row and y in row for row in rows):
            grid, xs, ys = heatmap_grid(rows, x, y, metric, mode, select)
            config = best_configuration_over_seeds(store, runs, metric, mode, select)
            fig = plot_heatmap(grid, [_show(v) for v in xs], [_show(v) for v in ys], x_name=x,
                               y_name=y, metric=metric, mode=mode,
                               title=_heatmap_title(metric, select, x, y, swept),
                               best=_cell_of(_starred(config, best_run(store, runs, metric,
                                                                       mode, select), x, y),
                                             x, y, xs, ys))
            sections.append(Section(
                f"Heatmap: {metric} by {y} and {x}",
                f"Each cell is the {select} {metric} of the best finished configuration with "
                "those two settings (the mean over its seeds); the framed cell is the best of "
                "all.",
                figures=[(fig, f"{metric} by {y} and {x}")]))
    # Averaging over seeds is the point of the bands, so seeds get no figure of their own
    # unless nothing else was swept.
    bys = [s for s in swept if s not in ("epochs", "seed")] or swept[:1]
    curves = Section(f"Curves by {', '.join(bys) or 'run'}",
                     f"{metric} per epoch: for each value of a swept setting, the mean over the "
                     "runs that share it, with a band from their lowest to their highest value.")
    for by in bys:
        curves.figures.append((plot_metric_by(store, study, by, metric, runs=runs),
                               f"{metric} per epoch by {by}"))
    if not curves.figures and done:
        fig, (ax,) = new_figure(8, 4.3)
        for r in _longest_runs(runs)[:12]:
            ys = [row.get(metric, math.nan) for row in store.epochs(r.id)]
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=2.5, label=f"run {r.id}")
        ax.set(xlabel="epoch", ylabel=metric_label(metric), title=f"{metric} per epoch, per run")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        curves.figures.append((fig, f"{metric} per epoch, per run"))
    if curves.figures:
        sections.append(curves)
    best = best_run(store, runs, metric, mode, select)
    advice = advise_runs(runs_from_store(store, runs), metric=metric, mode=mode, select=select)
    if best is not None:
        h = history_of(store, best)
        settings = {k: best.settings[k] for k in SWEPT if k in best.settings}
        sec = Section("The best run",
                      f"Run {best.id} ({', '.join(f'{k}={_show(v)}' for k, v in settings.items())}): "
                      "its training and validation loss per epoch.",
                      facts=[("iterations per epoch", h.iterations_per_epoch),
                             ("total updates", h.total_updates), ("stop", h.stop_reason)])
        if h.epochs and "loss" in h.history:
            sec.figures.append((plot_curves(h, "loss"), f"loss per epoch of run {best.id}"))
        sections.append(sec)
        advice += advise_history(h)
    if advice:
        sections.append(advice_section(advice, "Advice"))
    return sections


def advice_section(items: Sequence[Any], title: str = "Advice", shows: str = "") -> Section:
    """Advice items (:mod:`epochlab.diagnose.advice`) as a section: a table of topic and text."""
    return Section(title, shows or "What these runs support, each with the numbers behind it "
                   "(epochlab.diagnose.advice).",
                   tables=[Table(["topic", "advice, with the numbers behind it"],
                                 [[a.topic.replace("_", " "), a.text] for a in items])])


def write_html_report(
    store: Store, study: str, out: str | os.PathLike, *, metric: str | None = None,
    mode: str | None = None, select: str = "final",
) -> Path:
    """``out/index.html``: the study's page (see :func:`study_sections`), one self-contained file."""
    from epochlab.report.html import write_page

    sections = study_sections(store, study, metric=metric, mode=mode, select=select)
    return write_page(Path(out) / "index.html", f"epochlab report: {study}", sections,
                      intro="Every run of the study as stored, its best run and what it supports.")
