"""From a finished run to a stored one: the summary every stored run carries.

This module owns the layout of a run's ``summary`` (the keys ``epochlab
runs`` and the reports read): the History's accounting, ``seconds``,
``final`` and ``best`` metrics, ``params``, ``extra`` and the package
``versions`` the run was trained with.
"""

from __future__ import annotations

import copy
import functools
import math
import platform
import warnings
from importlib import metadata
from typing import Any

from epochlab.store.base import RunRecord, Store, run_key
from epochlab.train.history import History
from epochlab.validation import ParameterError, check_name

# What a study is "about": rerunning it with other values mixes runs that cannot be compared.
IDENTITY = ("data", "model", "data_options", "data_fingerprint", "model_fingerprint")

# Stop reasons of a History and the run status each is stored as.
_STATUS_OF = {
    "completed": "completed",
    "early_stopping": "early_stopped",
    "diverged": "diverged",
    "pruned": "pruned",
    "interrupted": "interrupted",
}
# Epoch-row entries that are bookkeeping, not metrics.
_NOT_METRICS = ("epoch", "updates", "samples_seen", "time", "lr")
_ACCOUNTING = ("n_train", "n_val", "batch_size", "iterations_per_epoch", "epochs_planned",
               "epochs_run", "total_updates", "samples_seen", "stop_reason", "stop_message",
               "weights_epoch", "loss_name", "task", "validation_split", "world_size", "backend",
               "global_batch_size", "samples_repeated")


def package_versions() -> dict[str, str | None]:
    """Versions of Python, torch, numpy and epochlab (None for one not installed).

    Looked up once per process (a metadata lookup costs milliseconds; a sweep
    summarizes every run).

    Example:
        >>> sorted(package_versions())
        ['epochlab', 'numpy', 'python', 'torch']
    """
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "numpy", "epochlab"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def status_of(history: History) -> str:
    """The store status for a History's ``stop_reason``.

    Example:
        >>> status_of(History(stop_reason="early_stopping"))
        'early_stopped'
    """
    try:
        return _STATUS_OF[history.stop_reason]
    except KeyError:
        raise ValueError(
            f"The value of `history.stop_reason` is {history.stop_reason!r}, but must be one of "
            f"{tuple(_STATUS_OF)}."
        ) from None


def summarize(history: History, monitor: str | None = None) -> dict[str, Any]:
    """A run's summary: accounting, seconds, final and best metrics, params, versions.

    Args:
        history: the finished run.
        monitor: the metric ``best`` minimizes; ``val_loss`` when the run
            has one, else ``loss``. NaN epochs are never best.

    Example:
        >>> h = History(total_updates=40, epochs=[
        ...     {"epoch": 0, "loss": 0.9, "val_loss": 0.8, "time": 0.5},
        ...     {"epoch": 1, "loss": 0.7, "val_loss": 0.85, "time": 0.5}])
        >>> s = summarize(h)
        >>> s["final"], s["best"], s["seconds"], s["total_updates"]
        ({'loss': 0.7, 'val_loss': 0.85}, {'epoch': 0, 'monitor': 'val_loss', 'loss': 0.9, 'val_loss': 0.8}, 1.0, 40)
    """
    # Only the accounting, params and extra: History.to_dict() would deep-copy every
    # iteration's record, 37% of a fused 16-member slide-5 sweep's time.
    summary: dict[str, Any] = {k: getattr(history, k) for k in _ACCOUNTING}
    summary["seconds"] = float(sum(row.get("time", 0.0) for row in history.epochs))
    summary["final"] = _metrics(history.epochs[-1]) if history.epochs else {}
    if monitor is None:
        monitor = "val_loss" if any("val_loss" in r for r in history.epochs) else "loss"
    best = None
    for i, row in enumerate(history.epochs):
        v = row.get(monitor)
        if isinstance(v, (int, float)) and not math.isnan(v):
            if best is None or v < history.epochs[best][monitor]:
                best = i
    summary["best"] = (
        {"epoch": int(history.epochs[best].get("epoch", best)), "monitor": monitor,
         **_metrics(history.epochs[best])}
        if best is not None else {}
    )
    summary["params"] = copy.deepcopy(history.params)
    summary["extra"] = copy.deepcopy(history.extra)
    summary["versions"] = package_versions()
    return summary


def summary_runtime(summary: dict[str, Any] | None) -> dict[str, Any]:
    """How a stored run trained (threads, precision): a sweep run's ``summary["runtime"]``,
    a fit or tune run's ``summary["extra"]["runtime"]``; ``{}`` where neither is recorded.

    Example:
        >>> summary_runtime({"extra": {"runtime": {"threads": 1}}}), summary_runtime(None)
        ({'threads': 1}, {})
    """
    s = summary or {}
    rt = s.get("runtime") or (s.get("extra") or {}).get("runtime")
    return rt if isinstance(rt, dict) else {}


