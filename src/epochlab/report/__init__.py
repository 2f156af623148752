"""Figures and reports: matplotlib (Agg backend), written as PNG files."""

from epochlab.report.curves import plot_curves, plot_lr

__all__ = ["plot_curves", "plot_lr"]
