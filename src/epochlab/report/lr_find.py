"""The learning-rate range test as a figure: the seeds' curves, their band, every rule's mark."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from epochlab.report.figures import new_figure, save_figure

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.diagnose.lr_find import LRFindResult

_COLORS = {"valley": "tab:green", "steepest": "tab:orange", "minimum": "tab:purple"}


def plot_lr_find(result: LRFindResult, path: str | os.PathLike | None = None) -> Figure:
    """Smoothed loss against the learning rate (log axis) for every seed, and the suggestions.

    The grey band spans the seeds' smoothed losses (min to max) and the line
    is their median; each rule's suggestion is a vertical line at its median
    over seeds, with a shaded span from its lowest to its highest seed for
    the chosen rule. Raw batch losses are faint dots.

    Example:
        >>> import epochlab as el
        >>> res = el.lr_find(lambda: el.models.mlp(20), el.data.synthetic(n_samples=300),
        ...                  num_iter=40, seeds=2)
        >>> from epochlab.report.figures import check_figure
        >>> check_figure(plot_lr_find(res))
    """
    from epochlab.diagnose.lr_find import RULES

    fig, (ax,) = new_figure(7.5, 4.5)
    lrs = result.lrs
    for row in result.losses:
        ax.plot(lrs, row, ".", ms=1.5, color="tab:blue", alpha=0.15)
    sm = result.smoothed
    with np.errstate(all="ignore"):
        alive = np.isfinite(sm).sum(axis=0) > 0
        lo = np.where(alive, np.nanmin(np.where(np.isfinite(sm), sm, np.inf), axis=0), np.nan)
        hi = np.where(alive, np.nanmax(np.where(np.isfinite(sm), sm, -np.inf), axis=0), np.nan)
        med = np.array([np.median(c[np.isfinite(c)]) if np.isfinite(c).any() else np.nan
                        for c in sm.T])
    k = len(result.seeds)
    ax.fill_between(lrs, lo, hi, color="tab:blue", alpha=0.2, lw=0,
                    label=f"smoothed loss, {k} seeds (min to max)")
    ax.plot(lrs, med, color="tab:blue", lw=1.5, label="median over seeds")
    for rule in RULES:
        s, low, high, n = result.suggested(rule)
        if n == 0:
            continue
        chosen = rule == result.rule
        ax.axvline(s, color=_COLORS[rule], lw=2 if chosen else 1, ls="-" if chosen else "--",
                   label=f"{rule}: {s:.1e}" + (" (suggested)" if chosen else ""))
        if chosen:
            ax.axvspan(low, high, color=_COLORS[rule], alpha=0.12, lw=0)
    ax.set_xscale("log")
    finite = sm[np.isfinite(sm)]
    if finite.size:
        top = np.percentile(finite, 99)
        ax.set_ylim(finite.min() - 0.05 * (top - finite.min()), top + 0.15 * (top - finite.min()))
    ax.set_xlabel("learning rate (exponential ramp, one update each)")
    ax.set_ylabel("training batch loss")
    ax.set_title(f"learning-rate range test: {int(np.max(result.kept))} of {len(lrs)} updates, "
                 f"batch {result.batch_size}, {'fused' if result.fused else 'one seed at a time'}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
