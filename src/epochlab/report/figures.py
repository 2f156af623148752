"""Figures without pyplot: a new Figure, PNG bytes, files, and the check every figure must pass.

Every figure in epochlab is a :class:`matplotlib.figure.Figure` made here,
never through ``matplotlib.pyplot``: pyplot keeps global state (a figure
manager, the current backend), and switching its backend to Agg inside a
library would change a notebook user's backend behind their back. A bare
``Figure`` renders PNG through Agg on its own and is garbage-collected like
any object.

:func:`check_figure` states what a figure of the reports must have: a title,
labelled axes (with units in brackets where there are units) and a legend on
every axes that draws data; the HTML page refuses figures that lack them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["FigureCheckError", "check_figure", "integer_ticks", "new_figure", "png_bytes",
           "save_figure"]

DPI = 110


class FigureCheckError(ValueError):
    """A figure lacks a title, an axis label or a legend."""


def new_figure(width: float = 7.0, height: float = 4.0, ncols: int = 1) -> tuple[Figure, list]:
    """A Figure with ``ncols`` axes side by side, laid out automatically (no pyplot).

    Example:
        >>> fig, (ax,) = new_figure()
        >>> type(fig).__name__
        'Figure'
    """
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def integer_ticks(ax: object) -> None:
    """Whole numbers only on the x axis (epochs are counted, never 2.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # type: ignore[attr-defined]


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """``fig`` rendered as PNG.

    Example:
        >>> fig, (ax,) = new_figure(2, 2)
        >>> png_bytes(fig)[:4]
        b'\\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Write ``fig`` as a PNG at ``path`` (folders created); no-op for None. Returns ``fig``."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(png_bytes(fig))
    return fig


def check_figure(fig: Figure, name: str = "figure") -> None:
    """Raise :class:`FigureCheckError` unless every axes that draws data is fully labelled.

    A title (the axes' own or the figure's), an x and a y label, and a legend
    with at least one entry; colour-bar axes are exempt (they carry their own
    label).

    Example:
        >>> fig, (ax,) = new_figure()
        >>> _ = ax.plot([1, 2], [3, 4], label="loss")
        >>> check_figure(fig)
        Traceback (most recent call last):
        ...
        epochlab.report.figures.FigureCheckError: figure: axes 1 has no title, no x label, no y label, no legend
    """
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    for i, ax in enumerate(fig.axes, 1):
        if _is_colorbar(ax) or not (ax.lines or ax.images or ax.patches or ax.collections):
            continue
        missing = []
        if not (ax.get_title() or ax.get_title("left") or suptitle):
            missing.append("no title")
        if not ax.get_xlabel():
            missing.append("no x label")
        if not ax.get_ylabel():
            missing.append("no y label")
        legend = ax.get_legend()
        if legend is None or not legend.get_texts():
            missing.append("no legend")
        if missing:
            raise FigureCheckError(f"{name}: axes {i} has {', '.join(missing)}")


def _is_colorbar(ax: object) -> bool:
    return hasattr(ax, "_colorbar") or getattr(ax, "_label", "") == "<colorbar>"
