"""Reduce the learning rate when a metric stops improving (epoch-level, stateful).

:class:`ReduceLROnPlateau` owns ``trainer.lr_scale``: the learning rate the
trainer uses is ``schedule(step, epoch) * lr_scale`` (``lr * lr_scale``
without a schedule), so the schedule stays a pure function and this callback
only multiplies it. A reduction happens at the end of an epoch and applies
from the next update on; each one is recorded (epoch, new learning rate) in
``history.extra["reduce_lr"]``, and the rate actually used stays visible per
iteration in ``history.iterations["lr"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from epochlab.callbacks.monitor import MonitorCallback, check_bool, check_float, check_int

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.trainer import Trainer

__all__ = ["ReduceLROnPlateau"]


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement.

    Args:
        monitor: the epoch metric to watch.
        factor: the multiplier, ``0 < factor < 1``.
        patience: epochs without improvement before a reduction (``0``: every
            epoch without improvement reduces).
        min_delta: an improvement must beat the best by more than this.
        cooldown: epochs ignored after a reduction (they neither count towards
            ``patience`` nor reduce); improvements in them still update the best.
        min_lr: the learning rate is never reduced below this (a reduction that
            would cross it stops at it; at it, no more reductions). A schedule
            that itself decays further is not clamped.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the name; raises when unclear).
        verbose: print a line for every reduction.

    After a run: ``reductions``, a list of ``{"epoch", "lr", "lr_scale", "value"}``
    (``epoch`` 0-based: the epoch at whose end the rate was cut).

    Example:
        >>> import epochlab as el
        >>> cb = el.ReduceLROnPlateau(factor=0.5, patience=0, min_delta=0.0)
        >>> h = el.fit(el.models.mlp(20), el.data.synthetic().train, epochs=6, batch_size=32,
        ...            validation_split=0.2, lr=0.05, callbacks=[cb], verbose=0)
        >>> len(h.extra["reduce_lr"]) == len(cb.reductions)
        True
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "auto",
        verbose: bool = False,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.factor = check_float("factor", factor, low=0.0, low_open=True, high=1.0,
                                  high_open=True)
        self.patience = check_int("patience", patience, 0)
        self.cooldown = check_int("cooldown", cooldown, 0)
        self.min_lr = check_float("min_lr", min_lr, low=0.0)
        self.verbose = check_bool("verbose", verbose)
        self.reset()

    def reset(self) -> None:
        self.best_value: float | None = None
        self.wait = 0
        self.cooldown_counter = 0
        self.reductions: list[dict[str, float]] = []

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        value = self.monitored_value(logs)
        # Checked before counting down, so `cooldown=c` ignores exactly c epochs (Keras'
        # counter reaches 0 in the c-th epoch and counts it, so its cooldown=1 does nothing).
        in_cooldown = self.cooldown_counter > 0
        if in_cooldown:
            self.cooldown_counter -= 1
            self.wait = 0
        best = self.worst() if self.best_value is None else self.best_value
        if self.is_improvement(value, best):
            self.best_value = value
            self.wait = 0
        elif not in_cooldown:
            self.wait += 1
            if self.wait >= self.patience:
                self._reduce(trainer, int(logs["epoch"]), value)
                self.cooldown_counter = self.cooldown
                self.wait = 0

    def _reduce(self, trainer: Trainer, epoch: int, value: float) -> None:
        s = trainer.state
        # The loop has already advanced the counters: this is the next update's base rate.
        base = s.schedule(s.global_step, s.epoch) if s.schedule is not None else s.base_lr
        old_lr = base * s.lr_scale
        if base <= 0 or old_lr <= self.min_lr * (1 + 1e-12):
            return  # at the floor already
        if old_lr * self.factor >= self.min_lr:
            scale = s.lr_scale * self.factor
        else:
            scale = self.min_lr / base
        trainer.lr_scale = scale
        new_lr = base * scale
        entry = {"epoch": epoch, "lr": new_lr, "lr_scale": scale, "value": value}
        self.reductions.append(entry)
        trainer.history.extra["reduce_lr"] = [dict(r) for r in self.reductions]
        if self.verbose:
            print(f"ReduceLROnPlateau: {self.monitor} has not improved for "
                  f"{self.wait} epoch(s); learning rate {old_lr:.4g} -> {new_lr:.4g} "
                  f"after epoch {epoch + 1}.")

    def state_dict(self) -> dict[str, Any]:
        """Best value, counters and reductions (``lr_scale`` itself is in the TrainState)."""
        return {"best_value": self.best_value, "wait": self.wait,
                "cooldown_counter": self.cooldown_counter,
                "reductions": [dict(r) for r in self.reductions]}

    def _load(self, state: dict[str, Any]) -> None:
        self.best_value = state["best_value"]
        self.wait = state["wait"]
        self.cooldown_counter = state["cooldown_counter"]
        self.reductions = [dict(r) for r in state["reductions"]]
