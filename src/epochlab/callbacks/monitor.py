"""The shared base of callbacks that watch one metric: monitor, mode, min_delta.

:class:`MonitorCallback` owns three questions that EarlyStopping,
ModelCheckpoint and ReduceLROnPlateau all ask the same way:

- *Which way is better?* ``mode="min"`` or ``"max"``; ``"auto"`` reads the
  metric's name (``loss``/``error``/``mae``/``mse`` -> min, ``accuracy``/
  ``acc``/``auc``/``f1``/``precision``/``recall`` -> max) and raises for any
  other name instead of guessing.
- *Is this value an improvement?* ``min``: ``value < reference - min_delta``;
  ``max``: ``value > reference + min_delta``. NaN is never an improvement.
- *Where is the value?* In the epoch row the loop passes to ``on_epoch_end``;
  a name that is not there is a ValueError listing the names that are.

It also holds the argument checks the callbacks share, so every message reads
"The value of `x` is ..., but must be `...`."
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from epochlab.callbacks.base import Callback
from epochlab.validation import (
    MODES,
    ParameterError,
    check_bool,
    check_float,
    check_int,
    closest,
    resolve_mode,
)

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.trainer import Trainer

# Bookkeeping columns of the epoch row: present, but not metrics anyone monitors.
_NOT_METRICS = ("epoch", "updates", "samples_seen", "time")

__all__ = [
    "MODES", "MonitorCallback", "check_bool", "check_monitors", "check_float", "check_int", "resolve_mode",
]


class MonitorCallback(Callback):
    """Base for callbacks that compare one epoch metric against its best value so far.

    Subclasses call :meth:`monitored_value` in ``on_epoch_end`` and
    :meth:`is_improvement` to compare. ``mode_`` is the resolved direction.

    Example:
        >>> m = MonitorCallback("val_loss", "auto", min_delta=0.01)
        >>> m.mode_, m.is_improvement(0.48, 0.5), m.is_improvement(0.495, 0.5)
        ('min', True, False)
    """

    def __init__(
        self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0
    ) -> None:
        if not isinstance(monitor, str) or not monitor.strip():
            raise ParameterError(
                f"The value of `monitor` is {monitor!r}, but must be a metric name such as "
                "'val_loss', 'val_accuracy' or 'loss'."
            )
        self.monitor = monitor
        self.mode = mode
        self.min_delta = check_float("min_delta", min_delta, low=0.0)
        self.mode_ = resolve_mode(monitor, mode)
        self._resumed = False

    # -- per-run state: reset at on_train_begin unless a resume just loaded it ---------------
    def reset(self) -> None:
        """Forget everything learned in a previous run (subclasses extend this)."""

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        # A resume calls load_state_dict before the loop starts; keep that state once.
        if self._resumed:
            self._resumed = False
        else:
            self.reset()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the next ``on_train_begin`` keeps it."""
        self._load(state)
        self._resumed = True

    def _load(self, state: dict[str, Any]) -> None:
        """Set the attributes :meth:`state_dict` saved (subclasses implement this)."""

    @property
    def needs_monitor(self) -> bool:
        """Whether every epoch's logs must hold the monitored metric (checked before training)."""
        return True

    def is_improvement(self, value: float, reference: float) -> bool:
        """True when ``value`` beats ``reference`` by more than ``min_delta``."""
        if math.isnan(value):
            return False
        if self.mode_ == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def worst(self) -> float:
        """The starting 'best' value: anything finite improves on it."""
        return math.inf if self.mode_ == "min" else -math.inf

    def monitored_value(self, logs: dict[str, Any]) -> float:
        """The monitored metric from an epoch row, or a ValueError listing what exists."""
        if self.monitor not in logs:
            raise ValueError(self.missing_message(logs))
        return float(logs[self.monitor])

    def missing_message(self, names: Any) -> str:
        """What to say when the epoch's logs (or their expected ``names``) lack the monitor."""
        have = [k for k in names if k not in _NOT_METRICS]
        hint = ""
        if self.monitor.startswith("val_") and not any(k.startswith("val_") for k in have):
            hint = (" There are no validation metrics: pass `validation_split` or "
                    "`validation_data` to fit, or monitor a training metric.")
        elif (near := closest(self.monitor, have)) is not None:
            hint = f" Did you mean {near!r}?"
        return (f"{type(self).__name__} monitors {self.monitor!r}, but the epoch's logs have no "
                f"such metric. Available: {', '.join(have)}.{hint}")


def check_monitors(callbacks: Any, names: list[str]) -> None:
    """Refuse, before training, a monitored metric that the epoch rows will not hold.

    ``names`` are the metrics every epoch row will have. A callback of the user's own
    before a monitoring one may add metrics to the logs, so the check stops there.

    Example:
        >>> from epochlab.callbacks import EarlyStopping
        >>> check_monitors([EarlyStopping(monitor="val_loss")], ["loss", "val_loss"])  # fine
    """
    names = [*names, *_NOT_METRICS]  # every row holds them too (monitoring them is allowed)
    for cb in callbacks:
        if isinstance(cb, MonitorCallback):
            # A subclass that computes its value its own way may monitor any name.
            own = type(cb).monitored_value is not MonitorCallback.monitored_value
            if cb.needs_monitor and not own and cb.monitor not in names:
                raise ParameterError(cb.missing_message(names))
        elif not type(cb).__module__.startswith("epochlab."):
            return
