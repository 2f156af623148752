"""Fused training equals training each member alone (epochlab.sweeps.fused).

The reference is a plain one-by-one PyTorch loop written here from the
contract (seeded split, seeded randperm per epoch, torch.optim, per-epoch
metrics from the forward passes before each update), run in float64 so
that agreement to ~1e-12 means the same arithmetic, not chaos.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split
from torch import nn

from epochlab import evaluate, fit
from epochlab.models import mlp
from epochlab.sweeps import is_fusable, train_fused
from epochlab.sweeps.fused import chunk_sizes, stacked_evaluator
from epochlab.sweeps.fused_ops import FlatLayout, backward, forward, loss_and_grad, parse_sequential
from epochlab.train import runtime

N_FEATURES = 8
HIDDEN = (16, 8)


def _data(n_classes: int = 2, n: int = 200, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=n, n_features=N_FEATURES, n_informative=4, n_classes=n_classes, random_state=seed
    )
    return x.astype(np.float32), y.astype(np.int64)


def _models(seeds, out=1, dtype=torch.float64, activation="relu"):
    models = []
    for s in seeds:
        torch.manual_seed(s)
        models.append(mlp(N_FEATURES, hidden=HIDDEN, out_features=out, activation=activation).to(dtype))
    return models


def reference_fit(model, X, y, *, epochs, batch_size, lr, seed, optimizer="adam",
                  weight_decay=0.0, momentum=0.0, nesterov=False, betas=(0.9, 0.999),
                  validation_split=0.0, validation_data=None, shuffle=True, drop_last=False):
    """One member trained alone, exactly as the contract says; returns metrics and records."""
    dtype = next(model.parameters()).dtype
    x_all, y_all = torch.as_tensor(X).to(dtype), torch.as_tensor(y)
    binary = model[-1].out_features == 1
    n = len(x_all)
    if validation_split > 0:
        tr, va = train_test_split(np.arange(n), test_size=validation_split, random_state=seed,
                                  stratify=y_all.numpy(), shuffle=True)
        xv, yv = x_all[va], y_all[va]
    else:
        tr = np.arange(n)
        xv, yv = (None, None) if validation_data is None else (
            torch.as_tensor(validation_data[0]).to(dtype), torch.as_tensor(validation_data[1]))
    xt, yt = x_all[tr], y_all[tr]
    lr_fn = lr if callable(lr) else (lambda step, epoch: lr)
    params = model.parameters()
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=1.0, momentum=momentum, weight_decay=weight_decay,
                              nesterov=nesterov)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=1.0, betas=betas, eps=1e-8, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=1.0, betas=betas, eps=1e-8, weight_decay=weight_decay)

    def loss_fn(out, target):
        if binary:
            return nn.functional.binary_cross_entropy_with_logits(out, target.to(dtype).view(-1, 1))
        return nn.functional.cross_entropy(out, target)

    def n_correct(out, target):
        pred = (out[:, 0] > 0).long() if binary else out.argmax(1)
        return int((pred == target).sum())

    g = torch.Generator().manual_seed(seed)
    ipe = len(tr) // batch_size if drop_last else math.ceil(len(tr) / batch_size)
    metrics = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    lrs, losses, step, status = [], [], 0, "completed"
    for epoch in range(epochs):
        perm = torch.randperm(len(tr), generator=g) if shuffle else torch.arange(len(tr))
        total, correct, seen = 0.0, 0, 0
        for b in range(ipe):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            rate = lr_fn(step, epoch)
            for group in opt.param_groups:
                group["lr"] = rate
            out = model(xt[idx])
            loss = loss_fn(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
            if not (math.isfinite(loss.item()) and math.isfinite(gnorm.item())):
                return {"metrics": metrics, "lr": lrs, "loss": losses, "updates": step,
                        "status": "diverged", "state_dict": model.state_dict()}
            opt.step()
            step += 1
            lrs.append(rate)
            losses.append(loss.item())
            total += loss.item() * len(idx)
            correct += n_correct(out, yt[idx])
            seen += len(idx)
        metrics["loss"].append(total / seen)
        metrics["accuracy"].append(correct / seen)
        if xv is not None:
            with torch.no_grad():
                out = model(xv)
                metrics["val_loss"].append(loss_fn(out, yv).item())
                metrics["val_accuracy"].append(n_correct(out, yv) / len(yv))
    return {"metrics": {k: v for k, v in metrics.items() if v}, "lr": lrs, "loss": losses,
            "updates": step, "status": status, "state_dict": model.state_dict()}


def _assert_same(fused, ref, tol=1e-12, status=None):
    assert fused.status == (status or ref["status"])
    assert fused.updates == ref["updates"]
    assert fused.metrics.keys() == ref["metrics"].keys()
    for name, values in ref["metrics"].items():
        np.testing.assert_allclose(fused.metrics[name], values, rtol=tol, atol=tol, err_msg=name)
    np.testing.assert_allclose(fused.lr, ref["lr"], rtol=tol, atol=0)
    np.testing.assert_allclose(fused.step_loss, ref["loss"], rtol=tol, atol=tol)
    assert fused.state_dict.keys() == ref["state_dict"].keys()
    for key, value in ref["state_dict"].items():
        torch.testing.assert_close(fused.state_dict[key], value, rtol=tol, atol=tol)


def _run_both(X, y, seeds, out, lrs, tol=1e-12, **kw):
    fused = train_fused(_models(seeds, out), X, y, lrs=lrs, seeds=seeds, **kw)
    ref_kw = {k: v for k, v in kw.items() if k not in ("momentum", "weight_decay", "betas")}
    for i, (s, model) in enumerate(zip(seeds, _models(seeds, out), strict=True)):
        per = {k: (kw[k][i] if isinstance(kw.get(k), list) else kw[k])
               for k in ("momentum", "weight_decay", "betas") if k in kw}
        ref = reference_fit(model, X, y, lr=lrs[i], seed=s, **ref_kw, **per)
        _assert_same(fused[i], ref, tol)
    return fused


def test_adam_binary_with_per_member_splits_matches_one_by_one():
    X, y = _data()
    res = _run_both(X, y, seeds=[0, 1, 2, 3], out=1, lrs=[0.1, 0.01, 0.003, 0.001],
                    epochs=4, batch_size=32, validation_split=0.2)
    assert [r.n_train for r in res] == [160] * 4
    assert res[0].iterations_per_epoch == 5 and res[0].updates == 20
    assert res[0].samples_seen == 4 * 160


def test_members_sharing_learning_rates_match_one_by_one_in_the_callers_order():
    # 2 distinct rates over 8 members, interleaved: updated as 2 runs of equal rates
    X, y = _data()
    seeds, lrs = list(range(8)), [0.01, 0.001] * 4
    res = _run_both(X, y, seeds=seeds, out=1, lrs=lrs, epochs=2, batch_size=32,
                    validation_split=0.2)
    assert [r.member for r in res] == list(range(8)) and [r.seed for r in res] == seeds


@pytest.mark.parametrize("kernel", ["_fused_adam_", "_fused_adamw_"])
def test_adam_without_torchs_fused_kernel_matches_one_by_one_too(monkeypatch, kernel):
    monkeypatch.delattr(torch, kernel)  # AdamW's kernel zeroes the lr-1 update's buffer
    X, y = _data()
    _run_both(X, y, seeds=[0, 1], out=1, lrs=[0.01, 0.001], epochs=2, batch_size=32,
              validation_split=0.2, weight_decay=1e-3)


@pytest.mark.parametrize(("nesterov", "momentum"), [(True, [0.9, 0.5, 0.3]), (False, [0.9, 0.0, 0.5])])
def test_sgd_momentum_weight_decay_schedule_multiclass_drop_last(nesterov, momentum):
    X, y = _data(n_classes=3)
    decay = [lambda step, epoch, r=r: r * 0.97**step for r in (0.2, 0.05, 0.01)]
    res = _run_both(X, y, seeds=[5, 6, 7], out=3, lrs=decay, epochs=3, batch_size=48,
                    optimizer="sgd", momentum=momentum, weight_decay=[1e-3, 0.0, 1e-2],
                    nesterov=nesterov, validation_split=0.25, drop_last=True)
    assert res[0].iterations_per_epoch == 150 // 48 == 3
    assert res[0].lr[:2] == [0.2, 0.2 * 0.97]


def test_adam_per_member_betas_and_l2_schedule_shared_validation_no_shuffle():
    X, y = _data()
    sched = [lambda step, epoch: 0.01 / (1 + epoch), 0.002]
    _run_both(X[:150], y[:150], seeds=[1, 1], out=1, lrs=sched, epochs=3, batch_size=40,
              betas=[(0.9, 0.999), (0.8, 0.99)], weight_decay=[0.0, 1e-2],
              validation_data=(X[150:], y[150:]), shuffle=False)


def test_adamw_matches_torch_adamw():
    X, y = _data(n_classes=3)
    _run_both(X, y, seeds=[0, 9], out=3, lrs=[0.01, 0.003], epochs=3, batch_size=64,
              optimizer="adamw", weight_decay=[0.1, 0.01])


def test_float32_after_one_epoch_within_1e_5():
    X, y = _data()
    seeds, lrs = [0, 1, 2, 3], [0.1, 0.01, 0.001, 0.0001]
    fused = train_fused(_models(seeds, dtype=torch.float32), X, y, lrs=lrs, seeds=seeds,
                        epochs=1, batch_size=32, validation_split=0.2)
    for i, (s, model) in enumerate(zip(seeds, _models(seeds, dtype=torch.float32), strict=True)):
        ref = reference_fit(model, X, y, epochs=1, batch_size=32, lr=lrs[i], seed=s,
                            validation_split=0.2)
        for key, value in ref["state_dict"].items():
            assert fused[i].state_dict[key].dtype == torch.float32
            torch.testing.assert_close(fused[i].state_dict[key], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fused[i].metrics["val_loss"], ref["metrics"]["val_loss"],
                                   rtol=1e-5)


@pytest.mark.parametrize(
    ("task", "out", "activation"),
    [("binary", 1, "relu"), ("multiclass", 4, "tanh"), ("regression", 2, "relu")],
)
def test_handwritten_backward_matches_autograd(task, out, activation):
    k, batch = 3, 7
    models = _models([0, 1, 2], out, activation=activation)
    specs = parse_sequential(models[0])
    layout = FlatLayout(specs)
    flat = layout.stack([m.state_dict() for m in models], torch.float64)
    grad = torch.zeros_like(flat)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(k, batch, N_FEATURES, generator=gen, dtype=torch.float64)
    if task == "binary":
        y = torch.randint(0, 2, (k, batch, 1), generator=gen).double()
    elif task == "multiclass":
        y = torch.randint(0, out, (k, batch), generator=gen)
    else:
        y = torch.randn(k, batch, out, generator=gen, dtype=torch.float64)
    z, cache = forward(layout.views(flat), specs, x)
    loss, dz, _ = loss_and_grad(task, z, y)
    backward(layout.views(flat), layout.views(grad), specs, cache, dz)
    for i, model in enumerate(models):
        pred = model(x[i])
        torch.testing.assert_close(z[i], pred.detach(), rtol=1e-13, atol=1e-13)
        if task == "binary":
            ref = nn.functional.binary_cross_entropy_with_logits(pred, y[i])
        elif task == "multiclass":
            ref = nn.functional.cross_entropy(pred, y[i])
        else:
            ref = nn.functional.mse_loss(pred, y[i])
        ref.backward()
        assert abs(loss[i].item() - ref.item()) < 1e-13
        auto = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(grad[i], auto, rtol=1e-12, atol=1e-13)


def test_diverging_member_stops_at_the_right_iteration_and_the_others_are_unchanged():
    X, y = _data()
    def exploding(step, epoch):  # weights grow 1e30-fold a step until the logits overflow
        return 1e-3 * 10.0 ** min(30 * step, 300)

    seeds, lrs = [0, 1, 2], [0.01, exploding, 0.001]
    kw = dict(epochs=3, batch_size=32, validation_split=0.2)
    with_bad = train_fused(_models(seeds), X, y, lrs=lrs, seeds=seeds, **kw)
    without = train_fused(_models([0, 2]), X, y, lrs=[0.01, 0.001], seeds=[0, 2], **kw)
    ref = reference_fit(_models([1])[0], X, y, lr=exploding, seed=1, **kw)
    bad = with_bad[1]
    assert ref["status"] == "diverged" and bad.status == "diverged"
    assert 2 <= bad.updates == ref["updates"] < 15
    assert bad.info["divergence"]["step"] == ref["updates"]
    assert all(torch.isfinite(v).all() for v in bad.state_dict.values())
    for key, value in ref["state_dict"].items():
        torch.testing.assert_close(bad.state_dict[key], value, rtol=1e-12, atol=1e-12)
    assert len(bad.metrics["loss"]) == bad.epochs_done == ref["updates"] // 5
    # its per-step record ends at its last finite step, even when that is mid-epoch
    np.testing.assert_allclose(bad.step_loss, ref["loss"], rtol=1e-12, atol=1e-12)
    for got, want in zip([with_bad[0], with_bad[2]], without, strict=True):
        assert got.status == "completed" and got.updates == 15
        np.testing.assert_allclose(got.step_loss, want.step_loss, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.grad_norm, want.grad_norm, rtol=1e-12, atol=1e-12)
        for m in want.metrics:
            np.testing.assert_allclose(got.metrics[m], want.metrics[m], rtol=1e-12, atol=1e-12)
        for key in want.state_dict:
            torch.testing.assert_close(got.state_dict[key], want.state_dict[key],
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_members_of_one_seed_share_their_rows_and_still_leave_one_by_one(n_classes):
    # One seed: the rows are gathered once and seen by all members (expanded views). A
    # member that diverges mid-epoch and one the hook stops leave; each equals its own fit.
    X, y = _data(n_classes=n_classes)
    out = 1 if n_classes == 2 else n_classes

    def exploding(step, epoch):
        return 1e-3 * 10.0 ** min(30 * step, 300)

    def stop_the_third_after_epoch_1(epoch, metrics):
        return np.array([False, False, epoch == 1])

    # (Three classes: the second member at 0.005 instead. Past 1e150 the hand-written
    # softmax gradient and autograd's overflow one step apart: both diverge, not always at
    # the same update.)
    second = exploding if n_classes == 2 else 0.005
    seeds, lrs = [1, 1, 1], [0.01, second, 0.001]
    kw = dict(epochs=3, batch_size=32, validation_split=0.2)
    res = train_fused(_models(seeds, out), X, y, lrs=lrs, seeds=seeds,
                      on_epoch_end=stop_the_third_after_epoch_1, **kw)
    assert [r.status for r in res[::2]] == ["completed", "stopped"]
    _assert_same(res[0], reference_fit(_models([1], out)[0], X, y, lr=0.01, seed=1, **kw))
    ref = reference_fit(_models([1], out)[0], X, y, lr=second, seed=1, **kw)
    assert res[1].status == ref["status"] == ("diverged" if n_classes == 2 else "completed")
    assert res[1].updates == ref["updates"]
    np.testing.assert_allclose(res[1].step_loss, ref["loss"], rtol=1e-12, atol=1e-12)
    ref = reference_fit(_models([1], out)[0], X, y, lr=0.001, seed=1, **{**kw, "epochs": 2})
    _assert_same(res[2], ref, status="stopped")


def test_hook_stops_one_member_and_the_others_go_on():
    X, y = _data()
    seen = []

    def stop_member_1_after_epoch_1(epoch, metrics):
        seen.append((epoch, np.isnan(metrics["val_loss"]).tolist()))
        return np.array([False, epoch == 1, False])

    seeds, lrs = [0, 1, 2], [0.01, 0.01, 0.001]
    kw = dict(epochs=4, batch_size=32, validation_split=0.2)
    res = train_fused(_models(seeds), X, y, lrs=lrs, seeds=seeds,
                      on_epoch_end=stop_member_1_after_epoch_1, **kw)
    assert [r.status for r in res] == ["completed", "stopped", "completed"]
    assert res[1].updates == 2 * 5 and res[1].epochs_done == 2 and len(res[1].lr) == 10
    assert res[0].updates == res[2].updates == 4 * 5
    assert seen[2] == (2, [False, True, False])  # the stopped member reports NaN afterwards
    ref = reference_fit(_models([1])[0], X, y, lr=0.01, seed=1, **{**kw, "epochs": 2})
    _assert_same(res[1], ref, status="stopped")
    ref2 = reference_fit(_models([2])[0], X, y, lr=0.001, seed=2, **kw)
    _assert_same(res[2], ref2)


def test_chunked_run_equals_one_chunk():
    X, y = _data(n_classes=3)
    seeds, lrs = [0, 1, 2, 3, 4], [0.02, 0.01, 0.005, 0.002, 0.001]
    kw = dict(epochs=2, batch_size=50, validation_split=0.2)
    one = train_fused(_models(seeds, 3), X, y, lrs=lrs, seeds=seeds, **kw)
    calls = []
    chunked = train_fused(_models(seeds, 3), X, y, lrs=lrs, seeds=seeds,
                          max_members_per_chunk=2,
                          on_epoch_end=lambda e, m: calls.append(np.flatnonzero(~np.isnan(m["loss"]))),
                          **kw)
    # chunk after chunk, every epoch of one chunk before the next; members are grouped by lr
    # (ascending), so runs of equal rates are adjacent
    assert [c.tolist() for c in calls] == [[3, 4], [3, 4], [1, 2], [1, 2], [0], [0]]
    for a, b in zip(one, chunked, strict=True):
        assert a.member == b.member and a.updates == b.updates
        for m in a.metrics:
            np.testing.assert_allclose(a.metrics[m], b.metrics[m], rtol=1e-12, atol=1e-12)
        for key in a.state_dict:
            torch.testing.assert_close(a.state_dict[key], b.state_dict[key], rtol=1e-12, atol=1e-12)


def test_chunk_sizes_follow_the_memory_budget():
    assert chunk_sizes(64, member_bytes=10, memory_budget=10 * 64, max_members_per_chunk=None) == [64]
    assert chunk_sizes(64, member_bytes=10, memory_budget=10 * 20, max_members_per_chunk=None) == [
        16, 16, 16, 16]
    assert chunk_sizes(5, member_bytes=10, memory_budget=None, max_members_per_chunk=2) == [2, 2, 1]
    assert chunk_sizes(3, member_bytes=10**12, memory_budget=1, max_members_per_chunk=None) == [1, 1, 1]


def test_is_fusable_decides_by_structure_and_says_why_not():
    assert is_fusable(mlp(4))
    assert is_fusable(mlp(4, activation="tanh"))
    assert is_fusable(mlp(4, dropout=0.5))
    assert is_fusable(mlp(4, activation="gelu"))
    assert is_fusable(nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2)),
                                    nn.SiLU(), nn.Linear(2, 1)))
    assert is_fusable(mlp(4, batch_norm=True))  # running statistics are stacked per member
    prelu = is_fusable(nn.Sequential(nn.Linear(4, 3), nn.PReLU(), nn.Linear(3, 1)))
    assert not prelu and "PReLU" in prelu.reason and "epochlab.fit" in prelu.reason
    nested = is_fusable(nn.Sequential(nn.Linear(3, 2), nn.Sequential(nn.ReLU(), nn.Conv1d(1, 1, 1))))
    assert not nested and "layer 1.1 is Conv1d" in nested.reason
    assert "nn.Sequential" in is_fusable(nn.Linear(3, 1)).reason
    frozen = mlp(4)
    frozen[0].weight.requires_grad_(False)
    assert "frozen" in is_fusable(frozen).reason
    with pytest.raises(ValueError, match="cannot be fused: layer 1 is PReLU"):
        X, y = _data()
        train_fused([nn.Sequential(nn.Linear(N_FEATURES, 3), nn.PReLU(), nn.Linear(3, 1))],
                    X, y, epochs=1, batch_size=8, lrs=0.1, seeds=0)


class Scaled(nn.Sequential):
    def forward(self, x):
        return super().forward(x / 16)


def test_what_the_fused_form_would_not_run_is_not_fused():
    # A forward of the model's own and hooks: fused, they were skipped (wrong results).
    own = is_fusable(Scaled(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)))
    assert not own and "Scaled has its own forward" in own.reason
    assert is_fusable(type("Plain", (nn.Sequential,), {})(nn.Linear(4, 1)))  # forward inherited
    hooked = mlp(4)
    handle = hooked[0].register_forward_pre_hook(lambda m, args: (args[0] - 1,))
    assert "hooks" in is_fusable(hooked).reason
    handle.remove()
    assert is_fusable(hooked)
    global_handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: out)
    try:
        assert "hooks" in is_fusable(mlp(4)).reason
    finally:
        global_handle.remove()
    # Tied weights and parameters of a container: every fused run failed before.
    shared = nn.Linear(3, 3)
    tied = is_fusable(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), shared, nn.ReLU(), shared))
    assert "more than one place" in tied.reason
    norm = nn.BatchNorm1d(3, affine=False)  # no parameters, its own running statistics
    shared_norm = nn.Sequential(nn.Linear(4, 3), norm, nn.ReLU(), nn.Linear(3, 3), norm,
                                nn.Linear(3, 1))
    assert "more than one place" in is_fusable(shared_norm).reason
    act = nn.ReLU()  # one activation module in two places: stateless, fuses
    plain_norm = nn.LayerNorm(3, elementwise_affine=False)  # its weight and bias are None
    assert is_fusable(nn.Sequential(nn.Linear(4, 3), plain_norm, nn.Linear(3, 3), plain_norm,
                                    nn.Linear(3, 1)))
    assert is_fusable(nn.Sequential(nn.Linear(4, 3), act, nn.Linear(3, 3), act, nn.Linear(3, 1)))

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 3)

        def forward(self, x):
            return x + self.inner(x)

    custom = is_fusable(nn.Sequential(nn.Linear(4, 3), Residual(), nn.Linear(3, 1)))
    assert "layer 1 is Residual: it has no fused form" in custom.reason
    extra = nn.Sequential(nn.Linear(4, 1))
    extra.register_parameter("scale", nn.Parameter(torch.ones(1)))
    assert "outside its layers" in is_fusable(extra).reason
    assert "merges the rows" in is_fusable(nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))).reason


def test_an_inplace_activation_trains_fused_as_one_by_one():
    import epochlab as el

    X, y = _data()

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.ReLU(inplace=True), nn.Linear(N_FEATURES, 4),
                             nn.ReLU(inplace=True), nn.Linear(4, 1)).double()

    assert is_fusable(make())
    res = train_fused([make()], X, y, epochs=2, batch_size=32, lrs=0.01, seeds=0,
                      validation_split=0.2)[0]
    h = el.fit(make(), (X, y), epochs=2, batch_size=32, validation_split=0.2, lr=0.01, seed=0,
               verbose=0)
    np.testing.assert_allclose(res.metrics["val_loss"], h.history["val_loss"], rtol=1e-12)


def test_arguments_are_checked_with_the_parameter_named():
    X, y = _data()
    models = _models([0, 1])
    with pytest.raises(ValueError, match=r"The value of `batch_size` is 0, but must be `batch_size >= 1`"):
        train_fused(models, X, y, epochs=1, batch_size=0, lrs=0.1, seeds=[0, 1])
    with pytest.raises(ValueError, match=r"The length of `lrs` is 3"):
        train_fused(models, X, y, epochs=1, batch_size=8, lrs=[0.1, 0.2, 0.3], seeds=[0, 1])
    with pytest.raises(ValueError, match=r"`optimizer` is 'rmsprop'"):
        train_fused(models, X, y, epochs=1, batch_size=8, lrs=0.1, seeds=[0, 1],
                    optimizer="rmsprop")
    with pytest.raises(ValueError, match="share the architecture"):
        train_fused([models[0], mlp(N_FEATURES, hidden=(4,)).double()], X, y, epochs=1,
                    batch_size=8, lrs=0.1, seeds=[0, 1])
    with pytest.raises(ValueError, match="drop_last=True"):
        train_fused(models, X, y, epochs=1, batch_size=500, lrs=0.1, seeds=0, drop_last=True)


def test_state_dicts_load_back_into_the_model():
    X, y = _data()
    res = train_fused(_models([0]), X, y, epochs=1, batch_size=32, lrs=0.01, seeds=0)
    model = _models([0])[0]
    model.load_state_dict(res[0].state_dict)
    assert torch.equal(model[0].weight, res[0].state_dict["0.weight"])


@pytest.mark.parametrize(("n_classes", "tol"), [(3, 1e-12), (2, 1e-12)])
def test_matches_epochlab_fit(n_classes, tol):
    import epochlab as el

    X, y = _data(n_classes=n_classes)
    out = 1 if n_classes == 2 else n_classes
    seeds, lrs = [0, 4], [0.01, 0.001]
    res = train_fused(_models(seeds, out), X, y, lrs=lrs, seeds=seeds, epochs=3, batch_size=32,
                      validation_split=0.2)
    for i, (s, model) in enumerate(zip(seeds, _models(seeds, out), strict=True)):
        h = el.fit(model, (X, y), epochs=3, batch_size=32, validation_split=0.2,
                   optimizer="adam", lr=lrs[i], seed=s, verbose=0)
        assert h.total_updates == res[i].updates and h.n_train == res[i].n_train
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(res[i].metrics[name], h.history[name], rtol=tol,
                                       atol=tol, err_msg=name)
        np.testing.assert_allclose(res[i].step_loss, h.iterations["loss"], rtol=tol, atol=tol)
        np.testing.assert_allclose(res[i].grad_norm, h.iterations["grad_norm"], rtol=tol * 10)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(res[i].state_dict[key], value, rtol=tol, atol=tol)
        converted = res[i].to_history()
        assert converted.total_updates == h.total_updates
        assert converted.samples_seen == h.samples_seen
        assert converted.iterations["lr"] == h.iterations["lr"]
        assert converted.iterations["batch_size"] == h.iterations["batch_size"]
        assert converted.history["updates"] == h.history["updates"]
        assert converted.history["lr"] == h.history["lr"]


def test_a_regression_loss_that_overflows_with_a_finite_gradient_stops_the_member_as_fit():
    # Targets of 1e19 and inputs of 1e-12: every squared error is 1e38, so the float32 batch
    # loss overflows at the first step while the gradient (about 1e7) stays finite.
    from epochlab import fit

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(64, 2)) * 1e-12).astype(np.float32)
    y = np.full((64, 1), 1e19, dtype=np.float32)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(2, 1, bias=False))

    h = fit(model(), (X, y), epochs=1, batch_size=32, validation_split=0.0, loss="mse",
            verbose=0)
    res = train_fused([model(), model()], X, y, epochs=1, batch_size=32, lrs=[1e-3, 1e-2],
                      seeds=[0, 1], task="regression")
    assert h.stop_reason == "diverged" and h.total_updates == 0
    assert [r.status for r in res] == ["diverged", "diverged"]
    assert [r.updates for r in res] == [0, 0]
    assert all(not math.isfinite(r.info["divergence"]["loss"]) for r in res)
    assert all(math.isfinite(r.info["divergence"]["grad_norm"]) for r in res)


def test_a_binary_loss_that_overflows_while_the_logits_cancel_stops_the_member_as_fit():
    # Logits of +-1.5e37 alternate: each row's BCE is 1.5e37, so the batch loss (4.8e38)
    # overflows, while the logits sum to 0 (16 of them add to 2.4e38: no overflow) and the
    # gradient stays finite.
    from epochlab import fit

    X = np.tile(np.array([[1.5e17], [-1.5e17]], dtype=np.float32), (32, 1))
    y = np.tile(np.array([0, 1]), 32)

    def model():
        m = nn.Sequential(nn.Linear(1, 1, bias=False))
        nn.init.constant_(m[0].weight, 1e20)
        return m

    h = fit(model(), (X, y), epochs=1, batch_size=32, validation_split=0.0, shuffle=False,
            verbose=0)
    res = train_fused([model()], X, y, epochs=1, batch_size=32, lrs=[1e-3], seeds=[0],
                      shuffle=False)
    assert h.stop_reason == "diverged" and h.total_updates == 0
    assert res[0].status == "diverged" and res[0].updates == 0
    assert math.isfinite(res[0].info["divergence"]["grad_norm"])


@pytest.mark.parametrize("kind", ["adam_mlp", "sgd_momentum", "dropout_batchnorm"])
def test_an_epoch_run_again_from_its_saved_start_gives_the_same_numbers(monkeypatch, kind):
    # Steps run unchecked and each epoch is checked at its end; a non-finite one runs again
    # from the state saved at its start. Forcing that replay every epoch must change nothing:
    # parameters, optimizer moments, batch norm statistics and dropout draws all restored.
    from epochlab.sweeps import fused

    X, y = _data(n_classes=3)
    seeds = [0, 1, 2]
    kw = dict(epochs=3, batch_size=32, validation_split=0.2, lrs=[0.01, 0.003, 0.001],
              seeds=seeds)
    if kind == "sgd_momentum":
        kw.update(optimizer="sgd", momentum=0.9)

    def models():
        out = []
        for s in seeds:
            torch.manual_seed(s)
            if kind == "dropout_batchnorm":
                out.append(nn.Sequential(nn.Linear(N_FEATURES, 16), nn.BatchNorm1d(16),
                                         nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)))
            else:
                out.append(mlp(N_FEATURES, hidden=HIDDEN, out_features=3))
        return out

    normal = train_fused(models(), X, y, **kw)
    replays = []
    monkeypatch.setattr(fused._Chunk, "_finite_epoch",
                        lambda self, zc, ye, seen: bool(replays.append(1)))
    replayed = train_fused(models(), X, y, **kw)
    assert len(replays) == 3
    for a, b in zip(normal, replayed, strict=True):
        assert a.updates == b.updates == 3 * 5 and a.step_loss == b.step_loss
        assert a.metrics == b.metrics and a.grad_norm == b.grad_norm
        for key in a.state_dict:
            assert torch.equal(a.state_dict[key], b.state_dict[key]), key


def test_metrics_summarized_epoch_by_epoch_equal_those_summarized_at_the_end(monkeypatch):
    # Without a hook, the epochs' metrics are computed from kept logits in one go at the end
    # (or when the kept logits pass a size limit); a limit of one value summarizes each epoch.
    from epochlab.sweeps import fused

    X, y = _data(n_classes=3)
    kw = dict(epochs=4, batch_size=48, validation_split=0.2, lrs=[0.01, 0.002], seeds=[0, 1])
    at_end = train_fused(_models([0, 1], 3), X, y, **kw)
    monkeypatch.setattr(fused, "PENDING_VALUES", 1)
    each = train_fused(_models([0, 1], 3), X, y, **kw)
    for a, b in zip(at_end, each, strict=True):
        assert a.iterations_per_epoch == 4  # 160 rows: three batches of 48 and one of 16
        assert len(a.metrics["val_accuracy"]) == len(a.step_loss) // 4 == 4
        for name in a.metrics:
            np.testing.assert_allclose(a.metrics[name], b.metrics[name], rtol=1e-12, atol=0)
        np.testing.assert_allclose(a.step_loss, b.step_loss, rtol=1e-12, atol=0)
        assert a.grad_norm == b.grad_norm and a.lr == b.lr and a.batch_sizes == b.batch_sizes


def _trained(make, seeds, x, y, steps=3):
    """Models of ``make`` with different weights and batch-norm statistics (a few updates)."""
    out = []
    for s in seeds:
        torch.manual_seed(s)
        m = make()
        fit(m, (x, y), epochs=steps, batch_size=32, lr=1e-2, seed=s, verbose=0)
        out.append(m)
    return out


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 3)).double()


@pytest.mark.parametrize("kind", ["binary", "multiclass-batch-norm", "regression", "cnn",
                                  "layernorm-dropout"])
def test_stacked_test_metrics_equal_evaluate_on_each_member(monkeypatch, kind):
    """A fused task's test metrics (one stacked forward for all members) are what
    epochlab.evaluate gives each member alone; in row chunks too (a small memory ceiling)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, N_FEATURES))
    task = {"binary": "binary", "regression": "regression"}.get(kind, "multiclass")
    if kind == "cnn":
        x = rng.normal(size=(90, 1, 8, 8))
    y = {"binary": rng.integers(0, 2, 90), "regression": rng.normal(size=(90, 2))}.get(
        kind, rng.integers(0, 3, 90))
    out = {"binary": 1, "regression": 2}.get(kind, 3)
    make = {
        "cnn": _cnn,
        "multiclass-batch-norm": lambda: mlp(N_FEATURES, hidden=HIDDEN, out_features=out,
                                             batch_norm=True).double(),
        "layernorm-dropout": lambda: nn.Sequential(
            nn.Linear(N_FEATURES, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.3),
            nn.Linear(16, out)).double(),
    }.get(kind, lambda: mlp(N_FEATURES, hidden=HIDDEN, out_features=out).double())
    models = _trained(make, [0, 1, 2], x, y.astype(np.float64 if task == "regression" else np.int64))
    want = [evaluate(m, (x, y)) for m in models]
    for ceiling in (runtime.EVAL_ACTIVATION_BYTES, 4096):  # all rows at once; a few at a time
        monkeypatch.setattr(runtime, "EVAL_ACTIVATION_BYTES", ceiling)
        got = stacked_evaluator(make(), x, y, task)([m.state_dict() for m in models])
        assert [sorted(g) for g in got] == [sorted(w) for w in want]
        for g, w in zip(got, want, strict=True):
            for k in w:
                assert g[k] == pytest.approx(w[k], rel=1e-12, abs=1e-12), (kind, ceiling, k)
