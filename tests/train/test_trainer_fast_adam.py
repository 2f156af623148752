"""fit's direct call of torch's fused Adam kernel equals ``optimizer.step()`` bit for bit."""

from __future__ import annotations

import pytest
import torch

import epochlab as el
from epochlab.train.trainer import _FusedAdamStep


def _pair(kind: str, **kw):
    out = []
    for _ in range(2):
        torch.manual_seed(0)
        model = el.models.mlp(6, hidden=(8,), out_features=2)
        opt = getattr(torch.optim, kind)(model.parameters(), lr=1e-2, fused=True, **kw)
        out.append((model, opt))
    return out


def _grads(model, step):
    g = torch.Generator().manual_seed(step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("kind, kw", [("Adam", {}), ("Adam", {"weight_decay": 0.1}),
                                      ("AdamW", {"weight_decay": 0.1}),
                                      ("Adam", {"betas": (0.8, 0.99), "eps": 1e-6})])
def test_the_direct_kernel_call_steps_exactly_as_torch(kind, kw):
    (a, opt_a), (b, opt_b) = _pair(kind, **kw)
    fast = _FusedAdamStep.of(opt_b)
    assert fast is not None
    for step in range(6):
        _grads(a, step)
        _grads(b, step)
        for group in (*opt_a.param_groups, *opt_b.param_groups):
            group["lr"] = 1e-2 / (step + 1)  # as fit's schedules set it
        opt_a.step()
        took = fast()
        if not took:
            opt_b.step()
        assert took == (step > 0)  # the first step makes the state: torch's own step
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    for sa, sb in zip(opt_a.state.values(), opt_b.state.values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_it_leaves_the_step_to_torch_when_it_cannot_take_it():
    (_, opt), = _pair("Adam")[:1]
    model = el.models.mlp(4)
    assert _FusedAdamStep.of(torch.optim.Adam(model.parameters(), lr=1e-3)) is None  # not fused
    assert _FusedAdamStep.of(torch.optim.Adam(model.parameters(), lr=1e-3, fused=True,
                                              amsgrad=True)) is None
    assert _FusedAdamStep.of(torch.optim.SGD(model.parameters(), lr=1e-3)) is None
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    fast = _FusedAdamStep.of(opt)
    _grads(model, 0)
    assert not fast()  # no state yet
    opt.step()
    next(iter(model.parameters())).grad = None
    assert not fast()  # a parameter without a gradient: torch skips it, so torch steps
    _grads(model, 1)
    handle = opt.register_step_post_hook(lambda *a: None)
    assert not fast()  # hooks run only in torch's step
    handle.remove()
    assert fast()
    opt.param_groups[0]["lr"] = torch.tensor(1e-3)
    assert not fast()


def test_fit_uses_it_and_trains_as_before(monkeypatch):
    data = el.data.synthetic(n_samples=200)
    taken = []
    real_call = _FusedAdamStep.__call__

    def counting(self):
        took = real_call(self)
        taken.append(took)
        return took

    monkeypatch.setattr(_FusedAdamStep, "__call__", counting)
    runs = []
    for use_fast in (True, False):
        if not use_fast:
            monkeypatch.setattr(_FusedAdamStep, "of", classmethod(lambda cls, opt: None))
        torch.manual_seed(0)
        model = el.models.mlp(20)
        h = el.fit(model, data, epochs=3, batch_size=32, validation_split=0.2, verbose=0)
        runs.append((h, model))
    (h1, m1), (h2, m2) = runs
    assert len(taken) == h1.total_updates and sum(taken) == h1.total_updates - 1
    assert [e["val_loss"] for e in h1.epochs] == [e["val_loss"] for e in h2.epochs]
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters(), strict=True))
