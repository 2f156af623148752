"""Fusion by structure: every supported layer type trains fused exactly as fit trains it alone.

Each case is a user's ``make_model`` (float64) swept over learning rates and
seeds with ``el.sweep``; the plan must say fused, and every run's metrics at
every epoch must equal ``torch.manual_seed(seed); m = make_model(); fit(m, ...)``
to a relative 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import epochlab as el
from epochlab.sweeps.fused_layers import HandNet, StackedNet, make_net

REL = 1e-9
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _data(n=96, shape=(6,), classes=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape))
    flat = x.reshape(n, -1)
    score = flat[:, 0] - 0.7 * flat[:, 1] + 0.3 * rng.normal(size=n)
    if classes == 2:
        y = (score > 0).astype(np.int64)
    else:
        y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    return x, y.astype(np.int64)


def _check_sweep_equals_fit(make_model, data, *, epochs=2, batch_size=16, lrs=(1e-2, 3e-3),
                            seeds=(0, 1), net=None, **kw):
    result = el.sweep(make_model, data, epochs=epochs, batch_size=batch_size, lr=list(lrs),
                      seed=list(seeds), progress=False, **kw)
    assert len(result.plan.tasks) == 1 and result.plan.tasks[0].fused, result.plan.describe()
    if net is not None:
        assert isinstance(make_net(make_model()), net)
    for r in result.runs:
        s = r.settings
        assert r.status == "completed" and "fused" in r.summary
        torch.manual_seed(s["seed"])
        model = make_model()
        h = el.fit(model, data, epochs=epochs, batch_size=batch_size, lr=s["lr"],
                   validation_split=0.2, seed=s["seed"], verbose=0,
                   weight_decay=s["weight_decay"], optimizer=s["optimizer"])
        got = result.history(r)
        assert len(got.epochs) == len(h.epochs) == epochs
        for mine, ref in zip(got.epochs, h.epochs, strict=True):
            for k in METRICS:
                if k in ref:
                    assert mine[k] == pytest.approx(ref[k], rel=REL, abs=1e-12), (s, k)
        np.testing.assert_allclose(got.iterations["loss"], h.iterations["loss"], rtol=REL)
        assert got.total_updates == h.total_updates and got.params == h.params
    return result


def gelu_layernorm():
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 1)).double()


def test_acceptance_user_sequential_with_gelu_and_layernorm_on_user_arrays():
    """The issue's acceptance test: 2 learning rates x 2 seeds, fused, equal to fit by hand."""
    x, y = _data()
    result = _check_sweep_equals_fit(gelu_layernorm, (x, y), epochs=3, net=StackedNet)
    assert len(result.runs) == 4 and len(result.plan.tasks[0].members) == 4
    assert "fused 4 runs" in result.plan.describe()


def _act(act):
    return lambda: nn.Sequential(nn.Linear(6, 12), act, nn.Linear(12, 1)).double()


@pytest.mark.parametrize("act", [nn.ReLU(), nn.Tanh()], ids=["relu", "tanh"])
def test_linear_relu_and_tanh_keep_the_hand_written_path(act):
    _check_sweep_equals_fit(_act(act), _data(), net=HandNet)


@pytest.mark.parametrize("bias", [True, False], ids=["biases", "a-layer-without-bias"])
def test_relu_and_tanh_stacks_with_and_without_biases_on_the_hand_written_path(bias):
    # All biased: the plain-MLP step (biases side by side, one sum for their gradients).
    def make():
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5, bias=bias), nn.ReLU(),
                             nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()

    assert make_net(make()).plain_mlp is bias
    _check_sweep_equals_fit(make, _data(classes=3), net=HandNet)


@pytest.mark.parametrize(
    "act",
    [nn.LeakyReLU(0.1), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.Sigmoid(),
     nn.ELU(), nn.Softplus(), nn.Identity()],
    ids=["leaky_relu", "gelu", "gelu_tanh", "silu", "sigmoid", "elu", "softplus", "identity"],
)
def test_every_elementwise_activation_fuses_and_equals_fit(act):
    _check_sweep_equals_fit(_act(act), _data(), net=StackedNet)


def test_dropout_masks_per_member_are_drawn_as_fit_draws_them():
    def make():
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 8),
                             nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 1)).double()

    _check_sweep_equals_fit(make, _data(), epochs=3, net=StackedNet)


def test_layer_norm_with_and_without_affine_and_bias():
    def make():
        return nn.Sequential(nn.Linear(6, 10), nn.LayerNorm(10, elementwise_affine=False),
                             nn.ReLU(), nn.Linear(10, 10), nn.LayerNorm(10, bias=False),
                             nn.Linear(10, 3)).double()

    _check_sweep_equals_fit(make, _data(classes=3), net=StackedNet)


