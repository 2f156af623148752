"""The worker side of a sweep: train one task, return plain data per configuration.

:func:`execute_task` is what a worker runs (in this process, in a worker
process, or on a Ray node): load the data (cached per process), seed torch
with the configuration's seed, build the model, call :func:`epochlab.fit` to
the task's epoch count with a :class:`ReadOut` callback that evaluates the
test set at every shorter read-out, and return a :class:`TaskOutcome`: one
:class:`RunOutcome` per configuration, plain data the driver stores. The
loop knows nothing of this. A task of several members (fused, see
:mod:`epochlab.sweeps.plan`) trains them all at once
(:mod:`epochlab.sweeps.fused_runs`) and returns the same plain data per
configuration, plus ``summary["fused"]`` (the task and its member count).

Outcomes: ``completed``, ``early_stopped``, ``diverged`` (fit does not raise
on divergence; the sweep goes on), ``interrupted`` (Ctrl-C) and ``failed``
(the run raised; the message is kept and the sweep goes on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from epochlab import schedules
from epochlab.callbacks.base import Callback
from epochlab.callbacks.early_stopping import parse as parse_early_stopping
from epochlab.data.base import DataBundle
from epochlab.store.record import status_of, summarize
from epochlab.sweeps.fused_runs import train_task_fused
from epochlab.sweeps.plan import Task
from epochlab.sweeps.spec import Config
from epochlab.sweeps.workload import (
    NO_SOURCES,
    Sources,
    build_model,
    load_data,
    test_metrics,
    train_data,
)
from epochlab.train import runtime
from epochlab.train.accounting import iterations_per_epoch
from epochlab.train.data import probe_rows
from epochlab.train.history import History, threads_text
from epochlab.train.loop import fit

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.trainer import Trainer

__all__ = ["ReadOut", "RunOutcome", "TaskOutcome", "checkpoint_dir", "execute_task",
           "remove_checkpoints", "read_off"]


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
        if not getattr(self, "_resumed", False):
            self.test = {}
        self._resumed = False

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        done = int(logs["epoch"]) + 1
        if done in self.at:
            with trainer.callers_layout():  # as the shorter run is tested once fit returns
                self.test[done] = test_metrics(trainer.model, self.data)

    def state_dict(self) -> dict[str, Any]:
        """The read-outs already taken, so a resumed run still reports them."""
        return {"test": {e: dict(m) for e, m in self.test.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.test = {int(e): dict(m) for e, m in state["test"].items()}
        self._resumed = True


# A sweep run saves at an epoch's end once this long has passed since its last save. Every
# epoch cost 2.2x the time of a 4-run MLP sweep on synthetic data (0.47 s -> 1.04 s, a save
# ~14 ms against epochs of a few ms); a killed run loses at most this much work.
CHECKPOINT_EVERY = "30s"


def checkpoint_dir(root: str | Path, task: Task, member: Config) -> Path:
    """The folder under ``root`` where ``member``'s training in ``task`` keeps its checkpoints.

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> c = SweepSpec(epochs=[15]).configs()[0]
        >>> t = Task(label="t1", members=(c,), epochs=15, read_outs=(5, 15))
        >>> checkpoint_dir("ck", t, c).name == checkpoint_dir("ck", t, c).name
        True
    """
    what = f"{task.trained(member).key}|{sorted(task.read_outs)}"
    return Path(root) / hashlib.sha256(what.encode()).hexdigest()[:20]


def remove_checkpoints(root: str | Path | None, task: Task) -> None:
    """Delete the checkpoints of ``task``'s members (their runs are recorded)."""
    if root is None or not os.path.isdir(root):  # none saved yet (fused tasks save none)
        return
    for member in task.members:
        shutil.rmtree(checkpoint_dir(root, task, member), ignore_errors=True)


