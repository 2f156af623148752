"""Plain advice after a run or a sweep, each item with the numbers behind it.

This module owns the *judgement* on finished training, as pure functions of
recorded data (it prints nothing and trains nothing):

- :func:`advise_history`: one run's epochs -> the epoch with the best
  validation loss, where overfitting starts (training loss keeps falling
  while validation loss stays above its level at some epoch for ``patience``
  epochs in a row), whether training had converged, and a divergence stop.
- :func:`advise_runs`: many runs (a sweep: settings plus epoch rows) -> the
  best value of each swept setting (batch size and learning rate first),
  with every value's score, the spread over seeds when seeds were swept,
  whether the best lies at the edge of the range tried, and which runs
  diverged.
- :func:`runs_from_store`: stored runs (any :class:`~epochlab.store.base.Store`)
  as :class:`RunResult` for :func:`advise_runs`.
- :func:`format_advice`: the items as text lines for a terminal or a report.

Each :class:`Advice` has a ``topic``, one sentence of ``text`` and the
``numbers`` it rests on (plain JSON-ready data), so a CLI, a report or the
tour can show the sentence and a test or a table can use the numbers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from epochlab.validation import ParameterError, check_float, check_int

__all__ = [
    "Advice", "RunResult", "advise_history", "advise_runs", "format_advice", "runs_from_store",
]

TOPICS = ("best_epoch", "overfitting", "convergence", "diverged", "best_setting", "failed_runs")
_LABELS = {"batch_size": "batch size", "lr": "learning rate", "epochs": "epochs",
           "weight_decay": "weight decay", "batch_norm": "batch norm",
           "optimizer": "optimizer", "schedule": "schedule"}
# Settings reported first: the ones the seed's slides 4, 5 and 13 ask about.
_FIRST = ("batch_size", "lr", "epochs")


@dataclass(frozen=True)
class Advice:
    """One finding: ``topic`` (see :data:`TOPICS`), a sentence, and the numbers behind it.

    Example:
        >>> a = Advice("best_epoch", "best val_loss 0.3000 at epoch 4 of 10.", {"epoch": 4})
        >>> str(a)
        'best val_loss 0.3000 at epoch 4 of 10.'
    """

    topic: str
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON, the store or a report)."""
        return {"topic": self.topic, "text": self.text, "numbers": dict(self.numbers)}


def _rows(history: Any) -> list[Mapping[str, Any]]:
    if hasattr(history, "epochs") and isinstance(history.epochs, list):
        return history.epochs
    if isinstance(history, Sequence) and all(isinstance(r, Mapping) for r in history):
        return list(history)
    raise ParameterError(
        "`history` must be an epochlab History or a list of epoch dicts; "
        f"got {type(history).__name__}."
    )


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r.get(key, math.nan)) for r in rows]


