"""The tuning driver: an Optuna study whose trials are epochlab runs, pruned epoch by epoch.

:func:`tune` checks everything first (space, pruner, sampler, metric, data,
model), then creates the epochlab study and Optuna's storage and study
*once*, before any trial starts (several processes creating Optuna's tables
in a new SQLite file at once race on ``alembic_version``). Each trial:

1. samples its settings from the space and adds a run to the epochlab store
   (key: the trial number and its settings);
2. builds the model as ``torch.manual_seed(seed); make_model()`` and trains
   it with :func:`epochlab.fit` and a :class:`~epochlab.tuning.pruning.TrialPruning`
   callback, which reports the validation metric after every epoch and stops
   the run by flag when the pruner says so;
3. stores the run (``pruned`` with the epochs it ran, or ``completed``,
   ``diverged``, ``failed``) and returns the final metric to Optuna, or
   raises ``TrialPruned`` *after* training, outside the loop.

Storage: Optuna's tables live in the same SQLite file as the epochlab store
(epochlab's tables are prefixed ``epochlab_``), so ``optuna-dashboard
sqlite:///epochlab.db`` shows the study; ``storage=`` takes any Optuna URL
(PostgreSQL for several machines on one study). A tune run again with the
same settings resumes: finished trials are kept; a trial that a killed
process left running is settled from the store if its run had finished, and
otherwise marked failed and its settings queued to run again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from epochlab.store.base import DONE, RunRecord, Store, run_key
from epochlab.sweeps.spec import default_metric
from epochlab.train.history import History
from epochlab.tuning.pruning import PRUNERS, Budget, TrialPruning, make_budget, make_pruner
from epochlab.tuning.space import SearchSpace, as_written, parse_space
from epochlab.tuning.trial import (
    TrialJob,
    TrialWork,
    costs,
    final_value,
    record_trial,
    run_trial_remote,
    test_metrics,
    train_trial,
)
from epochlab.validation import SEED_MAX, ParameterError, refuse_model_instance

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from epochlab.data.base import DataBundle

__all__ = ["SAMPLERS", "TrialRow", "TuneResult", "tune"]

SAMPLERS = ("tpe", "random", "grid")


@dataclass
class TrialRow:
    """One trial as the tune ended: its settings, outcome and the training it cost."""

    number: int
    state: str  # Optuna's: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict[str, Any]
    value: float | None  # the metric at the last epoch run (the last reported, if pruned)
    run_id: int | None = None
    status: str | None = None  # the epochlab run's status
    epochs_run: int = 0
    epochs_planned: int = 0
    updates: int = 0
    full_updates: int = 0  # what the run would have cost unpruned: planned epochs x iterations

    @property
    def saved(self) -> int:
        """Updates pruning saved on this trial."""
        return max(self.full_updates - self.updates, 0)


@dataclass
class TuneResult:
    """What a tune found and what it cost.

    Attributes:
        study: the study name (the same in the epochlab store and in Optuna).
        storage: where Optuna keeps the study (a URL, or ``"memory"``).
        metric, mode: what was optimized.
        pruner, sampler: their names.
        budget: the axis trials were compared on, and why.
        trials: every trial, by number.
        best: the best complete trial, or None.
        seconds: wall time of this call.
        resumed: trials that were already finished before this call.
    """

    study: str
    storage: str
    metric: str
    mode: str
    pruner: str
    sampler: str
    budget: Budget
    trials: list[TrialRow]
    best: TrialRow | None
    seconds: float
    resumed: int = 0
    space: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def best_params(self) -> dict[str, Any] | None:
        return None if self.best is None else dict(self.best.params)

    @property
    def best_value(self) -> float | None:
        return None if self.best is None else self.best.value

    def counts(self) -> dict[str, int]:
        """Trials per Optuna state."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    @property
    def total_updates(self) -> int:
        """Updates actually made by all trials."""
        return sum(t.updates for t in self.trials)

    @property
    def full_updates(self) -> int:
        """Updates the same trials would have made with no pruning."""
        return sum(t.full_updates for t in self.trials)

    @property
    def update_ratio(self) -> float:
        """``total_updates / full_updates``: the share of full-length training pruning kept."""
        return self.total_updates / self.full_updates if self.full_updates else math.nan