def _train(member: Config, task: Task, sources: Sources, threads: object = "auto",
           precision: str = "auto", checkpoint_root: str | None = None,
           ) -> tuple[History, dict[str, float], dict[int, dict]]:
    data = load_data(member, sources)
    model = build_model(member, data, sources)
    read_out = ReadOut([e for e in task.read_outs if e < task.epochs], data)
    callbacks: list[Callback] = [read_out]
    if member.early_stopping is not None:
        callbacks.append(parse_early_stopping(member.early_stopping))
    history = fit(
        model, train_data(data), epochs=task.epochs, batch_size=member.batch_size,
        validation_split=member.validation_split, optimizer=member.optimizer, lr=member.lr,
        schedule=schedules.parse(member.schedule) if member.schedule else None,
        weight_decay=member.weight_decay, callbacks=callbacks, seed=member.seed, verbose=0,
        threads=threads, precision=precision,
        # Killed mid-run, the sweep run again continues this training where it was.
        checkpoint_dir=checkpoint_dir(checkpoint_root, task, member) if checkpoint_root else None,
        checkpoint_every=CHECKPOINT_EVERY, resume=checkpoint_root is not None,
    )
    return history, test_metrics(model, data), read_out.test


def read_off(h: History, e: int) -> History:
    """The History a separate ``e``-epoch run has: the first ``e`` epochs of ``h``."""
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
        # How it trained (threads, precision) holds for its first epochs too, but for the
        # threads of a group that changed them mid-run; other extras (a callback's events)
        # may be about later epochs.
        extra={"runtime": _first_epochs(h.extra["runtime"], e)} if "runtime" in h.extra else {},
    )


def _first_epochs(rt: dict[str, Any], e: int) -> dict[str, Any]:
    """The runtime record of a run's first ``e`` epochs: where its group changed threads
    mid-run (``threads_by_epoch``), the counts those epochs ran on."""
    runs = rt.get("threads_by_epoch")
    if not runs:
        return rt
    used, left = [], e
    for n, k in runs:
        if left <= 0:
            break
        used.append([n, min(k, left)])
        left -= k
    rt = dict(rt)
    if len(used) > 1:
        rt["threads_by_epoch"] = used
        return rt
    del rt["threads_by_epoch"]
    rt["threads"] = n = used[0][0]
    rt["threads_reason"] = (f"{threads_text(n)}: its {e} epoch"
                            f"{'s' if e != 1 else ''} ran before the group it trained in took "
                            f"{runs[-1][0]} ({rt['threads_reason']})")
    return rt


def _relabel(h: History, e: int) -> History:
    """``h`` as a run planned for ``e`` epochs (it stopped before ``e``: identical otherwise)."""
    d = h.to_dict()
    d.update(epochs_planned=e, params={**h.params, "epochs": e})
    return History.from_dict(d)


def _summary(h: History, test: dict[str, float]) -> dict[str, Any]:
    """The store's summary (:func:`epochlab.store.summarize`) plus the test metrics."""
    summary = summarize(h)
    summary.update(test=test, n_train=h.n_train, n_val=h.n_val, batch_size=h.batch_size,
                   epochs_planned=h.epochs_planned, weights_epoch=h.weights_epoch,
                   stop_message=h.stop_message, runtime=h.extra.get("runtime"))
    if h.extra.get("resume"):  # where a killed run's training was continued
        summary["resumed"] = h.extra["resume"]
    return summary


def _outcome(config: Config, h: History, test: dict, trained_key: str | None) -> RunOutcome:
    # The History's own rows and columns, not copies (~70,000 values for slide 5's 12 runs):
    # it was made for this outcome and nothing changes it after (read-offs copy what they take).
    return RunOutcome(config.key, status_of(h), _summary(h, test), h.epochs, dict(h.iterations),
                      trained_key)


