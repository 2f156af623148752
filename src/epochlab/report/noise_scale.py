"""The gradient noise scale as a figure: per epoch with error bars, and the batch-size trade-off."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from epochlab.report.figures import integer_ticks, new_figure, save_figure
from epochlab.train.history import History


def plot_noise_scale(history: History, advice: dict[str, Any] | None = None,
                     path: str | os.PathLike | None = None) -> Figure:
    """Left: ``B_simple`` per epoch (1-based) with its error bar, and the smoothed value.
    Right (with ``advice`` from :func:`epochlab.diagnose.noise_scale.batch_size_advice`):
    epochs and updates to reach the run's loss against the batch size.

    Example:
        >>> import epochlab as el
        >>> from epochlab.diagnose.noise_scale import GradientNoiseScale
        >>> d = el.data.synthetic(n_samples=200)
        >>> h = el.fit(el.models.mlp(20), d.train, epochs=2, batch_size=16, verbose=0,
        ...            callbacks=[GradientNoiseScale(d.train, parts=4)])
        >>> from epochlab.report.figures import check_figure
        >>> check_figure(plot_noise_scale(h))
    """
    hist = history.history
    if "gns" not in hist:
        raise ValueError("This History has no `gns` column: train with a GradientNoiseScale "
                         "callback (epochlab.diagnose.noise_scale).")
    fig, axes = new_figure(11 if advice else 6, 4, ncols=2 if advice else 1)
    ax = axes[0]
    ep = np.arange(1, len(hist["gns"]) + 1)
    ax.errorbar(ep, hist["gns"], yerr=hist["gns_err"], fmt="o", capsize=3,
                label="per epoch (jackknife standard error)")
    ax.plot(ep, hist["gns_smoothed"], "-", label="running average")
    ax.set_xlabel("epoch")
    integer_ticks(ax)
    ax.set_ylabel("B_simple = tr(Sigma) / |G|^2 [rows]")
    info = history.extra.get("gns", {})
    ax.set_title(f"gradient noise scale (batches of {info.get('small', '?')} vs "
                 f"{info.get('big', '?')} rows)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if advice:
        ax2 = axes[1]
        rows = advice["rows"]
        bs = [r["batch_size"] for r in rows]
        # Both on one log axis: epochs and updates differ by the batch size, not in kind.
        ax2.plot(bs, [r["epochs"] for r in rows], "o-", label="epochs")
        ax2.plot(bs, [r["updates"] for r in rows], "s--", label="updates")
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.set_xticks(bs, [str(b) for b in bs])
        ax2.set_xlabel("batch size [rows]")
        ax2.set_ylabel("epochs, updates to the run's loss")
        ax2.axvline(advice["noise"], color="grey", ls=":", label=f"B_simple {advice['noise']:.0f}")
        ax2.set_title("epochs E_min (1 + B/B_noise), updates S_min (1 + B_noise/B)", fontsize=10)
        ax2.grid(alpha=0.3, which="both")
        ax2.legend(fontsize=8)
    return save_figure(fig, path)
