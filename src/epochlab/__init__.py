"""epochlab: how many epochs, which batch size, which learning rate.

Example:
    >>> import epochlab as el
    >>> d = el.data.synthetic()
    >>> h = el.fit(el.models.mlp(20), d.train, epochs=10, batch_size=32,
    ...            validation_split=0.2, verbose=0)
    >>> h.iterations_per_epoch, h.total_updates
    (20, 200)
"""

from epochlab import callbacks, data, diagnose, models, schedules, sweeps
from epochlab.callbacks.base import Callback
from epochlab.callbacks.checkpoint import ModelCheckpoint
from epochlab.callbacks.csv_logger import CSVLogger
from epochlab.callbacks.early_stopping import EarlyStopping
from epochlab.callbacks.reduce_lr import ReduceLROnPlateau
from epochlab.diagnose.lr_find import lr_find
from epochlab.diagnose.noise_scale import GradientNoiseScale
from epochlab.sweeps.driver import SweepResult, sweep
from epochlab.sweeps.spec import SweepSpec
from epochlab.train.accounting import iterations_per_epoch
from epochlab.train.history import History
from epochlab.train.loop import evaluate, fit
from epochlab.train.state import TrainState
from epochlab.train.trainer import StepRecord, Trainer
from epochlab.tuning import tune
from epochlab.validation import ParameterError

__version__ = "0.1.0"

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "GradientNoiseScale",
    "History",
    "ModelCheckpoint",
    "ParameterError",
    "ReduceLROnPlateau",
    "StepRecord",
    "SweepResult",
    "SweepSpec",
    "TrainState",
    "Trainer",
    "callbacks",
    "data",
    "diagnose",
    "evaluate",
    "fit",
    "iterations_per_epoch",
    "lr_find",
    "sweep",
    "sweeps",
    "tune",
    "models",
    "schedules",
]
