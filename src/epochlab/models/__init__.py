"""Models the seed trains, as plain ``torch.nn.Module`` builders.

``mlp`` (slide 1, batch norm optional), ``cnn`` (slides 11 and 13),
``lstm_classifier`` (slide 12, padding masked), the transfer-learning pieces
(slide 10) and :func:`build`, which sizes any of them for a dataset by name.
Models never import the training loop; the slide-10 experiment is
:func:`epochlab.recipes.transfer_study`.
"""

from epochlab._lazy import attach as _lazy_attach
from epochlab.models.cnn import CNN, Backbone, cnn
from epochlab.models.lstm import LSTMClassifier, lstm_classifier
from epochlab.models.mlp import mlp
from epochlab.models.registry import NAMES, build
from epochlab.models.transfer import (
    TransferModel,
    backbone,
    count_parameters,
    freeze,
    mobilenet_v2_backbone,
    transfer_model,
    unfreeze,
)

__all__ = [
    "CNN",
    "NAMES",
    "Backbone",
    "LSTMClassifier",
    "TransferModel",
    "backbone",
    "build",
    "cnn",
    "count_parameters",
    "freeze",
    "lstm_classifier",
    "mlp",
    "mobilenet_v2_backbone",
    "transfer_model",
    "unfreeze",
]

# Submodules load on first use as attributes too (`el.models.<module>`), as when the package
# imported them all.
__getattr__, __dir__ = _lazy_attach(__name__, {})
