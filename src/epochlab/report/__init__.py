"""Figures and reports: matplotlib Figures (never pyplot), PNG files, one-page HTML reports.

- :mod:`~epochlab.report.figures`: new figures, PNG bytes, the labelling check.
- :mod:`~epochlab.report.curves`: a History's curves (loss, metrics, learning rate).
- :mod:`~epochlab.report.heatmap`: a metric over two settings.
- :mod:`~epochlab.report.study`: a stored study as files or HTML sections.
- :mod:`~epochlab.report.html`: the self-contained page (advice on it comes from
  :mod:`epochlab.diagnose.advice`).
"""

from epochlab._lazy import attach as _lazy_attach
from epochlab.report.curves import plot_curves, plot_lr
from epochlab.report.heatmap import plot_heatmap

__all__ = ["plot_curves", "plot_heatmap", "plot_lr", "plot_metric_by"]

# Submodules load on first use as attributes too (`el.report.<module>`), as when the package
# imported them all; so does plot_metric_by (its module reads the store).
__getattr__, __dir__ = _lazy_attach(__name__, {"plot_metric_by": "epochlab.report.study"})