def _finite(values: Iterable[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def advise_history(
    history: Any,
    *,
    patience: int = 3,
    window: int = 3,
    tolerance: float = 0.02,
    min_delta: float = 0.01,
) -> list[Advice]:
    """What one run's epochs say: best epoch, overfitting onset, convergence, divergence.

    ``history`` is a :class:`~epochlab.train.history.History` or its list of
    epoch rows (``epoch`` 0-based; ``loss``; ``val_loss`` when there was
    validation). Epochs are 1-based in the text and in ``numbers``.

    - best epoch: the epoch with the lowest ``val_loss`` (``loss`` without
      validation).
    - overfitting: the first epoch ``e`` after which, for ``patience``
      epochs in a row, validation loss stays above its value at ``e`` while
      training loss stays below its value at ``e``, and validation loss never
      comes back below its value at ``e`` by more than ``min_delta`` (a
      fraction of it). Comparing with epoch ``e`` rather than epoch to epoch
      keeps one noisy epoch from hiding or faking the trend.
    - convergence: the monitored loss (``val_loss``, else ``loss``) is
      converged when its best value over the last ``window`` epochs improved
      on the best before them by at most ``tolerance`` of the run's whole
      improvement; otherwise more epochs may help.

    Example:
        >>> rows = [{"epoch": i, "loss": 1 / (i + 1), "val_loss": v}
        ...         for i, v in enumerate([0.9, 0.6, 0.5, 0.55, 0.6, 0.7, 0.8])]
        >>> for a in advise_history(rows):
        ...     print(a.topic, a.numbers.get("epoch", a.numbers.get("converged")))
        best_epoch 3
        overfitting 3
        convergence True
    """
    patience = check_int("patience", patience, 1)
    window = check_int("window", window, 1)
    tolerance = check_float("tolerance", tolerance, low=0.0, high=1.0, high_open=True)
    min_delta = check_float("min_delta", min_delta, low=0.0, high=1.0, high_open=True)
    rows = _rows(history)
    items: list[Advice] = []
    stop = getattr(history, "stop_reason", None)
    if stop == "diverged":
        before_any = getattr(history, "total_updates", None) == 0
        items.append(Advice("diverged", "training diverged before its first update: the "
                            "initial model's loss is not finite (not the learning rate)."
                            if before_any else "training diverged (a non-finite loss): lower "
                            "the learning rate (where and at which rate: above).",
                            {"updates": getattr(history, "total_updates", None),
                             "lr": getattr(history, "params", {}).get("lr")}))
    if not rows:
        return items
    loss = _column(rows, "loss")
    val = _column(rows, "val_loss")
    has_val = any(math.isfinite(v) for v in val)
    monitor, series = ("val_loss", val) if has_val else ("loss", loss)
    best = _best_epoch(monitor, series)
    if best is not None:
        items.append(best)
    if has_val:
        over = _overfitting(loss, val, patience, min_delta)
        if over is not None:
            items.append(over)
    conv = _convergence(monitor, series, window, tolerance, overfit=has_val and any(
        a.topic == "overfitting" for a in items))
    if conv is not None:
        items.append(conv)
    return items


def _best_epoch(monitor: str, series: list[float]) -> Advice | None:
    finite = [(v, i) for i, v in enumerate(series) if math.isfinite(v)]
    if not finite:
        return None
    v, i = min(finite)
    n = len(series)
    text = f"best {monitor} {v:.4f} at epoch {i + 1} of {n}"
    if i + 1 < n:
        text += f" (last epoch: {series[-1]:.4f})"
    return Advice("best_epoch", text + ".", {"metric": monitor, "epoch": i + 1, "value": v,
                                             "epochs": n, "last": series[-1]})


def _overfitting(loss: list[float], val: list[float], patience: int,
                 min_delta: float) -> Advice | None:
    n = len(loss)
    for e in range(n - patience):
        after = range(e + 1, e + 1 + patience)
        if not _finite([loss[e], val[e], *(loss[j] for j in after), *(val[j] for j in after)]):
            continue
        later = [v for v in val[e + 1:] if math.isfinite(v)]
        if min(later) < val[e] - min_delta * abs(val[e]):
            continue  # validation loss comes back well below this epoch's: not the onset
        if all(val[j] > val[e] and loss[j] < loss[e] for j in after):
            end = e + patience
            text = (f"overfitting starts after epoch {e + 1}: for the next {patience} epochs "
                    f"training loss kept falling ({loss[e]:.4f} -> {loss[end]:.4f}) while "
                    f"validation loss stayed above its epoch-{e + 1} value "
                    f"({val[e]:.4f} -> {val[end]:.4f}); train about {e + 1} epochs, or use "
                    "early stopping on val_loss.")
            return Advice("overfitting", text, {
                "epoch": e + 1, "patience": patience, "loss_from": loss[e], "loss_to": loss[end],
                "val_loss_from": val[e], "val_loss_to": val[end]})
    return None


def _convergence(monitor: str, series: list[float], window: int, tolerance: float,
                 overfit: bool) -> Advice | None:
    n = len(series)
    if n <= window:
        return Advice("convergence", f"too few epochs ({n}) to judge convergence over a window "
                      f"of {window}; train longer.",
                      {"converged": None, "epochs": n, "window": window})
    before = [v for v in series[: n - window] if math.isfinite(v)]
    last = [v for v in series[n - window:] if math.isfinite(v)]
    if not before or not last:
        return None
    total = series[0] - min(before + last) if math.isfinite(series[0]) else math.nan
    gain = min(before) - min(last)  # > 0: the last window still improved on the best so far
    share = gain / total if total > 0 else (0.0 if gain <= 0 else 1.0)
    converged = share <= tolerance
    nums = {"converged": converged, "metric": monitor, "window": window, "epochs": n,
            "best_before": min(before), "best_last": min(last), "share": share,
            "tolerance": tolerance}
    if converged:
        why = ("validation loss has stopped improving" if overfit or gain <= 0
               else f"the last {window} epochs gave {share:.0%} of the total improvement")
        text = (f"converged: {why} (best {monitor} {min(before):.4f} before the last {window} "
                f"epochs, {min(last):.4f} in them); more epochs will not help.")
    else:
        text = (f"not converged: {monitor} still improved in the last {window} epochs "
                f"({min(before):.4f} -> {min(last):.4f}, {share:.0%} of the run's total "
                "improvement); more epochs may help.")
    return Advice("convergence", text, nums)


# -- many runs -------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One run of a sweep as :func:`advise_runs` reads it.

    ``settings`` (``batch_size``, ``lr``, ``seed``, ...), the epoch rows,
    the status, and ``weights_epoch`` (0-based epoch whose weights the run
    ended with, after early stopping with restore; None: the last).
    """

    settings: dict[str, Any]
    epochs: list[dict[str, Any]]
    status: str = "completed"
    weights_epoch: int | None = None
    id: Any = None


def runs_from_store(store: Any, runs: Iterable[Any]) -> list[RunResult]:
    """Stored runs (``RunRecord`` s of any Store) with their epoch rows, as :class:`RunResult`.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> store = MemoryStore()
        >>> sid = store.create_study("demo")
        >>> rid = store.add_run(sid, "a", {"lr": 0.1})
        >>> store.finish_run(rid, "completed", {}, [{"epoch": 0, "val_loss": 0.5}], {})
        >>> runs_from_store(store, store.runs("demo"))[0].epochs
        [{'epoch': 0, 'val_loss': 0.5}]
    """
    return [RunResult(dict(r.settings), store.epochs(r.id), r.status,
                      (r.summary or {}).get("weights_epoch"), r.id) for r in runs]


def _score(run: RunResult, metric: str, mode: str, select: str) -> float:
    values = _column(run.epochs, metric)
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    if select == "best":
        return max(finite) if mode == "max" else min(finite)
    at = run.weights_epoch if run.weights_epoch is not None and run.weights_epoch < len(values) else -1
    return values[at]


def _key(v: Any) -> str:
    return repr(v)


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def advise_runs(
    runs: Sequence[RunResult],
    *,
    metric: str = "val_loss",
    mode: str | None = None,
    select: str = "final",
    settings: Sequence[str] | None = None,
) -> list[Advice]:
    """What a sweep found: the best value of each swept setting, with every value's score.

    A configuration's score is ``metric`` at the weights the run ended with
    (``select="final"``) or its best epoch (``"best"``), averaged over seeds
    when seeds were swept (their standard deviation is reported, and the
    text says whether the lead over the runner-up exceeds it). Each value of
    a setting scores by the best configuration that has it. A numeric best
    at the edge of the range tried says which way to extend the range.
    Runs that diverged or failed are named, not scored.

    ``mode`` defaults to ``min`` for a metric with "loss" in its name, else
    ``max``. ``settings`` defaults to every setting with more than one value
    except ``seed`` (batch size, learning rate and epochs first).

    Example:
        >>> runs = [RunResult({"batch_size": b, "lr": 1e-3, "seed": s},
        ...                   [{"epoch": 0, "val_accuracy": 0.9 - b / 1000 + s / 100}])
        ...         for b in (32, 64, 128) for s in (0, 1)]
        >>> a = advise_runs(runs, metric="val_accuracy")[0]
        >>> a.numbers["setting"], a.numbers["best"], round(a.numbers["score"], 3)
        ('batch_size', 32, 0.873)
    """
    if mode is None:
        mode = "min" if "loss" in metric else "max"
    if mode not in ("min", "max"):
        raise ParameterError(f"The value of `mode` is {mode!r}, but must be 'min' or 'max'.")
    if select not in ("final", "best"):
        raise ParameterError(f"The value of `select` is {select!r}, but must be 'final' or 'best'.")
    runs = list(runs)
    items: list[Advice] = []
    bad = [r for r in runs if r.status in ("diverged", "failed")]
    if bad:
        items.append(_bad_runs(bad))
    scored = _scored(runs, metric, mode, select)
    if not scored:
        return items
    names = sorted({k for r, _ in scored for k in r.settings})
    values = {k: {_key(r.settings.get(k)): r.settings.get(k) for r, _ in scored} for k in names}
    if settings is None:
        # A tune's trial number is a label, not a setting to advise on.
        swept = [k for k in names if len(values[k]) > 1 and k not in ("seed", "trial")]
        settings = sorted(swept, key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), k))
    configs = _configs(scored)
    sign = 1.0 if mode == "max" else -1.0
    for name in settings:
        if name not in values:
            raise ParameterError(f"The value of `settings` names {name!r}, which no run has; "
                                 f"the runs have: {', '.join(names)}.")
        items.append(_best_value(name, values[name], configs, metric, mode, select, sign))
    return items


def _configs(scored: list[tuple[RunResult, float]]) -> list[dict[str, Any]]:
    """Runs grouped by every setting but the seed: mean and spread of the score over seeds."""
    groups: dict[str, dict[str, Any]] = {}
    for r, s in scored:
        rest = {k: v for k, v in r.settings.items() if k != "seed"}
        g = groups.setdefault(repr(sorted(rest.items(), key=lambda t: t[0])),
                              {"settings": rest, "scores": [], "runs": []})
        g["scores"].append(s)
        g["runs"].append(r)
    for g in groups.values():
        g["mean"] = statistics.fmean(g["scores"])
        g["std"] = statistics.stdev(g["scores"]) if len(g["scores"]) > 1 else None
        # Ties go to fewer updates (the cheaper configuration), as the best run's do.
        g["updates"] = statistics.fmean(
            float((r.epochs[-1].get("updates") if r.epochs else 0) or 0) for r in g["runs"])
    return list(groups.values())


def _scored(runs: Iterable[RunResult], metric: str, mode: str,
            select: str) -> list[tuple[RunResult, float]]:
    """The finished runs with a finite score, and their scores."""
    done = [r for r in runs if r.status not in ("diverged", "failed", "interrupted", "pending",
                                                "running")]
    return [(r, s) for r in done if math.isfinite(s := _score(r, metric, mode, select))]


def _rank(config: dict[str, Any], sign: float) -> tuple[float, float]:
    """A configuration's place: the better mean first, ties to fewer updates."""
    return -sign * config["mean"], config["updates"]


def best_configuration(
    runs: Iterable[RunResult], metric: str = "val_accuracy", mode: str | None = None,
    select: str = "final",
) -> dict[str, Any] | None:
    """The best configuration of a sweep, its score averaged over seeds (None: none scored).

    The one the advice's "best <setting>" lines agree with: every setting but the seed,
    ranked by the mean over seeds; ties go to fewer updates. ``runs`` are its runs, best
    seed first.

    Example:
        >>> runs = [RunResult({"lr": lr, "seed": s}, [{"val_accuracy": a, "updates": 10}])
        ...         for lr, s, a in ((0.1, 0, 0.95), (0.1, 1, 0.5), (0.01, 0, 0.8), (0.01, 1, 0.8))]
        >>> c = best_configuration(runs)
        >>> c["settings"], c["mean"], c["seeds"]
        ({'lr': 0.01}, 0.8, 2)
    """
    mode = mode or ("min" if "loss" in metric else "max")
    sign = 1.0 if mode == "max" else -1.0
    scored = _scored(runs, metric, mode, select)
    if not scored:
        return None
    best = min(_configs(scored), key=lambda g: _rank(g, sign))
    order = sorted(zip(best["scores"], best["runs"], strict=True), key=lambda t: -sign * t[0])
    return {"settings": best["settings"], "mean": best["mean"], "std": best["std"],
            "seeds": len(best["scores"]), "runs": [r for _, r in order]}


def _best_value(name: str, values: dict[str, Any], configs: list[dict[str, Any]], metric: str,
                mode: str, select: str, sign: float) -> Advice:
    per_value: dict[str, dict[str, Any]] = {}
    for g in configs:
        k = _key(g["settings"].get(name))
        if k not in per_value or _rank(g, sign) < _rank(per_value[k], sign):
            per_value[k] = g
    ranked = sorted(per_value, key=lambda k: _rank(per_value[k], sign))
    best_k = ranked[0]
    best, g = values[best_k], per_value[best_k]
    label = _LABELS.get(name, name)
    seeds = len(g["scores"])
    text = f"best {label}: {_show(best)} ({metric} {g['mean']:.4f}"
    text += f", mean of {seeds} seeds, sd {g['std']:.4f})" if g["std"] is not None else ")"
    nums: dict[str, Any] = {
        "setting": name, "best": best, "score": g["mean"], "sd": g["std"], "seeds": seeds,
        "metric": metric, "mode": mode, "select": select,
        "by_value": [{"value": values[k], "score": per_value[k]["mean"], "sd": per_value[k]["std"],
                      "seeds": len(per_value[k]["scores"])} for k in ranked],
        "with": {k: v for k, v in g["settings"].items() if k != name},
    }
    if len(ranked) > 1:
        second = per_value[ranked[1]]
        margin = abs(g["mean"] - second["mean"])
        nums.update(runner_up=values[ranked[1]], margin=margin)
        text += f"; next {_show(values[ranked[1]])} ({second['mean']:.4f})"
        sds = [s for s in (g["std"], second["std"]) if s is not None]
        if sds:
            noise = max(sds)
            nums["within_noise"] = margin <= noise
            text += (", a lead within the seeds' spread: not a clear winner" if margin <= noise
                     else ", a lead larger than the seeds' spread")
        else:
            text += ", one seed each: the lead may be noise"
    edge = _edge(best, list(values.values()))
    if edge:
        nums["edge"] = edge
        text += f"; the best is the {edge}est value tried, so try {edge}er values too"
    return Advice("best_setting", text + ".", nums)


def _edge(best: Any, tried: list[Any]) -> str | None:
    nums = [v for v in tried if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) < 2 or len(nums) != len(tried):
        return None
    if min(nums) == max(nums):
        return None
    return "small" if best == min(nums) else "larg" if best == max(nums) else None


def _bad_runs(bad: list[RunResult]) -> Advice:
    by = {}
    for r in bad:
        by.setdefault(r.status, []).append(r)
    parts, nums = [], {}
    for status, rs in sorted(by.items()):
        lrs = sorted({r.settings.get("lr") for r in rs if isinstance(r.settings.get("lr"), (int, float))})
        parts.append(f"{len(rs)} run(s) {status}" + (
            f" (learning rates {', '.join(_show(v) for v in lrs)})" if lrs else ""))
        nums[status] = [{"id": r.id, "settings": r.settings} for r in rs]
    hint = "; the range tried reaches learning rates that are too high" if "diverged" in by else ""
    topic = "diverged" if "diverged" in by else "failed_runs"
    return Advice(topic, "; ".join(parts) + hint + ".", nums)


def format_advice(items: Sequence[Advice], bullet: str = "- ") -> str:
    """The items' sentences, one per line (an empty string for none).

    Example:
        >>> print(format_advice([Advice("best_epoch", "best val_loss 0.3 at epoch 4.")]))
        - best val_loss 0.3 at epoch 4.
    """
    return "\n".join(f"{bullet}{a.text}" for a in items)


def best_configuration_over_seeds(store: Any, runs: Sequence[Any], metric: str,
                                  mode: str | None, select: str = "final"
                                  ) -> dict[str, Any] | None:
    """:func:`best_configuration` of stored ``runs`` when they span several seeds (the seed
    is no setting to tune: the luckiest seed's run is not the answer); None with one seed,
    where the best run is the best configuration, or when no run scored."""
    if len({repr((r.settings or {}).get("seed")) for r in runs}) < 2:
        return None
    return best_configuration(runs_from_store(store, runs), metric, mode, select)