def _resolve(make_model: Any, data: Any) -> tuple[Callable[[], torch.nn.Module], Any, DataBundle | None, str, str]:
    """A zero-argument model factory, training data, the bundle (for test metrics), and names."""
    from epochlab.data.base import DataBundle

    bundle = None
    if isinstance(data, str):
        from epochlab.data.registry import load

        bundle = load(data)
    elif isinstance(data, DataBundle):
        bundle = data
    if bundle is not None:
        train, data_name = bundle.train, bundle.name
    else:
        train, data_name = data, _fingerprint(data)
    if make_model is None:
        make_model = "mlp"
    if isinstance(make_model, str):
        if bundle is None:
            raise ParameterError(f"The value of `make_model` is {make_model!r}, a registry name, "
                                 "which needs `data` as a dataset name or DataBundle; pass a "
                                 "callable that builds your model for your arrays.")
        import functools

        from epochlab.models.registry import build

        return functools.partial(build, make_model, bundle), train, bundle, data_name, make_model
    refuse_model_instance(make_model)
    if not callable(make_model):
        raise ParameterError(f"The value of `make_model` is a {type(make_model).__name__}, but "
                             "must be a zero-argument callable returning an nn.Module, or a model name.")
    name = f"{getattr(make_model, '__module__', '')}.{getattr(make_model, '__qualname__', repr(make_model))}"
    return make_model, train, bundle, data_name, name


def _identity(make_model: Any, data: Any, factory: Callable[[], torch.nn.Module],
              bundle: Any, data_name: str, model_name: str) -> dict[str, str]:
    """What a study's runs share: the data and model by name, and by content where they are
    the user's own (a registry dataset or model name is its own identity)."""
    from epochlab.sweeps.workload import data_fingerprint, model_fingerprint

    out = {"data": data_name, "model": model_name}
    if not isinstance(data, str):
        out["data_fingerprint"] = (data_fingerprint(bundle) if bundle is not None
                                   else _fingerprint(data))
    if not isinstance(make_model, str) and make_model is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            out["model_fingerprint"] = model_fingerprint(factory(), factory)
    return out


def _fingerprint(data: Any) -> str:
    """Shape, dtype and a hash of the bytes of ``(X, y)``: other data gets another study name."""
    try:
        import numpy as np

        parts = []
        for a in data:
            arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            parts.append(f"{arr.shape}{arr.dtype}" + hashlib.sha1(arr.tobytes()).hexdigest()[:10])
        return "arrays:" + "|".join(parts)
    except Exception:  # a Dataset: its type and length
        return f"{type(data).__name__}[{len(data) if hasattr(data, '__len__') else '?'}]"


def _n_rows(train: Any) -> int:
    if isinstance(train, (tuple, list)) and len(train) == 2:
        return len(train[0])
    return len(train)


def _make_sampler(name: str, space: SearchSpace, seed: int,
                  ask_tell: bool = False) -> optuna.samplers.BaseSampler:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    grid = optuna.samplers.GridSampler(space.grid(), seed=seed)
    if ask_tell:
        # GridSampler calls study.stop() once the grid is used up, which Optuna allows only
        # inside optimize(); trials on Ray are told outside it, and the driver already runs
        # no more trials than the grid holds.
        grid.after_trial = lambda *args: None  # type: ignore[method-assign]
    return grid


def _storage_for(storage: Any, store: Store) -> tuple[Any, str]:
    """Optuna's storage (created here, once) and a printable name for it."""
    import optuna

    from epochlab.store.sqlite import SQLiteStore

    if storage is None:
        if isinstance(store, SQLiteStore):
            storage = f"sqlite:///{store.path.resolve()}"
        else:
            return optuna.storages.InMemoryStorage(), "memory"
    if isinstance(storage, str):
        kwargs: dict[str, Any] = {}
        if storage.startswith("sqlite"):
            # Waits for the epochlab store's writes instead of failing at once on a busy file.
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        try:
            return optuna.storages.RDBStorage(storage, **kwargs), storage
        except Exception as e:
            raise ParameterError(f"The value of `storage` is {storage!r}, which Optuna cannot "
                                 f"open: {type(e).__name__}: {e}") from None
    return storage, type(storage).__name__


