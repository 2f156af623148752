"""The worker side of a fused task: its members trained together, each recorded as ``fit`` would.

:func:`train_task_fused` is what :func:`epochlab.sweeps.worker.execute_task`
runs for a task with several members. It builds every member's model (seeded
with its seed, as one-by-one training does), trains them all at once with
:func:`epochlab.sweeps.fused.train_fused` and turns each member's result into
the :class:`~epochlab.train.history.History` that
``epochlab.fit(model, data.train, ...)`` returns for that configuration
alone, written by the same code: ``fit``'s data preparation (split, loss),
:func:`epochlab.train.loop.run_params` and the History's own recording
methods (steps, epochs, divergence, end); the early-stopping record and
(with ``restore=true``) the best epoch's weights. Test metrics, at every
read-out epoch and at the end, come from one stacked forward of all members
(:func:`~epochlab.sweeps.fused.stacked_evaluator`): those of
:func:`epochlab.evaluate` on each member's weights, to float rounding.

Early stopping is the real :class:`~epochlab.callbacks.EarlyStopping`, one
per member, driven through a small stand-in for the trainer
(:class:`_MemberTrainer`), so patience, ``min_delta``, baselines and the
restore follow exactly the code ``fit`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from epochlab import schedules
from epochlab.callbacks.early_stopping import parse as parse_early_stopping
from epochlab.sweeps.fused import EpochEnd, FusedResult, stacked_evaluator, train_fused
from epochlab.sweeps.plan import Task
from epochlab.sweeps.spec import Config
from epochlab.sweeps.workload import NO_SOURCES, Sources, build_model, has_test_split, load_data
from epochlab.train.accounting import iterations_per_epoch
from epochlab.train.history import History
from epochlab.train.loop import prepare_data, run_params

__all__ = ["train_task_fused"]


class _WeightsProxy:
    """The ``trainer.model`` early stopping sees: current weights in, restored weights out."""

    def __init__(self) -> None:
        self.current: Any = None  # a callable giving the member's weights now
        self.restored: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.current()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.restored = {k: v.clone() for k, v in state.items()}


class _MemberTrainer:
    """What :class:`EarlyStopping` uses of a Trainer, for one member of a fused task."""

    def __init__(self) -> None:
        self.model = _WeightsProxy()
        self.history = History()
        self.stop_training = False
        self.stop_reason: str | None = None

    def stop(self, reason: str, message: str = "") -> None:
        self.stop_training, self.stop_reason = True, reason
        if message:
            self.history.stop_message = message


def _lr(member: Config, total_steps: int) -> Any:
    """The member's learning rate: a float, or its schedule as ``fit`` binds it."""
    if member.schedule is None:
        return member.lr
    sched = schedules.parse(member.schedule).with_initial(float(member.lr))
    return sched.with_total_steps(total_steps)


def _params(member: Config, epochs: int) -> dict[str, Any]:
    """``history.params`` as ``fit`` records them for this configuration."""
    sched = None
    if member.schedule is not None:
        sched = schedules.parse(member.schedule).with_initial(float(member.lr))
    return run_params(
        epochs=epochs, batch_size=member.batch_size, validation_split=member.validation_split,
        validation_split_mode="random", shuffle=True, drop_last=False,
        optimizer=member.optimizer, lr=member.lr, weight_decay=member.weight_decay,
        momentum=0.0, seed=member.seed, schedule=sched,
    )


