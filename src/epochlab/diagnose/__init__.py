"""Diagnoses that answer the seed's questions in one short run, and advice on finished runs.

- :mod:`epochlab.diagnose.advice`: best epoch, overfitting onset, convergence
  (one run); best batch size and learning rate (a sweep). Pure functions.
"""

from epochlab.diagnose.advice import (
    Advice,
    RunResult,
    advise_history,
    advise_runs,
    format_advice,
    runs_from_store,
)

__all__ = ["Advice", "RunResult", "advise_history", "advise_runs", "format_advice",
           "runs_from_store"]
