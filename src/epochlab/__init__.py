"""epochlab: how many epochs, which batch size, which learning rate.

Example:
    >>> import epochlab as el
    >>> d = el.data.synthetic()
    >>> h = el.fit(el.models.mlp(20), d.train, epochs=10, batch_size=32,
    ...            validation_split=0.2, verbose=0)
    >>> h.iterations_per_epoch, h.total_updates
    (20, 200)
"""

from typing import TYPE_CHECKING

from epochlab._lazy import attach as _attach

__version__ = "0.1.0"

# What `import epochlab` offers, loaded on first use: the package itself imports nothing
# heavy, so `epochlab --help` and `--version` answer without loading torch, scikit-learn
# and matplotlib (~1.6 s here). A new public name goes here, in __all__ and below.
__getattr__, __dir__ = _attach(__name__, {
    "Callback": "epochlab.callbacks.base",
    "ModelCheckpoint": "epochlab.callbacks.checkpoint",
    "CSVLogger": "epochlab.callbacks.csv_logger",
    "EarlyStopping": "epochlab.callbacks.early_stopping",
    "ReduceLROnPlateau": "epochlab.callbacks.reduce_lr",
    "lr_find": "epochlab.diagnose.lr_find",
    "GradientNoiseScale": "epochlab.diagnose.noise_scale",
    "SweepResult": "epochlab.sweeps.driver",
    "sweep": "epochlab.sweeps.driver",
    "SweepSpec": "epochlab.sweeps.spec",
    "iterations_per_epoch": "epochlab.train.accounting",
    "History": "epochlab.train.history",
    "evaluate": "epochlab.train.loop",
    "fit": "epochlab.train.loop",
    "TrainingError": "epochlab.train.loop",
    "TrainState": "epochlab.train.state",
    "StepRecord": "epochlab.train.trainer",
    "Trainer": "epochlab.train.trainer",
    "tune": "epochlab.tuning",
    "ParameterError": "epochlab.validation",
}, submodules=("callbacks", "cli", "data", "diagnose", "models", "recipes", "reference",
               "report", "schedules", "store", "sweeps", "train", "tuning", "validation"))

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported
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
    from epochlab.train.loop import TrainingError, evaluate, fit
    from epochlab.train.state import TrainState
    from epochlab.train.trainer import StepRecord, Trainer
    from epochlab.tuning import tune
    from epochlab.validation import ParameterError

del TYPE_CHECKING  # not a name of the package

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
    "TrainingError",
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
