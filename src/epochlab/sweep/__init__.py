"""Sweeps: many training configurations, planned and run together.

- :mod:`~epochlab.sweep.spec`: the grid (:class:`SweepSpec`) and one configuration (:class:`Config`).
- :mod:`~epochlab.sweep.plan`: which trainings to run (:func:`make_plan`): epoch-prefix
  sharing and fusion, and why not where not.
- :mod:`~epochlab.sweep.runner`: the driver (:func:`sweep`) that executes, records and resumes.
- :mod:`~epochlab.sweep.executors`: where tasks run (in process, process pool).
- :mod:`~epochlab.sweep.fused`: fused training, K configurations of one MLP as one
  vectorized model (:func:`train_fused`); :mod:`~epochlab.sweep.fused_runs` runs a fused
  task of a sweep.
"""

import sys
import types
from typing import Any

from epochlab.sweep.executors import Executor, InProcessExecutor, ProcessPoolExecutor
from epochlab.sweep.fused import FusedResult, train_fused
from epochlab.sweep.fused_ops import is_fusable
from epochlab.sweep.plan import Plan, Task, make_plan
from epochlab.sweep.runner import SweepResult, best_run, sweep
from epochlab.sweep.spec import Config, SweepSpec

__all__ = [
    "Config", "Executor", "FusedResult", "InProcessExecutor", "Plan", "ProcessPoolExecutor",
    "SweepResult", "SweepSpec", "Task", "best_run", "is_fusable", "make_plan", "sweep",
    "train_fused",
]


class _SweepModule(types.ModuleType):
    """Lets ``el.sweep(spec, store)`` call :func:`sweep` while ``el.sweep.fused`` stays a module."""

    def __call__(self, *args: Any, **kwargs: Any) -> SweepResult:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _SweepModule
