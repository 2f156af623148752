"""Transfer learning (the seed's slide 10), measured instead of asserted.

This module owns taking a trained network's feature extractor
(:func:`backbone`), freezing and unfreezing parameters (:func:`freeze`,
:func:`unfreeze`, :func:`count_parameters`), putting a new head on a frozen
backbone (:class:`TransferModel`, :func:`transfer_model`) and loading a
pretrained MobileNetV2 from a *local* file (:func:`mobilenet_v2_backbone`).
Models are plain ``nn.Module`` builders and never train: the experiment that
answers the slide's claim (pretrain, transfer, compare with scratch) is
:func:`epochlab.recipes.transfer_study`.
"""

from __future__ import annotations

import copy as _copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from epochlab.models.cnn import CNN, Backbone, cnn  # noqa: F401  (the examples use cnn)
from epochlab.validation import ParameterError


def _keep_eval(module: nn.Module, args: Any) -> None:
    # A frozen BatchNorm must use its running statistics and must not update
    # them; model.train() would switch it back to batch statistics, so the
    # mode is reset right before every forward call.
    module.train(False)


def freeze(module: nn.Module) -> nn.Module:
    """Stop ``module``'s parameters from training; its BatchNorm layers stay in eval mode.

    Sets ``requires_grad=False`` on every parameter. Every BatchNorm layer
    inside is put in eval mode and kept there, even through a later
    ``model.train()`` (as Keras does for a layer with ``trainable=False``):
    otherwise a "frozen" backbone would still normalize with batch
    statistics and overwrite its running means while the head trains.
    Returns ``module`` so calls can be chained.

    Example:
        >>> m = freeze(cnn("seed").backbone)
        >>> count_parameters(m)
        (0, 55744)
    """
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.train(False)
            if _keep_eval not in m._forward_pre_hooks.values():
                m.register_forward_pre_hook(_keep_eval)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Undo :func:`freeze`: parameters train again, BatchNorm follows ``module.train()``.

    Example:
        >>> m = unfreeze(freeze(cnn("seed").backbone))
        >>> count_parameters(m)
        (55744, 0)
    """
    for p in module.parameters():
        p.requires_grad_(True)
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            for key in [k for k, hook in m._forward_pre_hooks.items() if hook is _keep_eval]:
                del m._forward_pre_hooks[key]
            m.train(module.training)
    return module


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)`` parameter counts of ``model``.

    Example:
        >>> count_parameters(cnn("seed"))
        (93322, 0)
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def backbone(model: nn.Module, copy: bool = True) -> nn.Module:
    """The feature extractor of ``model``: a CNN minus its head (Keras' ``include_top=False``).

    Args:
        model: A :class:`~epochlab.models.cnn.CNN`, a :class:`TransferModel`
            or a :class:`~epochlab.models.cnn.Backbone`.
        copy: Return a deep copy (default), so training the new model leaves
            the source model as it was. ``False`` shares the modules.

    Example:
        >>> import torch
        >>> b = backbone(cnn("seed"))
        >>> b(torch.zeros(2, 1, 28, 28)).shape, b.out_features
        (torch.Size([2, 576]), 576)
    """
    if isinstance(model, (CNN, TransferModel)):
        body: nn.Module = model.backbone
    elif isinstance(model, Backbone):
        body = model
    else:
        raise ParameterError(
            f"`model` must be an epochlab CNN, TransferModel or Backbone, but got "
            f"{type(model).__name__}; wrap your own feature extractor in "
            "`epochlab.models.cnn.Backbone(body, in_channels, out_features)`."
        )
    return _copy.deepcopy(body) if copy else body


class TransferModel(nn.Module):
    """A (by default frozen) backbone with a new dense head that returns logits.

    Args:
        backbone: The feature extractor; needs an ``out_features`` attribute
            (every :class:`~epochlab.models.cnn.Backbone` has one) unless
            ``in_features`` is given.
        n_classes: Classes of the new task: the head has 1 logit for 2
            classes (binary cross-entropy), ``n_classes`` logits otherwise.
        head_hidden: Width of the head's hidden layer; ``0`` for a single
            ``Linear`` (the slide's pooled features -> Dense).
        dropout: Dropout before the head's last layer.
        freeze_backbone: :func:`freeze` the backbone (default).
        in_features: The backbone's output width, if it has no ``out_features``.

    Example:
        >>> import torch
        >>> model = TransferModel(backbone(cnn("seed")), n_classes=5)
        >>> model(torch.zeros(3, 1, 28, 28)).shape, count_parameters(model)
        (torch.Size([3, 5]), (37253, 55744))
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int,
        head_hidden: int = 64,
        dropout: float = 0.0,
        freeze_backbone: bool = True,
        in_features: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ParameterError(f"The value of `n_classes` is {n_classes!r}, but must be `n_classes >= 2`.")
        if not isinstance(head_hidden, int) or head_hidden < 0:
            raise ParameterError(
                f"The value of `head_hidden` is {head_hidden!r}, but must be `head_hidden >= 0`."
            )
        if not 0.0 <= dropout < 1.0:
            raise ParameterError(f"The value of `dropout` is {dropout!r}, but must be in [0, 1).")
        width = in_features if in_features is not None else getattr(backbone, "out_features", None)
        if not isinstance(width, int) or width < 1:
            raise ParameterError(
                f"`backbone` ({type(backbone).__name__}) has no `out_features`; pass "
                "`in_features`, the width of the features it returns."
            )
        out = 1 if n_classes == 2 else n_classes
        layers: list[nn.Module] = []
        if head_hidden:
            layers += [nn.Linear(width, head_hidden), nn.ReLU()]
            width = head_hidden
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, out))
        self.backbone = freeze(backbone) if freeze_backbone else backbone
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def transfer_model(
    source: nn.Module,
    head_hidden: int = 64,
    n_classes: int = 10,
    *,
    dropout: float = 0.0,
    freeze_backbone: bool = True,
) -> TransferModel:
    """A new head on (a copy of) ``source``'s backbone, frozen by default.

    ``source`` is a trained CNN (its backbone is copied: the CNN is left as it
    was) or a backbone (used as is).

    Example:
        >>> import torch
        >>> model = transfer_model(cnn("seed", n_classes=5), n_classes=5)
        >>> count_parameters(model)
        (37253, 55744)
    """
    body = source if isinstance(source, Backbone) else backbone(source, copy=True)
    return TransferModel(
        body, n_classes, head_hidden=head_hidden, dropout=dropout, freeze_backbone=freeze_backbone
    )


