"""EarlyStopping: slide 6, restoring the best weights however training ends, errors, parsing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import epochlab as el
from epochlab.callbacks.early_stopping import parse
from epochlab.train.data import split_indices
from epochlab.train.history import History


class Inject(el.Callback):
    """Writes a crafted ``val_fake_loss`` into each epoch row and snapshots the weights.

    Given before EarlyStopping, so EarlyStopping sees the crafted value: the test then
    decides which epoch is best, independently of what the model learns.
    """

    def __init__(self, values, interrupt_at=None, nan_at=None):
        self.values, self.interrupt_at, self.nan_at = values, interrupt_at, nan_at
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, trainer, logs):
        e = int(logs["epoch"])
        logs["val_fake_loss"] = self.values[e]
        self.weights[e] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def on_batch_begin(self, trainer, logs):
        if self.nan_at == (logs["epoch"], logs["step"] % trainer.history.iterations_per_epoch):
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(math.nan)

    def on_batch_end(self, trainer, logs):
        if self.interrupt_at == (logs["epoch"], logs["step"] % trainer.history.iterations_per_epoch):
            raise KeyboardInterrupt


class FakeTrainer:
    """The part of the Trainer EarlyStopping touches, for driving it with a value sequence."""

    def __init__(self):
        self.history = History()
        self.model = torch.nn.Linear(2, 1)
        self.stop_training, self.stop_reason = False, None

    def stop(self, reason, message=""):
        self.stop_training, self.stop_reason = True, reason


def drive(es, values):
    """Feed ``values`` one epoch at a time until EarlyStopping stops; return epochs run."""
    t = FakeTrainer()
    es.on_train_begin(t, {})
    for e, v in enumerate(values):
        es.on_epoch_end(t, {"epoch": e, "val_loss": v})
        if t.stop_training:
            return e + 1
    return len(values)


def states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def fit_small(xy, callbacks, epochs=6):
    torch.manual_seed(0)
    model = el.models.mlp(5)
    h = el.fit(model, xy, epochs=epochs, batch_size=16, validation_split=0.25,
               callbacks=callbacks, verbose=0)
    return model, h


def test_slide6_stops_early_and_restored_model_reproduces_best_val_loss(slide1):
    torch.manual_seed(0)
    model = el.models.mlp(20)
    es = el.EarlyStopping(patience=5, restore_best_weights=True)
    h = el.fit(model, slide1.train, epochs=100, batch_size=32, validation_split=0.2,
               callbacks=[es], verbose=0)
    assert h.stop_reason == "early_stopping"
    assert len(h.epochs) < 100 and es.stopped_epoch == len(h.epochs) - 1
    val = h.history["val_loss"]
    assert es.best_epoch == int(np.argmin(val)) and es.best_value == min(val)
    assert es.stopped_epoch - es.best_epoch == 5
    assert h.weights_epoch == es.best_epoch
    assert h.extra["early_stopping"]["best_epoch"] == es.best_epoch
    assert h.extra["early_stopping"]["restored"] is True
    x, y = slide1.train
    _, va, _ = split_indices(len(x), 0.2, seed=0, stratify=np.asarray(y))
    restored = el.evaluate(model, (x[va], y[va]))["loss"]
    assert restored == pytest.approx(es.best_value, abs=1e-6)


def test_restores_best_weights_when_the_epoch_limit_comes_first(small_xy):
    # Best at epoch 3 of 6, patience 3: the limit ends training, Keras would keep epoch 5.
    inj = Inject([5.0, 4.0, 3.0, 2.5, 2.7, 2.9])
    es = el.EarlyStopping("val_fake_loss", patience=3, restore_best_weights=True)
    model, h = fit_small(small_xy, [inj, es])
    assert h.stop_reason == "completed" and es.stopped_epoch is None
    assert es.best_epoch == 3 and h.weights_epoch == 3
    assert states_equal(model.state_dict(), inj.weights[3])
    assert not states_equal(model.state_dict(), inj.weights[5])


def test_without_restore_the_model_keeps_its_last_weights(small_xy):
    inj = Inject([5.0, 4.0, 3.0, 2.5, 2.7, 2.9])
    es = el.EarlyStopping("val_fake_loss", patience=3)
    model, h = fit_small(small_xy, [inj, es])
    assert es.best_epoch == 3 and h.weights_epoch == 5
    assert states_equal(model.state_dict(), inj.weights[5])


def test_restores_best_weights_after_ctrl_c(small_xy):
    inj = Inject([5.0, 4.0, 3.0, 2.5, 2.7, 2.9], interrupt_at=(5, 2))
    es = el.EarlyStopping("val_fake_loss", patience=3, restore_best_weights=True)
    model, h = fit_small(small_xy, [inj, es])
    assert h.stop_reason == "interrupted"
    assert h.weights_epoch == 3
    assert states_equal(model.state_dict(), inj.weights[3])
    assert "Restored the weights of epoch 4" in h.stop_message


def test_restores_best_weights_after_divergence(small_xy):
    inj = Inject([5.0, 4.0, 3.0, 2.5, 2.7, 2.9], nan_at=(4, 1))
    es = el.EarlyStopping("val_fake_loss", patience=3, restore_best_weights=True)
    model, h = fit_small(small_xy, [inj, es])
    assert h.stop_reason == "diverged"
    assert h.weights_epoch == 3
    assert states_equal(model.state_dict(), inj.weights[3])


def test_unknown_monitor_raises_listing_the_metrics_that_exist(small_xy):
    es = el.EarlyStopping("val_los", mode="min")
    with pytest.raises(ValueError, match="val_los") as err:
        fit_small(small_xy, [es], epochs=2)
    assert "val_loss" in str(err.value) and "val_accuracy" in str(err.value)


def test_val_monitor_without_validation_says_to_add_validation():
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    with pytest.raises(ValueError, match="validation_split"):
        el.fit(el.models.mlp(3), (x, y), epochs=2, batch_size=8, verbose=0,
               callbacks=[el.EarlyStopping()])


def test_auto_mode_never_guesses_and_unknown_mode_is_an_error():
    assert el.EarlyStopping("val_accuracy").mode_ == "max"
    assert el.EarlyStopping("loss").mode_ == "min"
    with pytest.raises(ValueError, match="set `mode='min'` or `mode='max'`"):
        el.EarlyStopping("val_score")
    with pytest.raises(ValueError, match="`mode` is 'lowest'"):
        el.EarlyStopping(mode="lowest")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patience": -1}, "The value of `patience` is -1, but must be `patience >= 0`."),
        ({"min_delta": -0.1}, "The value of `min_delta` is -0.1, but must be `min_delta >= 0`."),
        ({"start_from_epoch": -2}, "The value of `start_from_epoch` is -2"),
    ],
)
def test_arguments_are_validated_at_construction(kwargs, message):
    with pytest.raises(ValueError) as err:
        el.EarlyStopping(**kwargs)
    assert message in str(err.value)


def test_patience_counts_epochs_without_improvement():
    assert drive(el.EarlyStopping(patience=0), [3, 2, 2.5, 1]) == 3
    assert drive(el.EarlyStopping(patience=2), [3, 2, 2.5, 2.4, 1]) == 4
    assert drive(el.EarlyStopping(patience=2), [3, 2, 2.5, 1.9, 2.0, 2.1, 0.1]) == 6


def test_min_delta_requires_a_large_enough_improvement():
    es = el.EarlyStopping(patience=2, min_delta=0.1)
    assert drive(es, [1.0, 0.95, 0.92, 0.5]) == 3
    assert es.best_epoch == 0 and es.stopped_epoch == 2


def test_start_from_epoch_ignores_the_first_epochs():
    es = el.EarlyStopping(patience=0, start_from_epoch=2)
    assert drive(es, [1.0, 2.0, 3.0, 2.5, 2.6]) == 5
    assert es.best_epoch == 3


def test_baseline_restarts_patience_only_when_beaten():
    # Improving but above the baseline: patience keeps running, so the first epoch
    # without improvement stops (without a baseline it would go on).
    assert drive(el.EarlyStopping(patience=2, baseline=1.0), [3.0, 2.0, 2.5, 1.9]) == 3
    assert drive(el.EarlyStopping(patience=2), [3.0, 2.0, 2.5, 1.9]) == 4
    es = el.EarlyStopping(patience=2, baseline=1.0)
    assert drive(es, [3.0, 0.9, 0.95, 0.8, 0.85, 0.9, 0.1]) == 6


def test_nan_is_never_an_improvement():
    es = el.EarlyStopping(patience=1)
    assert drive(es, [1.0, math.nan, 0.5]) == 2
    assert es.best_value == 1.0


def test_one_instance_resets_between_runs():
    es = el.EarlyStopping(patience=1)
    drive(es, [0.1, 0.2, 0.3])
    assert drive(es, [5.0, 4.0, 3.0]) == 3
    assert es.best_value == 3.0 and es.stopped_epoch is None


def test_state_dict_survives_a_resume():
    es = el.EarlyStopping(patience=3, restore_best_weights=True)
    t = FakeTrainer()
    es.on_train_begin(t, {})
    for e, v in enumerate([3.0, 2.0, 2.5]):
        es.on_epoch_end(t, {"epoch": e, "val_loss": v})
    again = el.EarlyStopping(patience=3, restore_best_weights=True)
    again.load_state_dict(es.state_dict())
    again.on_train_begin(t, {})  # a resume: the loaded state is kept
    assert (again.best_epoch, again.best_value, again.wait) == (1, 2.0, 1)
    assert states_equal(again.best_weights, es.best_weights)


def test_parse_reads_the_cli_spelling():
    es = parse("val_accuracy:patience=4,restore=true,min_delta=0.01,mode=max,start_from_epoch=1")
    assert (es.monitor, es.patience, es.restore_best_weights) == ("val_accuracy", 4, True)
    assert (es.min_delta, es.mode_, es.start_from_epoch) == (0.01, "max", 1)
    assert parse("patience=2").monitor == "val_loss"
    assert parse("loss").patience == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("val_loss:patiense=3", "Valid parameters: patience, restore, min_delta"),
        ("val_loss:patience=two", "`patience` is 'two'"),
        ("val_loss:restore=maybe", "must be true or false"),
        ("val_loss:patience=-1", "`patience >= 0`"),
    ],
)
def test_parse_errors_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse(text)