def execute_task(task: Task, sources: Sources = NO_SOURCES, threads: object = "auto",
                 precision: str = "auto", checkpoint_root: str | None = None) -> TaskOutcome:
    """Train every member of ``task`` and read it out at every requested epoch count.

    ``threads`` and ``precision`` are :func:`epochlab.fit`'s; a fused task
    chooses its threads from the work of all its members together, and trains
    its members one by one when they are to run in bf16 (the fused path
    computes in float32): with ``precision="bf16"``, or with ``"auto"`` on a
    CPU with native bf16 when a member's step is larger than
    :data:`epochlab.train.runtime.FUSED_FP32_MAX_MACS` (smaller ones finish
    sooner fused in float32).

    With ``checkpoint_root`` a member trained by ``fit`` saves its whole state
    at every epoch's end under :func:`checkpoint_dir` and resumes from there
    when the task runs again after a kill (fused tasks start over: they are
    short, and several members share one training).

    A task of several members trains them together (fused, see
    :mod:`epochlab.sweeps.fused_runs`); one member trains with ``fit``. A run
    that raises becomes ``failed`` outcomes (with the message) for all of
    that member's configurations (for a fused task: all members'); Ctrl-C
    inside training gives ``interrupted`` for what was not reached, and exact
    results for read-outs already passed (a fused task: all ``interrupted``).
    """
    t0 = time.perf_counter()
    if task.fused:
        choice, later, model = _fused_runtime(task, sources, threads, precision)
        if choice.precision in ("fp32", "fp64"):
            return _execute_fused(task, t0, sources, choice, later,
                                  built={task.members[0].seed: model})
    outcomes: list[RunOutcome] = []
    interrupted = False
    for member in task.members:
        try:
            h, test_end, tests = _train(member, task, sources, threads, precision,
                                        checkpoint_root)
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


def _fused_runtime(task: Task, sources: Sources, threads: object, precision: str,
                   ) -> tuple[runtime.RuntimeChoice, _LaterThreads | None, torch.nn.Module]:
    """Threads for all members' work together, and the precision the members would use;
    with the choice to make between epochs where the threads wait on a reading; and the
    first member's model it was chosen from (built as training builds it, only probed in
    eval mode: training takes it as that seed's model)."""
    member = task.members[0]
    data = load_data(member, sources)
    model = build_model(member, data, sources)
    prec, why, channels_last = runtime.choose_precision(model, precision)
    pinned = runtime.check_threads(threads)
    rows = probe_rows(data, model)
    if prec == "bf16":
        fuse, fuse_why = runtime.fused_or_one_by_one(model, rows, member.batch_size, precision)
        if fuse:  # small members: together in float32 they finish before bf16 one by one
            prec, why, channels_last = "fp32", fuse_why, False
    macs = (runtime.macs_per_step(model, rows, member.batch_size) * len(task.members)
            if pinned is None else 0)
    run_macs = macs * task.epochs * _steps_per_epoch(data, member)
    group = f"{len(task.members)} members trained together: "
    if pinned is None and run_macs < runtime.FUSED_THREADS_MIN_RUN:
        n, n_why = 1, (f"a short run ({run_macs / 1e9:.2g} G multiply-adds in all): a 2nd "
                       "thread would not buy back the 30 ms reading of idle cores it takes")
    elif (pinned is None and prec in ("fp32", "fp64") and macs >= 2 * runtime.FUSED_MACS_PER_THREAD
          and min(torch.get_num_threads(), runtime.usable_cores()) > 1
          and not any(isinstance(m, runtime.THREAD_SENSITIVE_LAYERS) for m in model.modules())):
        start = runtime.RuntimeChoice(
            1, group + "1 thread: the run ended before the reading of idle cores was in",
            prec, why, channels_last)
        return start, _LaterThreads(start, macs, group), model
    else:
        n, n_why = runtime.choose_threads(macs, threads,
                                          per_thread=runtime.FUSED_MACS_PER_THREAD)
    if pinned is None:
        n_why = group + n_why
    return runtime.RuntimeChoice(n, n_why, prec, why, channels_last), None, model


