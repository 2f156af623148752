"""Transfer learning: freezing really freezes (BatchNorm included), heads train, the study measures."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import epochlab as el
from epochlab.models.cnn import cnn
from epochlab.models.transfer import (
    TransferModel,
    backbone,
    count_parameters,
    freeze,
    mobilenet_v2_backbone,
    transfer_model,
    unfreeze,
)


@pytest.fixture(scope="module")
def digits_5_to_9():
    return el.data.digits(seed=0, labels=(5, 6, 7, 8, 9))


def test_freeze_and_unfreeze_flip_requires_grad_and_the_counts():
    model = cnn("seed")
    freeze(model.backbone)
    assert count_parameters(model) == (93_322 - 55_744, 55_744)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    unfreeze(model.backbone)
    assert count_parameters(model) == (93_322, 0)


def test_training_the_head_leaves_the_frozen_backbone_unchanged(digits_5_to_9):
    torch.manual_seed(0)
    source = cnn("seed", n_classes=5)
    model = transfer_model(source, head_hidden=16, n_classes=5)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = [p.clone() for p in model.head.parameters()]
    x, y = digits_5_to_9.x_train[:128], digits_5_to_9.y_train[:128]
    el.fit(model, (x, y), epochs=1, batch_size=32, seed=0, verbose=0)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.head.parameters(), strict=True))


def test_frozen_batch_norm_stays_in_eval_mode_through_model_train():
    torch.manual_seed(0)
    model = transfer_model(cnn("seed", batch_norm=True), n_classes=3)
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    stats = [bn.running_mean.clone() for bn in bns]
    model.train()
    model(torch.rand(8, 1, 28, 28))
    assert all(not bn.training for bn in bns)
    assert all(torch.equal(bn.running_mean, s) for bn, s in zip(bns, stats, strict=True))
    unfreeze(model.backbone)
    model.train()
    model(torch.rand(8, 1, 28, 28))
    assert all(bn.training for bn in bns)
    assert not torch.equal(bns[0].running_mean, stats[0])


def test_backbone_is_a_copy_so_the_source_model_is_untouched():
    source = cnn("seed")
    body = backbone(source)
    with torch.no_grad():
        next(body.parameters()).add_(1.0)
    assert not torch.equal(next(body.parameters()), next(source.parameters()))
    assert backbone(source, copy=False) is source.backbone
    with pytest.raises(TypeError, match="Backbone"):
        backbone(nn.Linear(3, 2))


def test_transfer_model_head_sizes_and_argument_errors():
    body = backbone(cnn("seed"))
    binary = TransferModel(body, n_classes=2, head_hidden=0)
    assert binary(torch.zeros(2, 1, 28, 28)).shape == (2, 1)
    assert count_parameters(binary) == (577, 55_744)
    with pytest.raises(ValueError, match="`n_classes`"):
        TransferModel(body, n_classes=1)
    with pytest.raises(ValueError, match="in_features"):
        TransferModel(nn.Flatten(), n_classes=3)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None,
                    reason="torchvision is installed")
def test_mobilenet_without_torchvision_says_how_to_install_it(tmp_path):
    with pytest.raises(ImportError, match="pip install torchvision"):
        mobilenet_v2_backbone(tmp_path / "weights.pt")
