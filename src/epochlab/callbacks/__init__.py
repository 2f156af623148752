"""Callbacks: the hook protocol and the ones that ship.

- :mod:`~epochlab.callbacks.base`: the protocol (``Callback``, ``CallbackList``).
- :mod:`~epochlab.callbacks.progress`: progress bar and per-epoch lines.
- :mod:`~epochlab.callbacks.monitor`: the shared monitor / mode / min_delta base.
- :mod:`~epochlab.callbacks.early_stopping`: ``EarlyStopping`` (restores whenever training ends).
- :mod:`~epochlab.callbacks.checkpoint`: ``ModelCheckpoint``, ``load_checkpoint``.
- :mod:`~epochlab.callbacks.csv_logger`: ``CSVLogger``.
- :mod:`~epochlab.callbacks.reduce_lr`: ``ReduceLROnPlateau``.
"""

from typing import TYPE_CHECKING

from epochlab._lazy import attach as _lazy_attach
from epochlab.callbacks.base import Callback, CallbackList

if TYPE_CHECKING:
    from epochlab.callbacks.checkpoint import ModelCheckpoint, load_checkpoint
    from epochlab.callbacks.csv_logger import CSVLogger
    from epochlab.callbacks.early_stopping import EarlyStopping
    from epochlab.callbacks.monitor import MonitorCallback
    from epochlab.callbacks.progress import EpochLogger, ProgressBar
    from epochlab.callbacks.reduce_lr import ReduceLROnPlateau

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "EpochLogger",
    "ModelCheckpoint",
    "MonitorCallback",
    "ProgressBar",
    "ReduceLROnPlateau",
    "load_checkpoint",
]

# The callbacks load on first use (the CLI's help reads early_stopping's parameters without
# loading torch behind the checkpoints); other submodules too (`el.callbacks.<module>`).
_SOURCES = {"ModelCheckpoint": "checkpoint", "load_checkpoint": "checkpoint",
            "CSVLogger": "csv_logger", "EarlyStopping": "early_stopping",
            "MonitorCallback": "monitor", "EpochLogger": "progress", "ProgressBar": "progress",
            "ReduceLROnPlateau": "reduce_lr"}
__getattr__, __dir__ = _lazy_attach(
    __name__, {name: f"{__name__}.{module}" for name, module in _SOURCES.items()},
    set(_SOURCES.values()))
