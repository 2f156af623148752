"""Fused CNNs (HFTA-style grouped convolutions): every member trains as fit trains it alone.

As in ``test_fused_layers``: a float64 ``make_model`` swept over learning
rates, seeds and weight decay with ``el.sweep``, the plan must say
fused, and every run equals ``torch.manual_seed(seed); fit(make_model(), ...)``
to a relative 1e-9 at every epoch and iteration.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_fused_layers import _check_sweep_equals_fit
from torch import nn

import epochlab as el
from epochlab.sweeps.fused_conv import conv_relu_pool, fusable_block
from epochlab.sweeps.fused_layers import HandNet, StackedNet, is_fusable, make_net


def _images(n=64, side=10, channels=1, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, channels, side, side))
    score = x[:, 0, :3, :3].sum(axis=(1, 2)) + 0.3 * rng.normal(size=n)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    return x, y.astype(np.int64)


def _seed_cnn(kind):
    def make():
        return el.models.cnn(kind, n_classes=3, input_size=10 if kind == "small" else 18,
                             hidden=8).double()
    return make


@pytest.mark.parametrize("kind, net", [("small", HandNet), ("seed", StackedNet)])
def test_the_seeds_cnns_train_fused_exactly_as_fit(kind, net):
    # cnn_small (conv block, Flatten, Linear stack) runs by hand; the seed CNN's third
    # convolution has no pool after it, so that one runs under autograd.
    data = _images(side=10 if kind == "small" else 18)
    _check_sweep_equals_fit(_seed_cnn(kind), data, net=net)


def test_two_conv_blocks_and_a_linear_stack_run_by_hand_exactly_as_fit():
    # The second block needs the gradient of its input: the first block's output.
    def make():
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 2, bias=False), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(20, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3),
        ).double()
    _check_sweep_equals_fit(make, _images(side=11, channels=2), epochs=3, net=HandNet)


def test_sequential_cnn_with_strides_padding_groups_and_avg_pool():
    def make():
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 4, 3, stride=2, groups=2),
            nn.AvgPool2d(2), nn.Conv2d(4, 6, 1, bias=False), nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(), nn.Linear(6, 3),
        ).double()
    _check_sweep_equals_fit(make, _images(side=11, channels=2), lrs=(1e-2,), seeds=(0, 1, 2))


def test_cnn_with_batch_norm_fuses_exactly_as_fit():
    def make():
        return el.models.cnn("small", n_classes=3, input_size=10, hidden=8,
                             batch_norm=True).double()
    _check_sweep_equals_fit(make, _images(), epochs=3, net=StackedNet)


def test_fused_cnn_members_differing_in_weight_decay():
    _check_sweep_equals_fit(_seed_cnn("small"), _images(), weight_decay=[0.0, 1e-3])


def test_conv_settings_without_a_fused_form_say_why():
    circular = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"),
                             nn.Flatten(), nn.Linear(2 * 16, 2))
    check = is_fusable(circular)
    assert not check and "padding_mode='circular'" in check.reason
    assert is_fusable(el.models.cnn("small", batch_norm=True))  # running stats are stacked
    assert isinstance(make_net(el.models.cnn("seed")), StackedNet)


@pytest.mark.parametrize("conv_kw", [{}, {"padding": 1}, {"stride": 2, "padding": 2},
                                     {"dilation": 2, "bias": False}],
                         ids=["valid", "pad", "stride", "dilation"])
@pytest.mark.parametrize("constant", [False, True], ids=["random", "ties"])
def test_conv_relu_pool_block_equals_the_three_layers_with_gradients(conv_kw, constant):
    # Constant images make every pooling window a tie: the gradient must go where
    # max_pool2d sends it (the first maximum), or fused runs drift from fit's. Weights
    # in eighths keep every sum exact, so the ties are ties in both computations.
    torch.manual_seed(0)
    k, b, c, side = 3, 4, 2, 11
    convs = [nn.Conv2d(c, 5, 3, **conv_kw).double() for _ in range(k)]
    if constant:
        with torch.no_grad():
            for m in convs:
                for t in m.parameters():
                    t.copy_((t * 8).round() / 8 + 0.125)
    x = torch.full((k, b, c, side, side), 0.5, dtype=torch.float64) if constant else \
        torch.randn(k, b, c, side, side, dtype=torch.float64)
    x.requires_grad_(True)
    assert fusable_block(convs[0], nn.ReLU(), nn.MaxPool2d(2))
    w = torch.stack([m.weight.detach() for m in convs]).requires_grad_(True)
    p = {"weight": w}
    if convs[0].bias is not None:
        p["bias"] = torch.stack([m.bias.detach() for m in convs]).requires_grad_(True)
    out = conv_relu_pool(convs[0])(x, p, None)
    ref = torch.stack([F.max_pool2d(F.relu(m(x[i])), 2) for i, m in enumerate(convs)])
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    mine = torch.autograd.grad(out, [x, *p.values()], g)
    refs = torch.autograd.grad(ref, [x], g, retain_graph=True)
    torch.testing.assert_close(mine[0], refs[0], rtol=1e-10, atol=1e-12)
    for name, got in zip(p, mine[1:], strict=True):
        want = torch.stack([torch.autograd.grad(ref[i], getattr(m, name), g[i], retain_graph=True)[0]
                            for i, m in enumerate(convs)])
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_seeds_cnns_run_their_conv_blocks_fused():
    # cnn_small: one Conv-ReLU-MaxPool block, Flatten, Linear, ReLU, Linear.
    net = make_net(el.models.cnn("small", input_size=8))
    assert isinstance(net, HandNet) and len(net.blocks) == 1 and len(net.specs) == 2
    net = make_net(el.models.cnn("seed"))  # two blocks, then Conv2d, ReLU on their own
    assert len(net.layers) == 8  # block, block, Conv2d, ReLU, Flatten, Linear, ReLU, Linear
    assert not fusable_block(nn.Conv2d(1, 2, 3, groups=1, padding="same"), nn.ReLU(),
                             nn.MaxPool2d(2))


def test_small_cnn_members_train_fused_in_float32_with_precision_auto():
    # Even where auto picks bf16 for a CNN trained alone: members this small finish
    # sooner trained together in float32 (runtime.FUSED_FP32_MAX_MACS).
    x, y = _images(n=48, side=8)
    make = lambda: el.models.cnn("small", n_classes=3, input_size=8, hidden=8)  # noqa: E731
    result = el.sweep(make, (x.astype(np.float32), y), epochs=1, batch_size=16,
                      lr=[1e-2, 1e-3], progress=False)
    for r in result.runs:
        assert r.status == "completed" and "fused" in r.summary
        assert r.summary["runtime"]["precision"] == "fp32"


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, set()], ids=["bf16-cpu", "fp32-cpu"])
def test_the_plan_fuses_a_large_cnn_only_where_that_is_faster(monkeypatch, flags):
    # cnn_small on 28x28 digits: 17 M multiply-adds a member step. On a CPU with native
    # bf16, one by one in bf16 beats fused float32 (bench_fused_cnn.py); without, fused wins.
    from epochlab.sweeps import plan as plan_mod
    from epochlab.sweeps.spec import SweepSpec
    from epochlab.train import runtime

    monkeypatch.setattr(runtime, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(plan_mod, "_SPEED_REASONS", {})
    spec = SweepSpec(data="digits", model="cnn_small", epochs=[1], lr=[1e-3, 1e-4])
    plan = plan_mod.make_plan(spec.configs())
    if flags:
        assert not any(t.fused for t in plan.tasks)
        assert "bf16 one by one is faster than fused float32" in plan.describe()
        fp32 = plan_mod.make_plan(spec.configs(), precision="fp32")  # asked for: fused
        assert len(fp32.tasks) == 1 and fp32.tasks[0].fused
    else:
        assert len(plan.tasks) == 1 and plan.tasks[0].fused


def test_float32_arrays_with_a_float64_cnn_train_fused_as_fit_casts_them():
    # fit casts the data to the model's dtype; the sweep's probes (thread count, speed
    # rule) must too, or the group crashed before training.
    x, y = _images(n=48, side=8)
    make = lambda: el.models.cnn("small", n_classes=3, input_size=8, hidden=8).double()  # noqa: E731
    result = el.sweep(make, (x.astype(np.float32), y), epochs=1, batch_size=16,
                      lr=[1e-2, 1e-3], progress=False)
    assert result.plan.tasks[0].fused and result.statuses() == {"completed": 2}
