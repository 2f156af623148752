"""Checkpoints: written atomically every epoch (or on improvement), loaded without pickle code.

:class:`ModelCheckpoint` owns *what* goes into a checkpoint file and *that the
file is never half-written*: it writes a temporary file in the target's own
folder, flushes and fsyncs it, then ``os.replace``-s it over the target, so a
crash or Ctrl-C leaves the previous checkpoint intact. :func:`load_checkpoint`
reads one back with ``torch.load(weights_only=True)`` (tensors and plain data
only; no code runs) and turns a truncated or foreign file into a clear error.

A checkpoint is one mapping. Both kinds have ``"model"`` (the model's
``state_dict``) and ``"checkpoint"`` (``format``, ``kind``, ``epoch`` 0-based,
``monitor``, ``value``). With ``save_full_state=True`` it is
``trainer.state_dict()`` itself, everything a resume needs
(optimizer, counters, RNGs, History, the callbacks' states), plus that
``"checkpoint"`` entry.
"""

from __future__ import annotations

import os
import pickle
import string
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from epochlab._atomic import atomic_write
from epochlab.callbacks.monitor import MonitorCallback, check_bool
from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.trainer import Trainer

__all__ = ["FORMAT", "ModelCheckpoint", "load_checkpoint", "save_atomic"]

