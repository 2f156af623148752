"""A metric over two settings as an annotated heatmap, the best cell marked (slide 14).

The seed draws it with seaborn; this is matplotlib alone: ``imshow``, one
text per cell (dark text on light cells, light on dark), a frame and a star
on the best cell, and grey with "—" for cells no finished run fills.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from epochlab.report.figures import new_figure, save_figure

__all__ = ["plot_heatmap", "save_figure"]


def plot_heatmap(
    values: np.ndarray | Sequence[Sequence[float]],
    x_labels: Sequence[object],
    y_labels: Sequence[object],
    *,
    x_name: str,
    y_name: str,
    metric: str,
    mode: str = "max",
    title: str | None = None,
    fmt: str = ".4f",
    path: str | os.PathLike | None = None,
    best: tuple[int, int] | None = None,
) -> Figure:
    """Draw ``values[i, j]`` (row ``i`` = ``y_labels[i]``, column ``j`` = ``x_labels[j]``).

    Args:
        values: the metric per cell; NaN for an empty cell.
        x_labels, y_labels: tick labels of the columns and rows.
        x_name, y_name: the settings on the axes (``"batch_size"``, ``"epochs"``).
        metric: the metric's name, for the colour bar and title.
        mode: ``"max"`` or ``"min"``: which cell is best.
        title: defaults to "<metric> by <y_name> and <x_name>".
        fmt: number format of the cell texts.
        path: write a PNG there (and close the figure) when given.
        best: the cell to mark, ``(row, column)``, when it holds a best value (several
            may: the best run's cell, whose ties went to fewer updates); default the first.

    Example:
        >>> fig = plot_heatmap([[0.9, 0.8], [0.95, 0.85]], [32, 64], [5, 10],
        ...                    x_name="batch_size", y_name="epochs", metric="val_accuracy")
    """
    if mode not in ("max", "min"):
        raise ValueError(f"The value of `mode` is {mode!r}, but must be 'max' or 'min'.")
    v = np.asarray(values, dtype=float)
    if v.shape != (len(y_labels), len(x_labels)):
        raise ValueError(
            f"`values` has shape {v.shape}, but the labels make {(len(y_labels), len(x_labels))}."
        )
    fig, (ax,) = new_figure(1.4 * len(x_labels) + 3.4, 0.9 * len(y_labels) + 2.6)
    masked = np.ma.masked_invalid(v)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    im = ax.imshow(masked, cmap=cmap, aspect="auto", origin="upper")
    finite = v[np.isfinite(v)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if finite.size:
        flat = np.where(np.isfinite(v), v, -np.inf if mode == "max" else np.inf)
        top = np.unravel_index(np.argmax(flat) if mode == "max" else np.argmin(flat), v.shape)
        # The caller's best cell (the best run's: ties go to fewer updates) when it is one of
        # the best values; else the first best cell.
        best = best if best is not None and np.isfinite(v[best]) and v[best] == v[top] else top
    else:
        best = None
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            x = v[i, j]
            if not math.isfinite(x):
                ax.text(j, i, "—", ha="center", va="center", color="#555555")
                continue
            light = hi == lo or (x - lo) / (hi - lo) < 0.6  # viridis is dark at the low end
            text = format(x, fmt) + (" ★" if best == (i, j) else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=10,
                    color="white" if light else "black",
                    fontweight="bold" if best == (i, j) else "normal")
    if best is not None:
        ax.add_patch(Rectangle((best[1] - 0.5, best[0] - 0.5), 1, 1, fill=False,
                               edgecolor="red", linewidth=2.5,
                               label=f"best cell ({mode}): {format(v[best], fmt)}"))
    if finite.size < v.size:
        ax.add_patch(Rectangle((0, 0), 0, 0, facecolor="#dddddd", label="grey, —: no finished run"))
    ax.set_xticks(range(len(x_labels)), [str(t) for t in x_labels])
    ax.set_yticks(range(len(y_labels)), [str(t) for t in y_labels])
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(title or f"{metric} by {y_name} and {x_name} (★ best, {mode})")
    fig.colorbar(im, ax=ax, label=metric)
    if ax.patches:
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize=8, frameon=False)
    return save_figure(fig, path)
