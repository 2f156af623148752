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

import contextlib
import dataclasses
import functools
import hashlib
import math
import os
import pickle
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from epochlab.data.base import DataBundle
from epochlab.store.base import DONE, Finished, RunRecord, Store
from epochlab.store.memory import MemoryStore
from epochlab.store.record import check_study, ensure_study, warn_other_precision
from epochlab.sweeps.executors import ExecutorError, make_executor
from epochlab.sweeps.plan import Plan, Task, make_plan
from epochlab.sweeps.ranking import SELECT, EpochsReadOnce, best_run, metric_values
from epochlab.sweeps.spec import Config, SweepSpec
from epochlab.sweeps.worker import TaskOutcome, execute_task, remove_checkpoints
from epochlab.sweeps.workload import (
    NO_SOURCES,
    Sources,
    build_model,
    has_test_split,
    load_data,
    user_inputs,
)
from epochlab.train.accounting import validation_count
from epochlab.train.data import check_forward, probe_rows
from epochlab.train.history import History
from epochlab.train.loop import check_batch_norm_batches, evaluation_data
from epochlab.train.runtime import check_precision, check_threads, own_precision, start_idle_window
from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

__all__ = [
    "DONE", "SweepResult", "best_run", "check_picklable", "metric_values", "preflight", "sweep",
]

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
        store: the store the runs are in.
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
    store: Store | None = field(default=None, repr=False)
    # The epoch rows this call recorded, by run id: what the store gives back, without reading
    # and decoding them again for the ranking and the report (600 rows for slide 5's grid).
    recorded: dict[int, list[dict[str, float]]] = field(default_factory=dict, repr=False,
                                                         compare=False)

    def epochs(self, run: RunRecord | int) -> list[dict[str, float]]:
        """The epoch rows of ``run`` (a record of :attr:`runs` or its id), as the store has them."""
        rid = run if isinstance(run, int) else run.id
        if rid in self.recorded:
            return [dict(row) for row in self.recorded[rid]]
        if self.store is None:
            raise ValueError("This SweepResult has no store to read runs from.")
        return self.store.epochs(rid)

    def history(self, run: RunRecord | int) -> History:
        """The History of ``run`` (a record of :attr:`runs` or its id), rebuilt from the store.

        Its epochs, iterations, accounting, params and callbacks' findings are
        those the run recorded; a run that failed or was interrupted before
        finishing has none, which raises ``ValueError``.
        """
        if self.store is None:
            raise ValueError("This SweepResult has no store to read runs from.")
        rid = run if isinstance(run, int) else run.id
        rec = self.store.run(rid)
        s = rec.summary
        if rec.status not in DONE or "total_updates" not in s:
            raise ValueError(
                f"Run {rid} is {rec.status}: it has no History (its summary: {s.get('error', s)})."
            )
        known = {f for f in History.__dataclass_fields__}
        h = History(**{k: v for k, v in s.items() if k in known and k not in (
            "params", "extra", "epochs", "iterations")})
        h.params, h.extra = dict(s.get("params", {})), dict(s.get("extra", {}))
        h.epochs = self.store.epochs(rid)
        h.iterations.update(self.store.iterations(rid))
        return h

    @property
    def trained(self) -> int:
        """Training runs executed in this call."""
        return self.executed.n_trained

    def statuses(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.runs:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def preflight(spec: SweepSpec, sources: Sources = NO_SOURCES) -> SweepSpec:
    """Load the data and build each distinct model once, so bad names fail before training.

    The CLI calls it before it creates the store, so a refused sweep leaves no file.

    The ranking metric is checked too: it must be one the runs will log
    (``loss``, ``accuracy`` for classification, and their ``val_`` forms when
    there is a validation split), or the whole grid would train for nothing.
    Returns the spec with its metric decided from the data when it was left None
    (:meth:`SweepSpec.for_task`). The spec it returned, given back with the same
    ``sources`` (the CLI's check, then the sweep's), is returned as it is: checked already.

    Example:
        >>> preflight(SweepSpec(data="synthetic", model="cnn"))
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: Cannot build model 'cnn' on data 'synthetic': ...
    """
    if _checked and _checked[0]() is spec and _checked[1]() is sources:
        return spec
    seen: dict[tuple[str, bool], Any] = {}
    batches = set()
    data = None
    for c in spec.configs():
        if (c.model, c.batch_norm) in seen:
            if isinstance(data, DataBundle) and (c.batch_size, c.validation_split) not in batches:
                batches.add((c.batch_size, c.validation_split))
                _check_batches(seen[(c.model, c.batch_norm)], data, c)
            continue
        data = load_data(c, sources)
        try:
            model = seen[(c.model, c.batch_norm)] = build_model(c, data, sources)
        except (ValueError, TypeError) as e:
            raise ParameterError(f"Cannot build model {c.model!r} on data {c.data!r}: {e}") from None
        check_forward(model, data, c.model, c.data)  # a model that cannot take the data
        if isinstance(data, DataBundle):
            batches.add((c.batch_size, c.validation_split))
            _check_batches(model, data, c)
        if isinstance(data, DataBundle):
            # The values and labels, checked as fit and evaluate check them, so that a bad
            # one fails the command before the store exists, not every run (the test split,
            # evaluated after training, only after all of it).
            splits = [("training rows", (data.x_train, data.y_train), "training data")]
            if has_test_split(data):
                splits.append(("test split", (data.x_test, data.y_test), "evaluation data"))
            for name, xy, where in splits:
                try:
                    evaluation_data(model, xy, where=where)
                except (ParameterError, ValueError) as e:
                    raise ParameterError(f"The {name} of the data {c.data!r} cannot be used "
                                         f"with the model {c.model!r}: {e}") from None
    task = getattr(data, "task", None)
    spec = spec.for_task(task)
    if task is not None:
        logged = ["loss"] + (["accuracy"] if task in ("binary", "multiclass") else [])
        logged += [f"val_{m}" for m in logged] if spec.validation_split > 0 else []
        if spec.metric not in logged:
            hint = (" (validation metrics need validation_split > 0)"
                    if spec.metric.startswith("val_") and spec.validation_split == 0 else "")
            raise ParameterError(
                f"The value of `metric` is {spec.metric!r}, but the runs of this sweep log "
                f"only: {', '.join(logged)}{hint}."
            )
    _checked[:] = [weakref.ref(spec), weakref.ref(sources)]
    return spec


def _check_batches(model: nn.Module, data: DataBundle, c: Config) -> None:
    """A batch size that leaves batch norm a last batch of one row, refused as fit does."""
    n = len(data.x_train)
    try:
        check_batch_norm_batches(model, n - validation_count(n, c.validation_split),
                                 c.batch_size, drop_last=False, x_probe=probe_rows(data, model),
                                 can_drop_last=False)
    except ParameterError as e:
        raise ParameterError(f"Batch size {c.batch_size} with the model {c.model!r}: {e}") from None


# The last spec preflight returned and its sources, weakly (they may hold a user's data):
# the same objects are not checked twice.
_checked: list[weakref.ref] = []


@contextlib.contextmanager
def study_lock(store: Store, name: str) -> Iterator[bool]:
    """Hold the study for this driver; wait while another live driver holds it.

    Two drivers of one study on one store would each take the other's
    running runs for stale ones and train them twice. The lock is a POSIX
    record lock on one byte of ``<store>.lock`` (one byte per study name), so
    a driver that dies, even by SIGKILL, releases it at once. Yields whether
    it had to wait. Stores without a file (memory) need no lock.
    """
    path = getattr(store, "path", None)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no record locks; one driver at a time
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None:
        yield False
        return
    offset = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % (2**31 - 1)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    waited = False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            waited = True
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
        yield waited
    finally:
        os.close(fd)  # releases the lock


def check_picklable(sources: Sources, workers: int) -> None:
    """With worker processes, ``make_model`` and the data must pickle; say how to fix it if not.

    Example:
        >>> from epochlab.sweeps.workload import Sources
        >>> check_picklable(Sources(models={"m": lambda: None}), workers=2)
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: `make_model` (<lambda>) cannot be sent to worker processes ...
    """
    if workers == 0:
        return
    for make_model in sources.models.values():
        name = getattr(make_model, "__qualname__", type(make_model).__name__)
        module = getattr(make_model, "__module__", None)
        why = None
        try:
            pickle.loads(pickle.dumps(make_model))
        except Exception as e:  # pickling raises many types (PicklingError, AttributeError, ...)
            why = f"{type(e).__name__}: {e}"
        else:
            main = sys.modules.get("__main__")
            if module == "__main__" and not getattr(main, "__file__", None):
                why = "it is defined in an interactive session, which worker processes cannot import"
        if why is not None:
            raise ParameterError(
                f"`make_model` ({name}) cannot be sent to worker processes ({why}). Define it "
                "with `def` at the top level of a module (a .py file the workers can import), "
                "not as a lambda or a function inside another function; or use workers=0."
            )
    for fp, data in sources.data.items():
        try:
            pickle.dumps(data)
        except Exception as e:
            raise ParameterError(
                f"The data ({fp}) cannot be sent to worker processes ({type(e).__name__}: {e}); "
                "pass arrays or a Dataset defined at module level, or use workers=0."
            ) from None


def sweep(
    spec_or_make_model: SweepSpec | Callable[[], nn.Module] | str,
    data_or_store: Any = None,
    /,
    *,
    epochs: int | Sequence[int] | None = None,
    batch_size: int | Sequence[int] | None = None,
    lr: float | Sequence[float] | None = None,
    seed: int | Sequence[int] | None = None,
    weight_decay: float | Sequence[float] | None = None,
    schedule: str | Sequence[str | None] | None = None,
    optimizer: str | Sequence[str] | None = None,
    validation_split: float = 0.2,
    early_stopping: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    store: Store | None = None,
    name: str | None = None,
    workers: int = 0,
    progress: bool = True,
    share_prefixes: bool = True,
    fuse: bool = True,
    select: str = "final",
    console: Console | None = None,
    sources: Sources | None = None,
    threads: int | str | None = "auto",
    precision: str = "auto",
    executor: str = "local",
    ray_address: str | None = None,
) -> SweepResult:
    """Train every configuration of a grid (those not already done in the store).

    Two forms:

    - ``sweep(make_model, data, epochs=..., batch_size=..., lr=..., seed=...)``:
      your own model and data. Each configuration is exactly
      ``torch.manual_seed(seed); model = make_model()`` then
      ``epochlab.fit(model, data, epochs=..., batch_size=..., lr=...,
      validation_split=..., seed=seed, ...)``, so any run can be reproduced
      by hand: bit for bit with ``fuse=False``; runs trained fused (stacked
      into one model) agree with it to float rounding (the same sums in
      another order, ~1e-7 in float32). Fused runs compute in float32: where
      ``precision="auto"`` would give the same run by hand bfloat16 (a CPU or GPU
      with native bf16 and a convolutional model; the plan and each run's
      ``summary["runtime"]`` say which), compare with
      ``fit(..., precision="fp32")``. ``make_model`` is a zero-argument callable returning an
      ``nn.Module`` (a registry model name also works); ``data`` is
      ``(X, y)``, a DataBundle, a map-style Dataset or a registry name.
      Swept settings take a value or a list; run keys carry a fingerprint of
      the data and the model, so a rerun finds its finished runs.
    - ``sweep(spec, store)``: a :class:`SweepSpec` of registry names (with
      ``sources`` for user data or models it names by fingerprint, as the
      CLI's files and ``module:function`` models).

    Args:
        epochs, batch_size, lr, seed, weight_decay, schedule, optimizer: the
            swept settings (defaults 10, 32, 1e-3, 0, 0.0, none, "adam").
        validation_split: fraction of the rows held out (seeded, stratified).
        early_stopping: e.g. ``"val_loss:patience=5,restore=true"``.
        metric, mode: what picks the best run; default ``val_accuracy``/max
            for classification, ``val_loss``/min for regression (``accuracy`` and
            ``loss`` with ``validation_split=0``).
        store: where runs are recorded; None uses a fresh in-memory store.
        name: the study's name; None makes one from the settings.
        workers: 0 trains in this process; N uses N spawned worker processes
            (``make_model`` must then be a module-level function).
        progress: show a progress bar (runs done / total, ETA).
        share_prefixes: read shorter epoch counts off one longer training where exact.
        fuse: train runs that differ only in lr, seed, weight decay or schedule together
            (fused) where the model's structure allows; False trains them one by one.
        select: ``"final"`` or ``"best"``: how :func:`best_run` ranks (see there).
        console: the rich Console for the progress bar.
        threads, precision: as :func:`epochlab.fit` takes them, for every run; a
            fused group chooses threads from its members' work together.
            Worker processes (``workers >= 1``) and Ray tasks start with one thread each
            (``threads=N`` gives each N).
        executor: ``"local"`` (this process, or ``workers`` processes) or ``"ray"``:
            every task a Ray task (:mod:`epochlab.sweeps.ray_executor`); the
            data and ``make_model`` go once into Ray's object store, results
            come back here, and only this process writes the store.
        ray_address: the Ray cluster to join (None: a local Ray with ``workers``
            CPUs, or all of them).

    Raises:
        KeyboardInterrupt: after recording what finished, when training was interrupted.

    Example:
        >>> import numpy as np, torch
        >>> from torch import nn
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 4)).astype(np.float32); y = (X[:, 0] > 0).astype(np.int64)
        >>> def make_model():
        ...     return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 1))
        >>> result = sweep(make_model, (X, y), epochs=2, lr=[1e-3, 1e-2], progress=False)
        >>> len(result.runs), result.plan.tasks[0].fused, len(result.history(result.best).epochs)
        (2, True, 2)
        >>> spec = SweepSpec(data="synthetic", data_options={"n_samples": 100},
        ...                  epochs=[1, 2], batch_size=[16, 32], name="doc")
        >>> result = sweep(spec, progress=False)
        >>> len(result.runs), result.trained, sorted(result.statuses().items())
        (4, 2, [('completed', 4)])
    """
    start_idle_window()  # the thread choice's reading runs while the sweep sets up
    check_threads(threads)
    check_precision(precision)
    if isinstance(spec_or_make_model, SweepSpec):
        swept = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                     weight_decay=weight_decay, schedule=schedule, optimizer=optimizer)
        given = [n for n, v in swept.items() if v is not None]
        if given:
            raise ParameterError(
                f"With a SweepSpec, {', '.join(given)} belong in the spec, not in sweep()."
            )
        if data_or_store is not None and store is not None:
            raise ParameterError("The store was given twice (second argument and `store=`).")
        return _run(spec_or_make_model, store if store is not None else data_or_store,
                    sources or NO_SOURCES, workers=workers, progress=progress,
                    share_prefixes=share_prefixes, fuse=fuse, select=select, console=console,
                    threads=threads, precision=precision, executor=executor,
                    ray_address=ray_address)
    if data_or_store is None:
        raise ParameterError(
            "The value of `data` is missing: sweep(make_model, data, ...) needs (X, y), a "
            "DataBundle, a Dataset or a dataset name."
        )
    user = user_inputs(spec_or_make_model, data_or_store)
    spec = SweepSpec(
        data=user.data, model=user.model, data_fingerprint=user.data_fingerprint,
        model_fingerprint=user.model_fingerprint,
        epochs=10 if epochs is None else epochs, batch_size=32 if batch_size is None else batch_size,
        lr=1e-3 if lr is None else lr, seed=0 if seed is None else seed,
        weight_decay=0.0 if weight_decay is None else weight_decay,
        schedule=(None,) if schedule is None else (
            (schedule,) if isinstance(schedule, str) else schedule),
        optimizer="adam" if optimizer is None else optimizer,
        validation_split=validation_split, early_stopping=early_stopping,
        metric=metric, mode=mode,
        name=name,
    )
    return _run(spec, store, user.sources, workers=workers, progress=progress,
                share_prefixes=share_prefixes, fuse=fuse, select=select, console=console,
                threads=threads, precision=precision, executor=executor, ray_address=ray_address)


