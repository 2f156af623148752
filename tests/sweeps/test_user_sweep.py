"""el.sweep(make_model, data, ...): a user's own model and data, each run exactly as fit by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import epochlab as el
from epochlab.store import MemoryStore

REL = 1e-9  # float64: fused and one by one agree to rounding


def _xy(n=120, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x[:, 0] - 0.5 * x[:, 2] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def make_relu():
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 1)).double()


def _by_hand(make_model, data, seed, **kw):
    torch.manual_seed(seed)
    model = make_model()
    return el.fit(model, data, seed=seed, verbose=0, **kw)


def _assert_runs_equal_fit(result, make_model, data, *, epochs, batch_size, validation_split=0.2):
    assert result.statuses() == {"completed": len(result.runs)}
    for r in result.runs:
        s = r.settings
        h = _by_hand(make_model, data, s["seed"], epochs=epochs, batch_size=batch_size,
                     lr=s["lr"], validation_split=validation_split)
        got = result.history(r)
        assert len(got.epochs) == len(h.epochs) == epochs
        for mine, ref in zip(got.epochs, h.epochs, strict=True):
            for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
                assert mine[k] == pytest.approx(ref[k], rel=REL, abs=1e-12), (s, k)
        assert got.total_updates == h.total_updates and got.n_train == h.n_train
        assert got.validation_split == h.validation_split and got.params == h.params


def test_user_model_on_arrays_equals_fit_by_hand_and_fuses():
    x, y = _xy()
    result = el.sweep(make_relu, (x, y), epochs=3, batch_size=16, lr=[1e-2, 3e-3],
                      seed=[0, 1], progress=False)
    assert len(result.plan.tasks) == 1 and result.plan.tasks[0].fused
    assert all("fused" in r.summary for r in result.runs)
    _assert_runs_equal_fit(result, make_relu, (x, y), epochs=3, batch_size=16)
    assert result.spec.data == "arrays" and result.spec.model.endswith(":make_relu")


def test_a_rerun_finds_its_runs_and_other_data_or_another_model_never_matches():
    x, y = _xy()
    store = MemoryStore()
    kw = dict(epochs=1, batch_size=32, lr=[1e-2, 1e-3], store=store, progress=False, name="s")
    first = el.sweep(make_relu, (x, y), **kw)
    assert first.trained == 2
    again = el.sweep(make_relu, (x, y), **kw)
    assert again.skipped == 2 and again.trained == 0
    x2 = x.copy()
    x2[0, 0] += 1.0  # one value changed: other data
    # A study keeps the data and model it began with (issue 9): other data under its
    # name is refused, naming the difference, rather than mixed into its ranking.
    with pytest.raises(el.ParameterError, match="created with data_fingerprint"):
        el.sweep(make_relu, (x2, y), **kw)
    other = el.sweep(make_relu, (x2, y), **{**kw, "name": "s-other-data"})
    assert other.skipped == 0 and other.trained == 2

    def wider():
        return nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 1)).double()

    with pytest.raises(el.ParameterError, match="created with model .*model_fingerprint"):
        el.sweep(wider, (x, y), **kw)
    assert el.sweep(wider, (x, y), **{**kw, "name": "s-wider"}).skipped == 0
    keys = {r.key for s in ("s", "s-other-data", "s-wider") for r in store.runs(s)}
    assert len(keys) == 6
    fp = first.runs[0].settings["data_fingerprint"]
    assert fp.startswith("train 120x5:float64/120:int64") and "sha256" in fp
    assert first.runs[0].settings["model_fingerprint"].startswith("Sequential 113 params")


def test_workers_need_a_module_level_make_model_and_say_how_to_fix_it():
    x, y = _xy()
    with pytest.raises(el.ParameterError, match="top level of a module"):
        el.sweep(lambda: make_relu(), (x, y), epochs=1, workers=1, progress=False)

    def nested():
        return make_relu()

    with pytest.raises(el.ParameterError, match="nested|local|top level"):
        el.sweep(nested, (x, y), epochs=1, workers=1, progress=False)


def test_a_dataset_trains_one_by_one_and_the_plan_says_why():
    x, y = _xy(n=60)
    ds = TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    result = el.sweep(make_relu, ds, epochs=1, batch_size=16, lr=[1e-2, 1e-3], progress=False)
    assert not any(t.fused for t in result.plan.tasks)
    assert "TensorDataset" in result.plan.entries[0].fuse_reason
    h = _by_hand(make_relu, ds, 0, epochs=1, batch_size=16, lr=1e-2, validation_split=0.2)
    got = result.history(result.runs[0])
    assert got.epochs[0]["val_loss"] == pytest.approx(h.epochs[0]["val_loss"], rel=REL)


def test_regression_defaults_to_val_loss_and_bad_inputs_are_named():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 5))
    y = x @ rng.normal(size=5) + 0.1
    result = el.sweep(make_relu, (x, y), epochs=1, lr=[1e-2, 1e-3], progress=False)
    assert (result.spec.metric, result.spec.mode) == ("val_loss", "min")
    assert result.best is not None and math.isfinite(result.best.summary["final"]["val_loss"])
    with pytest.raises(el.ParameterError, match="must return a torch.nn.Module"):
        el.sweep(lambda: 3, (x, y), epochs=1, progress=False)
    with pytest.raises(el.ParameterError, match="`data`"):
        el.sweep(make_relu, 42, epochs=1, progress=False)
    with pytest.raises(el.ParameterError, match="belong in the spec"):
        el.sweep(el.SweepSpec(), lr=[1e-3], progress=False)
    # A model instance is callable (its forward): it used to fail as "make_model() failed
    # (forward() missing 1 required positional argument)".
    with pytest.raises(el.ParameterError, match=r"is a model \(Sequential\), but must be a "
                                                r"zero-argument function that builds one"):
        el.sweep(make_relu(), (x, y), epochs=1, progress=False)
    with pytest.raises(el.ParameterError, match=r"several values are a Python list here: "
                                                r"lr=\[0.1, 0.01\]"):
        el.sweep(make_relu, (x, y), epochs=1, lr="0.1,0.01", progress=False)


def test_a_model_that_cannot_take_the_data_is_refused_before_anything_trains(tmp_path):
    # Flat 8x8 digits given to a CNN: one clear error, before the store file exists.
    x = np.random.default_rng(0).random((40, 64), dtype=np.float32)
    y = np.arange(40) % 3
    db = tmp_path / "runs.db"
    with pytest.raises(el.validation.ParameterError, match=r"cannot run on the data.*reshape"):
        el.sweep(lambda: el.models.cnn("small", n_classes=3, input_size=8), (x, y), epochs=1,
                 lr=[1e-3, 1e-2], store=str(db), progress=False)
    assert not db.exists()


class _Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(4, 1)

    def forward(self, x):
        return self.l(x)


class _Edited(_Plain):
    def forward(self, x):  # the same parameters, another forward
        return self.l(x) * 0.0 + 1.0


def test_a_models_fingerprint_follows_its_code_and_initial_weights():
    from epochlab.sweeps.workload import model_fingerprint

    torch.manual_seed(0)
    a = model_fingerprint(_Plain())
    torch.manual_seed(0)
    assert model_fingerprint(_Plain()) == a  # the same model: its stored runs are found
    torch.manual_seed(0)
    edited = model_fingerprint(_Edited())
    assert edited != a
    torch.manual_seed(1)
    assert model_fingerprint(_Plain()) == a  # its code, not its random initial weights
    lam = lambda: _Plain()  # noqa: E731
    same = lambda: _Plain()  # noqa: E731  (another call site, the same code)
    assert model_fingerprint(_Plain(), lam) == model_fingerprint(_Plain(), same)


_GAIN = 1.0


class _Gained(nn.Module):
    gain = 1.0

    def __init__(self, std=1.0):
        super().__init__()
        self.l = nn.Linear(4, 1)

    def forward(self, x):
        return self.l(x) * self.gain * _GAIN


def _make_gained(std=1.0):
    return _Gained(std)


def test_a_fingerprint_sees_partial_arguments_class_attributes_and_module_constants(monkeypatch):
    import functools

    from epochlab.sweeps.workload import model_fingerprint

    def fp(make):
        return model_fingerprint(make(), make)

    base = fp(functools.partial(_make_gained, std=1.0))
    assert fp(functools.partial(_make_gained, std=1.0)) == base
    assert fp(functools.partial(_make_gained, std=0.5)) != base
    monkeypatch.setattr(_Gained, "gain", 50.0)
    assert fp(functools.partial(_make_gained, std=1.0)) != base
    monkeypatch.setattr(_Gained, "gain", 1.0)
    monkeypatch.setitem(globals(), "_GAIN", 3.0)
    assert fp(functools.partial(_make_gained, std=1.0)) != base


def test_a_fingerprint_is_the_same_in_every_process(tmp_path):
    import subprocess
    import sys

    (tmp_path / "setmodel.py").write_text(
        "import torch.nn as nn\n"
        "class M(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.l = nn.Linear(2, 1)\n"
        "    def forward(self, x):\n"
        "        if x.dtype in {'alpha', 'beta', 'gamma', 'delta'}:\n"
        "            return x\n"
        "        return self.l(x)\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import setmodel; "
            "from epochlab.sweeps.workload import model_fingerprint as f; "
            "print(f(setmodel.M(), setmodel.M))")
    outs = {subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, env={**__import__("os").environ, "PYTHONHASHSEED": seed},
                           check=True).stdout for seed in ("1", "2")}
    assert len(outs) == 1  # a set literal's order follows string hashing: not in the hash


def test_a_model_with_lazy_layers_is_swept_one_by_one():
    # Its parameters have no size before the first forward: the fingerprint counted them
    # and the sweep failed with torch's error before anything started.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    r = el.sweep(lambda: torch.nn.Sequential(torch.nn.LazyLinear(8), torch.nn.ReLU(),
                                             torch.nn.Linear(8, 2)),
                 (x, y), epochs=1, lr=[1e-2, 1e-3], progress=False)
    assert [run.status for run in r.runs] == ["completed", "completed"]
    assert "LazyLinear" in r.plan.describe()
