"""One tuning trial: train it, and record it in the store.

Both the in-process driver and a Ray worker train a trial with
:func:`train_trial` (``torch.manual_seed(seed); make_model()``, then
:func:`epochlab.fit` with the pruning callback), and the driver stores it with
:func:`record_trial`. :func:`run_trial_remote` is what a Ray task runs: it
joins the Optuna study through its storage URL (the driver created the study
before any task started), trains, and returns plain data to the driver, which
alone writes the epochlab store and tells Optuna the outcome.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from epochlab.store.base import DONE, Store
from epochlab.store.record import status_of, summarize
from epochlab.train.history import History
from epochlab.train.loop import evaluate, fit
from epochlab.train.runtime import manual_seed
from epochlab.tuning.pruning import Budget, TrialPruning, make_pruner

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.data.base import DataBundle

__all__ = ["TrialJob", "TrialWork", "costs", "final_value", "record_trial", "run_trial_remote",
           "test_metrics", "train_trial"]


def train_trial(factory: Callable[[], torch.nn.Module], train: Any, settings: dict[str, Any],
                callbacks: list[Any], threads: Any = "auto",
                precision: str = "auto") -> tuple[Any, torch.nn.Module]:
    """One trial's training: ``torch.manual_seed(seed); make_model()``, then ``fit``.

    ``threads`` and ``precision`` are ``fit``'s. Returns the History and the trained model.

    Example:
        >>> import epochlab as el
        >>> s = {"epochs": 2, "batch_size": 32, "lr": 1e-2, "optimizer": "adam",
        ...      "weight_decay": 0.0, "momentum": 0.0, "seed": 0, "validation_split": 0.2}
        >>> d = el.data.synthetic()
        >>> train_trial(lambda: el.models.mlp(20), d.train, s, [])[0].total_updates
        40
    """
    manual_seed(settings["seed"])
    model = factory()
    history = fit(model, train, epochs=settings["epochs"], batch_size=settings["batch_size"],
                  validation_split=settings["validation_split"], optimizer=settings["optimizer"],
                  lr=settings["lr"], weight_decay=settings["weight_decay"],
                  momentum=settings["momentum"], callbacks=callbacks, seed=settings["seed"],
                  verbose=0, threads=threads, precision=precision)
    return history, model


def costs(history: Any) -> dict[str, int]:
    return {"epochs_run": len(history.epochs), "epochs_planned": history.epochs_planned,
            "updates": history.total_updates,
            "full_updates": history.epochs_planned * history.iterations_per_epoch}


def test_metrics(history: History, model: torch.nn.Module,
                 bundle: DataBundle | None) -> dict[str, float]:
    """Test-split metrics of a trial that finished (not of a pruned or failed one)."""
    if bundle is None or not len(bundle.x_test) or status_of(history) not in DONE:
        return {}
    return evaluate(model, bundle)


def record_trial(store: Store, rid: int, history: History, test: dict[str, float], number: int,
                 budget: Budget) -> str:
    """Store a trained trial (pruned ones with the epochs they ran); return its status."""
    status = status_of(history)
    summary = summarize(history)
    summary.update(costs(history), trial=number, prune_by=budget.by,
                   n_train=history.n_train, n_val=history.n_val, batch_size=history.batch_size,
                   epochs_planned=history.epochs_planned, weights_epoch=history.weights_epoch,
                   stop_message=history.stop_message)
    if test:
        summary["test"] = test
    store.finish_run(rid, status, summary, history.epochs, history.iterations)
    return status


def final_value(epochs: list[dict[str, float]], metric: str) -> float:
    return float(epochs[-1].get(metric, math.nan)) if epochs else math.nan




@dataclass(frozen=True)
class TrialWork:
    """What every trial of a tune on Ray shares; put in the object store once."""

    factory: Callable[[], torch.nn.Module]
    train: Any
    bundle: DataBundle | None
    metric: str
    budget: Budget
    pruner: str
    storage: str  # Optuna's storage URL, which the workers open themselves
    study: str
    threads: Any = "auto"
    precision: str = "auto"


@dataclass(frozen=True)
class TrialJob:
    """One trial to run: Optuna's ids for it and its settings."""

    trial_id: int
    number: int
    settings: dict[str, Any]


def run_trial_remote(work: TrialWork, job: TrialJob) -> dict[str, Any]:
    """Train one trial on a worker, reporting to Optuna every epoch; return plain data.

    Returns ``{"history": History.to_dict(), "test": {...}}``, or
    ``{"error": message}`` when training raised.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=work.study, storage=work.storage,
                              pruner=make_pruner(work.pruner, work.budget))
    trial = optuna.trial.Trial(study, job.trial_id)
    try:
        history, model = train_trial(work.factory, work.train, job.settings,
                                     [TrialPruning(trial, work.metric, work.budget)],
                                     work.threads, work.precision)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"history": history.to_dict(), "test": test_metrics(history, model, work.bundle)}
