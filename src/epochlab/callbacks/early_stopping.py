"""Early stopping (the seed's slide 6), with best weights restored whenever training ends.

:class:`EarlyStopping` owns *when to stop* for lack of improvement and *which
weights the model ends with*. ``restore_best_weights=True`` restores in
``on_train_end``, which the loop calls whatever the reason training ended
(patience, the epoch limit, Ctrl-C, a divergence), and
``history.weights_epoch`` then names the best epoch. Keras 3 also restores
in ``on_train_end`` (tf.keras 2 did only when patience ran out), but its
``fit`` runs no ``on_train_end`` on Ctrl-C and trains on through NaN losses.

:func:`parse` reads the CLI spelling ``val_loss:patience=5,restore=true``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from epochlab.callbacks.monitor import MonitorCallback, check_bool, check_float, check_int
from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from epochlab.train.trainer import Trainer

__all__ = ["PARAMS", "EarlyStopping", "parse"]


class EarlyStopping(MonitorCallback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally keep the best.

    Args:
        monitor: the epoch metric to watch (``"val_loss"``, ``"val_accuracy"``, ``"loss"``...).
        mode: ``"min"``, ``"max"``, or ``"auto"`` (from the name; raises when the name
            says neither).
        patience: epochs without improvement after which training stops (``0``: the first
            epoch without improvement stops it).
        min_delta: an improvement must beat the best value by more than this.
        restore_best_weights: load the best epoch's weights when training ends, for any
            reason (patience, epoch limit, Ctrl-C, divergence).
        start_from_epoch: epochs (counted from 0) to wait before watching at all, e.g.
            a warm-up.
        baseline: the patience counter only restarts on values that also beat this.
        verbose: print a line when stopping and when restoring.

    After a run: ``best_epoch`` (0-based), ``best_value``, ``stopped_epoch``
    (0-based, or None when it did not stop training), also in
    ``history.extra["early_stopping"]``.

    Example:
        >>> import epochlab as el
        >>> es = el.EarlyStopping(patience=2, restore_best_weights=True)
        >>> model = el.models.mlp(20)
        >>> h = el.fit(model, el.data.synthetic().train, epochs=30, batch_size=32,
        ...            validation_split=0.2, callbacks=[es], verbose=0)
        >>> h.weights_epoch == es.best_epoch
        True
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        patience: int = 0,
        min_delta: float = 0.0,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
        baseline: float | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = check_int("patience", patience, 0)
        self.restore_best_weights = check_bool("restore_best_weights", restore_best_weights)
        self.start_from_epoch = check_int("start_from_epoch", start_from_epoch, 0)
        self.baseline = None if baseline is None else check_float("baseline", baseline)
        self.verbose = check_bool("verbose", verbose)
        self.reset()

    def reset(self) -> None:
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self.restored = False
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        value = self.monitored_value(logs)  # checked from the first epoch: fail fast on a typo
        epoch = int(logs["epoch"])
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        best = self.worst() if self.best_value is None else self.best_value
        if self.is_improvement(value, best):
            self.best_value, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = _snapshot(trainer.model)
            if self.baseline is None or self.is_improvement(value, self.baseline):
                self.wait = 0
        elif self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.stop("early_stopping", self._stop_message(epoch))
        self._record(trainer)

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        h = trainer.history
        if self.restore_best_weights and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)
            h.weights_epoch = self.best_epoch
            self.restored = True
            note = (f"Restored the weights of epoch {self.best_epoch + 1} (best {self.monitor} "
                    f"{self.best_value:.4f}), as training ended by {h.stop_reason}.")
            h.stop_message = f"{h.stop_message} {note}".strip()
            if self.verbose:
                print(note)
        self._record(trainer)

    def _stop_message(self, epoch: int) -> str:
        best = "no finite value" if self.best_epoch is None else (
            f"best {self.best_value:.4f} at epoch {self.best_epoch + 1}")
        msg = (f"Early stopping at epoch {epoch + 1}: {self.monitor} did not improve by more "
               f"than {self.min_delta:g} for {self.wait} epoch(s) ({best}).")
        if self.verbose:
            print(msg)
        return msg

    def _record(self, trainer: Trainer) -> None:
        trainer.history.extra["early_stopping"] = {
            "monitor": self.monitor,
            "mode": self.mode_,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "stopped_epoch": self.stopped_epoch,
            "restored": self.restored,
        }

    def state_dict(self) -> dict[str, Any]:
        """Counters, best value and (with restore) the best weights, for an exact resume."""
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "wait": self.wait,
            "best_weights": self.best_weights,
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.best_value = state["best_value"]
        self.best_epoch = state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]
        self.wait = state["wait"]
        self.best_weights = state["best_weights"]
        self.restored = False


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Clones on the model's own device: buffers (batch-norm statistics) included, so the
    # restored model evaluates exactly as it did at the best epoch.
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- the CLI spelling ------------------------------------------------------------------------

PARAMS: dict[str, str] = {
    "patience": "int",
    "restore": "bool",
    "min_delta": "float",
    "mode": "str",
    "start_from_epoch": "int",
    "baseline": "float",
}
"""Parameters :func:`parse` accepts, with their types (``restore`` is ``restore_best_weights``)."""

_RENAME = {"restore": "restore_best_weights"}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _value(key: str, raw: str, text: str) -> Any:
    kind, word = PARAMS[key], raw.strip()
    try:
        if kind == "bool":
            if word.lower() in _TRUE + _FALSE:
                return word.lower() in _TRUE
            raise ValueError
        if kind == "int":
            number = float(word)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind == "float":
            if key == "baseline" and word.lower() in ("none", "null"):
                return None
            number = float(word)
            if not math.isfinite(number):
                raise ValueError
            return number
    except ValueError:
        what = {"bool": "true or false", "int": "an integer", "float": "a finite number"}[kind]
        raise ParameterError(
            f"The value of `{key}` is {word!r} in early stopping {text!r}, but must be {what}."
        ) from None
    return word


def parse(text: str, **overrides: Any) -> EarlyStopping:
    """Build an :class:`EarlyStopping` from ``monitor:key=value,...`` (the CLI spelling).

    The monitor may be left out (``"patience=5"`` watches ``val_loss``).
    Parameters: ``patience``, ``restore`` (``restore_best_weights``),
    ``min_delta``, ``mode``, ``start_from_epoch``, ``baseline``; ``overrides``
    are passed to the constructor as keywords (e.g. ``verbose=True``).

    Raises:
        ValueError: for an unknown parameter (lists the valid ones), a value
            that does not parse, or one the constructor rejects.

    Example:
        >>> es = parse("val_loss:patience=5,restore=true,min_delta=0,mode=auto")
        >>> es.monitor, es.patience, es.restore_best_weights
        ('val_loss', 5, True)
    """
    if not isinstance(text, str) or not text.strip():
        raise ParameterError(
            f"The value of `early_stopping` is {text!r}, but must be 'monitor' or "
            f"'monitor:key=value,...' with keys in: {', '.join(PARAMS)}."
        )
    head, sep, tail = text.partition(":")
    if not sep and "=" in head:  # only parameters: the default monitor
        head, tail = "", head
    kwargs: dict[str, Any] = {"monitor": head.strip()} if head.strip() else {}
    for item in tail.split(","):
        if not item.strip():
            continue
        key, eq, raw = item.partition("=")
        key = key.strip()
        if key not in PARAMS:
            raise ParameterError(
                f"Unknown parameter {key!r} in early stopping {text!r}. "
                f"Valid parameters: {', '.join(PARAMS)}."
            )
        if not eq:
            raise ParameterError(f"Cannot parse {item.strip()!r} in early stopping {text!r}: "
                             f"expected {key}=value.")
        name = _RENAME.get(key, key)
        if name in kwargs:
            raise ParameterError(f"Parameter {key!r} is given twice in early stopping {text!r}.")
        kwargs[name] = _value(key, raw, text)
    return EarlyStopping(**{**kwargs, **overrides})
