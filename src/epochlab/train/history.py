"""The History: what happened in a run, per epoch and per iteration, and the accounting.

- ``epochs``: one dict per epoch (``epoch`` 0-based, ``loss``, metrics,
  ``val_loss``, ``val_<metric>``, ``lr`` at the epoch's last update,
  ``updates`` and ``samples_seen`` so far, ``time`` in seconds).
- ``iterations``: columns of equal length, one entry per optimizer update:
  ``step`` (0-based), ``epoch``, ``loss`` (before the update), ``lr`` (the
  rate used), ``grad_norm`` (before the update), ``batch_size``.
- ``history`` (property): the Keras-style dict of per-epoch lists.
- accounting: ``n_train``, ``n_val``, ``iterations_per_epoch``,
  ``total_updates``, ``samples_seen``, ``epochs_run``, ``stop_reason``.

Everything is plain Python data, saved as JSON; ``History.load`` rebuilds it.

The History is also the one place where a run is written down, whoever
trains it (``fit``'s loop, or a fused sweep training many configurations at
once): :meth:`History.start` (the accounting known before training),
:meth:`History.append_step`, :meth:`History.add_epoch`,
:meth:`History.record_divergence` (the one divergence message) and
:meth:`History.end`. So a fused member's History equals ``fit``'s by
construction, not by a copy of its code.

Drawing a History is the report package's job
(:func:`epochlab.report.plot_curves`, :func:`epochlab.report.plot_lr`): the
History imports no plotting library.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from epochlab._atomic import atomic_write
from epochlab.validation import ParameterError

ITERATION_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "batch_size")
STOP_REASONS = ("completed", "early_stopping", "diverged", "pruned", "interrupted", "error")
_FORMAT = "epochlab.history/1"


@dataclass
class History:
    """Per-epoch and per-iteration records of one run, plus its accounting.

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic()
        >>> h = el.fit(el.models.mlp(20), d.train, epochs=2, batch_size=32,
        ...            validation_split=0.2, verbose=0)
        >>> h.n_train, h.iterations_per_epoch, h.total_updates
        (640, 20, 40)
        >>> len(h.history["val_loss"])
        2
    """

    n_train: int = 0
    n_val: int = 0
    batch_size: int = 0
    iterations_per_epoch: int = 0
    epochs_planned: int = 0
    total_updates: int = 0
    samples_seen: int = 0
    # Data-parallel runs: processes, backend, batch over all processes, padded duplicates.
    world_size: int = 1
    backend: str = ""
    global_batch_size: int = 0
    samples_repeated: int = 0
    stop_reason: str = "completed"
    stop_message: str = ""
    loss_name: str = ""
    task: str = ""
    loss_reason: str = ""
    validation_split: str = "none"
    weights_epoch: int | None = None  # 0-based epoch whose end-of-epoch weights the model holds
    params: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, float]] = field(default_factory=list)
    iterations: dict[str, list] = field(
        default_factory=lambda: {c: [] for c in ITERATION_COLUMNS}
    )
    extra: dict[str, Any] = field(default_factory=dict)  # callbacks' findings (best epoch, ...)

    @property
    def epochs_run(self) -> int:
        """Epochs begun, counting a partial last one (interrupted or diverged)."""
        if not self.iterations_per_epoch:
            return len(self.epochs)
        return max(len(self.epochs), math.ceil(self.total_updates / self.iterations_per_epoch))

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras-style: metric name -> list of per-epoch values."""
        keys: list[str] = []
        for row in self.epochs:
            keys += [k for k in row if k not in keys and k != "epoch"]
        return {k: [row.get(k, math.nan) for row in self.epochs] for k in keys}

    def append_epoch(self, row: dict[str, float]) -> None:
        self.epochs.append(row)

    # -- writing a run down (the training loop and fused sweeps both use these) ---------
    def start(
        self,
        *,
        n_train: int,
        n_val: int,
        batch_size: int,
        iterations_per_epoch: int,
        epochs_planned: int,
        validation_split: str,
        params: dict[str, Any],
    ) -> None:
        """Record the accounting a run knows before its first step."""
        self.n_train, self.n_val, self.batch_size = n_train, n_val, batch_size
        self.iterations_per_epoch, self.epochs_planned = iterations_per_epoch, epochs_planned
        self.validation_split = validation_split
        self.params.update(params)

    def append_step(
        self, step: int, epoch: int, loss: float, lr: float, grad_norm: float, batch_size: int
    ) -> None:
        """Record one optimizer update (``loss`` and ``grad_norm`` from before it)."""
        it = self.iterations
        it["step"].append(step)
        it["epoch"].append(epoch)
        it["loss"].append(loss)
        it["lr"].append(lr)
        it["grad_norm"].append(grad_norm)
        it["batch_size"].append(batch_size)

    def extend_steps(
        self, losses: Sequence[float], lrs: Sequence[float], grad_norms: Sequence[float],
        batch_sizes: Sequence[int], iterations_per_epoch: int,
    ) -> None:
        """Record updates in bulk, numbered on from the last one recorded: what
        :meth:`append_step` would record one by one (a fused run hands over all its
        updates at its end).

        Example:
            >>> h = History()
            >>> h.extend_steps([0.7, 0.6, 0.5], [0.1] * 3, [1.0] * 3, [32, 32, 8], 2)
            >>> h.iterations["step"], h.iterations["epoch"]
            ([0, 1, 2], [0, 0, 1])
        """
        it = self.iterations
        first = len(it["step"])
        steps = range(first, first + len(losses))
        it["step"].extend(steps)
        it["epoch"].extend([i // iterations_per_epoch for i in steps])
        it["loss"].extend(losses)
        it["lr"].extend(lrs)
        it["grad_norm"].extend(grad_norms)
        it["batch_size"].extend(batch_sizes)

    def add_epoch(
        self,
        epoch: int,
        train: dict[str, float],
        val: dict[str, float] | None,
        *,
        lr: float | None,
        updates: int,
        samples_seen: int,
        seconds: float,
    ) -> dict[str, float]:
        """Record a completed epoch (0-based) and return its row.

        The row holds the training metrics, ``val_<name>`` for each
        validation metric, the learning rate of the epoch's last update, the
        updates and samples so far and the epoch's seconds. The model now
        holds this epoch's end-of-epoch weights (:attr:`weights_epoch`).

        Example:
            >>> h = History()
            >>> h.add_epoch(0, {"loss": 0.5}, {"loss": 0.6}, lr=0.1, updates=20,
            ...             samples_seen=640, seconds=0.1)["val_loss"], h.weights_epoch
            (0.6, 0)
        """
        row: dict[str, Any] = {"epoch": epoch, **train}
        if val is not None:
            row.update({f"val_{k}": v for k, v in val.items()})
        row.update(lr=lr, updates=updates, samples_seen=samples_seen, time=seconds)
        self.epochs.append(row)
        self.weights_epoch = epoch
        return row

    def record_divergence(
        self, *, epoch: int, iteration: int, step: int, lr: float, loss: float, grad_norm: float
    ) -> str:
        """Record a non-finite loss or gradient (no update made) and return the message.

        ``epoch`` is 0-based, ``iteration`` the 1-based batch in the epoch,
        ``step`` the updates made before it.
        """
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        value = loss if what == "loss" else grad_norm
        if step == 0:  # before any update: the learning rate has not acted yet
            self.stop_message = (
                f"The {what} was {value} on the first batch, before any update: the initial "
                "model gives non-finite values on this data, so the learning rate is not the "
                "cause. Check the model's forward pass (a division, log or sqrt of 0 or less) "
                "and the inputs' scale."
            )
        else:
            self.stop_message = (
                f"Diverged: the {what} became {value} at epoch {epoch + 1}, iteration "
                f"{iteration} (update {step + 1}) with learning rate {lr:.4g}. "
                "The model keeps the weights of the last finite step; try a lower learning "
                "rate."
            )
        self.extra["divergence"] = {
            "epoch": epoch, "iteration": iteration, "step": step,
            "lr": lr, "loss": loss, "grad_norm": grad_norm,
        }
        return self.stop_message

    def end(self, *, total_updates: int, samples_seen: int, stop_reason: str,
            mid_epoch: bool) -> None:
        """Record how training ended; ``mid_epoch``: the weights are from inside an epoch."""
        if mid_epoch:
            self.weights_epoch = None
        self.total_updates, self.samples_seen = total_updates, samples_seen
        self.stop_reason = stop_reason

    def to_dict(self) -> dict[str, Any]:
        """Plain data, JSON-ready (NaN and inf written as JSON's NaN/Infinity)."""
        d = asdict(self)
        d["format"] = _FORMAT
        d["epochs_run"] = self.epochs_run
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Rebuild a History from :meth:`to_dict` output."""
        if d.get("format") != _FORMAT:
            raise ValueError(
                f"Not an epochlab History (format {d.get('format')!r}, expected {_FORMAT!r})."
            )
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically (temporary file, fsync, rename).

        Example:
            >>> import tempfile
            >>> h = History(n_train=640)
            >>> p = h.save(tempfile.mkdtemp() + "/history.json")
            >>> History.load(p).n_train
            640
        """
        return atomic_write(path, lambda f: json.dump(self.to_dict(), f), binary=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        """Read a History written by :meth:`save`."""
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid History JSON (truncated?): {e}") from None
        return cls.from_dict(d)

    def to_pandas(self, level: str = "epoch"):
        """A DataFrame of epochs (``level="epoch"``) or iterations; needs pandas."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("History.to_pandas needs pandas: pip install pandas") from None
        if level == "epoch":
            return pd.DataFrame(self.epochs)
        if level == "iteration":
            return pd.DataFrame(self.iterations)
        raise ParameterError(f"The value of `level` is {level!r}, but must be 'epoch' or 'iteration'.")

    def summary(self) -> str:
        """The accounting in one paragraph, as the CLI prints it."""
        rnd = "floor" if self.params.get("drop_last") else "ceil"
        done = len(self.epochs)
        # A partial last epoch (interrupted, diverged) is said as such: the epoch tables and
        # the advice count finished epochs.
        partial = (f" (+ {self.total_updates - done * self.iterations_per_epoch} update(s) of "
                   f"epoch {done + 1})" if self.epochs_run > done else "")
        lines = [
            f"training rows: {self.n_train}   validation rows: {self.n_val} ({self.validation_split})",
            f"batch size: {self.batch_size}   iterations per epoch: {self.iterations_per_epoch}"
            f" = {rnd}({self.n_train} / {self.batch_size})",
            f"epochs run: {done if partial else self.epochs_run} of {self.epochs_planned}"
            f"{partial}   total updates: {self.total_updates}   samples seen: {self.samples_seen}",
            f"loss: {self.loss_name} ({self.loss_reason})   stop: {self.stop_reason}",
        ]
        if self.world_size > 1:  # per-process batches over each process's shard of the rows
            w = self.world_size
            lines[1:3] = [
                f"processes: {w} ({self.backend})   batch size: {self.batch_size} per process, "
                f"{self.global_batch_size} global",
                f"iterations per epoch: {self.iterations_per_epoch} = {rnd}({rnd}"
                f"({self.n_train} / {w}) / {self.batch_size})   rows repeated to even the "
                f"shards: {0 if rnd == 'floor' else -self.n_train % w} per epoch",
                f"epochs run: {done if partial else self.epochs_run} of {self.epochs_planned}"
                f"{partial}   total updates: {self.total_updates}   samples seen: "
                f"{self.samples_seen} (+ "
                f"{self.samples_repeated} repeated)",
            ]
        if "lr_scaling" in self.params:
            r = self.params["lr_scaling"]
            lines.append(f"lr scaling: {r['rule']}: {r['lr']:.4g} x {r['factor']:g} = "
                         f"{r['scaled_lr']:.4g}, reached over {r['warmup_steps']} warmup updates")
        if "runtime" in self.extra:

            lines.append(f"runtime: {describe_runtime(self.extra['runtime'])}")
        if self.stop_message:
            lines.append(self.stop_message)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"History(epochs_run={self.epochs_run}, total_updates={self.total_updates}, "
            f"iterations_per_epoch={self.iterations_per_epoch}, stop_reason={self.stop_reason!r})"
        )


def describe_runtime(runtime: dict[str, object]) -> str:
    """``1 thread (why) · float32 (why)`` from a History's ``extra["runtime"]``.

    Example:
        >>> describe_runtime({"threads": 1, "threads_reason": "pinned", "precision": "bf16",
        ...                   "precision_reason": "asked"})
        '1 thread (pinned) · bfloat16 mixed precision (asked)'
    """
    return (f"{threads_text(runtime['threads'])} ({runtime['threads_reason']}) · "
            f"{precision_name(runtime['precision'])} ({runtime['precision_reason']})")


def threads_text(n: object) -> str:
    """``"1 thread"``, ``"2 threads"``.

    Example:
        >>> threads_text(1), threads_text(2)
        ('1 thread', '2 threads')
    """
    return f"{n} thread{'s' if n != 1 else ''}"


def precision_name(precision: object) -> str:
    """A recorded precision as the header says it (``"bf16"``: ``"bfloat16 mixed precision"``);
    a value from another version as it was recorded.

    Example:
        >>> precision_name("bf16"), precision_name("fp32")
        ('bfloat16 mixed precision', 'float32')
    """
    return {"bf16": "bfloat16 mixed precision", "fp32": "float32", "fp64": "float64"}.get(
        str(precision), str(precision))
