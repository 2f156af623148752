"""Advice on one run and on a sweep: the sentences and the numbers behind them."""

from __future__ import annotations

import math

import pytest

import epochlab as el
from epochlab.diagnose.advice import (
    Advice,
    RunResult,
    advise_history,
    advise_runs,
    format_advice,
    runs_from_store,
)
from epochlab.store import MemoryStore


def _rows(loss, val=None):
    return [{"epoch": i, "loss": lo, **({"val_loss": val[i]} if val else {})}
            for i, lo in enumerate(loss)]


def _by_topic(items):
    return {a.topic: a for a in items}


def test_best_epoch_and_overfitting_onset_are_one_based_with_their_numbers():
    loss = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2]
    val = [0.9, 0.7, 0.55, 0.6, 0.62, 0.7, 0.8]
    a = _by_topic(advise_history(_rows(loss, val), patience=3))
    assert a["best_epoch"].numbers["epoch"] == 3
    assert a["best_epoch"].numbers["value"] == 0.55
    over = a["overfitting"].numbers
    assert over["epoch"] == 3 and over["patience"] == 3
    assert (over["val_loss_from"], over["val_loss_to"]) == (0.55, 0.7)
    assert (over["loss_from"], over["loss_to"]) == (0.6, 0.3)
    assert "after epoch 3" in a["overfitting"].text
    assert a["convergence"].numbers["converged"] is True


def test_no_overfitting_when_validation_rises_for_fewer_epochs_than_patience():
    loss = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]
    val = [0.9, 0.7, 0.6, 0.65, 0.66, 0.55]  # rises two epochs, then beats its old best
    a = _by_topic(advise_history(_rows(loss, val), patience=2))
    assert "overfitting" not in a  # comes back below epoch 3's value: not an onset
    assert a["best_epoch"].numbers["epoch"] == 6


def test_one_noisy_epoch_does_not_hide_overfitting():
    loss = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25]
    val = [0.9, 0.5, 0.7, 0.6, 0.8, 0.9, 0.95]  # dips at epoch 4 but stays above epoch 2's
    a = _by_topic(advise_history(_rows(loss, val), patience=3))
    assert a["overfitting"].numbers["epoch"] == 2


def test_still_improving_run_is_not_converged():
    loss = [1.0 / (i + 1) for i in range(8)]
    a = _by_topic(advise_history(_rows(loss)))
    conv = a["convergence"].numbers
    assert conv["converged"] is False and conv["metric"] == "loss"
    assert "more epochs may help" in a["convergence"].text
    assert a["best_epoch"].numbers == {"metric": "loss", "epoch": 8, "value": loss[-1],
                                       "epochs": 8, "last": loss[-1]}


def test_flat_run_is_converged_and_short_run_cannot_be_judged():
    loss = [1.0, 0.5, 0.3, 0.3, 0.3, 0.3]
    assert _by_topic(advise_history(_rows(loss)))["convergence"].numbers["converged"] is True
    short = _by_topic(advise_history(_rows([1.0, 0.5]), window=3))
    assert short["convergence"].numbers["converged"] is None


def test_advice_on_a_real_fit_names_a_diverged_run():
    d = el.data.synthetic(n_samples=200)
    h = el.fit(el.models.mlp(20), d.train, epochs=2, batch_size=32, lr=1e6, optimizer="sgd",
               validation_split=0.2, verbose=0)
    assert h.stop_reason == "diverged"
    a = _by_topic(advise_history(h))
    assert "lower the learning rate" in a["diverged"].text


def test_bad_parameters_name_the_parameter():
    with pytest.raises(el.ParameterError, match="patience"):
        advise_history(_rows([1.0]), patience=0)
    with pytest.raises(el.ParameterError, match="history"):
        advise_history(42)
    with pytest.raises(el.ParameterError, match="mode"):
        advise_runs([], mode="up")


def _sweep(scores):
    """RunResults from {(batch_size, lr, seed): final val_accuracy}."""
    return [RunResult({"batch_size": b, "lr": lr, "seed": s, "epochs": 5},
                      [{"epoch": 0, "val_accuracy": 0.1}, {"epoch": 1, "val_accuracy": v}])
            for (b, lr, s), v in scores.items()]


def test_best_batch_size_and_lr_with_every_value_and_seed_spread():
    scores = {(b, lr, s): 0.9 - b / 1000 - abs(math.log10(lr) + 3) / 10 + s * 0.001
              for b in (32, 64, 128) for lr in (1e-4, 1e-3, 1e-2) for s in (0, 1, 2)}
    items = advise_runs(_sweep(scores), metric="val_accuracy")
    assert [a.numbers["setting"] for a in items] == ["batch_size", "lr"]
    bs, lr = items
    assert bs.numbers["best"] == 32 and lr.numbers["best"] == 1e-3
    assert bs.numbers["seeds"] == 3
    assert bs.numbers["score"] == pytest.approx(0.9 - 0.032 + 0.001)
    assert bs.numbers["sd"] == pytest.approx(0.001)
    assert [v["value"] for v in bs.numbers["by_value"]] == [32, 64, 128]
    assert bs.numbers["within_noise"] is False
    assert bs.numbers["edge"] == "small" and "try smaller values" in bs.text
    assert "edge" not in lr.numbers
    assert lr.numbers["with"] == {"batch_size": 32, "epochs": 5}


