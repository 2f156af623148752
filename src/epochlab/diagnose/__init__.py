"""Diagnoses that answer the seed's questions in one short run, and advice on finished runs.

- :mod:`epochlab.diagnose.advice`: best epoch, overfitting onset, convergence
  (one run); best batch size and learning rate (a sweep). Pure functions.
- :mod:`epochlab.diagnose.lr_find`: the learning-rate range test over several
  seeds (fused where the model allows), its suggestion rules, and
  :func:`~epochlab.diagnose.lr_find.lr_sweep`, the short sweep that checks it.
- :mod:`epochlab.diagnose.noise_scale`: the gradient noise scale
  (McCandlish et al. 2018) as a callback, and batch-size advice from it.
"""

from typing import TYPE_CHECKING

from epochlab._lazy import attach

# Loaded on first use: `advice` is pure functions, and the report reads it without
# loading torch through `lr_find`.
__getattr__, __dir__ = attach(__name__, {
    **dict.fromkeys(("Advice", "RunResult", "advise_history", "advise_runs", "format_advice",
                     "runs_from_store"), "epochlab.diagnose.advice"),
    **dict.fromkeys(("RULES", "LRFindResult", "LRSweep", "lr_find", "lr_sweep"),
                    "epochlab.diagnose.lr_find"),
    **dict.fromkeys(("GradientNoiseScale", "batch_size_advice"),
                    "epochlab.diagnose.noise_scale"),
}, submodules=("advice", "lr_find", "noise_scale"))

if TYPE_CHECKING:
    from epochlab.diagnose.advice import (
        Advice,
        RunResult,
        advise_history,
        advise_runs,
        format_advice,
        runs_from_store,
    )
    from epochlab.diagnose.lr_find import RULES, LRFindResult, LRSweep, lr_find, lr_sweep
    from epochlab.diagnose.noise_scale import GradientNoiseScale, batch_size_advice

__all__ = ["RULES", "Advice", "GradientNoiseScale", "LRFindResult", "LRSweep", "RunResult",
           "advise_history", "advise_runs", "batch_size_advice", "format_advice", "lr_find",
           "lr_sweep", "runs_from_store"]
