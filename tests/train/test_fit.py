"""fit's behaviour a user relies on: determinism, divergence, Ctrl-C, inputs, the History."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import epochlab as el

_RUN = """
import json, torch, epochlab as el
torch.set_num_threads(1)
d = el.data.synthetic()
torch.manual_seed(7)
h = el.fit(el.models.mlp(20, dropout=0.2), d.train, epochs=3, batch_size=32,
           validation_split=0.2, seed=7, verbose=0)
for row in h.epochs:
    row.pop("time")
print(json.dumps({"epochs": h.epochs, "iterations": h.iterations}))
"""


def test_same_seed_gives_bit_identical_history_across_two_processes():
    outs = [
        subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    a, b = (json.loads(o) for o in outs)
    assert a == b  # every float, compared exactly (wall time excluded)
    assert len(a["iterations"]["loss"]) == 60


def test_different_seeds_differ_and_callers_rng_is_left_alone(slide1):
    torch.manual_seed(1)
    model = el.models.mlp(20)
    before = torch.get_rng_state()
    h0 = el.fit(model, slide1.train, epochs=1, batch_size=32, seed=0, verbose=0)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(1)
    h1 = el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=32, seed=1, verbose=0)
    assert h0.iterations["loss"] != h1.iterations["loss"]


def test_nan_loss_stops_with_diverged_and_keeps_last_finite_weights(small_xy):
    x, y = small_xy
    model = el.models.mlp(5)

    class PoisonAt(el.Callback):
        """Make the 7th batch's input NaN so that its loss is NaN."""

        def on_batch_begin(self, trainer, logs):
            self.snapshot = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            if logs["step"] == 6:
                trainer.model[0].weight.data[0, 0] = float("nan")

    cb = PoisonAt()
    h = el.fit(model, (x, y), epochs=5, batch_size=16, callbacks=[cb], verbose=0)
    assert h.stop_reason == "diverged"
    assert h.total_updates == 6  # the 7th update was not made
    assert "epoch 1, iteration 7" in h.stop_message and "learning rate 0.001" in h.stop_message
    assert h.extra["divergence"]["step"] == 6


def test_huge_learning_rate_diverges_without_raising():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 3.0], dtype=np.float32)) * 1e3
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    h = el.fit(model, (x, y), epochs=50, batch_size=8, optimizer="sgd", lr=10.0, verbose=0)
    assert h.stop_reason == "diverged"
    assert h.total_updates < 50 * 8
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(v) for v in h.iterations["loss"])


def test_ctrl_c_returns_history_so_far(small_xy):
    x, y = small_xy

    class CtrlC(el.Callback):
        def on_batch_end(self, trainer, logs):
            if logs["step"] == 10:
                raise KeyboardInterrupt

    h = el.fit(el.models.mlp(5), (x, y), epochs=5, batch_size=16, callbacks=[CtrlC()], verbose=0)
    assert h.stop_reason == "interrupted"
    assert h.total_updates == 11
    assert len(h.epochs) == 1  # epoch 1 (8 iterations) finished; epoch 2 did not
    assert h.epochs_run == 2
    assert h.weights_epoch is None  # the weights are from the middle of epoch 2


def test_history_round_trip(tmp_path, slide1):
    h = el.fit(el.models.mlp(20), slide1.train, epochs=2, batch_size=64,
               validation_split=0.2, verbose=0)
    h2 = el.History.load(h.save(tmp_path / "h.json"))
    assert h2.to_dict() == h.to_dict()
    assert h2.history == h.history and h2.total_updates == h.total_updates == 20
    (tmp_path / "bad.json").write_text('{"format": "epochlab.history/1", "n_tr')
    with pytest.raises(ValueError, match="truncated"):
        el.History.load(tmp_path / "bad.json")


def test_keras_style_history_dict(slide1):
    h = el.fit(el.models.mlp(20), slide1.train, epochs=2, batch_size=32,
               validation_split=0.2, verbose=0)
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(h.history)
    assert len(h.history["val_accuracy"]) == 2
    assert h.loss_name == "bce" and h.task == "binary"
    for c in ("step", "epoch", "loss", "lr", "grad_norm", "batch_size"):
        assert len(h.iterations[c]) == 40


def test_loss_inferred_from_targets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    multi = el.fit(el.models.mlp(4, out_features=3), (x, rng.integers(0, 3, 60)),
                   epochs=1, batch_size=16, verbose=0)
    assert multi.loss_name == "cross_entropy" and multi.task == "multiclass"
    reg = el.fit(el.models.mlp(4), (x, rng.normal(size=60)), epochs=1, batch_size=16, verbose=0)
    assert reg.loss_name == "mse" and "accuracy" not in reg.history
    onehot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 60)]
    oh = el.fit(el.models.mlp(4, out_features=3), (x, onehot), epochs=1, batch_size=16, verbose=0)
    assert oh.loss_name == "cross_entropy"


def test_torch_dataset_input_same_accounting(small_xy):
    x, y = small_xy
    ds = TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    h = el.fit(el.models.mlp(5), ds, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    assert (h.n_train, h.n_val, h.iterations_per_epoch, h.total_updates) == (90, 30, 6, 12)
    assert "val_loss" in h.history


def test_trainer_step_is_one_inspectable_iteration():
    torch.manual_seed(0)
    model = el.models.mlp(20)
    trainer = el.Trainer(model, lr=0.01)
    xb, yb = torch.randn(32, 20), torch.randint(0, 2, (32,))
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy_with_logits(
            model(xb), yb.float().reshape(-1, 1)).item()
    before = model[0].weight.clone()
    rec = trainer.step((xb, yb))
    assert rec.loss == pytest.approx(expected, rel=1e-6)  # loss before the update
    assert rec.lr == 0.01 and rec.batch_size == 32 and rec.grad_norm > 0
    assert not torch.equal(before, model[0].weight)  # the update happened
    assert trainer.state.global_step == 1


def test_verbose_levels_print(slide1, capsys):
    el.fit(el.models.mlp(20), slide1.train, epochs=2, batch_size=64, verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 1/2 · 13 it" in out and "Epoch 2/2" in out
    el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=64, verbose=0)
    assert capsys.readouterr().out == ""


def test_an_error_in_a_callback_still_ends_training_cleanly(small_xy):
    ended = []

    class Boom(el.Callback):
        def on_epoch_end(self, trainer, logs):
            raise RuntimeError("boom")

    class Watch(el.Callback):
        def on_train_end(self, trainer, logs):
            ended.append(logs["stop_reason"])

    with pytest.raises(RuntimeError, match="boom"):
        el.fit(el.models.mlp(5), small_xy, epochs=3, batch_size=16,
               callbacks=[Boom(), Watch()], verbose=0)
    assert ended == ["error"]