def warn_other_precision(done: list[RunRecord], precision: str, how: str,
                         stacklevel: int = 3) -> None:
    """Warn when runs kept from an earlier command were trained at another precision than an
    explicit ``precision`` (it applies to the runs trained now; theirs stay theirs).

    ``how`` says how to get every run at ``precision`` (e.g. another study name);
    ``stacklevel`` is ``warnings.warn``'s, counted from here.
    """
    if precision == "auto":
        return
    other = [was for r in done
             if (was := summary_runtime(r.summary).get("precision")) not in (None, precision, "fp64")]
    if other:
        warnings.warn(
            f"{len(other)} of this study's finished runs were trained in "
            f"{' and '.join(sorted(set(other)))}, not {precision}: they are kept as they are "
            f"(precision applies to the runs trained now). For every run in {precision}, {how}.",
            UserWarning, stacklevel=stacklevel)


def record_history(
    store: Store,
    study: str,
    key: str | None,
    settings: dict[str, Any],
    history: History,
    status: str | None = None,
    study_spec: dict[str, Any] | None = None,
) -> int:
    """Store a finished ``fit`` run (summary, epochs, iterations) in one transaction.

    Args:
        store: where to write.
        study: the study's name; created if missing.
        key: the run's key in the study; None for :func:`~epochlab.store.base.run_key`
            of ``settings``.
        settings: the run's settings (JSON-serializable).
        history: what ``fit`` returned.
        status: the final status; by default from ``history.stop_reason``.
        study_spec: what a new study records about itself (its ``data`` and
            ``model``: an existing study with others is refused).

    Returns:
        The run's id.

    Raises:
        ValueError: the study already holds a finished run with this key
            (a stored result is never overwritten), or an unknown status.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> store = MemoryStore()
        >>> h = History(total_updates=20, epochs=[{"epoch": 0, "loss": 0.5}])
        >>> rid = record_history(store, "fit", None, {"lr": 0.01}, h)
        >>> store.run(rid).status, store.run(rid).summary["total_updates"]
        ('completed', 20)
    """
    status = status or status_of(history)
    summary = summarize(history)
    study_id = ensure_study(store, study, study_spec)
    run_id = store.add_run(study_id, key or run_key(settings), settings)
    store.finish_run(run_id, status, summary, history.epochs, history.iterations)
    return run_id


def study_conflict(store: Store, name: str, spec: dict[str, Any],
                   keys: tuple[str, ...] = IDENTITY) -> str | None:
    """What differs between the stored study ``name`` and ``spec`` in ``keys``; None if nothing.

    Only keys present in both are compared (a study created without them,
    such as the default ``fit`` study, holds runs of any data and model).

    Example:
        >>> from epochlab.store import MemoryStore
        >>> store = MemoryStore(); _ = store.create_study("s", {"data": "digits", "model": "cnn"})
        >>> study_conflict(store, "s", {"data": "synthetic", "model": "cnn"})
        "data 'digits' (this run: 'synthetic')"
    """
    study = store.study(name)
    if study is None:
        return None
    stored = study.get("spec") or {}
    diffs = [f"{k} {stored[k]!r} (this run: {spec[k]!r})"
             for k in keys if k in stored and k in spec and not _same(stored[k], spec[k])]
    return ", ".join(diffs) or None


def _same(stored: Any, given: Any) -> bool:
    """Equal, or a model fingerprint of before epochlab hashed a model's code (no ", code"
    part) that the given one extends: a study made then is this model's."""
    if stored == given:
        return True
    return (isinstance(stored, str) and isinstance(given, str) and ", code " not in stored
            and given.startswith(stored + ", code "))


def check_study(store: Store, name: str, spec: dict[str, Any] | None = None,
                keys: tuple[str, ...] = IDENTITY) -> None:
    """Refuse a study name that is empty, or whose stored study has other ``keys`` than ``spec``.

    Raises:
        ParameterError: naming the study and every difference.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> store = MemoryStore(); _ = store.create_study("s", {"data": "digits"})
        >>> check_study(store, "s", {"data": "digits"})  # the same data: fine
    """
    check_name("study", name)
    conflict = study_conflict(store, name, dict(spec or {}), keys)
    if conflict:
        raise ParameterError(
            f"The study {name!r} was created with {conflict}; a study keeps the data and "
            "model it was created with, so its runs stay comparable. Choose another study "
            "name (--study) or rerun with the study's own settings."
        )


def ensure_study(store: Store, name: str, spec: dict[str, Any] | None = None,
                 keys: tuple[str, ...] = IDENTITY) -> int:
    """Create the study ``name`` with ``spec``, or find it; refuse one made with other data/model.

    Raises:
        ParameterError: see :func:`check_study`.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> store = MemoryStore()
        >>> ensure_study(store, "s", {"data": "digits"}) == ensure_study(store, "s", {"data": "digits"})
        True
    """
    check_study(store, name, spec, keys)
    return store.create_study(name, dict(spec or {}))


def _metrics(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _NOT_METRICS}