def _run(spec: SweepSpec, store: Store | None, sources: Sources, *, workers: int,
         progress: bool, share_prefixes: bool, fuse: bool, select: str,
         console: Console | None, threads: object = "auto",
         precision: str = "auto", executor: str = "local",
         ray_address: str | None = None) -> SweepResult:
    """Plan what the store does not hold as done, execute it, record it, pick the best."""
    if store is None:
        store = MemoryStore()
    if select not in SELECT:
        raise ParameterError(f"The value of `select` is {select!r}, but must be one of {SELECT}.")
    t0 = time.perf_counter()
    check_picklable(sources, 1 if executor == "ray" else workers)
    spec = preflight(spec, sources)
    name = spec.study_name()
    check_study(store, name, spec.to_dict())  # before waiting for another driver
    with study_lock(store, name) as waited, own_precision():
        if waited and console is not None:
            console.print(f"(waited for another sweep of study {name!r} to finish)", markup=False)
        return _run_locked(spec, store, sources, name, t0, workers=workers, progress=progress,
                           share_prefixes=share_prefixes, fuse=fuse, select=select,
                           console=console, threads=threads, precision=precision,
                           executor=executor, ray_address=ray_address)


def _run_locked(spec: SweepSpec, store: Store, sources: Sources, name: str, t0: float, *,
                workers: int, progress: bool, share_prefixes: bool, fuse: bool, select: str,
                console: Console | None, threads: object, precision: str, executor: str,
                ray_address: str | None) -> SweepResult:
    sid = ensure_study(store, name, spec.to_dict())
    store.reset_stale(sid)  # safe: this driver holds the study
    configs = spec.configs()
    ids = dict(zip((c.key for c in configs),
                   store.add_runs(sid, [(c.key, c.settings) for c in configs]), strict=True))
    stored = {r.key: r for r in store.runs(name)}
    todo = [c for c in configs if stored[c.key].status not in DONE]
    warn_other_precision([stored[c.key] for c in configs if stored[c.key].status in DONE],
                         precision, "give the sweep another study name (name=, or --study)",
                         stacklevel=5)
    in_flight: set[int] = set()  # started, not yet recorded
    recorded: dict[int, list[dict[str, float]]] = {}
    try:
        with make_executor(workers, executor, ray_address) as ex, \
                _progress(progress, console) as bar:
            # With several workers, fused groups are split so that every worker gets some.
            per_task = None if ex.slots <= 1 else max(2, math.ceil(len(todo) / ex.slots))
            executed = make_plan(todo, share_prefixes=share_prefixes, fuse=fuse,
                                 max_members=per_task, sources=sources, precision=precision)
            if executor == "ray":
                # Registry datasets travel with the work (once, in the object store), so a
                # worker on another machine needs no copy of them. A Ray task starts with one
                # torch thread, which threads="auto" keeps.
                loaded = {(c.data, c.data_options): load_data(c, sources)
                          for c in todo if c.data_fingerprint is None}
                sources = dataclasses.replace(sources, loaded=loaded)
            ckpt = _checkpoint_root(store, name, executor)
            work = functools.partial(execute_task, sources=sources, threads=threads,
                                     precision=precision, checkpoint_root=ckpt)
            job = bar.add_task("sweep", total=len(configs), completed=len(configs) - len(todo))

            def start(i: int) -> None:
                run_ids = [ids[c.key] for c in executed.tasks[i].runs()]
                store.start_runs(run_ids)  # a task's runs together
                in_flight.update(run_ids)

            for i, out in ex.run(work, executed.tasks, on_start=start):
                _record(store, ids, executed.tasks[i], out)
                if isinstance(out, TaskOutcome):
                    recorded.update((ids[r.key], r.epochs) for r in out.runs)
                if isinstance(out, TaskOutcome) and not out.interrupted:
                    remove_checkpoints(ckpt, executed.tasks[i])  # recorded: no longer needed
                in_flight.difference_update(ids[c.key] for c in executed.tasks[i].runs())
                bar.advance(job, len(executed.tasks[i].runs()))
                if isinstance(out, TaskOutcome) and out.interrupted:
                    raise KeyboardInterrupt(f"Sweep {name!r} interrupted; run it again to resume.")
    except KeyboardInterrupt:
        # Runs a worker was still training when Ctrl-C came are interrupted, not running.
        for rid in sorted(in_flight):
            if store.run(rid).status == "running":
                store.finish_run(rid, "interrupted", {
                    "stop_reason": "interrupted",
                    "stop_message": "Interrupted (Ctrl-C) while a worker trained it."}, [])
        raise
    _remove_empty(ckpt)
    by_key = {r.key: r for r in store.runs(name)}
    runs = [by_key[c.key] for c in configs]
    return SweepResult(
        study=name, study_id=sid, spec=spec,
        # The whole grid's plan: the one just executed when it was the whole grid, unsplit.
        plan=executed if len(todo) == len(configs) and per_task is None else make_plan(
            configs, share_prefixes=share_prefixes, fuse=fuse, sources=sources,
            precision=precision),
        executed=executed, runs=runs, skipped=len(configs) - len(todo),
        seconds=time.perf_counter() - t0,
        best=best_run(EpochsReadOnce(store, recorded), runs, spec.metric, spec.mode, select),
        store=store, recorded=recorded,
    )


