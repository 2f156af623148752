"""The learning-rate range test: right (inside the range a sweep finds good), robust, harmless."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epochlab as el
from epochlab.diagnose.lr_find import RULES, lr_find, lr_sweep, smooth_curve, suggest
from epochlab.models.registry import build
from epochlab.train.runtime import fused_or_one_by_one

HALF_DECADES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]


def test_suggestion_for_the_seed_mlp_lies_in_the_range_a_sweep_finds_good():
    d = el.data.synthetic()
    res = lr_find(lambda: el.models.mlp(20), d, validation_split=0.2)  # 5 seeds, fused
    assert res.fused and res.losses.shape == (5, 200)
    sw = lr_sweep(lambda: el.models.mlp(20), d, HALF_DECADES, epochs=10, seeds=(0, 1))
    # Half a grid step of slack each side: the sweep only knows the rates it tried.
    assert sw.contains(res.suggestion, slack=0.25), (res.line(), sw)
    s, low, high, n = res.suggested()
    assert n == 5 and low <= s <= high


def test_suggestion_for_the_cnn_on_digits_lies_in_the_range_a_sweep_finds_good():
    d = el.data.load("digits")
    rows = np.random.default_rng(0).permutation(len(d.x_train))[:800]
    small = (d.x_train[rows], d.y_train[rows])

    def make():
        return build("cnn_small", d)  # slide 13's CNN

    res = lr_find(make, small, seeds=3, start_lr=1e-5, end_lr=1.0, num_iter=100,
                  validation_split=0.2)
    # Fused (float32) or one seed at a time (fit's precision, bf16 on CPUs that have it):
    # whichever runtime says is faster for this model on this machine.
    fuse, _ = fused_or_one_by_one(make(), torch.as_tensor(small[0][:2]), 32)
    assert res.fused == fuse and ("fused" if fuse else "one seed at a time") in res.how
    # 5 epochs of 20 updates: fewer, and only rates above the suggestion have time to train.
    sw = lr_sweep(make, small, [3e-4, 1e-3, 1e-2, 1e-1], epochs=5)
    assert sw.contains(res.suggestion, slack=0.25), (res.line(), sw)


def test_the_users_model_and_random_state_are_untouched():
    torch.manual_seed(123)
    model = el.models.mlp(20)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    res = lr_find(model, el.data.synthetic(n_samples=300), num_iter=40, seeds=2)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert res.losses.shape == (2, 40)


def test_fused_and_one_seed_at_a_time_give_the_same_curves():
    d = el.data.synthetic(n_samples=300)
    a = lr_find(lambda: el.models.mlp(20), d, num_iter=60, seeds=[0, 3])
    b = lr_find(lambda: el.models.mlp(20), d, num_iter=60, seeds=[0, 3], fuse=False)
    assert a.fused and not b.fused
    assert a.kept == b.kept
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-4, atol=1e-6)
    for r in RULES:
        np.testing.assert_allclose(a.suggestions[r], b.suggestions[r], rtol=1e-6)


def test_curves_stop_where_the_loss_diverges():
    res = lr_find(lambda: el.models.mlp(20), el.data.synthetic(n_samples=300), optimizer="sgd",
                  start_lr=1e-3, end_lr=1e6, num_iter=80, seeds=2)
    assert all(k < 80 for k in res.kept)
    for row, k in zip(res.losses, res.kept, strict=True):
        assert np.isfinite(row[:k]).all() and np.isnan(row[k:]).all()


def _sigmoid_curve(n=200, centre=-3.0):
    lrs = np.logspace(-7, 1, n)
    return lrs, 1.0 / (1.0 + np.exp(3 * (np.log10(lrs) - centre)))


def test_steepest_is_taken_against_log_lr_and_ignores_an_early_spike():
    lrs, loss = _sigmoid_curve()
    assert suggest(lrs, loss, "steepest") == pytest.approx(1e-3, rel=0.1)  # the inflection
    spiky = loss.copy()
    spiky[3:6] -= 0.5  # an early plunge (Lightning issue 1767)
    assert suggest(lrs, smooth_curve(spiky, 8), "steepest", burn_in=20) == pytest.approx(
        1e-3, rel=0.2)
    assert suggest(lrs, loss, "minimum") == pytest.approx(lrs[-1] / 10)


def test_bad_parameters_name_the_parameter():
    d = el.data.synthetic(n_samples=100)
    with pytest.raises(el.ParameterError, match="rule"):
        lr_find(lambda: el.models.mlp(20), d, rule="fastest")
    with pytest.raises(el.ParameterError, match="end_lr"):
        lr_find(lambda: el.models.mlp(20), d, start_lr=1.0, end_lr=0.1)
    with pytest.raises(el.ParameterError, match="seeds"):
        lr_find(lambda: el.models.mlp(20), d, seeds=[1, 1])
    with pytest.raises(el.ParameterError, match="model"):
        lr_find(lambda: 3, d, num_iter=20)


@pytest.mark.parametrize("fuse", [True, False])
def test_labels_the_model_cannot_train_are_refused_fused_or_not(fuse):
    d = el.data.synthetic(n_samples=400)
    with pytest.raises(el.ParameterError, match=r"values \[1, 2\], not only 0 and 1"):
        el.lr_find(lambda: el.models.mlp(20), (d.x_train, d.y_train + 1), num_iter=20, seeds=1,
                   fuse=fuse)
    with pytest.raises(el.ParameterError, match="labels 0..2 .* out_features=3"):
        el.lr_find(lambda: el.models.mlp(20, out_features=2), (d.x_train, np.arange(320) % 3),
                   num_iter=20, seeds=1, fuse=fuse)


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_threads_and_precision_are_taken_as_fit_takes_them():
    d = el.data.synthetic(n_samples=300)
    mlp = lambda: el.models.mlp(20)  # noqa: E731
    fused = el.lr_find(mlp, d.train, num_iter=20, seeds=2, threads=1, precision="fp32")
    assert fused.fused and fused.options["precision"] == "fp32"
    bf16 = el.lr_find(mlp, d.train, num_iter=20, seeds=2, precision="bf16")
    assert not bf16.fused and "precision='bf16'" in bf16.how  # fused computes in float32
    one_by_one = el.lr_find(mlp, d.train, num_iter=20, seeds=2, fuse=False, precision="fp32")
    np.testing.assert_allclose(one_by_one.losses, fused.losses, rtol=1e-5)
    with pytest.raises(el.ParameterError, match="`threads`"):
        el.lr_find(mlp, d.train, num_iter=20, seeds=2, threads=0)
    with pytest.raises(el.ParameterError, match="`precision`"):
        el.lr_find(mlp, d.train, num_iter=20, seeds=2, precision="fp16")