def _store_id(store: Store) -> str:
    """Which store a trial's run lives in, so a resume touches only its own trials."""
    path = getattr(store, "path", None)
    return f"{socket.gethostname()}:{os.path.abspath(path) if path else id(store)}"


def tune(
    make_model: Callable[[], torch.nn.Module] | str | None = None,
    data: Any = "synthetic",
    *,
    space: str | dict[str, Any] | SearchSpace,
    trials: int = 20,
    pruner: str = "hyperband",
    sampler: str = "tpe",
    prune_by: str = "auto",
    metric: str | None = None,
    mode: str | None = None,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    validation_split: float = 0.2,
    seed: int = 0,
    study: str | None = None,
    store: Store | None = None,
    storage: Any = None,
    on_trial: Callable[[TrialRow], None] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    workers: int = 0,
    threads: int | str = "auto",
    precision: str = "auto",
) -> TuneResult:
    """Search ``space`` with Optuna, each trial an epochlab run pruned epoch by epoch.

    Args:
        make_model: a zero-argument callable returning a fresh ``nn.Module``
            (each trial: ``torch.manual_seed(seed); make_model()``), or a
            registry model name (``"mlp"``, ``"cnn"``...) when ``data`` is a
            dataset name or DataBundle.
        data: ``(X, y)``, a DataBundle, a map-style Dataset, or a dataset name.
        space: the settings searched, e.g.
            ``"lr=loguniform(1e-4,1e-1),batch_size=choice(16,32,64,128),epochs=int(5,50)"``
            (see :mod:`epochlab.tuning.space`); settings not in it take the
            values of the keyword arguments below.
        trials: how many trials the study should hold when done (a rerun
            counts those already finished).
        pruner: ``hyperband``, ``median``, ``successive-halving`` or ``none``.
        sampler: ``tpe``, ``random`` or ``grid`` (every setting a choice).
        prune_by: compare trials at equal ``epochs`` or ``updates``; ``auto``
            uses updates when the space searches the batch size (see
            :mod:`epochlab.tuning.pruning`).
        metric, mode: the epoch metric optimized (a validation metric; default
            ``val_accuracy``, ``val_loss`` for regression targets) and
            ``"max"``/``"min"`` (inferred for accuracy and loss).
        epochs, batch_size, lr, optimizer, weight_decay, momentum, validation_split, seed:
            every trial's value of the settings the space does not search.
        study: the study name; by default one made from the settings, so a rerun resumes.
        store: the epochlab store (default: a fresh in-memory one).
        storage: Optuna's storage URL; default: the store's SQLite file, or
            memory for an in-memory store.
        on_trial: called with each trial's :class:`TrialRow` as it ends.
        executor: ``"local"`` (trials one after another, here) or ``"ray"``:
            trials as Ray tasks, as many at once as the cluster has CPUs. Each
            worker reports to Optuna through ``storage`` (the store's SQLite
            file on one machine; a PostgreSQL URL on a cluster); this process
            samples, and alone writes the epochlab store.
        ray_address: the Ray cluster to join (None: a local Ray with
            ``workers`` CPUs, or all of them).
        workers: CPUs of a local Ray.
        threads, precision: each trial's, as :func:`epochlab.fit` takes them
            (``"auto"``: chosen from the model's work; each trial's History
            records what it got). Not part of the study's identity: a rerun
            at another explicit precision keeps the finished trials, and warns.

    Returns:
        A :class:`TuneResult`.

    Raises:
        ParameterError: bad arguments (before anything trains).
        KeyboardInterrupt: after storing what finished, when interrupted.

    Example:
        >>> import epochlab as el
        >>> r = el.tune("mlp", el.data.synthetic(n_samples=200), trials=4, pruner="median",
        ...             space="lr=loguniform(1e-3,1e-1),batch_size=choice(32,64)", epochs=3)
        >>> len(r.trials), r.budget.by, sorted(r.best_params)
        (4, 'updates', ['batch_size', 'lr'])
    """
    import optuna

    t0 = time.perf_counter()
    sp = parse_space(space)
    from epochlab.train.accounting import check_int, validation_count

    trials = check_int("trials", trials, 1)
    from epochlab.train.runtime import check_precision, check_threads

    check_threads(threads)
    precision = check_precision(precision)
    if pruner not in PRUNERS:
        raise ParameterError(f"The value of `pruner` is {pruner!r}, but must be one of {PRUNERS}.")
    if sampler not in SAMPLERS:
        raise ParameterError(f"The value of `sampler` is {sampler!r}, but must be one of {SAMPLERS}.")
    if sampler == "grid":
        sp.grid()  # every setting must be a finite set
    if metric is not None:  # a bad metric fails before the preflight's training
        mode = _check_metric(metric, mode)
    if not isinstance(validation_split, (int, float)) or not 0 < validation_split < 1:
        raise ParameterError(f"The value of `validation_split` is {validation_split!r}, but must be "
                             "in (0, 1): the pruner compares validation metrics.")
    fixed = {"epochs": check_int("epochs", epochs, 1), "batch_size": check_int("batch_size", batch_size, 1),
             "lr": lr, "optimizer": optimizer, "weight_decay": weight_decay, "momentum": momentum,
             "seed": check_int("seed", seed, 0, SEED_MAX), "validation_split": validation_split}
    if "momentum" in sp and "optimizer" not in sp and str(optimizer).lower() in ("adam", "adamw"):
        import warnings

        warnings.warn(f"The space searches momentum, but {optimizer} has none (its betas play "
                      "that part): every trial's momentum has no effect. Search it with "
                      "optimizer='sgd' or 'rmsprop'.", UserWarning, stacklevel=2)
    if executor not in ("local", "ray"):
        raise ParameterError(f"The value of `executor` is {executor!r}, but must be 'local' or 'ray'.")
    if executor == "ray" and not isinstance(storage, str) and not (
            storage is None and type(store).__name__ == "SQLiteStore"):
        raise ParameterError("`executor='ray'` needs an Optuna storage the workers can open: "
                             "a SQLiteStore (its file, on one machine) or `storage` as a URL "
                             "(postgresql://... on a cluster).")
    if ray_address and executor != "ray":
        raise ParameterError("`ray_address` was given without `executor='ray'`; it has no effect.")
    factory, train, bundle, data_name, model_name = _resolve(make_model, data)
    n_rows = _n_rows(train)
    n_train = n_rows - validation_count(n_rows, validation_split)
    batch_sizes = sp["batch_size"].options() if "batch_size" in sp else [fixed["batch_size"]]
    max_epochs = sp["epochs"].largest() if "epochs" in sp else fixed["epochs"]
    budget = make_budget(prune_by, batch_sizes=[int(b) for b in batch_sizes],
                         max_epochs=int(max_epochs), n_train=n_train)
    task = _preflight(factory, train, metric, fixed)
    if metric is None:  # from the data: regression targets log no accuracy
        metric = default_metric(task, validation_split)
        mode = _check_metric(metric, mode)

    described = {"data": data_name, "model": model_name, "space": str(sp), "metric": metric,
                 "mode": mode, "pruner": pruner, "sampler": sampler, "prune_by": budget.by,
                 "fixed": {k: v for k, v in fixed.items() if k not in sp}}
    identity = _identity(make_model, data, factory, bundle, data_name, model_name)
    # A user's data or model by content too (a file of the same name, an edited model: another
    # study); registry names alone keep the names earlier versions gave their studies.
    described.update({k: v for k, v in identity.items() if k.endswith("_fingerprint")})
    name = study or "tune-" + hashlib.sha1(json.dumps(described, sort_keys=True).encode()).hexdigest()[:10]
    if not isinstance(name, str) or not name:
        raise ParameterError(f"The value of `study` is {study!r}, but must be a non-empty string.")
    if store is None:
        from epochlab.store.memory import MemoryStore

        store = MemoryStore()
    from epochlab.store.record import ensure_study, warn_other_precision

    # A named study rerun with other data or another model is refused, as a sweep's is.
    sid = ensure_study(store, name, {"tune": described, **identity})
    store.reset_stale(sid)

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the driver reports each trial itself
    try:
        opt_storage, storage_name = _storage_for(storage, store)
        ostudy = optuna.create_study(
            study_name=name, storage=opt_storage, direction="maximize" if mode == "max" else "minimize",
            sampler=_make_sampler(sampler, sp, fixed["seed"], ask_tell=executor == "ray"),
            pruner=make_pruner(pruner, budget),
            load_if_exists=True,
        )
        _check_same_choices(ostudy, sp, name)
        me = _store_id(store)
        _settle_stale(ostudy, store, me, metric)
        trained = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        warn_other_precision([r for t in ostudy.trials if t.state in trained
                              and (r := _stored(store, t.user_attrs.get("epochlab_run")))],
                             precision, "give the tune another study name (study=, or --study)")
        started = len(ostudy.trials)
        if started and sampler != "grid":
            # Resumed or extended: a sampler seeded as the first command was draws that
            # command's points again (each trained twice); go on from another seed, fixed by
            # the seed and the trials so far, so the same commands give the same study.
            ostudy.sampler = _make_sampler(sampler, sp, fixed["seed"] * 1_000_003 + started)
        finished = _n_finished(ostudy)
        todo = max(trials - finished, 0)
        if sampler == "grid":
            todo = min(todo, max(sp.grid_size() - finished, 0))
        ctx = _Context(sp, fixed, factory, train, bundle, metric, budget, store, sid, me, on_trial,
                       threads, precision)
        if todo and executor == "ray":
            work = TrialWork(factory, train, bundle, metric, budget, pruner, storage_name, name,
                             threads, precision)
            _run_on_ray(ostudy, ctx, todo, work, ray_address, workers)
        elif todo:
            ostudy.optimize(ctx.objective, n_trials=todo, catch=(Exception,))
    finally:
        optuna.logging.set_verbosity(previous)
    rows = _rows(ostudy, store)
    done = [t for t in rows if t.state == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
    sign = -1.0 if mode == "max" else 1.0  # ties go to fewer updates, then the earlier trial
    best = min(done, key=lambda t: (sign * t.value, t.updates, t.number), default=None)
    return TuneResult(study=name, storage=storage_name, metric=metric, mode=mode, pruner=pruner,
                      sampler=sampler, budget=budget, trials=rows, best=best,
                      seconds=time.perf_counter() - t0, resumed=finished, space=str(sp),
                      fixed={k: v for k, v in fixed.items() if k not in sp})


def _check_metric(metric: str, mode: str | None) -> str:
    """The mode for ``metric`` (given, or inferred from its name); a metric the trials log:
    ``val_accuracy`` (classification) or ``val_loss``."""
    from epochlab.validation import closest, resolve_mode

    if metric in ("accuracy", "loss"):
        raise ParameterError(f"The value of `metric` is {metric!r}, but tuning needs a validation "
                             f"metric (val_{metric}): a training metric rewards overfitting.")
    if metric not in ("val_accuracy", "val_loss"):
        near = closest(str(metric), ["val_accuracy", "val_loss"], cutoff=0.6)
        raise ParameterError(
            f"The value of `metric` is {metric!r}, but trials log only val_loss and (for "
            f"classification) val_accuracy{f': did you mean {near!r}?' if near else '.'}")
    return resolve_mode(metric, mode)


def _preflight(factory: Callable[[], torch.nn.Module], train: Any, metric: str | None,
               fixed: dict[str, Any]) -> str:
    """Build the model and train one epoch on a few rows, so a bad model or metric fails now;
    returns the task of the data (``binary``, ``multiclass``, ``regression``)."""
    from epochlab.train.loop import fit

    with torch.random.fork_rng(devices=[]):
        try:
            model = factory()
        except Exception as e:
            raise ParameterError(f"`make_model()` failed: {type(e).__name__}: {e}") from None
        if not isinstance(model, torch.nn.Module):
            raise ParameterError(f"`make_model()` returned a {type(model).__name__}, but must "
                                 "return a torch.nn.Module.")
        if isinstance(train, (tuple, list)) and len(train) == 2 and len(train[0]) > 64:
            train = (train[0][:64], train[1][:64])
        try:
            h = fit(model, train, epochs=1, batch_size=32, validation_split=0.25, verbose=0)
        except (ValueError, TypeError) as e:
            raise ParameterError(f"A trial cannot train this model on this data: {e}") from None
    if metric is not None and metric not in h.epochs[0]:
        names = [k for k in h.epochs[0] if k.startswith("val_")]
        raise ParameterError(f"The value of `metric` is {metric!r}, but the runs record "
                             f"{', '.join(names)}.")
    return h.task


def _check_same_choices(ostudy: optuna.Study, space: SearchSpace, name: str) -> None:
    """Refuse, before any trial, a space whose settings Optuna cannot search in this study:
    it keeps each setting's distribution, and refuses other choices or another kind (every
    new trial would fail)."""
    from optuna.distributions import check_distribution_compatibility

    seen: dict[str, Any] = {}
    for t in ostudy.trials:  # the latest trial's, for the message
        seen.update(t.distributions)
    for k, old in seen.items():
        if k not in space:
            continue
        try:
            check_distribution_compatibility(old, space[k].distribution())
        except ValueError:
            raise ParameterError(
                f"Study {name!r} searched {k}={as_written(old)}; this tune asks for "
                f"`{space[k].text}`: Optuna cannot change a setting's choices, kind or log "
                "scale in a study that has trials of it. Give this search another study name "
                "(study=, --study), or the study's own space.") from None


@dataclass
class _Context:
    """What every trial of one tune shares; ``objective`` is Optuna's objective."""

    space: SearchSpace
    fixed: dict[str, Any]
    factory: Callable[[], torch.nn.Module]
    train: Any
    bundle: DataBundle | None
    metric: str
    budget: Budget
    store: Store
    study_id: int
    store_id: str
    on_trial: Callable[[TrialRow], None] | None
    threads: Any = "auto"
    precision: str = "auto"

    def begin(self, trial: optuna.Trial) -> tuple[dict[str, Any], int]:
        """Sample the trial's settings and add its run to the store, marked running."""
        settings = {**self.fixed, **self.space.suggest(trial)}
        trial.set_user_attr("epochlab_store", self.store_id)
        full = {"trial": trial.number, **settings}
        rid = self.store.add_run(self.study_id, run_key(full), full)
        trial.set_user_attr("epochlab_run", rid)
        self.store.start_run(rid)
        return settings, rid

    def failed(self, trial: optuna.Trial, rid: int, message: str) -> None:
        self.store.finish_run(rid, "failed", {"error": message}, [])
        trial.set_user_attr("epochlab_outcome", "failed")
        self._notify(trial, rid, "FAIL", None)

    def conclude(self, trial: optuna.Trial, rid: int, history: History,
                 test: dict[str, float]) -> tuple[str, float]:
        """Store a trained trial; return Optuna's state for it and its value."""
        status = record_trial(self.store, rid, history, test, trial.number, self.budget)
        value = final_value(history.epochs, self.metric)
        if status == "interrupted":
            # Queue the same settings, so a resumed tune trains this configuration again.
            trial.study.enqueue_trial(trial.params)
            raise KeyboardInterrupt(f"Tune interrupted in trial {trial.number}; run it again to resume.")
        trial.set_user_attr("epochlab_outcome", status)
        for k, v in costs(history).items():
            trial.set_user_attr(k, v)
        state = "PRUNED" if status == "pruned" else "COMPLETE" if math.isfinite(value) else "FAIL"
        self._notify(trial, rid, state, value)
        return state, value

    def objective(self, trial: optuna.Trial) -> float:
        """Optuna's objective, for a tune in this process."""
        import optuna

        settings, rid = self.begin(trial)
        pruning = TrialPruning(trial, self.metric, self.budget)
        try:
            history, model = train_trial(self.factory, self.train, settings, [pruning],
                                         self.threads, self.precision)
        except Exception as e:
            self.failed(trial, rid, f"{type(e).__name__}: {e}")
            raise
        state, value = self.conclude(trial, rid, history, test_metrics(history, model, self.bundle))
        if state == "PRUNED":  # raised here, after training: the loop stopped by its flag
            raise optuna.TrialPruned(history.stop_message)
        return value

    def _notify(self, trial: optuna.Trial, rid: int, state: str, value: float | None) -> None:
        if self.on_trial is None:
            return
        rec = self.store.run(rid)
        self.on_trial(_row(trial.number, state, dict(trial.params), value, rec))


class _AskedTrials(Sequence[TrialJob]):
    """Trials asked of Optuna one at a time, as the executor takes them.

    The Ray executor reads ``jobs[i]`` when it has a free slot, so the
    sampler sees every trial that finished before it picks the next.
    """

    def __init__(self, ostudy: optuna.Study, ctx: _Context, n: int) -> None:
        self.ostudy, self.ctx, self.n = ostudy, ctx, n
        self.asked: dict[int, tuple[optuna.Trial, int]] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> TrialJob:  # type: ignore[override]
        trial = self.ostudy.ask()
        settings, rid = self.ctx.begin(trial)
        self.asked[i] = (trial, rid)
        return TrialJob(trial._trial_id, trial.number, settings)


def _run_on_ray(ostudy: optuna.Study, ctx: _Context, n: int, work: TrialWork,
                address: str | None, workers: int) -> None:
    """``n`` trials as Ray tasks; results come back here, the one writer of the store."""
    from optuna.trial import TrialState

    from epochlab.sweeps.executors import ExecutorError, make_executor

    jobs = _AskedTrials(ostudy, ctx, n)
    with make_executor(workers, "ray", address) as ex:
        for i, out in ex.run(functools.partial(run_trial_remote, work), jobs):
            trial, rid = jobs.asked[i]
            if isinstance(out, ExecutorError) or "error" in out:
                ctx.failed(trial, rid, out.message if isinstance(out, ExecutorError) else out["error"])
                ostudy.tell(trial, state=TrialState.FAIL)
                continue
            state, value = ctx.conclude(trial, rid, History.from_dict(out["history"]), out["test"])
            if state == "COMPLETE":
                ostudy.tell(trial, value)
            else:
                ostudy.tell(trial, state=TrialState[state])


def _n_finished(ostudy: optuna.Study) -> int:
    """Trials that count towards ``trials``: complete, pruned, or failed by their own run."""
    from optuna.trial import TrialState

    n = 0
    for t in ostudy.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n += 1
        elif t.state == TrialState.FAIL and "epochlab_outcome" in t.user_attrs:
            n += 1
    return n


def _settle_stale(ostudy: optuna.Study, store: Store, me: str, metric: str) -> None:
    """Trials a killed process of this store left running: settle them from the store, or retry.

    A trial whose run was stored as done gets its stored outcome (pruned, or
    its final metric); any other is marked failed and its settings queued to
    run again. Trials of other stores (other machines sharing the study) are
    left alone.
    """
    from optuna.trial import TrialState

    for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("epochlab_store") != me:
            continue
        rec = _stored(store, t.user_attrs.get("epochlab_run"))
        if rec is not None and rec.status == "pruned":
            ostudy.tell(t.number, state=TrialState.PRUNED)
        elif rec is not None and rec.status in DONE:
            v = final_value(store.epochs(rec.id), metric)
            if math.isfinite(v):
                ostudy.tell(t.number, v)
            else:
                ostudy.tell(t.number, state=TrialState.FAIL)
        else:
            ostudy.tell(t.number, state=TrialState.FAIL)
            ostudy.enqueue_trial(t.params)


def _stored(store: Store, rid: Any) -> RunRecord | None:
    if not isinstance(rid, int):
        return None
    try:
        return store.run(rid)
    except KeyError:
        return None


def _row(number: int, state: str, params: dict[str, Any], value: float | None,
         rec: RunRecord | None) -> TrialRow:
    s = rec.summary if rec is not None else {}
    return TrialRow(number=number, state=state, params=params,
                    value=None if value is None or not math.isfinite(value) else float(value),
                    run_id=None if rec is None else rec.id, status=None if rec is None else rec.status,
                    epochs_run=int(s.get("epochs_run", 0)), epochs_planned=int(s.get("epochs_planned", 0)),
                    updates=int(s.get("total_updates", 0)), full_updates=int(s.get("full_updates", 0)))


def _rows(ostudy: optuna.Study, store: Store) -> list[TrialRow]:
    rows = []
    for t in sorted(ostudy.get_trials(deepcopy=False), key=lambda t: t.number):
        value = t.value if t.state.name == "COMPLETE" else (
            t.intermediate_values[t.last_step] if t.last_step is not None else None)
        rows.append(_row(t.number, t.state.name, dict(t.params), value,
                         _stored(store, t.user_attrs.get("epochlab_run"))))
    return rows