def test_loss_metric_is_minimised_and_ties_within_noise_are_called_so():
    runs = [RunResult({"lr": lr, "seed": s}, [{"epoch": 0, "val_loss": v}])
            for lr, s, v in [(0.1, 0, 0.50), (0.1, 1, 0.40), (0.01, 0, 0.46), (0.01, 1, 0.46)]]
    (a,) = advise_runs(runs)
    assert a.numbers["mode"] == "min" and a.numbers["best"] == 0.1  # mean 0.45 < 0.46
    assert a.numbers["within_noise"] is True and "not a clear winner" in a.text


def test_diverged_runs_are_named_not_scored():
    runs = _sweep({(32, 1e-3, 0): 0.9, (32, 1e-2, 0): 0.8})
    runs.append(RunResult({"batch_size": 32, "lr": 10.0, "seed": 0, "epochs": 5},
                          [{"epoch": 0, "val_accuracy": math.nan}], status="diverged"))
    items = _by_topic(advise_runs(runs, metric="val_accuracy"))
    assert "learning rates 10" in items["diverged"].text
    assert items["best_setting"].numbers["best"] == 1e-3
    assert [v["value"] for v in items["best_setting"].numbers["by_value"]] == [1e-3, 1e-2]


def test_final_uses_the_restored_epoch_and_best_the_best_epoch():
    rows = [{"epoch": 0, "val_accuracy": 0.7}, {"epoch": 1, "val_accuracy": 0.9},
            {"epoch": 2, "val_accuracy": 0.6}]
    runs = [RunResult({"lr": 0.1}, rows, weights_epoch=1), RunResult({"lr": 0.2}, rows)]
    (final,) = advise_runs(runs, metric="val_accuracy")
    assert final.numbers["best"] == 0.1 and final.numbers["score"] == 0.9
    (best,) = advise_runs(runs, metric="val_accuracy", select="best")
    assert best.numbers["score"] == 0.9 and best.numbers["margin"] == 0  # both peak at 0.9


def test_runs_from_store_reads_settings_epochs_and_restored_epoch():
    store = MemoryStore()
    sid = store.create_study("s")
    for lr, v in [(0.1, 0.5), (0.01, 0.4)]:
        rid = store.add_run(sid, f"lr={lr}", {"lr": lr})
        store.finish_run(rid, "completed", {"weights_epoch": 0}, [{"epoch": 0, "val_loss": v}], {})
    (a,) = advise_runs(runs_from_store(store, store.runs("s")))
    assert a.numbers["best"] == 0.01


def test_format_advice_and_to_dict_are_plain():
    a = Advice("best_epoch", "best val_loss 0.3 at epoch 4.", {"epoch": 4})
    assert format_advice([a, a]).splitlines() == ["- " + a.text] * 2
    assert a.to_dict() == {"topic": "best_epoch", "text": a.text, "numbers": {"epoch": 4}}


def test_ties_go_to_fewer_updates_in_the_advice_and_the_best_configuration():
    from epochlab.diagnose.advice import best_configuration

    runs = [RunResult({"batch_size": b}, [{"val_accuracy": 0.875, "updates": 640 // b}])
            for b in (32, 64)]
    advice = advise_runs(runs, metric="val_accuracy")[0]
    assert advice.numbers["best"] == 64  # fewer updates, as the best run's tie-break
    assert best_configuration(runs)["settings"] == {"batch_size": 64}


def test_the_best_configuration_is_the_best_mean_over_seeds_not_the_luckiest_seed():
    from epochlab.diagnose.advice import best_configuration

    runs = [RunResult({"lr": lr, "seed": s}, [{"val_accuracy": a, "updates": 10}], id=i)
            for i, (lr, s, a) in enumerate(((0.1, 0, 0.95), (0.1, 1, 0.5),
                                            (0.01, 0, 0.8), (0.01, 1, 0.85)))]
    c = best_configuration(runs)
    assert c["settings"] == {"lr": 0.01} and c["seeds"] == 2
    assert c["mean"] == pytest.approx(0.825) and [r.id for r in c["runs"]] == [3, 2]
    assert advise_runs(runs, metric="val_accuracy")[0].numbers["best"] == 0.01


def test_a_loss_that_is_not_finite_before_any_update_is_not_blamed_on_the_learning_rate():
    import torch

    class NanOut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l = torch.nn.Linear(20, 1)

        def forward(self, x):
            return self.l(x) * float("nan")

    d = el.data.synthetic(n_samples=200)
    h = el.fit(NanOut(), d.train, epochs=2, batch_size=32, verbose=0)
    assert h.stop_reason == "diverged" and h.total_updates == 0
    assert "before any update" in h.stop_message and "learning rate" not in h.stop_message.split(
        "so the")[0]
    text = _by_topic(advise_history(h))["diverged"].text
    assert "before its first update" in text and "lower the learning rate" not in text


def test_a_tunes_trial_numbers_are_not_advised_on():
    runs = [RunResult({"lr": lr, "trial": t}, [{"val_accuracy": a}])
            for t, (lr, a) in enumerate(((0.1, 0.8), (0.01, 0.9), (0.001, 0.85)))]
    topics = [a.numbers.get("setting") for a in advise_runs(runs, metric="val_accuracy")]
    assert topics == ["lr"]