FORMAT = "epochlab.checkpoint/1"


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``.

    Example:
        >>> import tempfile, torch
        >>> p = save_atomic({"w": torch.zeros(2)}, tempfile.mkdtemp() + "/ckpt.pt")
        >>> torch.load(p, weights_only=True)["w"].shape
        torch.Size([2])
    """
    return atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :class:`ModelCheckpoint` (tensors land on the CPU).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, or is not an epochlab checkpoint.

    Example:
        >>> import tempfile, epochlab as el
        >>> model = el.models.mlp(20)
        >>> p = save_atomic({"model": model.state_dict()}, tempfile.mkdtemp() + "/m.pt")
        >>> sorted(load_checkpoint(p))
        ['model']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    try:
        d = torch.load(path, weights_only=True, map_location="cpu")
    except PermissionError:
        raise
    # torch reports a cut-off zip archive as RuntimeError or as OSError(EINVAL), depending
    # on where the cut falls; a foreign file as UnpicklingError.
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"Cannot read checkpoint {path}: the file is truncated or not a checkpoint "
            f"({path.stat().st_size} bytes; torch.load said: {str(e).splitlines()[0]})"
        ) from None
    if not isinstance(d, dict) or "model" not in d:
        what = f"a dict with keys {sorted(map(str, d))[:8]}" if isinstance(d, dict) else (
            type(d).__name__)
        raise ValueError(
            f"{path} is not an epochlab checkpoint: it holds {what}, with no 'model' entry. "
            "(A bare model.state_dict() file loads with torch.load(path, weights_only=True).)"
        )
    return d


class ModelCheckpoint(MonitorCallback):
    """Save the model (or the whole training state) at the end of every epoch, atomically.

    Args:
        path: the file to write. May hold ``{epoch}`` (1-based) and metric
            placeholders with formats, e.g. ``"ckpt/e{epoch:03d}-{val_loss:.4f}.pt"``;
            without placeholders each save replaces the last.
        monitor: the metric that decides "best" (and is stored as ``value``).
        mode: ``"min"``, ``"max"`` or ``"auto"``. Without ``save_best_only`` it only
            decides which saved file is ``best_path``; a name ``"auto"`` cannot read then
            leaves ``best_path`` None instead of failing.
        save_best_only: save only when ``monitor`` improves on the best so far.
        save_full_state: save ``trainer.state_dict()``, everything a
            resume needs, instead of the model's weights and a little metadata. Put
            this callback *after* the others in the list, so that their state saved
            with it already includes the epoch just ended.
        min_delta: an improvement must beat the best by more than this.

    After a run: ``saved`` (paths written, in order), ``best_path``, ``best_epoch``,
    ``best_value``; also in ``history.extra["checkpoint"]``.

    Example:
        >>> import tempfile, epochlab as el
        >>> folder = tempfile.mkdtemp()
        >>> ck = el.ModelCheckpoint(folder + "/best.pt", save_best_only=True)
        >>> model = el.models.mlp(20)
        >>> _ = el.fit(model, el.data.synthetic().train, epochs=3, batch_size=32,
        ...            validation_split=0.2, callbacks=[ck], verbose=0)
        >>> el.callbacks.load_checkpoint(ck.best_path)["checkpoint"]["epoch"] == ck.best_epoch
        True
    """

    rank_zero_only = True  # one writer when training data-parallel

    def __init__(
        self,
        path: str | os.PathLike,
        monitor: str = "val_loss",
        mode: str = "auto",
        save_best_only: bool = False,
        save_full_state: bool = False,
        min_delta: float = 0.0,
    ) -> None:
        self.save_best_only = check_bool("save_best_only", save_best_only)
        self.save_full_state = check_bool("save_full_state", save_full_state)
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ParameterError(f"The value of `path` is {path!r}, but must be a file path.")
        self.path = str(path)
        if os.path.isdir(self.path):  # found now, not at the first save after an epoch
            raise ParameterError(
                f"The value of `path` is {self.path!r}, a folder, but must be a file path, "
                f"e.g. {os.path.join(self.path, 'model-{epoch}.pt')!r}."
            )
        try:
            self._fields = sorted({f for _, f, _, _ in string.Formatter().parse(self.path) if f})
        except ValueError as e:
            raise ParameterError(
                f"The value of `path` is {self.path!r}, but must be a valid format string "
                f"(placeholders like {{epoch}} or {{val_loss:.4f}}; double literal braces): {e}"
            ) from None
        try:
            super().__init__(monitor, mode, min_delta)
        except ValueError:
            if save_best_only or mode != "auto":
                raise
            # Without save_best_only the direction only labels a "best" file; a name that
            # says neither min nor max must not stop saving, so no best is tracked.
            super().__init__(monitor, "min", min_delta)
            self.mode, self.mode_ = mode, None
        self.reset()

    def reset(self) -> None:
        self.saved: list[str] = []
        self.best_path: str | None = None
        self.best_epoch: int | None = None
        self.best_value: float | None = None

    def filename(self, logs: dict[str, Any]) -> str:
        """The path for the epoch row ``logs`` (``{epoch}`` is 1-based)."""
        values = {k: v for k, v in logs.items() if k != "epoch"}
        values["epoch"] = int(logs["epoch"]) + 1
        missing = [f for f in self._fields if f not in values]
        if missing:
            raise ValueError(
                f"ModelCheckpoint's path {self.path!r} names {missing}, which the epoch's logs "
                f"lack. Available placeholders: {', '.join(values)}."
            )
        return self.path.format(**values)

    @property
    def needs_monitor(self) -> bool:
        # Saving every epoch, the monitor only labels the best file: it may be missing.
        return self.save_best_only

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        epoch = int(logs["epoch"])
        if self.save_best_only:
            value = self.monitored_value(logs)
            best = self.worst() if self.best_value is None else self.best_value
            if not self.is_improvement(value, best):
                return
        else:
            value = float(logs[self.monitor]) if self.monitor in logs else None
        path = self.filename(logs)
        # This callback's own state and the History entry are updated *before* the save, so
        # a full-state checkpoint carries them as they are after this epoch; undone on failure.
        before = self.state_dict(), trainer.history.extra.get("checkpoint")
        self.saved.append(path)
        if self.save_best_only or (value is not None and self.mode_ is not None and
                                   self.is_improvement(value, self.worst() if self.best_value
                                                       is None else self.best_value)):
            self.best_path, self.best_epoch, self.best_value = path, epoch, value
        trainer.history.extra["checkpoint"] = {
            "last_path": path, "best_path": self.best_path, "best_epoch": self.best_epoch,
            "best_value": self.best_value, "monitor": self.monitor, "saved": len(self.saved),
        }
        meta = {"format": FORMAT, "kind": "full_state" if self.save_full_state else "model",
                "epoch": epoch, "monitor": self.monitor, "value": value}
        try:
            # In the layouts the model came in (channels-last is a bf16 run's own), so a
            # file loads into a fresh model and optimizer as they would be.
            with trainer.callers_layout():
                obj = trainer.state_dict() if self.save_full_state else {
                    "model": trainer.model.state_dict()}
                obj["checkpoint"] = meta
                save_atomic(obj, path)
        except BaseException:
            self._load(before[0])
            if before[1] is None:
                trainer.history.extra.pop("checkpoint", None)
            else:
                trainer.history.extra["checkpoint"] = before[1]
            raise

    def state_dict(self) -> dict[str, Any]:
        """The best value so far and the files written, so a resumed run compares correctly."""
        return {"saved": list(self.saved), "best_path": self.best_path,
                "best_epoch": self.best_epoch, "best_value": self.best_value}

    def _load(self, state: dict[str, Any]) -> None:
        self.saved = list(state["saved"])
        self.best_path = state["best_path"]
        self.best_epoch = state["best_epoch"]
        self.best_value = state["best_value"]
