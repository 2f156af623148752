"""Exact resume: the whole training state saved to a folder, and the newest good one loaded.

This module owns ``fit(..., checkpoint_dir=, checkpoint_every=, resume=)``:

- *What is saved*: one mapping, :meth:`Trainer.state_dict
  <epochlab.train.trainer.Trainer.state_dict>` (model, optimizer, schedule
  and its scale, callback states by key, every RNG, the position in the
  epoch with its permutation, the epoch's running sums, the History) plus
  ``"settings"`` (what the call trained: model architecture, data
  fingerprint, batch size, schedule, ...) and ``"format"``.
- *Where and how*: ``DIR/ckpt-<global step>.pt``, written atomically
  (temporary file, fsync, rename); the two newest are kept.
- *When*: :class:`Checkpointer`, a callback the loop calls at every epoch's
  end (``checkpoint_every="epoch"``) or after every N-th update.
- *Loading*: :meth:`Checkpointer.start` tries the newest file first with
  ``torch.load(weights_only=True)`` (no code runs); a truncated or corrupted
  file is reported (a :class:`CheckpointWarning`), moved aside as
  ``*.corrupt`` and the previous one used; a checkpoint of other settings
  is refused naming the difference.

The one place that saves is :meth:`Checkpointer.save`; the one place that
loads is :meth:`Checkpointer.start`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from epochlab.callbacks.base import Callback
from epochlab.callbacks.checkpoint import load_checkpoint, save_atomic
from epochlab.train.state import callback_states
from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.data import PreparedData
    from epochlab.train.trainer import Trainer

__all__ = ["FORMAT", "KEEP", "CheckpointWarning", "Checkpointer", "StepCheckpointer",
           "checkpoint_paths", "data_fingerprint", "make_checkpointer", "run_settings"]

FORMAT = "epochlab.resume/1"
KEEP = 2  # checkpoints kept: the newest, and one to fall back on
_NAME = re.compile(r"^ckpt-(\d{9,})\.pt$")
_REQUIRED = ("format", "settings", "model", "optimizer", "epoch", "global_step",
             "batch_in_epoch", "history", "callbacks", "trainer")


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read and was skipped (the previous one is used)."""