def train_task_fused(
    task: Task, sources: Sources = NO_SOURCES, between_epochs: Callable[[], bool] | None = None,
    built: dict[int, torch.nn.Module] | None = None,
) -> list[tuple[Config, History, dict[str, float], dict[int, dict[str, float]]]]:
    """Train every member of ``task`` at once; per member ``(member, history, test, read_outs)``.
    ``between_epochs``: as :func:`~epochlab.sweeps.fused.train_fused`'s. ``built``: models
    already built for some seeds (as :func:`~epochlab.sweeps.workload.build_model` builds
    them, untrained), used instead of building them again.

    ``test`` holds the test metrics of the weights the member ends with,
    ``read_outs`` those at each shorter read-out epoch, as
    :class:`epochlab.sweeps.worker.ReadOut` gives them one by one.

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> from epochlab.sweeps.plan import make_plan
        >>> spec = SweepSpec(data_options={"n_samples": 100}, epochs=[1, 2], lr=[1e-2, 1e-3])
        >>> task = make_plan(spec.configs()).tasks[0]
        >>> out = train_task_fused(task)
        >>> len(out), out[0][1].total_updates, sorted(out[0][3])
        (2, 4, [1])
    """
    members = task.members
    data = load_data(members[0], sources)
    # One build per seed: members share the architecture, so a seed gives the same weights.
    built = dict(built or {})
    for m in members:
        if m.seed not in built:
            built[m.seed] = build_model(m, data, sources)
    models = [built[m.seed] for m in members]
    # What fit prepares (checks, the loss for these targets, the split's sizes and kind) is
    # the same for every member: members share the data, the architecture and the
    # validation split, and a split's sizes do not depend on its seed.
    prep, spec = prepare_data(models[0], data.train, validation_split=members[0].validation_split,
                              validation_data=None, validation_split_mode="random", loss=None,
                              seed=members[0].seed)
    ipe = iterations_per_epoch(prep.n_train, members[0].batch_size, False)
    stoppers = [parse_early_stopping(m.early_stopping) if m.early_stopping else None for m in members]
    trainers = [_MemberTrainer() for _ in members]
    read_at = {e for e in task.read_outs if e < task.epochs}
    tests: list[dict[int, dict[str, float]]] = [{} for _ in members]
    # Every member's test metrics from one stacked forward (as the validation metrics), the
    # test rows converted once a task.
    test = _test_stack(models[0], data, spec.task)

    def hook(epoch: int, metrics: EpochEnd) -> np.ndarray | None:
        stop = np.zeros(len(members), dtype=bool)
        if epoch + 1 in read_at:
            active = [int(i) for i in metrics.active]
            for i, got in zip(active, test([metrics.weights(i) for i in active]), strict=True):
                tests[i][epoch + 1] = got
        for i in metrics.active:
            es = stoppers[i]
            if es is None:
                continue
            if epoch == 0:
                es.on_train_begin(trainers[i], {})
            trainers[i].model.current = lambda i=int(i): metrics.weights(i)
            logs = {"epoch": epoch, **{name: float(v[i]) for name, v in metrics.items()}}
            es.on_epoch_end(trainers[i], logs)
            stop[i] = trainers[i].stop_training
        return stop if stop.any() else None

    results = train_fused(
        models, data.x_train, data.y_train, epochs=task.epochs,
        batch_size=members[0].batch_size,
        lrs=[_lr(m, task.epochs * ipe) for m in members], seeds=[m.seed for m in members],
        optimizer=members[0].optimizer,  # type: ignore[arg-type]
        weight_decay=[m.weight_decay for m in members],
        validation_split=members[0].validation_split,
        on_epoch_end=hook if read_at or any(stoppers) else None,
        task=spec.task,  # the loss fit infers for these targets
        between_epochs=between_epochs,
    )
    histories, finals = [], []
    for i, (m, res) in enumerate(zip(members, results, strict=True)):
        h = _history(m, task, res, prep.split, spec)
        trainer = trainers[i]
        if res.status == "stopped":
            h.stop_message = trainer.history.stop_message
        h.extra.update(trainer.history.extra)
        final = res.state_dict
        if stoppers[i] is not None:
            trainer.history = h
            stoppers[i].on_train_end(trainer, {"stop_reason": h.stop_reason})
            final = trainer.model.restored or final
        histories.append(h)
        finals.append(final)
    return list(zip(members, histories, test(finals), tests, strict=True))


def _test_stack(arch: torch.nn.Module, data: Any, task: str,
                ) -> Callable[[list[dict[str, torch.Tensor]]], list[dict[str, float]]]:
    """Test metrics of many weight sets of ``arch`` at once (:func:`stacked_evaluator`); an
    empty dict each where the data has no test split, as :func:`test_metrics` gives."""
    if not has_test_split(data):
        return lambda states: [{} for _ in states]
    return stacked_evaluator(arch, data.x_test, data.y_test, task)


def _history(member: Config, task: Task, res: FusedResult, split: str, spec: Any) -> History:
    """``res`` as the History ``fit`` returns for ``member`` trained alone to ``task.epochs``."""
    h = History()
    h.loss_name, h.task, h.loss_reason = spec.name, spec.task, spec.reason
    h.start(n_train=res.n_train, n_val=res.n_val, batch_size=member.batch_size,
            iterations_per_epoch=res.iterations_per_epoch, epochs_planned=task.epochs,
            validation_split=split, params=_params(member, task.epochs))
    h = res.to_history(h)
    # The thread counts its epochs ran on: the worker's runtime record says them where they
    # are not its group's choice (a group that took its threads between epochs).
    h.extra["threads_by_epoch"] = threads_by_epoch(res.info.get("epoch_threads", [])[:res.epochs_done])
    return h


def threads_by_epoch(counts: list[int]) -> list[list[int]]:
    """``[[threads, epochs], ...]``: how many epochs in a row ran on each thread count.

    Example:
        >>> threads_by_epoch([1, 1, 2, 2, 1, 1, 1])
        [[1, 2], [2, 2], [1, 3]]
    """
    runs: list[list[int]] = []
    for c in counts:
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([c, 1])
    return runs
