"""ReduceLROnPlateau: when it reduces, by how much, min_lr, cooldown, and the lr actually used."""

from __future__ import annotations

import pytest
import torch

import epochlab as el


class Inject(el.Callback):
    """Writes a crafted ``val_fake_loss`` into each epoch row (given before the callback)."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, trainer, logs):
        logs["val_fake_loss"] = self.values[int(logs["epoch"])]


def drive(cb, values, lr=0.1):
    """Feed a sequence of val losses to ``cb`` on a real Trainer; return (epoch, lr) pairs."""
    trainer = el.Trainer(torch.nn.Linear(2, 1), lr=lr)
    cb.on_train_begin(trainer, {})
    for e, v in enumerate(values):
        cb.on_epoch_end(trainer, {"epoch": e, "val_loss": v})
    return [(r["epoch"], r["lr"]) for r in cb.reductions], trainer


def test_reduces_after_patience_epochs_without_improvement():
    cb = el.ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.0)
    cuts, trainer = drive(cb, [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.85, 0.9])
    assert cuts == [(3, pytest.approx(0.05)), (5, pytest.approx(0.025))]
    assert trainer.lr_scale == pytest.approx(0.25)
    assert trainer.history.extra["reduce_lr"][1]["epoch"] == 5


def test_min_delta_decides_what_counts_as_improvement():
    cb = el.ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.05)
    cuts, _ = drive(cb, [1.0, 0.97, 0.90])
    assert [e for e, _ in cuts] == [1]


def test_min_lr_is_a_floor():
    cb = el.ReduceLROnPlateau(factor=0.1, patience=0, min_delta=0.0, min_lr=0.002)
    cuts, trainer = drive(cb, [1.0, 1.0, 1.0, 1.0, 1.0])
    assert cuts == [(1, pytest.approx(0.01)), (2, pytest.approx(0.002))]
    assert trainer.state.lr_at(0, 0) == pytest.approx(0.002)


def test_cooldown_ignores_exactly_cooldown_epochs():
    flat = [1.0] + [2.0] * 7
    no_cooldown, _ = drive(el.ReduceLROnPlateau(factor=0.5, patience=1), flat)
    assert [e for e, _ in no_cooldown] == [1, 2, 3, 4, 5, 6, 7]
    cooldown, _ = drive(el.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2), flat)
    assert [e for e, _ in cooldown] == [1, 4, 7]
    one, _ = drive(el.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1), flat)
    assert [e for e, _ in one] == [1, 3, 5, 7]


def test_max_mode_reduces_when_accuracy_stalls():
    cb = el.ReduceLROnPlateau("val_accuracy", factor=0.5, patience=1, min_delta=0.0)
    trainer = el.Trainer(torch.nn.Linear(2, 1), lr=0.1)
    cb.on_train_begin(trainer, {})
    for e, v in enumerate([0.5, 0.6, 0.55]):
        cb.on_epoch_end(trainer, {"epoch": e, "val_accuracy": v})
    assert [r["epoch"] for r in cb.reductions] == [2]


def test_effective_lr_in_the_history_follows_the_reductions(small_xy):
    inj = Inject([1.0, 2.0, 2.0, 2.0])
    cb = el.ReduceLROnPlateau("val_fake_loss", mode="min", factor=0.5, patience=1)
    h = el.fit(el.models.mlp(5), small_xy, epochs=4, batch_size=16, validation_split=0.25,
               lr=0.01, callbacks=[inj, cb], verbose=0)
    ipe = h.iterations_per_epoch
    lrs = h.iterations["lr"]
    expected = [0.01, 0.01, 0.005, 0.0025]
    for e, lr in enumerate(expected):
        assert lrs[e * ipe:(e + 1) * ipe] == pytest.approx([lr] * ipe)
    assert [r["lr"] for r in h.epochs] == pytest.approx(expected)
    assert h.extra["reduce_lr"] == [
        {"epoch": 1, "lr": pytest.approx(0.005), "lr_scale": 0.5, "value": 2.0},
        {"epoch": 2, "lr": pytest.approx(0.0025), "lr_scale": 0.25, "value": 2.0},
        {"epoch": 3, "lr": pytest.approx(0.00125), "lr_scale": 0.125, "value": 2.0},
    ]


def test_reductions_multiply_a_schedule(small_xy):
    inj = Inject([1.0, 2.0, 2.0])
    cb = el.ReduceLROnPlateau("val_fake_loss", mode="min", factor=0.5, patience=1)
    sched = el.schedules.exponential_decay(0.05, decay_steps=4, decay_rate=0.9)
    h = el.fit(el.models.mlp(5), small_xy, epochs=3, batch_size=16, validation_split=0.25,
               schedule=sched, callbacks=[inj, cb], verbose=0)
    ipe = h.iterations_per_epoch
    for step, lr in zip(h.iterations["step"], h.iterations["lr"], strict=True):
        scale = 1.0 if step < 2 * ipe else 0.5
        assert lr == pytest.approx(sched(step) * scale, rel=1e-12)


def test_state_dict_is_kept_on_resume_and_reset_on_a_new_run():
    cb = el.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1)
    drive(cb, [1.0, 2.0, 2.0])
    saved = cb.state_dict()
    assert saved["wait"] == 0 and saved["cooldown_counter"] == 1 and len(saved["reductions"]) == 1
    again = el.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1)
    again.load_state_dict(saved)
    again.on_train_begin(None, {})
    assert again.state_dict() == saved
    again.on_train_begin(None, {})  # a second, fresh run starts clean
    assert again.reductions == [] and again.best_value is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 1.0}, "The value of `factor` is 1.0, but must be `0 < factor < 1`."),
        ({"patience": -1}, "The value of `patience` is -1, but must be `patience >= 0`."),
        ({"cooldown": -1}, "The value of `cooldown` is -1, but must be `cooldown >= 0`."),
        ({"min_lr": -1e-3}, "The value of `min_lr` is -0.001, but must be `min_lr >= 0`."),
        ({"monitor": "val_score"}, "set `mode='min'` or `mode='max'`"),
    ],
)
def test_arguments_are_validated_at_construction(kwargs, message):
    with pytest.raises(ValueError) as err:
        el.ReduceLROnPlateau(**kwargs)
    assert message in str(err.value)
