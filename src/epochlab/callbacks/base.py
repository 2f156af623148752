"""The callback protocol: one hook signature, no-op defaults, stop by flag.

The training loop (:mod:`epochlab.train.loop`) owns *when* hooks run; a
callback owns *what* it does then. Every hook has the same signature,
``hook(self, trainer, logs)``:

- ``trainer`` is the :class:`~epochlab.train.trainer.Trainer`: its
  ``state`` (model, optimizer, counters, History), ``stop_training`` flag
  and ``lr_scale`` are what a callback may read and change.
- ``logs`` is a dict of floats: for batch hooks the step record
  (``step``, ``epoch``, ``loss``, ``lr``, ``grad_norm``, ``batch_size``),
  for epoch hooks the epoch's row (``loss``, ``val_loss``, metrics, ``lr``,
  ``updates``, ``time``), for train hooks the accounting summary.

Order of hooks in one run::

    on_train_begin
      on_epoch_begin                 (epoch e, 0-based inside, 1-based in messages)
        on_batch_begin / on_batch_end   for every iteration
      validation (if any), then the epoch row is appended to the History
      on_epoch_end                   (sees the epoch's validation metrics)
    on_train_end                     (always, also after early stopping,
                                      divergence and Ctrl-C)

Within one hook, callbacks run in the order they were given. To stop, set
``trainer.stop_training = True`` (and optionally ``trainer.stop_reason``);
the loop checks the flag after every batch and every epoch. Callbacks never
raise to stop. A callback resets its own state in ``on_train_begin`` so one
instance can be reused across runs.

Batch hooks cost time on every iteration, so the loop calls them only on
callbacks that override them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.trainer import Trainer

HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_batch_begin",
    "on_batch_end",
)


class Callback:
    """Base class of no-op hooks; override the ones you need.

    Example:
        >>> class PrintLR(Callback):
        ...     def on_epoch_end(self, trainer, logs):
        ...         print(f"epoch {trainer.state.epoch}: lr {logs['lr']:.4g}")

    A callback that writes files or prints sets ``rank_zero_only = True``:
    training data-parallel, ``fit`` then runs it in rank 0's process only.
    Callbacks that steer training (early stopping) run on every rank and see
    the same metrics there, so every rank makes the same decision.
    """

    rank_zero_only: ClassVar[bool] = False

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        """Called once before the first epoch; reset per-run state here."""

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        """Called once when training ends, whatever the reason."""

    def on_epoch_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        """Called at the start of every epoch."""

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        """Called after the epoch's validation, with the epoch's row."""

    def on_batch_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        """Called before every iteration (only if overridden)."""

    def on_batch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        """Called after every iteration with its step record (only if overridden)."""

    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs of this callback (JSON- or tensor-valued).

        Callbacks that keep no state leave this alone; a checkpoint then holds nothing
        for them and does not require them on resume.
        """
        return {}

    def state_key(self) -> str:
        """The stable key this callback's state is saved under: class name, plus monitor.

        Example:
            >>> import epochlab as el
            >>> el.EarlyStopping("val_accuracy").state_key()
            'EarlyStopping(val_accuracy)'
        """
        monitor = getattr(self, "monitor", None)
        name = type(self).__name__
        return f"{name}({monitor})" if isinstance(monitor, str) else name

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def _overrides(cb: Callback, hook: str) -> bool:
    impl = getattr(type(cb), hook, None)
    return impl is not None and impl is not getattr(Callback, hook)


class CallbackList:
    """Dispatches each hook to the callbacks that implement it, in order."""

    def __init__(self, callbacks: list[Callback]) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ParameterError(
                    f"callbacks must be epochlab.Callback instances, got {type(cb).__name__}"
                )
        self.callbacks = list(callbacks)
        self._by_hook = {h: [getattr(cb, h) for cb in callbacks if _overrides(cb, h)] for h in HOOKS}

    def wants(self, hook: str) -> bool:
        """True when some callback overrides ``hook`` (used to skip batch hooks)."""
        return bool(self._by_hook[hook])

    def call(self, hook: str, trainer: Trainer, logs: dict[str, Any]) -> None:
        for fn in self._by_hook[hook]:
            fn(trainer, logs)
