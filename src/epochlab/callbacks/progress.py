"""Progress display as callbacks: a rich bar per epoch (verbose=1), a line per epoch (verbose=2).

Epochs and iterations are 1-based in everything printed. The bar is
refreshed at most ten times a second, so it costs nothing per iteration on
tiny models.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from epochlab.callbacks.base import Callback
from epochlab.train.history import describe_runtime

_SKIP = {"epoch", "updates", "samples_seen", "time"}


def format_logs(logs: dict[str, Any]) -> str:
    """``loss 0.4123 · accuracy 0.8312 · val_loss ...`` for one epoch row."""
    parts = []
    for k, v in logs.items():
        if k in _SKIP:
            continue
        parts.append(f"{k} {v:.4g}" if k == "lr" else f"{k} {v:.4f}")
    return " · ".join(parts)


class EpochLogger(Callback):
    """One line per epoch (Keras' ``verbose=2``).

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic()
        >>> _ = el.fit(el.models.mlp(20), d.train, epochs=1, batch_size=32,
        ...            callbacks=[EpochLogger()], verbose=0)  # doctest: +ELLIPSIS
        runtime: 1 thread (...) · float32 (...)
        Epoch 1/1 · 25 it · ...
    """

    rank_zero_only = True  # one display when training data-parallel

    def __init__(self, console: Console | None = None) -> None:
        self.console = console

    def on_train_begin(self, trainer, logs):
        self._console = self.console or Console(highlight=False, emoji=False)
        self._epochs = logs.get("epochs", 0)
        runtime = trainer.state.history.extra.get("runtime")
        if runtime and trainer.state.global_step == 0:
            self._console.print(f"runtime: {describe_runtime(runtime)}", markup=False)

    def on_epoch_end(self, trainer, logs):
        n = trainer.state.history.iterations_per_epoch
        self._console.print(
            f"Epoch {int(logs['epoch']) + 1}/{self._epochs} · {n} it · {format_logs(logs)} "
            f"· {logs['time']:.2f}s", markup=False,  # metric names are the user's: shown as given
        )

    def on_train_end(self, trainer, logs):
        h = trainer.state.history
        if h.stop_message:
            self._console.print(h.stop_message, markup=False)


class ProgressBar(EpochLogger):
    """A rich progress bar for the running epoch: iteration i/n, loss, rate (``verbose=1``).

    With ``lines=True`` (the default) a summary line stays for every epoch;
    ``lines=False`` shows only the live bar (the CLI prints a table instead).
    """

    def __init__(self, console: Console | None = None, lines: bool = True) -> None:
        super().__init__(console)
        self.lines = lines

    def on_train_begin(self, trainer, logs):
        super().on_train_begin(trainer, logs)
        self._progress = Progress(
            TextColumn("Epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.0f} it/s"),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        self._progress.start()
        self._task = None
        s = trainer.state
        if s.batch_in_epoch > 0:  # resumed mid-epoch: its on_epoch_begin ran before the stop
            self.on_epoch_begin(trainer, {"epoch": s.epoch})
            self._done = self._first = s.batch_in_epoch
            self._progress.update(self._task, completed=self._done)

    def on_epoch_begin(self, trainer, logs):
        n = trainer.state.history.iterations_per_epoch
        label = f"{int(logs['epoch']) + 1}/{self._epochs}"
        if self._task is None:
            self._task = self._progress.add_task("", total=n, epoch=label, loss=float("nan"), rate=0.0)
        else:
            self._progress.reset(self._task, total=n, epoch=label, loss=float("nan"), rate=0.0)
        self._t0 = self._last = time.perf_counter()
        self._done = self._first = 0  # _first: batches done before this process (a resume)

    def on_batch_end(self, trainer, logs):
        self._done += 1
        now = time.perf_counter()
        if now - self._last >= 0.1:  # throttle: a refresh costs more than a tiny model's step
            self._last = now
            self._progress.update(
                self._task, completed=self._done, loss=logs["loss"],
                rate=(self._done - self._first) / max(now - self._t0, 1e-9),
            )

    def on_epoch_end(self, trainer, logs):
        self._progress.update(self._task, completed=self._done)
        if self.lines:
            super().on_epoch_end(trainer, logs)

    def on_train_end(self, trainer, logs):
        self._progress.stop()
        super().on_train_end(trainer, logs)
