"""The seed's CNNs: shapes, parameter counts, clear errors for wrong input shapes, learning."""

from __future__ import annotations

import pytest
import torch

import epochlab as el
from epochlab.models.cnn import cnn


def test_seed_cnn_matches_slide_11_parameter_count_and_shapes():
    model = cnn("seed")
    # Keras' model.summary() for slide 11 on (28, 28, 1) reports 93,322 parameters.
    assert sum(p.numel() for p in model.parameters()) == 93_322
    assert model.backbone.out_features == 64 * 3 * 3
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_small_cnn_matches_slide_13_and_flatten_follows_input_size():
    model = cnn("small")
    assert model.backbone.out_features == 32 * 13 * 13
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    other = cnn("seed", in_channels=3, n_classes=4, input_size=(32, 40))
    assert other(torch.zeros(2, 3, 32, 40)).shape == (2, 4)


@pytest.mark.parametrize(
    ("shape", "hint"),
    [
        ((4, 784), "x.reshape(-1, 1, 28, 28)"),
        ((4, 28, 28, 1), "x.permute(0, 3, 1, 2)"),
        ((4, 28, 28), "x.unsqueeze(1)"),
        ((4, 1, 20, 20), "(N, 1, 28, 28)"),
    ],
)
def test_wrong_input_shape_says_how_to_reshape(shape, hint):
    with pytest.raises(ValueError, match="expects input shaped") as err:
        cnn("seed")(torch.zeros(*shape))
    assert hint in str(err.value)


def test_invalid_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="`kind`"):
        cnn("big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`n_classes`"):
        cnn(n_classes=0)
    with pytest.raises(ValueError, match="at least 18 pixels"):
        cnn("seed", input_size=12)


def test_batch_norm_variant_has_a_batch_norm_after_each_conv():
    model = cnn("seed", batch_norm=True)
    kinds = [type(m).__name__ for m in model.backbone.body]
    assert kinds.count("BatchNorm2d") == 3
    assert kinds.index("BatchNorm2d") == kinds.index("Conv2d") + 1


def test_seed_cnn_learns_digits_in_two_epochs():
    d = el.data.digits(seed=0)
    torch.manual_seed(0)
    model = cnn("seed")
    h = el.fit(model, (d.x_train[:600], d.y_train[:600]), epochs=2, batch_size=32,
               validation_data=d.test, seed=0, verbose=0)
    # Chance is 10%; a model that learns nothing stays near it.
    assert h.history["val_accuracy"][-1] > 0.6


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_pooling_before_relu_gives_the_slide_order_values_and_gradients(batch_norm, bf16):
    # The backbone takes each ReLU after the max-pool that follows it (4x fewer elements).
    # Values and gradients must equal the slide's order (Conv, ReLU, MaxPool) bit for bit,
    # ties included: inputs of few distinct values make many equal maxima and exact zeros.
    torch.manual_seed(0)
    model = cnn("seed", input_size=20, batch_norm=batch_norm)
    x = torch.randint(-2, 3, (6, 1, 20, 20)).float()
    y = torch.randint(0, 10, (6,))
    if bf16:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for run in (model, lambda t: model.head(model.backbone.body(t))):  # fast path, plain order
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = run(x)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        results.append((out.detach().clone(), [p.grad.clone() for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    assert any(g.abs().sum() > 0 for g in grads_a[:2])  # the first conv did get gradient
    # The modules stay in the slide's order; the fast path ran the first ReLU on pooled maps.
    kinds = [type(m).__name__ for m in model.backbone.body]
    relu = kinds.index("ReLU")
    assert kinds[relu + 1] == "MaxPool2d"
    seen = []
    model.backbone.body[relu].register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    model(x)
    assert seen == [9]  # 20 -> conv 18 -> pool 9
