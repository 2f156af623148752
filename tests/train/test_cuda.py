"""fit, evaluate and exact resume with the model on a CUDA device (skipped without one).

CI has no GPU; these run where one is lent (`python -m pytest tests/train/test_cuda.py`).
What they hold a GPU run to is what the CPU tests hold a CPU run to: the model stays
where and as the user put it, the accounting is exact, a seed gives the same numbers
twice, the caller's CUDA generator is left alone, a crash and a resume give the
uninterrupted run, and `precision="auto"` picks bfloat16 for convolutions on a GPU that
has it (say so in the History) while loss, metrics and weights stay float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_exact_resume import Crash  # the resume tests' simulated crash
from torch import nn

import epochlab as el

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2)).cuda()


def train(data, **kw):
    model = mlp()
    kw = {"epochs": 6, "validation_split": 0.2, **kw}
    h = el.fit(model, data, batch_size=16, verbose=0, seed=3, **kw)
    return model, h


def comparable(h: el.History) -> dict:
    d = h.to_dict()
    for row in d["epochs"]:
        row.pop("time")
    d["extra"].pop("resume", None)
    d["extra"].pop("runtime", None)
    return d


def test_fit_on_cuda_keeps_the_model_there_and_counts_exactly(xy):
    model, h = train(xy)
    assert all(p.is_cuda and p.dtype == torch.float32 for p in model.parameters())
    assert model.training  # returned in the mode it came in
    n_train = 150 - 30
    assert h.iterations_per_epoch == -(-n_train // 16)
    assert h.total_updates == 6 * h.iterations_per_epoch
    assert h.samples_seen == 6 * n_train
    assert h.extra["runtime"]["precision"] == "fp32"  # small linear layers: float32
    assert all(np.isfinite(r["val_loss"]) for r in h.epochs)


def test_a_seed_gives_the_same_cuda_run_twice_and_the_callers_generator_is_kept(xy):
    m1 = mlp()  # torch.manual_seed: the CUDA generator too
    torch.cuda.manual_seed(123)
    before = torch.cuda.get_rng_state()
    h1 = el.fit(m1, xy, epochs=6, batch_size=16, validation_split=0.2, verbose=0, seed=3)
    assert torch.equal(torch.cuda.get_rng_state(), before)
    m2, h2 = train(xy)
    assert comparable(h1) == comparable(h2)
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(),
                                                 m2.state_dict().values(), strict=True))


def test_a_crash_and_a_resume_on_cuda_give_the_uninterrupted_run(xy, tmp_path):
    ref_model, ref = train(xy, checkpoint_dir=tmp_path / "ref", checkpoint_every=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(xy, checkpoint_dir=tmp_path / "ck", checkpoint_every=3, callbacks=[Crash(20)])
    model, h = train(xy, checkpoint_dir=tmp_path / "ck", checkpoint_every=3, resume=True)
    assert h.extra["resume"][0]["global_step"] == 18
    assert comparable(h) == comparable(ref)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 ref_model.state_dict().values(), strict=True))
    assert all(p.is_cuda for p in model.parameters())


def test_evaluate_on_cuda_matches_the_last_validation_epoch(xy):
    x, y = xy
    model, h = train(xy, validation_split=0.0, validation_data=(x[:40], y[:40]))
    got = el.evaluate(model, (x[:40], y[:40]))
    assert got["loss"] == pytest.approx(h.epochs[-1]["val_loss"], rel=1e-6)
    assert got["accuracy"] == pytest.approx(h.epochs[-1]["val_accuracy"])


def test_precision_auto_trains_a_cnn_in_bf16_on_a_gpu_that_has_it():
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1, 28, 28)).astype(np.float32)
    y = (x[:, 0, :14].mean(axis=(1, 2)) > x[:, 0, 14:].mean(axis=(1, 2))).astype(np.int64)
    torch.manual_seed(0)
    model = el.models.cnn("small").cuda()
    h = el.fit(model, (x, y), epochs=4, batch_size=64, validation_split=0.25, verbose=0)
    rt = h.extra["runtime"]
    assert rt["precision"] == "bf16" and "GPU" in rt["precision_reason"], rt
    assert all(p.is_cuda and p.dtype == torch.float32 for p in model.parameters())
    losses = [r["loss"] for r in h.epochs]
    assert losses[-1] < losses[0] and len(set(losses)) == 4  # it learns: each step's weights
    # The user's layout is given back (channels-last is fit's own business).
    assert all(p.is_contiguous() for p in model.parameters())
    model32 = el.models.cnn("small").cuda()
    h32 = el.fit(model32, (x, y), epochs=1, batch_size=64, validation_split=0.25, verbose=0,
                 precision="fp32")
    assert h32.extra["runtime"]["precision"] == "fp32"


def test_callbacks_and_a_dataset_train_a_cuda_model(xy, tmp_path):
    from torch.utils.data import TensorDataset

    x, y = xy
    model = mlp()
    cbs = [el.EarlyStopping(patience=2, restore_best_weights=True), el.ReduceLROnPlateau(patience=1),
           el.ModelCheckpoint(tmp_path / "best.pt", save_best_only=True),
           el.GradientNoiseScale((x, y), parts=4)]
    h = el.fit(model, xy, epochs=8, batch_size=16, validation_split=0.2, verbose=0, callbacks=cbs)
    assert all(p.is_cuda for p in model.parameters())
    assert any(k.startswith("gns") for k in h.history)
    assert (tmp_path / "best.pt").exists()
    ds = TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    model = mlp()
    h = el.fit(model, ds, epochs=2, batch_size=16, validation_split=0.2, verbose=0)
    assert all(p.is_cuda for p in model.parameters()) and h.total_updates == 2 * 8


def test_lr_find_on_a_cuda_model_trains_there_and_leaves_it_there(xy):
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = el.lr_find(model, xy, num_iter=40, seeds=2)
    assert np.isfinite(res.suggestion)
    assert all(p.is_cuda for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_sweep_of_a_model_built_on_the_gpu_trains_there_one_by_one(xy):
    x, y = xy

    def make():
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).cuda()

    r = el.sweep(make, (x, y), epochs=2, lr=[1e-2, 1e-3], seed=[0, 1], progress=False)
    assert "on the CPU" in r.plan.describe()  # why not fused
    assert [run.status for run in r.runs] == ["completed"] * 4
    torch.manual_seed(0)
    by_hand = make()
    h = el.fit(by_hand, (x, y), epochs=2, batch_size=32, lr=1e-2, seed=0, validation_split=0.2,
               verbose=0)
    first = next(run for run in r.runs
                 if run.settings["lr"] == 1e-2 and run.settings["seed"] == 0)
    assert r.history(first).history["val_loss"] == h.history["val_loss"]
