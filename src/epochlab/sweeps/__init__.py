"""Sweeps: many training configurations, planned and run together.

Imports run one way: ``spec -> workload -> plan -> worker -> driver``.

- :mod:`~epochlab.sweeps.spec`: the grid (:class:`SweepSpec`) and one configuration (:class:`Config`).
- :mod:`~epochlab.sweeps.workload`: a configuration's data loaded and model built.
- :mod:`~epochlab.sweeps.plan`: which trainings to run (:func:`make_plan`): epoch-prefix
  sharing and fusion, and why not where not.
- :mod:`~epochlab.sweeps.worker`: train one task, return plain data per configuration
  (:mod:`~epochlab.sweeps.fused_runs` for a fused task).
- :mod:`~epochlab.sweeps.driver`: :func:`sweep`, which plans, executes, records and resumes.
- :mod:`~epochlab.sweeps.executors`: where tasks run (in process, process pool).
- :mod:`~epochlab.sweeps.fused` and :mod:`~epochlab.sweeps.fused_ops`: fused training,
  K configurations of one model as one vectorized model (:func:`train_fused`).
"""

from typing import TYPE_CHECKING

from epochlab._lazy import attach

# Loaded on first use (the spec and the plan without the fused engine, torch's optimizers).
__getattr__, __dir__ = attach(__name__, {
    **dict.fromkeys(("SweepResult", "sweep"), "epochlab.sweeps.driver"),
    **dict.fromkeys(("best_run", "metric_values"), "epochlab.sweeps.ranking"),
    **dict.fromkeys(("Executor", "InProcessExecutor", "ProcessPoolExecutor"),
                    "epochlab.sweeps.executors"),
    **dict.fromkeys(("FusedResult", "train_fused"), "epochlab.sweeps.fused"),
    "is_fusable": "epochlab.sweeps.fused_layers",
    **dict.fromkeys(("Plan", "Task", "make_plan"), "epochlab.sweeps.plan"),
    **dict.fromkeys(("Config", "SweepSpec"), "epochlab.sweeps.spec"),
}, submodules=("driver", "executors", "fused", "fused_conv", "fused_layers", "fused_ops",
               "fused_runs", "plan", "ranking", "ray_executor", "spec", "worker", "workload"))

if TYPE_CHECKING:
    from epochlab.sweeps.driver import SweepResult, best_run, metric_values, sweep
    from epochlab.sweeps.executors import Executor, InProcessExecutor, ProcessPoolExecutor
    from epochlab.sweeps.fused import FusedResult, train_fused
    from epochlab.sweeps.fused_layers import is_fusable
    from epochlab.sweeps.plan import Plan, Task, make_plan
    from epochlab.sweeps.spec import Config, SweepSpec

__all__ = [
    "Config", "Executor", "FusedResult", "InProcessExecutor", "Plan", "ProcessPoolExecutor",
    "SweepResult", "SweepSpec", "Task", "best_run", "is_fusable", "make_plan", "metric_values",
    "sweep", "train_fused",
]
