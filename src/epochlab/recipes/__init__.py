"""Recipes: the seed's slides as runnable experiments, and the tour that runs them all.

- :func:`run_tour` (:mod:`~epochlab.recipes.tour`): every slide reproduced,
  corrected and written as one self-contained HTML page (``epochlab tour``).
- :func:`transfer_study` (:mod:`~epochlab.recipes.transfer`): slide 10
  measured, a pretrained backbone against training from scratch.

Recipes sit above the training loop, the sweeps, the store and the report;
nothing below imports them.
"""

from epochlab._lazy import attach as _lazy_attach
from epochlab.recipes.tour import FULL, QUICK, TourResult, run_tour, slides
from epochlab.recipes.transfer import epochs_to_reach, transfer_study

__all__ = ["FULL", "QUICK", "TourResult", "epochs_to_reach", "run_tour", "slides",
           "transfer_study"]

# Submodules load on first use as attributes too (`el.recipes.<module>`), as when the package
# imported them all.
__getattr__, __dir__ = _lazy_attach(__name__, {})