def checkpoint_paths(folder: str | os.PathLike) -> list[Path]:
    """The resume checkpoints in ``folder``, newest (highest update count) first.

    Example:
        >>> import tempfile
        >>> checkpoint_paths(tempfile.mkdtemp())
        []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _hash_tensor(h: Any, t: torch.Tensor) -> None:
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    flat = t.detach().cpu().contiguous().reshape(-1)
    h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")


def data_fingerprint(prepared: PreparedData) -> str:
    """A hash of the training and validation rows as the loop sees them (after the split).

    For in-memory arrays every value counts. For a ``torch.utils.data.Dataset``
    the row count, the split and the first 16 training rows do (reading every
    row of a large dataset would cost more than the resume saves).

    Example:
        >>> import torch, epochlab as el
        >>> from epochlab.train.loop import prepare_data
        >>> model = el.models.mlp(5)
        >>> xy = (torch.zeros(8, 5), torch.zeros(8, dtype=torch.long))
        >>> p, _ = prepare_data(model, xy, validation_split=0.0, validation_data=None,
        ...                     validation_split_mode="random", loss=None, seed=0)
        >>> len(data_fingerprint(p))
        32
    """
    h = hashlib.blake2b(digest_size=16)
    src = getattr(prepared.train, "inner", prepared.train)  # all rows, not one rank's shard
    if hasattr(src, "x"):
        _hash_tensor(h, src.x)
        _hash_tensor(h, src.y)
    else:
        h.update(f"{type(src.dataset).__name__}:{len(src)}:".encode())
        h.update(src.indices.tobytes())
        for i in src.indices[:16]:
            for part in src.dataset[int(i)]:
                _hash_tensor(h, torch.as_tensor(part))
    if prepared.val is not None:
        _hash_tensor(h, prepared.val[0])
        _hash_tensor(h, prepared.val[1])
    return h.hexdigest()


def run_settings(trainer: Trainer, prepared: PreparedData) -> dict[str, Any]:
    """What a checkpoint must agree on with the call that resumes it."""
    s = trainer.state
    model = {"class": type(trainer.model).__name__,
             **{k: [*v.shape] for k, v in trainer.model.state_dict().items()}}
    return {
        **s.history.params,
        "model": model,
        "data": data_fingerprint(prepared),
        "n_train": prepared.n_train, "n_val": prepared.n_val,
        "schedule": s.schedule.to_config() if s.schedule is not None else None,
        "loss": trainer.spec.name if trainer.spec is not None else None,
        "metrics": sorted(trainer.metric_fns),
        "precision": s.history.extra.get("runtime", {}).get("precision"),
        # Data-parallel, the epoch is cut into this many shards (and dropout streams).
        "world_size": trainer.dist.world_size if trainer.dist is not None else 1,
    }


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key, "(absent)"), now.get(key, "(absent)")
        if a == b:
            continue
        if key == "model" and isinstance(a, dict) and isinstance(b, dict):
            sub = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            k = sub[0]
            what = "class" if k == "class" else f"parameter {k!r} shape"
            out.append(f"model: {what} is {a.get(k, '(absent)')} in the checkpoint, "
                       f"{b.get(k, '(absent)')} now")
        elif key == "data":
            out.append("data: the training or validation rows differ (data fingerprint "
                       f"{str(a)[:8]} in the checkpoint, {str(b)[:8]} now)")
        else:
            out.append(f"{key}: {a!r} in the checkpoint, {b!r} now")
    return out


class Checkpointer(Callback):
    """Saves the whole training state to ``folder`` at every epoch's end; resumes from it.

    ``fit(..., checkpoint_dir=folder)`` makes one and puts it after the
    caller's callbacks, so their states saved with it include the epoch just
    ended. Use :func:`make_checkpointer` for ``checkpoint_every=N``.

    Example:
        >>> import tempfile, epochlab as el
        >>> folder = tempfile.mkdtemp()
        >>> d = el.data.synthetic()
        >>> h = el.fit(el.models.mlp(20), d.train, epochs=3, batch_size=32, verbose=0,
        ...            checkpoint_dir=folder)
        >>> [p.name for p in checkpoint_paths(folder)]      # the two newest are kept
        ['ckpt-000000075.pt', 'ckpt-000000050.pt']
        >>> h2 = el.fit(el.models.mlp(20), d.train, epochs=3, batch_size=32, verbose=0,
        ...             checkpoint_dir=folder, resume=True)  # nothing left to train
        >>> h2.iterations["loss"] == h.iterations["loss"]
        True
    """

    def __init__(self, folder: str | os.PathLike, min_seconds: float = 0.0) -> None:
        if not isinstance(folder, (str, os.PathLike)) or not str(folder):
            raise ParameterError(
                f"The value of `checkpoint_dir` is {folder!r}, but must be a folder path."
            )
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ParameterError(
                f"The value of `checkpoint_dir` is {str(folder)!r}, but that is a file; "
                "it must be a folder (created if missing)."
            )
        self.settings: dict[str, Any] | None = None
        self.min_seconds = min_seconds  # "Ns": save at an epoch's end once N s have passed
        self._last_save = time.monotonic()

    # -- loading: the one place ---------------------------------------------------------
    def start(self, trainer: Trainer, prepared: PreparedData, *, resume: bool) -> None:
        """Check the folder and, with ``resume``, load the newest good checkpoint.

        Call after the loss is attached and the schedule bound (``fit`` does).
        Without a checkpoint to resume from, training starts from the beginning.

        Raises:
            ParameterError: ``resume`` is False but the folder holds checkpoints; the
                newest readable checkpoint was made with other settings or callbacks;
                or no checkpoint in the folder can be read.
        """
        self.settings = run_settings(trainer, prepared)
        self._last_save = time.monotonic()
        ctx = trainer.dist
        if ctx is not None and not ctx.is_main:
            # Data-parallel, rank 0 alone reads the folder (and moves bad files aside);
            # every rank then loads the checkpoint it chose, or raises its error.
            self._follow(trainer, ctx.from_main(None))
            return
        try:
            chosen = self._choose(trainer, resume)
        except ParameterError as e:
            if ctx is not None:
                ctx.from_main({"error": str(e)})
            raise
        if ctx is not None:
            ctx.from_main(chosen)
        if chosen is not None:
            self._load(trainer, chosen)

    def _follow(self, trainer: Trainer, chosen: dict[str, Any] | None) -> None:
        if chosen is not None and "error" in chosen:
            raise ParameterError(chosen["error"])
        if chosen is not None:
            self._load(trainer, chosen)

    def _load(self, trainer: Trainer, chosen: dict[str, Any]) -> None:
        d = load_checkpoint(chosen["path"])
        ctx = trainer.dist
        if ctx is not None and not ctx.is_main:
            # Callbacks that write (ModelCheckpoint, CSVLogger) run on rank 0 only; rank 0
            # checked the saved states against all of its callbacks.
            here = callback_states(trainer.callbacks.callbacks)
            d["callbacks"] = {k: v for k, v in d["callbacks"].items() if k in here}
        if ctx is not None:  # this rank's own dropout RNG and its outputs of the epoch so far
            mine = d["ranks"][ctx.rank]
            d["torch_rng"] = mine["torch_rng"]
            d["trainer"] = {**d["trainer"], "outs": mine["outs"], "ys": mine["ys"]}
        trainer.load_state_dict(d)
        s = trainer.state
        s.history.extra.setdefault("resume", []).append({
            "path": chosen["path"], "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch,
            "global_step": s.global_step, "skipped": chosen["skipped"],
        })

    def _choose(self, trainer: Trainer, resume: bool) -> dict[str, Any] | None:
        """The checkpoint to resume from (path and the files skipped), or None to start."""
        self._remove_temporaries()
        paths = checkpoint_paths(self.folder)
        if not resume:
            if paths:
                raise ParameterError(
                    f"The value of `checkpoint_dir` is {str(self.folder)!r}, which already holds "
                    f"checkpoints ({paths[0].name}, ...) of an earlier run. Pass resume=True "
                    "(--resume) to continue it, or choose another folder."
                )
            return None
        skipped: list[dict[str, str]] = []
        for path in paths:
            try:
                d = load_checkpoint(path)
                _check_structure(d, path)
            except ValueError as e:
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                skipped.append({"path": str(path), "error": str(e), "moved_to": str(aside)})
                warnings.warn(f"Skipped checkpoint {path}: {e} It was moved to {aside.name}; "
                              "using the one before it.", CheckpointWarning, stacklevel=2)
                continue
            diffs = _differences(d["settings"], self.settings)
            if diffs:
                raise ParameterError(
                    f"Cannot resume from {path}: it was made with other settings than this "
                    f"call's: {'; '.join(diffs)}. Resume with the same settings, or use "
                    "another `checkpoint_dir`."
                )
            return {"path": str(path), "skipped": skipped}
        if skipped:
            raise ParameterError(
                f"No checkpoint in `checkpoint_dir` {str(self.folder)!r} can be read: "
                + "; ".join(f"{Path(s['path']).name}: {s['error']}" for s in skipped)
                + ". They were moved aside (*.corrupt); run without resume to start over."
            )
        return None

    def _remove_temporaries(self) -> None:
        # A process killed inside save_atomic leaves its temporary file behind.
        if self.folder.is_dir():
            for p in self.folder.glob(".ckpt-*.pt.*.tmp"):
                p.unlink(missing_ok=True)

    # -- saving: the one place ----------------------------------------------------------
    def save(self, trainer: Trainer) -> Path | None:
        """Write ``trainer``'s whole state atomically; keep the :data:`KEEP` newest.

        Data-parallel, every rank calls this and rank 0 alone writes (None elsewhere).
        """
        if self.settings is None:
            raise RuntimeError("Checkpointer.start must run before the first save.")
        mapping = trainer.state_dict()
        mapping["format"], mapping["settings"] = FORMAT, self.settings
        ctx = trainer.dist
        if ctx is not None:
            # Rank 0 writes, but each rank's dropout RNG and its outputs of the epoch so far
            # are its own: gathered, so every rank resumes exactly where it was.
            t = mapping["trainer"]
            ranks = ctx.gather_to_main({"torch_rng": torch.get_rng_state(),
                                        "outs": [o.cpu() for o in t["outs"]],
                                        "ys": [y.cpu() for y in t["ys"]]})
            if not ctx.is_main:
                return None
            mapping["ranks"] = ranks
        path = save_atomic(mapping, self.folder / f"ckpt-{trainer.state.global_step:09d}.pt")
        for old in checkpoint_paths(self.folder)[KEEP:]:
            old.unlink(missing_ok=True)
        return path

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        due = time.monotonic() - self._last_save >= self.min_seconds
        if self.min_seconds and trainer.dist is not None:
            due = trainer.dist.from_main(due)  # rank 0's clock decides: saving is collective
        if due:
            self.save(trainer)
            self._last_save = time.monotonic()


class StepCheckpointer(Checkpointer):
    """A :class:`Checkpointer` that saves after every ``every``-th update, mid-epoch too."""

    def __init__(self, folder: str | os.PathLike, every: int) -> None:
        super().__init__(folder)
        self.every = every

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass  # saves by update count only

    def on_batch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if trainer.state.global_step % self.every == 0:
            self.save(trainer)


def make_checkpointer(folder: str | os.PathLike, every: str | int = "epoch") -> Checkpointer:
    """A :class:`Checkpointer` for ``checkpoint_every="epoch"``, every N updates, or ``"Ns"``.

    ``"Ns"`` (e.g. ``"60s"``) saves at the end of an epoch once N seconds have
    passed since the last save: the time spent saving stays small however
    short the epochs are.

    Example:
        >>> make_checkpointer("ckpts", 50).every, make_checkpointer("ckpts", "60s").min_seconds
        (50, 60.0)
    """
    if every == "epoch":
        return Checkpointer(folder)
    if isinstance(every, str) and every.endswith("s"):
        try:
            seconds = float(every[:-1])
        except ValueError:
            seconds = -1.0
        if seconds >= 0 and seconds != float("inf"):
            return Checkpointer(folder, min_seconds=seconds)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ParameterError(
            f"The value of `checkpoint_every` is {every!r}, but must be 'epoch', an integer "
            "number of updates `checkpoint_every >= 1`, or seconds such as '60s'."
        )
    return StepCheckpointer(folder, every)


def _check_structure(d: dict[str, Any], path: Path) -> None:
    if d.get("format") != FORMAT:
        raise ValueError(f"{path} is not a resume checkpoint (format {d.get('format')!r}, "
                         f"expected {FORMAT!r}).")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{path} lacks {missing}; it is damaged.")
