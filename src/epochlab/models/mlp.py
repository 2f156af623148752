"""The seed's multilayer perceptron, with batch norm placed correctly."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from epochlab.validation import ParameterError

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


def mlp(
    in_features: int,
    hidden: Sequence[int] = (64, 32),
    out_features: int = 1,
    batch_norm: bool = False,
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """A Linear stack: the seed's slide-1 model is ``mlp(20)`` (20-64-32-1).

    Each hidden block is ``Linear -> [BatchNorm1d] -> activation ->
    [Dropout]``. The output layer returns logits (no sigmoid/softmax): the
    loss applies it, which is numerically safer than the slides'
    ``Dense(1, activation='sigmoid')`` followed by cross-entropy.

    The seed's slide 9 builds its batch-norm model as ``Dense -> BatchNorm``
    with *no activation*: a stack of affine maps, so the "deep" model is a
    linear classifier. ``batch_norm=True`` here keeps the activation.

    Example:
        >>> import torch
        >>> model = mlp(20, hidden=(64, 32), out_features=1, batch_norm=True)
        >>> model(torch.zeros(4, 20)).shape
        torch.Size([4, 1])
    """
    if activation not in _ACTIVATIONS:
        raise ParameterError(
            f"Unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}."
        )
    if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
        raise ParameterError(
            f"Layer sizes must be >= 1, got in_features={in_features}, hidden={tuple(hidden)}, "
            f"out_features={out_features}."
        )
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batch_norm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(_ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