def test_flatten_and_nested_sequentials_on_image_like_rows():
    def make():
        return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 8), nn.ReLU()),
                             nn.Sequential(nn.Linear(8, 3))).double()

    x, y = _data(shape=(3, 4), classes=3)
    _check_sweep_equals_fit(make, (x, y), net=HandNet)  # leading Flatten: still by hand

    def make_inner():
        return nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Flatten(), nn.Linear(15, 1)).double()

    _check_sweep_equals_fit(make_inner, _data(shape=(3, 4)), net=StackedNet)


def test_sgd_with_weight_decay_on_the_autograd_path():
    _check_sweep_equals_fit(_act(nn.SiLU()), _data(), optimizer="sgd", weight_decay=[0.0, 1e-3],
                            lrs=(0.05,))


def test_a_model_without_a_fused_form_trains_one_by_one_and_the_plan_says_why():
    def make():
        return nn.Sequential(nn.Linear(6, 8), nn.PReLU(), nn.Linear(8, 1)).double()

    result = el.sweep(make, _data(), epochs=1, lr=[1e-2, 1e-3], progress=False)
    assert not any(t.fused for t in result.plan.tasks)
    assert "layer 1 is PReLU: it has no fused form" in result.plan.describe()
    assert result.statuses() == {"completed": 2}


@pytest.mark.parametrize("bn, net", [({}, HandNet), ({"momentum": None}, HandNet),
                                     ({"eps": 1e-2, "momentum": 0.3}, HandNet),
                                     ({"affine": False}, StackedNet),
                                     ({"track_running_stats": False}, StackedNet)],
                         ids=["default", "cumulative", "eps-momentum", "no-affine",
                              "no-running-stats"])
def test_batch_norm_fuses_with_each_members_batch_statistics_and_running_stats(bn, net):
    # Slide 9's model. The validation metrics are computed in eval mode, from the running
    # statistics each member accumulated: they must equal fit's at every epoch. Affine batch
    # norm with running statistics takes the hand-written path, the rest autograd's.
    def make():
        return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, **bn), nn.ReLU(),
                             nn.Linear(8, 1)).double()

    _check_sweep_equals_fit(make, _data(), epochs=3, net=net)


def test_hand_written_batch_norm_with_tanh_no_bias_and_three_classes():
    def make():
        return nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.Tanh(),
                             nn.Linear(8, 5), nn.BatchNorm1d(5), nn.ReLU(),
                             nn.Linear(5, 3)).double()

    _check_sweep_equals_fit(make, _data(classes=3), epochs=3, net=HandNet)


def test_batch_norm_refuses_a_batch_of_one_row_fused_as_fit_does():
    # 102 rows leave 81 to train: batches of 16 end with one of one row. fit and the sweep
    # refuse it before training; the fused engine itself fails as nn.BatchNorm1d does in
    # training, not by dividing by zero.
    x, y = _data(n=102)
    make = lambda: nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(),  # noqa: E731
                                 nn.Linear(4, 1)).double()
    with pytest.raises(el.ParameterError, match="leave a last batch of 1 row"):
        el.fit(make(), (x, y), epochs=1, batch_size=16, validation_split=0.2, verbose=0)
    with pytest.raises(el.ParameterError, match="leave a last batch of 1 row"):
        el.sweep(make, (x, y), epochs=1, batch_size=16, lr=[1e-2, 1e-3], progress=False)
    from epochlab.sweeps import train_fused

    models = [make(), make()]
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        train_fused(models, x, y, epochs=1, batch_size=16, lrs=[1e-2, 1e-3], seeds=[0, 0],
                    validation_split=0.2)


def test_the_seeds_batch_norm_mlp_fuses_and_its_final_weights_and_statistics_equal_fits():
    x, y = _data()
    make = lambda: el.models.mlp(6, batch_norm=True).double()  # noqa: E731
    result = el.sweep(make, (x, y), epochs=2, batch_size=16, lr=[1e-2], seed=[0, 1],
                      progress=False)
    assert result.plan.tasks[0].fused
    from epochlab.sweeps import train_fused

    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(make())
    fused = train_fused(models, x, y, epochs=2, batch_size=16, lrs=1e-2, seeds=[0, 1],
                        validation_split=0.2)
    for s, res in zip((0, 1), sorted(fused, key=lambda r: r.member), strict=True):
        torch.manual_seed(s)
        ref = make()
        el.fit(ref, (x, y), epochs=2, batch_size=16, lr=1e-2, validation_split=0.2, seed=s,
               verbose=0)
        want = ref.state_dict()
        assert set(res.state_dict) == set(want)
        for key, value in want.items():
            # Rounding (batched vs single matmuls) grows a little over 2 epochs of updates.
            torch.testing.assert_close(res.state_dict[key], value, rtol=1e-7, atol=1e-10)
