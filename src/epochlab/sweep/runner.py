"""Running a sweep: plan, execute, record, resume.

:func:`sweep` is the driver. It creates (or finds) the study, turns runs left
``running`` by a dead process into ``interrupted`` (``reset_stale``), adds
every configuration as a run (idempotent by key), plans only the runs that
are not done yet (:mod:`epochlab.sweep.plan`), hands the tasks to an executor
(:mod:`epochlab.sweep.executors`) and writes each task's results to the store
*as it finishes*. Only the driver writes, so a killed worker cannot corrupt
the store; a SIGKILLed driver leaves at most ``running`` runs, which the next
call resets and reruns. Finished runs are never redone.

:func:`execute_task` is what a worker runs: load the data (cached per
process), seed torch with the configuration's seed, build the model, call
:func:`epochlab.fit` to the task's epoch count with a :class:`ReadOut`
callback that evaluates the test set at every shorter read-out, and return
plain data per configuration. The loop knows nothing of this. A task of
several members (fused, see :mod:`epochlab.sweep.plan`) trains them all at
once (:mod:`epochlab.sweep.fused_runs`) and returns the same plain data per
configuration, plus ``summary["fused"]`` (the task and its member count).

Outcomes: ``completed``, ``early_stopped``, ``diverged`` (fit does not raise
on divergence; the sweep goes on), ``interrupted`` (Ctrl-C; the sweep stops
after recording what finished) and ``failed`` (the run raised; the message
is stored and the sweep goes on). A resumed sweep reruns ``interrupted`` and
``failed`` runs and keeps the others (:data:`DONE`).
"""

from __future__ import annotations

import functools
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from epochlab.callbacks.base import Callback
from epochlab.store.base import DONE, RunRecord, Store
from epochlab.store.record import status_of
from epochlab.sweep.executors import ExecutorError, make_executor
from epochlab.sweep.plan import Plan, Task, make_plan
from epochlab.sweep.spec import Config, SweepSpec

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from epochlab.data.base import DataBundle
    from epochlab.train.history import History
    from epochlab.train.trainer import Trainer

__all__ = [
    "DONE", "ReadOut", "RunOutcome", "SweepResult", "TaskOutcome", "best_run", "execute_task",
    "metric_values", "sweep",
]

SELECT = ("final", "best")


# -- the worker side --------------------------------------------------------------------------
@dataclass
class RunOutcome:
    """One configuration's result, as plain data the driver stores."""

    key: str
    status: str
    summary: dict[str, Any]
    epochs: list[dict[str, float]] = field(default_factory=list)
    iterations: dict[str, list] = field(default_factory=dict)
    trained_key: str | None = None  # the run this one was read off; None when trained itself


@dataclass
class TaskOutcome:
    """Every configuration a task produced, the trained ones first."""

    label: str
    runs: list[RunOutcome]
    seconds: float
    interrupted: bool = False


class ReadOut(Callback):
    """Test metrics of the model as it is at the end of the given epochs (1-based counts).

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic(n_samples=100)
        >>> ro = ReadOut([1], d)
        >>> _ = el.fit(el.models.mlp(20), d.train, epochs=2, batch_size=32, callbacks=[ro],
        ...            verbose=0)
        >>> sorted(ro.test[1])
        ['accuracy', 'loss']
    """

    def __init__(self, epochs: Sequence[int], data: DataBundle) -> None:
        self.at = set(epochs)
        self.data = data
        self.test: dict[int, dict[str, float]] = {}

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self.test = {}

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        done = int(logs["epoch"]) + 1
        if done in self.at:
            self.test[done] = _test_metrics(trainer.model, self.data)


def _test_metrics(model: torch.nn.Module, data: DataBundle) -> dict[str, float]:
    from epochlab.train.loop import evaluate

    return evaluate(model, data) if len(data.x_test) else {}


@functools.lru_cache(maxsize=4)
def _load(name: str, options: tuple[tuple[str, Any], ...]) -> DataBundle:
    from epochlab.data.registry import load

    return load(name, **dict(options))


def load_data(config: Config) -> DataBundle:
    """The configuration's dataset, loaded once per process."""
    return _load(config.data, config.data_options)


def build_model(config: Config, data: DataBundle) -> torch.nn.Module:
    """Seed torch with the configuration's seed, then build its model (same seed, same weights)."""
    from epochlab.models.registry import build

    torch.manual_seed(config.seed)
    return build(config.model, data, **({"batch_norm": True} if config.batch_norm else {}))


def _train(member: Config, task: Task) -> tuple[History, dict[str, float], dict[int, dict]]:
    from epochlab import schedules
    from epochlab.train.loop import fit

    data = load_data(member)
    model = build_model(member, data)
    read_out = ReadOut([e for e in task.read_outs if e < task.epochs], data)
    callbacks: list[Callback] = [read_out]
    if member.early_stopping is not None:
        from epochlab.callbacks.early_stopping import parse

        callbacks.append(parse(member.early_stopping))
    history = fit(
        model, data.train, epochs=task.epochs, batch_size=member.batch_size,
        validation_split=member.validation_split, optimizer=member.optimizer, lr=member.lr,
        schedule=schedules.parse(member.schedule) if member.schedule else None,
        weight_decay=member.weight_decay, callbacks=callbacks, seed=member.seed, verbose=0,
    )
    return history, _test_metrics(model, data), read_out.test


