"""epochlab: how many epochs, which batch size, which learning rate.

Example:
    >>> import epochlab as el
    >>> d = el.data.synthetic()
    >>> h = el.fit(el.models.mlp(20), d.train, epochs=10, batch_size=32,
    ...            validation_split=0.2, verbose=0)
    >>> h.iterations_per_epoch, h.total_updates
    (20, 200)
"""

# `el.sweep` is the package, and calling it runs a sweep: `el.sweep(spec, store)`.
from epochlab import (
    callbacks,
    data,
    models,
    schedules,
    sweep,  # noqa: E402  (after the core it builds on)
)
from epochlab.callbacks.base import Callback
from epochlab.callbacks.checkpoint import ModelCheckpoint
from epochlab.callbacks.csv_logger import CSVLogger
from epochlab.callbacks.early_stopping import EarlyStopping
from epochlab.callbacks.reduce_lr import ReduceLROnPlateau
from epochlab.sweep.spec import SweepSpec  # noqa: E402
from epochlab.train.accounting import iterations_per_epoch
from epochlab.train.history import History
from epochlab.train.loop import evaluate, fit
from epochlab.train.state import TrainState
from epochlab.train.trainer import StepRecord, Trainer
from epochlab.validation import ParameterError

__version__ = "0.1.0"

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "ModelCheckpoint",
    "ParameterError",
    "ReduceLROnPlateau",
    "StepRecord",
    "SweepSpec",
    "TrainState",
    "Trainer",
    "callbacks",
    "data",
    "evaluate",
    "fit",
    "iterations_per_epoch",
    "sweep",
    "models",
    "schedules",
]
