"""Tuning: an Optuna search whose trials are epochlab runs, pruned epoch by epoch.

- :mod:`~epochlab.tuning.space`: the search space (``lr=loguniform(1e-4,1e-1),...``),
  parsed and checked.
- :mod:`~epochlab.tuning.pruning`: the axis trials are compared on (epochs or
  updates), Optuna's pruners, and the callback that reports every epoch and
  stops a pruned run by flag.
- :mod:`~epochlab.tuning.driver`: :func:`tune`, the driver: storage, study,
  trials, resume.

The package is ``tuning`` so that ``el.tune`` is a plain function (as
``el.sweep`` is, with its package named ``sweeps``).
"""

from epochlab._lazy import attach as _lazy_attach
from epochlab.tuning.driver import SAMPLERS, TrialRow, TuneResult, tune
from epochlab.tuning.pruning import (
    PRUNE_BY,
    PRUNERS,
    Budget,
    TrialPruning,
    make_budget,
    make_pruner,
)
from epochlab.tuning.space import Param, SearchSpace, parse_space
from epochlab.tuning.trial import train_trial

__all__ = [
    "PRUNERS", "PRUNE_BY", "SAMPLERS", "Budget", "Param", "SearchSpace", "TrialPruning",
    "TrialRow", "TuneResult", "make_budget", "make_pruner", "parse_space", "train_trial", "tune",
]

# Submodules load on first use as attributes too (`el.tuning.<module>`), as when the package
# imported them all.
__getattr__, __dir__ = _lazy_attach(__name__, {})
