"""Running a sweep: plan, execute, record, resume.

:func:`sweep` is the driver. It creates (or finds) the study, turns runs left
``running`` by a dead process into ``interrupted`` (``reset_stale``), adds
every configuration as a run (idempotent by key), plans only the runs that
are not done yet (:mod:`epochlab.sweeps.plan`), hands the tasks to an
executor (:mod:`epochlab.sweeps.executors`), which runs
:func:`epochlab.sweeps.worker.execute_task` on each, and writes each task's
results to the store *as it finishes*. Only the driver writes, so a killed
worker cannot corrupt the store; a SIGKILLed driver leaves at most
``running`` runs, which the next call resets and reruns. Finished runs are
never redone.

A resumed sweep reruns ``interrupted`` and ``failed`` runs and keeps the
others (:data:`DONE`). Ctrl-C stops the sweep after recording what finished.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from epochlab.store.base import DONE, RunRecord, Store
from epochlab.store.memory import MemoryStore
from epochlab.sweeps.executors import ExecutorError, make_executor
from epochlab.sweeps.plan import Plan, Task, make_plan
from epochlab.sweeps.spec import SweepSpec
from epochlab.sweeps.worker import TaskOutcome, execute_task
from epochlab.sweeps.workload import build_model, load_data

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

__all__ = ["DONE", "SweepResult", "best_run", "metric_values", "sweep"]

SELECT = ("final", "best")


def metric_values(
    rows: Sequence[dict[str, float]], metric: str, mode: str, weights_epoch: int | None = None,
) -> dict[str, Any]:
    """``final`` (at the weights the run ends with), ``best`` (over epochs) and ``best_epoch``.

    ``final`` is the value at ``weights_epoch`` (the best epoch after early
    stopping with restore) or else at the last epoch; ``best`` is slide 13's
    max (or min) over all epochs. NaN when the metric is missing.

    Example:
        >>> metric_values([{"val_accuracy": 0.8}, {"val_accuracy": 0.7}], "val_accuracy", "max")
        {'final': 0.7, 'best': 0.8, 'best_epoch': 1}
    """
    values = [float(r.get(metric, math.nan)) for r in rows]
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return {"final": math.nan, "best": math.nan, "best_epoch": None}
    at = weights_epoch if weights_epoch is not None and weights_epoch < len(values) else -1
    pick = max if mode == "max" else min
    best, idx = pick(finite, key=lambda t: (t[0], -t[1]) if mode == "max" else (t[0], t[1]))
    return {"final": values[at], "best": best, "best_epoch": idx + 1}


@dataclass
class SweepResult:
    """What a sweep did and found.

    Attributes:
        study, study_id: the study the runs belong to.
        spec: the sweep's spec.
        plan: the plan of the whole grid (what is shared and fused with what).
        executed: the plan of what was trained in this call (only unfinished runs).
        runs: the grid's runs as stored after the sweep, in grid order.
        skipped: runs already done before this call.
        seconds: wall time of this call.
        best: the best run (see :func:`best_run`), or None.
    """

    study: str
    study_id: int
    spec: SweepSpec
    plan: Plan
    executed: Plan
    runs: list[RunRecord]
    skipped: int
    seconds: float
    best: RunRecord | None

    @property
    def trained(self) -> int:
        """Training runs executed in this call."""
        return self.executed.n_trained

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def best_run(
    store: Store, runs: Sequence[RunRecord], metric: str, mode: str = "max", select: str = "final",
) -> RunRecord | None:
    """The best done run by ``metric``; ties go to fewer total updates, then grid order.

    ``select="final"`` ranks by the value at the weights each run ends with;
    ``"best"`` by the best value over its epochs (slide 13's
    ``max(history['val_accuracy'])``, which favours longer runs because a
    longer run's epochs include a shorter one's).
    """
    if select not in SELECT:
        raise ValueError(f"The value of `select` is {select!r}, but must be one of {SELECT}.")
    scored = []
    for order, r in enumerate(runs):
        if r.status not in DONE:
            continue
        v = metric_values(store.epochs(r.id), metric, mode, r.summary.get("weights_epoch"))[select]
        if math.isfinite(v):
            scored.append(((-v if mode == "max" else v), r.summary.get("total_updates", 0), order, r))
    return min(scored, key=lambda t: t[:3])[3] if scored else None


def _preflight(spec: SweepSpec) -> None:
    """Load the data and build each distinct model once, so bad names fail before training."""
    seen = set()
    for c in spec.configs():
        if (c.model, c.batch_norm) in seen:
            continue
        seen.add((c.model, c.batch_norm))
        try:
            build_model(c, load_data(c))
        except (ValueError, TypeError) as e:
            raise ValueError(f"Cannot build model {c.model!r} on data {c.data!r}: {e}") from None


def sweep(
    spec: SweepSpec,
    store: Store | None = None,
    *,
    workers: int = 0,
    progress: bool = True,
    share_prefixes: bool = True,
    fuse: bool = True,
    select: str = "final",
    console: Console | None = None,
) -> SweepResult:
    """Run every configuration of ``spec`` that the store does not already hold as done.

    Args:
        spec: the grid.
        store: where runs are recorded; None uses a fresh in-memory store.
        workers: 0 trains in this process; N uses N spawned worker processes.
        progress: show a progress bar (runs done / total, ETA).
        share_prefixes: read shorter epoch counts off one longer training where exact.
        fuse: train runs that differ only in lr, seed, weight decay or schedule together
            (fused) where the model allows; False trains them one by one.
        select: ``"final"`` or ``"best"``: how :func:`best_run` ranks (see there).
        console: the rich Console for the progress bar.

    Raises:
        KeyboardInterrupt: after recording what finished, when training was interrupted.

    Example:
        >>> spec = SweepSpec(data="synthetic", data_options={"n_samples": 100},
        ...                  epochs=[1, 2], batch_size=[16, 32], name="doc")
        >>> result = sweep(spec, progress=False)
        >>> len(result.runs), result.trained, sorted(result.statuses().items())
        (4, 2, [('completed', 4)])
    """
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"`spec` must be a SweepSpec, got {type(spec).__name__}.")
    if store is None:
        store = MemoryStore()
    t0 = time.perf_counter()
    _preflight(spec)
    name = spec.study_name()
    sid = store.create_study(name, spec.to_dict())
    store.reset_stale(sid)
    configs = spec.configs()
    ids = {c.key: store.add_run(sid, c.key, c.settings) for c in configs}
    status = {r.key: r.status for r in store.runs(name)}
    todo = [c for c in configs if status[c.key] not in DONE]
    # With several workers, fused groups are split so that every worker gets some.
    per_task = None if workers <= 1 else max(2, math.ceil(len(todo) / workers))
    executed = make_plan(todo, share_prefixes=share_prefixes, fuse=fuse, max_members=per_task)
    with make_executor(workers) as executor, _progress(progress, console) as bar:
        job = bar.add_task("sweep", total=len(configs), completed=len(configs) - len(todo))

        def start(i: int) -> None:
            for c in executed.tasks[i].runs():
                store.start_run(ids[c.key])

        for i, out in executor.run(execute_task, executed.tasks, on_start=start):
            _record(store, ids, executed.tasks[i], out)
            bar.advance(job, len(executed.tasks[i].runs()))
            if isinstance(out, TaskOutcome) and out.interrupted:
                raise KeyboardInterrupt(f"Sweep {name!r} interrupted; run it again to resume.")
    by_key = {r.key: r for r in store.runs(name)}
    runs = [by_key[c.key] for c in configs]
    return SweepResult(
        study=name, study_id=sid, spec=spec, plan=make_plan(configs, share_prefixes=share_prefixes, fuse=fuse),
        executed=executed, runs=runs, skipped=len(configs) - len(todo),
        seconds=time.perf_counter() - t0,
        best=best_run(store, runs, spec.metric, spec.mode, select),
    )


def _record(store: Store, ids: dict[str, int], task: Task, out: TaskOutcome | ExecutorError) -> None:
    """Write a task's outcomes: trained runs first, so read-offs can point at them."""
    if isinstance(out, ExecutorError):
        for c in task.runs():
            store.finish_run(ids[c.key], "failed", {"error": out.message}, [])
        return
    for r in out.runs:
        src = None if r.trained_key is None else ids[r.trained_key]
        group = f"prefix-{ids[r.trained_key or r.key]}" if task.shared else None
        store.finish_run(ids[r.key], r.status, r.summary, r.epochs, r.iterations or None,
                         shared_from=src, group=group)


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def advance(self, *a: Any, **k: Any) -> None:
        return None


def _progress(show: bool, console: Console | None) -> Any:
    if not show:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("runs"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=False)
