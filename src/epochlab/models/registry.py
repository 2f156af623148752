"""Models by name, sized for a dataset: what ``--model NAME`` resolves through.

This module owns the mapping from a model's name to a builder that reads the
sizes it needs from a :class:`~epochlab.data.base.DataBundle` (input width,
image shape, vocabulary, number of outputs), and the errors for a model that
cannot take a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from epochlab.data.base import DataBundle
from epochlab.models.cnn import cnn
from epochlab.models.lstm import lstm_classifier
from epochlab.models.mlp import mlp
from epochlab.validation import ParameterError, closest

__all__ = ["NAMES", "build", "out_features"]


def out_features(data: DataBundle) -> int:
    """Logits a model needs for ``data``: 1 for binary and regression, else the class count.

    Example:
        >>> from epochlab.data.synthetic import synthetic
        >>> out_features(synthetic(n_classes=3))
        3
    """
    return data.n_classes if data.task == "multiclass" else 1


def _is_tokens(data: DataBundle) -> bool:
    return "vocab_size" in data.info


def _mlp(data: DataBundle, **kwargs: Any) -> nn.Module:
    if _is_tokens(data):
        raise ParameterError(
            f"Model 'mlp' cannot take dataset {data.name!r}: its examples are token ids. "
            "Use model 'lstm', or an mlp on `epochlab.data.sequences.bag_of_words` counts."
        )
    model = mlp(math.prod(data.input_shape), out_features=out_features(data), **kwargs)
    # Images are flattened first, so `mlp` takes digits or MNIST as they come.
    return nn.Sequential(nn.Flatten(), model) if len(data.input_shape) > 1 else model


def _cnn_builder(kind: str) -> Callable[..., nn.Module]:
    name = "cnn" if kind == "seed" else f"cnn_{kind}"

    def build_cnn(data: DataBundle, **kwargs: Any) -> nn.Module:
        shape = data.input_shape
        if len(shape) != 3 or data.task not in ("multiclass", "binary"):
            fix = ("Use model 'mlp' for flat features." if len(shape) != 2 else
                   f"These look like one-channel images without their channel axis: add it, "
                   f"X[:, None] (shape (N, 1, {shape[0]}, {shape[1]})), or use model 'mlp'.")
            raise ParameterError(
                f"Model {name!r} cannot take dataset {data.name!r}: it needs classified images "
                f"shaped (channels, height, width), but the examples have shape {shape} "
                f"(task {data.task!r}). {fix}"
            )
        return cnn(
            kind,  # type: ignore[arg-type]
            in_channels=shape[0],
            n_classes=out_features(data),
            input_size=(shape[1], shape[2]),
            **kwargs,
        )

    return build_cnn


def _lstm(data: DataBundle, **kwargs: Any) -> nn.Module:
    if not _is_tokens(data) or len(data.input_shape) != 1:
        raise ParameterError(
            f"Model 'lstm' cannot take dataset {data.name!r}: it needs token-id sequences "
            "with `info['vocab_size']` (datasets 'sequences' or 'imdb'), but the examples "
            f"have shape {data.input_shape}."
        )
    kwargs.setdefault("padding_idx", data.info.get("padding_idx", 0))
    return lstm_classifier(data.info["vocab_size"], out_features=out_features(data), **kwargs)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn_builder("seed"),
    "cnn_small": _cnn_builder("small"),
    "lstm": _lstm,
}

NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""Every model name :func:`build` accepts."""


def unknown_model(name: object) -> str:
    """What to say about a model name that is not in the registry, with its likely spelling.

    Example:
        >>> unknown_model("cnnn").split(";")[0]
        "Unknown model 'cnnn': the models are mlp, cnn, cnn_small, lstm (did you mean 'cnn'?)"
    """
    near = closest(str(name), list(NAMES))
    return (f"Unknown model {name!r}: the models are {', '.join(NAMES)}"
            f"{f' (did you mean {near!r}?)' if near else ''}; a model of your own is "
            "package.module:function (e.g. mymodels:make_model for ./mymodels.py).")


def build(name: str, data: DataBundle, **kwargs: Any) -> nn.Module:
    """Build model ``name`` sized for ``data``; ``kwargs`` go to its builder.

    ``"mlp"`` (:func:`~epochlab.models.mlp.mlp`; e.g. ``batch_norm=True``;
    images are flattened), ``"cnn"`` (the seed's slide-11 CNN), ``"cnn_small"``
    (slide 13's) and ``"lstm"`` (:func:`~epochlab.models.lstm.lstm_classifier`,
    vocabulary from ``data.info["vocab_size"]``). The output is 1 logit for a
    binary task, one per class for a multiclass one.

    Raises:
        ValueError: ``name`` is unknown, or the model cannot take ``data``.

    Example:
        >>> from epochlab.data.synthetic import synthetic
        >>> build("mlp", synthetic(), batch_norm=True)[-1].out_features
        1
    """
    if name not in _BUILDERS:
        raise ParameterError(unknown_model(name))
    try:
        return _BUILDERS[name](data, **kwargs)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        raise ParameterError(f"Model {name!r} got an unexpected parameter: {exc}.") from exc