def _read_off(h: History, e: int) -> History:
    """The History a separate ``e``-epoch run has: the first ``e`` epochs of ``h``."""
    from epochlab.train.history import History

    rows = [dict(r) for r in h.epochs[:e]]
    n = int(rows[-1]["updates"])
    return History(
        n_train=h.n_train, n_val=h.n_val, batch_size=h.batch_size,
        iterations_per_epoch=h.iterations_per_epoch, epochs_planned=e, total_updates=n,
        samples_seen=int(rows[-1]["samples_seen"]), stop_reason="completed",
        loss_name=h.loss_name, task=h.task, loss_reason=h.loss_reason,
        validation_split=h.validation_split, weights_epoch=e - 1,
        params={**h.params, "epochs": e}, epochs=rows,
        iterations={k: list(v[:n]) for k, v in h.iterations.items()},
    )


def _relabel(h: History, e: int) -> History:
    """``h`` as a run planned for ``e`` epochs (it stopped before ``e``: identical otherwise)."""
    from epochlab.train.history import History

    d = h.to_dict()
    d.update(epochs_planned=e, params={**h.params, "epochs": e})
    return History.from_dict(d)


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


def _summary(h: History, test: dict[str, float]) -> dict[str, Any]:
    """The store's summary (:func:`epochlab.store.summarize`) plus the test metrics."""
    from epochlab.store.record import summarize

    summary = summarize(h)
    summary.update(test=test, n_train=h.n_train, n_val=h.n_val, batch_size=h.batch_size,
                   epochs_planned=h.epochs_planned, weights_epoch=h.weights_epoch,
                   stop_message=h.stop_message)
    return summary


def _outcome(config: Config, h: History, test: dict, trained_key: str | None) -> RunOutcome:
    return RunOutcome(config.key, status_of(h), _summary(h, test),
                      [dict(r) for r in h.epochs], {k: list(v) for k, v in h.iterations.items()},
                      trained_key)


def execute_task(task: Task) -> TaskOutcome:
    """Train every member of ``task`` and read it out at every requested epoch count.

    A task of several members trains them together (fused, see
    :mod:`epochlab.sweep.fused_runs`); one member trains with ``fit``. A run
    that raises becomes ``failed`` outcomes (with the message) for all of
    that member's configurations (for a fused task: all members'); Ctrl-C
    inside training gives ``interrupted`` for what was not reached, and exact
    results for read-outs already passed (a fused task: all ``interrupted``).
    """
    t0 = time.perf_counter()
    if task.fused:
        return _execute_fused(task, t0)
    outcomes: list[RunOutcome] = []
    interrupted = False
    for member in task.members:
        try:
            h, test_end, tests = _train(member, task)
        except Exception as e:
            outcomes += _failed(task, member, e)
            continue
        outcomes += _member_outcomes(task, member, h, test_end, tests)
        interrupted |= h.stop_reason == "interrupted"
    return TaskOutcome(task.label, outcomes, time.perf_counter() - t0, interrupted)


def _failed(task: Task, member: Config, e: Exception) -> list[RunOutcome]:
    msg = f"{type(e).__name__}: {e}"
    tb = traceback.format_exc(limit=-3)
    return [RunOutcome(c.key, "failed", {"error": msg, "traceback": tb})
            for c in _member_runs(task, member)]


def _execute_fused(task: Task, t0: float) -> TaskOutcome:
    from epochlab.sweep.fused_runs import train_task_fused

    try:
        trained = train_task_fused(task)
    except KeyboardInterrupt:
        outcomes = [RunOutcome(c.key, "interrupted", {"stop_reason": "interrupted"})
                    for m in task.members for c in _member_runs(task, m)]
        return TaskOutcome(task.label, outcomes, time.perf_counter() - t0, True)
    except Exception as e:
        outcomes = [o for m in task.members for o in _failed(task, m, e)]
        return TaskOutcome(task.label, outcomes, time.perf_counter() - t0)
    outcomes = []
    fused = {"task": task.label, "members": len(task.members)}
    for member, h, test_end, tests in trained:
        for o in _member_outcomes(task, member, h, test_end, tests):
            o.summary["fused"] = fused
            outcomes.append(o)
    return TaskOutcome(task.label, outcomes, time.perf_counter() - t0)


def _member_outcomes(task: Task, member: Config, h: History, test_end: dict,
                     tests: dict[int, dict]) -> list[RunOutcome]:
    """The trained run of ``member``, then every shorter read-out, as outcomes."""
    trained = task.trained(member)
    outcomes = [_outcome(trained, h, test_end, None)]
    for e in sorted(task.read_outs, reverse=True)[1:]:
        c = member.with_epochs(e)
        if len(h.epochs) >= e:
            outcomes.append(_outcome(c, _read_off(h, e), tests.get(e, {}), trained.key))
        elif h.stop_reason == "diverged":  # a separate e-epoch run diverges at the same step
            outcomes.append(_outcome(c, _relabel(h, e), test_end, trained.key))
        else:  # interrupted before epoch e: nothing known about it
            outcomes.append(RunOutcome(c.key, "interrupted", {"stop_reason": "interrupted"}))
    return outcomes


def _member_runs(task: Task, member: Config) -> list[Config]:
    return [member.with_epochs(e) for e in sorted(task.read_outs, reverse=True)]


# -- the driver --------------------------------------------------------------------------------
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
        from epochlab.store.memory import MemoryStore

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
