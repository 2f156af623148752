"""Pruning: on which axis trials are compared, the Optuna pruner, and the callback that asks it.

Each trial reports its validation metric at the end of every epoch. *Where*
on the axis it reports decides what the pruner compares:

- ``epochs``: the step is the epoch count. One epoch is every training row
  once, whatever the batch size, so this is also "equal samples seen".
- ``updates``: the step is the number of optimizer updates made. An epoch of
  batch 16 is 8x the updates of an epoch of batch 128, so at equal epochs a
  small batch has had many more steps to learn: compared by epochs, large
  batches look worse early and are pruned for it. Compared by updates, a
  batch-128 trial at epoch 8 meets a batch-16 trial at epoch 1.

``auto`` picks ``updates`` when the space searches the batch size and
``epochs`` otherwise (then both axes rank trials alike). Hyperband and
successive halving take their rungs on the same axis: the first rung at one
epoch of the smallest batch (every trial has reported by then), the last at
the longest run.

:class:`TrialPruning` is an ordinary :class:`~epochlab.callbacks.base.Callback`:
it reports in ``on_epoch_end`` and, when the pruner says so, sets
``trainer.stop("pruned", ...)``. The loop stops by that flag, as it does for
early stopping; nothing is raised inside the loop. The tuning driver turns
the stopped run into Optuna's ``TrialPruned`` afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from epochlab.callbacks.base import Callback
from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from epochlab.train.trainer import Trainer

__all__ = ["PRUNERS", "PRUNE_BY", "Budget", "TrialPruning", "make_budget", "make_pruner"]

PRUNERS = ("hyperband", "median", "successive-halving", "none")
PRUNE_BY = ("auto", "epochs", "updates")
REDUCTION_FACTOR = 3


@dataclass(frozen=True)
class Budget:
    """The axis trials are compared on, and its range.

    Attributes:
        by: ``"epochs"`` or ``"updates"``.
        reason: why this axis (printed by the CLI).
        min_resource: the first rung (Hyperband, successive halving) and the
            median pruner's warm-up, in steps of ``by``.
        max_resource: the longest a trial can run, in steps of ``by``.

    Example:
        >>> b = make_budget("auto", batch_sizes=[16, 128], max_epochs=10, n_train=640)
        >>> b.by, b.min_resource, b.max_resource
        ('updates', 40, 400)
        >>> b.step({"epoch": 2, "updates": 15})
        15
    """

    by: str
    reason: str
    min_resource: int
    max_resource: int

    def step(self, logs: dict[str, Any]) -> int:
        """The step an epoch row reports at."""
        return int(logs["epoch"]) + 1 if self.by == "epochs" else int(logs["updates"])


def make_budget(prune_by: str, *, batch_sizes: list[int], max_epochs: int, n_train: int) -> Budget:
    """The comparison axis for ``prune_by`` (``auto``, ``epochs`` or ``updates``).

    Args:
        prune_by: the axis asked for.
        batch_sizes: every batch size a trial can use.
        max_epochs: the most epochs a trial can run.
        n_train: training rows after the validation split.
    """
    if prune_by not in PRUNE_BY:
        raise ParameterError(f"The value of `prune_by` is {prune_by!r}, but must be one of {PRUNE_BY}.")
    ipe = [math.ceil(n_train / b) for b in batch_sizes]
    several = len(set(ipe)) > 1
    if prune_by == "auto":
        by = "updates" if several else "epochs"
        reason = ("auto: batch sizes differ, so trials are compared at equal optimizer updates"
                  if several else "auto: one batch size, so epochs and updates rank trials alike")
    else:
        by = prune_by
        reason = f"asked for (--prune-by {prune_by})"
        if by == "epochs" and several:
            reason += "; batch sizes differ, so small batches have made more updates at each epoch"
    if by == "epochs":
        return Budget("epochs", reason, 1, max_epochs)
    return Budget("updates", reason, max(ipe), max_epochs * max(ipe))


def make_pruner(name: str, budget: Budget, n_startup_trials: int = 5) -> optuna.pruners.BasePruner:
    """Optuna's pruner for ``name`` (:data:`PRUNERS`), with its rungs on ``budget``'s axis.

    Example:
        >>> b = make_budget("epochs", batch_sizes=[32], max_epochs=27, n_train=640)
        >>> type(make_pruner("hyperband", b)).__name__
        'HyperbandPruner'
    """
    import optuna

    if name not in PRUNERS:
        raise ParameterError(f"The value of `pruner` is {name!r}, but must be one of {PRUNERS}.")
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=budget.min_resource,
                                              max_resource=budget.max_resource,
                                              reduction_factor=REDUCTION_FACTOR)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=budget.min_resource,
                                                      reduction_factor=REDUCTION_FACTOR)
    if name == "median":
        # Before its first rung a trial is never pruned: every batch size gets one full
        # epoch of its own, and the median needs a few finished trials to mean anything.
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials,
                                           n_warmup_steps=budget.min_resource)
    return optuna.pruners.NopPruner()


class TrialPruning(Callback):
    """Report ``metric`` to an Optuna trial after every epoch; stop the run when it is pruned.

    The last planned epoch is reported but never pruned: the run is complete
    by then, and a complete run is not a pruned one.

    Attributes:
        pruned_at: the step (on ``budget``'s axis) where the trial was pruned, or None.
        reported: ``(step, value)`` pairs, in order.

    Example:
        >>> import optuna, epochlab as el
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study(direction="maximize")
        >>> trial = study.ask()
        >>> b = make_budget("epochs", batch_sizes=[32], max_epochs=3, n_train=640)
        >>> cb = TrialPruning(trial, "val_accuracy", b)
        >>> h = el.fit(el.models.mlp(20), el.data.synthetic().train, epochs=3, batch_size=32,
        ...            validation_split=0.2, callbacks=[cb], verbose=0)
        >>> [step for step, _ in cb.reported], cb.pruned_at, h.stop_reason
        ([1, 2, 3], None, 'completed')
    """

    def __init__(self, trial: optuna.Trial, metric: str, budget: Budget) -> None:
        self.trial = trial
        self.metric = metric
        self.budget = budget
        self.pruned_at: int | None = None
        self.reported: list[tuple[int, float]] = []

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self.pruned_at = None
        self.reported = []

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        value = float(logs.get(self.metric, math.nan))
        step = self.budget.step(logs)
        self.trial.report(value, step)
        self.reported.append((step, value))
        done = int(logs["epoch"]) + 1
        if done >= trainer.state.history.epochs_planned:
            return
        if self.trial.should_prune():
            self.pruned_at = step
            trainer.stop(
                "pruned",
                f"Pruned after epoch {done} ({int(logs['updates'])} updates): {self.metric} "
                f"{value:.4g} was not promising at {self.budget.by} {step}.",
            )