def _checkpoint_root(store: Store, study: str, executor: str) -> str | None:
    """``<store file>.checkpoints/<study>``: beside a store file, for local workers.

    A MemoryStore forgets its runs with the process, so there is nothing to
    resume; Ray tasks may run on machines that do not share this folder.
    """
    path = getattr(store, "path", None)
    if path is None or executor == "ray":
        return None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in study)
    return str(Path(path).with_name(Path(path).name + ".checkpoints") / safe)


def _remove_empty(folder: str | None) -> None:
    # The study's folder, then the store's, once every run's checkpoints are gone.
    for p in ([Path(folder), Path(folder).parent] if folder else []):
        try:
            p.rmdir()
        except OSError:  # not empty (a run to resume), or never created
            return


def _record(store: Store, ids: dict[str, int], task: Task, out: TaskOutcome | ExecutorError) -> None:
    """Write a task's outcomes: trained runs first, so read-offs can point at them."""
    if isinstance(out, ExecutorError):
        store.finish_runs([Finished(ids[c.key], "failed", {"error": out.message}, [])
                           for c in task.runs()])
        return
    finished = []
    for r in out.runs:
        src = None if r.trained_key is None else ids[r.trained_key]
        group = f"prefix-{ids[r.trained_key or r.key]}" if task.shared else None
        finished.append(Finished(ids[r.key], r.status, r.summary, r.epochs, r.iterations or None,
                                 shared_from=src, group=group))
    store.finish_runs(finished)  # one transaction a task


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
