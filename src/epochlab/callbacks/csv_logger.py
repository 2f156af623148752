"""A CSV file with one row per epoch, readable while training runs.

:class:`CSVLogger` owns one file: the header is the first epoch row's keys,
then one row per epoch, flushed at once so ``tail -f`` or a spreadsheet sees
it. ``epoch`` is written as the History has it (0-based), so the CSV and
``history.json`` agree row for row, also after a resume: a resumed run
rewrites the file from the History it resumed, so no epoch is missing or
written twice.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from epochlab.callbacks.base import Callback
from epochlab.callbacks.monitor import check_bool
from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.trainer import Trainer

__all__ = ["CSVLogger"]


class CSVLogger(Callback):
    """Append each epoch's row (losses, metrics, lr, updates, time) to a CSV file.

    Args:
        path: the CSV file; its folder is created.
        append: add to an existing file (its header must name the same columns)
            instead of starting a new one; useful when resuming.

    Example:
        >>> import csv, tempfile, epochlab as el
        >>> path = tempfile.mkdtemp() + "/log.csv"
        >>> _ = el.fit(el.models.mlp(20), el.data.synthetic().train, epochs=2, batch_size=32,
        ...            validation_split=0.2, callbacks=[el.CSVLogger(path)], verbose=0)
        >>> rows = list(csv.DictReader(open(path)))
        >>> len(rows), rows[1]["epoch"], "val_loss" in rows[0]
        (2, '1', True)
    """

    rank_zero_only = True  # one writer when training data-parallel

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ParameterError(f"The value of `path` is {path!r}, but must be a file path.")
        self.path = Path(path)
        if self.path.is_dir():  # found now, not when training begins
            raise ParameterError(
                f"The value of `path` is {str(self.path)!r}, a folder, but must be a file path, "
                f"e.g. {str(self.path / 'history.csv')!r}."
            )
        self.append = check_bool("append", append)
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter | None = None

    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._existing: list[str] | None = None
        if self.append and self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                self._existing = next(csv.reader(f), None)
        # Opened now, so a bad path fails before the first epoch rather than after it.
        self._file = open(self.path, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer = None
        self.rows = 0
        if not self.append:  # resumed (fit's resume=True): the rows so far, from the History
            for row in trainer.history.epochs:
                self.on_epoch_end(trainer, row)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self._file is None:
            return
        if self._writer is None:
            keys = list(logs)
            if self._existing is not None and set(self._existing) != set(keys):
                self._close()  # the loop does not call on_train_end after an exception
                raise ValueError(
                    f"CSVLogger(append=True): {self.path} has columns {self._existing}, but this "
                    f"run logs {keys}; write to a new file or use append=False."
                )
            fields = self._existing or keys
            # Columns are fixed by the first row; a key that appears later is not written.
            self._writer = csv.DictWriter(self._file, fieldnames=fields, restval="",
                                          extrasaction="ignore")
            if self._existing is None:
                self._writer.writeheader()
        self._writer.writerow(logs)  # str(float) round-trips exactly
        self._file.flush()
        self.rows += 1

    def on_train_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._writer = None, None