class _LaterThreads:
    """A fused group's thread choice made without waiting for the reading of idle cores.

    The group starts on 1 thread; before the first epoch that begins once the reading
    spans its window (:func:`~epochlab.train.runtime.idle_window_left`), it takes the
    threads :func:`~epochlab.train.runtime.choose_threads` gives. This saves the wait (up
    to 30 ms a sweep command) and changes no number: the fused engine's ops for a group
    without convolutions and batch norms (batched matmuls, per-member sums, layer norms)
    gave the same bits on 1 and 2 threads for every MLP tried (``docs/notes/speed-targets.md``;
    a test checks a switch mid-run). The engine calls it between epochs (``between_epochs``);
    :attr:`choice` is what was chosen; each run's record says which of its epochs ran on
    which count (:func:`_runtime_of`).
    """

    def __init__(self, choice: runtime.RuntimeChoice, macs: int, group: str) -> None:
        self.choice = choice
        self._macs, self._group, self._ceiling = macs, group, torch.get_num_threads()
        runtime.start_idle_window()  # keeps one the sweep began less than 0.1 s ago

    def __call__(self) -> bool:
        if runtime.idle_window_left() > 0.0:
            return False
        n, why = runtime.choose_threads(self._macs, ceiling=self._ceiling,
                                        per_thread=runtime.FUSED_MACS_PER_THREAD)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        self.choice = dataclasses.replace(self.choice, threads=n,
                                          threads_reason=f"{self._group}{why}")
        return True


def _runtime_of(choice: runtime.RuntimeChoice, runs: list[list[int]] | None) -> dict[str, Any]:
    """A fused run's runtime record: its group's ``choice``, with the thread counts its own
    epochs ran on (``runs``: ``[[threads, epochs], ...]``, see
    :func:`~epochlab.sweeps.fused_runs.threads_by_epoch`). A group that took its threads
    between epochs ran its first epochs on 1 thread; a run that ended before, or that
    trained in a later memory chunk, ran all its epochs on one count."""
    rt = choice.as_dict()
    if not runs:
        return rt
    if len(runs) > 1:
        first = runs[0][1]
        rt["threads"] = runs[-1][0]
        rt["threads_reason"] += (f" (its first {first} epoch{'s' if first != 1 else ''} ran on "
                                 f"{threads_text(runs[0][0])} while "
                                 "idle cores were read)")
        rt["threads_by_epoch"] = runs
    elif runs[0][0] != choice.threads:
        n = runs[0][0]
        rt["threads"] = n
        rt["threads_reason"] = (f"{threads_text(n)}: its epochs ended before "
                                f"its group took {choice.threads} ({choice.threads_reason})")
    return rt


def _steps_per_epoch(data: Any, member: Config) -> int:
    """About how many steps an epoch of ``member`` takes (for the thread choice's estimate)."""
    try:
        rows = len(data.x_train)
    except (AttributeError, TypeError):
        return 1
    n_train = max(1, int(rows * (1.0 - member.validation_split)))
    return iterations_per_epoch(n_train, member.batch_size, False)


def _execute_fused(task: Task, t0: float, sources: Sources,
                   choice: runtime.RuntimeChoice | None = None,
                   later: _LaterThreads | None = None,
                   built: dict[int, torch.nn.Module] | None = None) -> TaskOutcome:
    try:
        with runtime.using_threads(choice.threads) if choice is not None else nullcontext():
            trained = train_task_fused(task, sources, between_epochs=later, built=built)
    except KeyboardInterrupt:
        outcomes = [RunOutcome(c.key, "interrupted", {"stop_reason": "interrupted"})
                    for m in task.members for c in _member_runs(task, m)]
        return TaskOutcome(task.label, outcomes, time.perf_counter() - t0, True)
    except Exception as e:
        outcomes = [o for m in task.members for o in _failed(task, m, e)]
        return TaskOutcome(task.label, outcomes, time.perf_counter() - t0)
    outcomes = []
    fused = {"task": task.label, "members": len(task.members)}
    if later is not None:
        choice = later.choice
    for member, h, test_end, tests in trained:
        runs = h.extra.pop("threads_by_epoch", None)
        if choice is not None:
            h.extra["runtime"] = _runtime_of(choice, runs)
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
            outcomes.append(_outcome(c, read_off(h, e), tests.get(e, {}), trained.key))
        elif h.stop_reason == "diverged":  # a separate e-epoch run diverges at the same step
            outcomes.append(_outcome(c, _relabel(h, e), test_end, trained.key))
        else:  # interrupted before epoch e: nothing known about it
            outcomes.append(RunOutcome(c.key, "interrupted", {"stop_reason": "interrupted"}))
    return outcomes


def _member_runs(task: Task, member: Config) -> list[Config]:
    return [member.with_epochs(e) for e in sorted(task.read_outs, reverse=True)]