def mobilenet_v2_backbone(weights_path: str | Path) -> Backbone:
    """torchvision's MobileNetV2 features + global average pooling, weights from a local file.

    Nothing is downloaded: save ``torchvision.models.mobilenet_v2(weights=...)
    .state_dict()`` once on a machine with a network, and pass its path. The
    classifier's weights may be absent. Inputs are ``(N, 3, H, W)`` images
    normalized as the weights expect (ImageNet: 224x224, mean/std scaled).

    Raises:
        ImportError: torchvision is not installed (``pip install torchvision``).
        FileNotFoundError: ``weights_path`` does not exist.

    Example:
        >>> b = mobilenet_v2_backbone("mobilenet_v2.pt")  # doctest: +SKIP
        >>> b.out_features  # doctest: +SKIP
        1280
    """
    try:
        import torchvision
    except ImportError as exc:
        raise ImportError(
            "mobilenet_v2_backbone needs torchvision, which is not installed: "
            "`pip install torchvision`."
        ) from exc
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"The value of `weights_path` is {str(path)!r}, but no such file exists.")
    net = torchvision.models.mobilenet_v2(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise ValueError(
            f"{str(path)!r} is not a MobileNetV2 state dict: missing {missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}."
        )
    body = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone(body, in_channels=3, out_features=net.last_channel, input_size=None)
