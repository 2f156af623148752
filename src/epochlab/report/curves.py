"""Curves of one run: loss and metrics over epochs (slide 2), learning rate over iterations."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files, never windows: works headless and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from epochlab.report.heatmap import save_figure  # noqa: E402
from epochlab.train.history import History  # noqa: E402


def plot_curves(
    history: History,
    metric: str = "loss",
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Training and validation ``metric`` per epoch (1-based on the axis).

    The epoch whose weights the model holds (after early stopping with
    restore, the best one) is marked.

    Example:
        >>> import epochlab as el
        >>> h = el.fit(el.models.mlp(20), el.data.synthetic().train, epochs=3,
        ...            batch_size=32, validation_split=0.2, verbose=0)
        >>> fig = plot_curves(h, "loss")
    """
    hist = history.history
    if metric not in hist and f"val_{metric}" not in hist:
        raise ValueError(f"No metric {metric!r} in this History; it has {sorted(hist)}.")
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = range(1, len(history.epochs) + 1)
    if metric in hist:
        ax.plot(epochs, hist[metric], marker="o", ms=3, label=f"training {metric}")
    if f"val_{metric}" in hist:
        ax.plot(epochs, hist[f"val_{metric}"], marker="o", ms=3, label=f"validation {metric}")
    if history.weights_epoch is not None and history.weights_epoch < len(history.epochs) - 1:
        ax.axvline(history.weights_epoch + 1, color="grey", ls="--", lw=1,
                   label=f"weights kept (epoch {history.weights_epoch + 1})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} over epochs ({history.iterations_per_epoch} iterations each, "
                 f"{history.total_updates} updates)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_lr(history: History, path: str | os.PathLike | None = None) -> Figure:
    """The learning rate actually used at every iteration, epoch boundaries marked.

    Example:
        >>> import epochlab as el
        >>> h = el.fit(el.models.mlp(20), el.data.synthetic().train, epochs=2,
        ...            batch_size=32, verbose=0)
        >>> fig = plot_lr(h)
    """
    it = history.iterations
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([s + 1 for s in it["step"]], it["lr"], lw=1.2)
    ipe = history.iterations_per_epoch
    if ipe and len(history.epochs) <= 50:
        for e in range(1, len(history.epochs)):
            ax.axvline(e * ipe + 0.5, color="grey", lw=0.5, alpha=0.4)
    ax.set_xlabel("iteration (optimizer update)")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate per iteration")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
