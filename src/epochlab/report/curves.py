"""Curves of one run: loss and metrics over epochs (slide 2), learning rate over iterations.

The report package draws Histories; the History itself holds data only.
Figures are bare :class:`matplotlib.figure.Figure` objects (see
:mod:`epochlab.report.figures`): no pyplot, no backend switched.
"""

from __future__ import annotations

import os

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from epochlab.report.figures import integer_ticks, new_figure, save_figure
from epochlab.train.history import History

__all__ = ["metric_label", "plot_curves", "plot_lr"]

_LOSS_NAMES = {"bce": "binary cross-entropy", "cross_entropy": "cross-entropy", "mse": "mean squared error"}


def metric_label(metric: str, history: History | str | None = None) -> str:
    """An axis label with units: ``"loss (binary cross-entropy, nats)"``, ``"accuracy (fraction)"``.

    Example:
        >>> metric_label("val_accuracy")
        'validation accuracy (fraction)'
    """
    base = metric[4:] if metric.startswith("val_") else metric
    prefix = "validation " if metric.startswith("val_") else ""
    if base == "loss":
        loss = history.loss_name if isinstance(history, History) else (history or "")
        name = _LOSS_NAMES.get(loss, loss)
        unit = f"{name}, nats" if name and name != "mean squared error" else (name or "per row")
        return f"{prefix}loss ({unit})"
    if base in ("accuracy", "acc"):
        return f"{prefix}accuracy (fraction)"
    return f"{prefix}{base}"


def plot_curves(
    history: History,
    metric: str = "loss",
    path: str | os.PathLike | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    label: str = "",
) -> Figure:
    """Training and validation ``metric`` per epoch (1-based on the axis).

    The epoch whose weights the model holds (after early stopping with
    restore, the best one) is marked. Draws on ``ax`` when given (``label``
    then prefixes the legend entries), else on a new Figure.

    Example:
        >>> import epochlab as el
        >>> h = el.fit(el.models.mlp(20), el.data.synthetic().train, epochs=3,
        ...            batch_size=32, validation_split=0.2, verbose=0)
        >>> fig = plot_curves(h, "loss")
        >>> fig.axes[0].get_xlabel()
        'epoch'
    """
    hist = history.history
    if metric not in hist and f"val_{metric}" not in hist:
        raise ValueError(f"No metric {metric!r} in this History; it has {sorted(hist)}.")
    if ax is None:
        fig, (ax,) = new_figure(7, 4)
    else:
        fig = ax.figure
    pre = f"{label}: " if label else ""
    epochs = range(1, len(history.epochs) + 1)
    if metric in hist:
        ax.plot(epochs, hist[metric], marker="o", ms=3, label=f"{pre}training {metric}")
    if f"val_{metric}" in hist:
        ax.plot(epochs, hist[f"val_{metric}"], marker="o", ms=3, label=f"{pre}validation {metric}")
    if history.weights_epoch is not None and history.weights_epoch < len(history.epochs) - 1:
        ax.axvline(history.weights_epoch + 1, color="grey", ls="--", lw=1,
                   label=f"{pre}weights kept (epoch {history.weights_epoch + 1})")
    ax.set_xlabel("epoch")
    integer_ticks(ax)
    ax.set_ylabel(metric_label(metric, history))
    ax.set_title(title or f"{metric} over epochs ({history.iterations_per_epoch} iterations each, "
                 f"{history.total_updates} updates)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_lr(history: History, path: str | os.PathLike | None = None, ax: Axes | None = None,
            label: str = "learning rate used") -> Figure:
    """The learning rate actually used at every iteration, epoch boundaries marked.

    Example:
        >>> import epochlab as el
        >>> h = el.fit(el.models.mlp(20), el.data.synthetic().train, epochs=2,
        ...            batch_size=32, verbose=0)
        >>> fig = plot_lr(h)
    """
    it = history.iterations
    if ax is None:
        fig, (ax,) = new_figure(7, 3.5)
    else:
        fig = ax.figure
    ax.plot([s + 1 for s in it["step"]], it["lr"], lw=1.2, label=label)
    ipe = history.iterations_per_epoch
    if ipe and len(history.epochs) <= 50:
        for e in range(1, len(history.epochs)):
            ax.axvline(e * ipe + 0.5, color="grey", lw=0.5, alpha=0.4,
                       label="epoch boundary" if e == 1 else None)
    ax.set_xlabel("iteration (optimizer update)")
    ax.set_ylabel("learning rate (per update)")
    ax.set_title("learning rate per iteration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
