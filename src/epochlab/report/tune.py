"""Figures of a tuning run: the optimization history, and the training each trial cost.

Both read a :class:`~epochlab.tuning.driver.TuneResult` (plain data), so they
work the same for a tune just run and one reloaded.
"""

from __future__ import annotations

import csv
import math
import os
from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from epochlab.report.figures import integer_ticks, new_figure, save_figure

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.tuning.driver import TuneResult

__all__ = ["plot_budget", "plot_optimization_history", "write_trials_csv"]

_COLORS = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red"}


def plot_optimization_history(result: TuneResult, path: str | os.PathLike | None = None) -> Figure:
    """Each trial's metric by trial number (pruned ones at their last report), best so far as a line.

    Example:
        >>> import epochlab as el
        >>> r = el.tune("mlp", el.data.synthetic(n_samples=120), trials=3, pruner="none",
        ...             space="lr=loguniform(1e-3,1e-1)", epochs=2)
        >>> fig = plot_optimization_history(r)
    """
    fig, (ax,) = new_figure()
    for state, color in _COLORS.items():
        pts = [(t.number, t.value) for t in result.trials if t.state == state and t.value is not None]
        if pts:
            label = {"COMPLETE": "complete", "PRUNED": "pruned (last value reported)",
                     "FAIL": "failed"}[state]
            ax.scatter(*zip(*pts, strict=True), s=22, color=color, label=label, zorder=3)
    best, xs, ys = None, [], []
    for t in result.trials:
        if t.state == "COMPLETE" and t.value is not None and math.isfinite(t.value):
            if best is None or (t.value > best if result.mode == "max" else t.value < best):
                best = t.value
        if best is not None:
            xs.append(t.number)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="black", lw=1.2, label="best complete so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(result.metric)
    integer_ticks(ax)
    ax.set_title(f"optimization history ({result.sampler} sampler, {result.pruner} pruner)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_budget(result: TuneResult, path: str | os.PathLike | None = None) -> Figure:
    """Updates (top) and epochs (bottom) per trial: what ran, against what a full-length run costs.

    Example:
        >>> import epochlab as el
        >>> r = el.tune("mlp", el.data.synthetic(n_samples=120), trials=3, pruner="none",
        ...             space="batch_size=choice(16,32)", epochs=2)
        >>> fig = plot_budget(r)
    """
    trials = [t for t in result.trials if t.full_updates]
    fig = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = [t.number for t in trials]
    colors = [_COLORS.get(t.state, "grey") for t in trials]
    top.bar(x, [t.full_updates for t in trials], color="none", edgecolor="grey", lw=0.8)
    top.bar(x, [t.updates for t in trials], color=colors)
    top.set_ylabel("optimizer updates")
    ratio = result.update_ratio
    top.set_title(f"training per trial: {result.total_updates} of {result.full_updates} updates "
                  f"({ratio:.0%} of full length)" if math.isfinite(ratio) else "training per trial")
    bottom.bar(x, [t.epochs_planned for t in trials], color="none", edgecolor="grey", lw=0.8)
    bottom.bar(x, [t.epochs_run for t in trials], color=colors)
    bottom.set_ylabel("epochs")
    bottom.set_title("epochs per trial: run, of planned")
    handles = [Patch(facecolor="none", edgecolor="grey", label="planned (unpruned)")]
    handles += [Patch(color=c, label=s.lower()) for s, c in _COLORS.items()
                if any(t.state == s for t in trials)]
    for ax in (top, bottom):
        ax.set_xlabel("trial")
        ax.legend(handles=handles, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        integer_ticks(ax)
    return save_figure(fig, path)


def write_trials_csv(result: TuneResult, path: str | os.PathLike) -> None:
    """One row per trial: number, state, run id, settings, value, epochs and updates.

    Example:
        >>> import epochlab as el, tempfile, os
        >>> r = el.tune("mlp", el.data.synthetic(n_samples=120), trials=2, pruner="none",
        ...             space="lr=loguniform(1e-3,1e-1)", epochs=2)
        >>> p = os.path.join(tempfile.mkdtemp(), "trials.csv")
        >>> write_trials_csv(r, p)
        >>> open(p).readline().strip()
        'trial,state,run,lr,value,epochs_run,epochs_planned,updates,full_updates'
    """
    names = list(dict.fromkeys(k for t in result.trials for k in t.params))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "state", "run", *names, "value", "epochs_run", "epochs_planned",
                    "updates", "full_updates"])
        for t in result.trials:
            w.writerow([t.number, t.state, t.run_id, *(t.params.get(n, "") for n in names),
                        "" if t.value is None else t.value, t.epochs_run, t.epochs_planned,
                        t.updates, t.full_updates])
