"""The learning-rate range test: one short run per seed, a suggested rate and its spread.

This module owns :func:`lr_find` and the rules that read a suggestion off
its curves. The test (Smith 2017; fastai's and Lightning's ``lr_find``)
raises the learning rate exponentially from ``start_lr`` to ``end_lr`` over
``num_iter`` updates, records every batch's loss, and stops a seed's curve
when it diverges (a non-finite loss, or the running loss above ``diverge``
times its best so far). It trains copies: the user's model is untouched.

What is done differently from fastai and Lightning, and why:

- Several seeds (default 5): each has its own batch order, and with a model
  factory its own initial weights. Their suggestions give the spread that a
  single curve hides (Lightning issues 1767 and 21141: one early spike or a
  noisy loss moves the steepest-slope suggestion by a decade). MLPs that the
  fused engine takes (:func:`epochlab.sweeps.fused_layers.is_fusable`) train all
  seeds at once, so five seeds cost about one run; other models train one
  seed after another with :func:`epochlab.fit`, with the same result.
- The curve is smoothed *after* the run with a centred Gaussian window
  (no lag), not with a running average, whose lag shifts every feature of
  the curve towards larger rates. The running average only decides when to
  stop, which must not look ahead.
- Slopes are taken against log10(lr) (the ramp is exponential; Lightning
  issue 14248 is the same mistake made with uniform spacing), and the first
  ``burn_in`` of the updates are left out of the steepest-slope and minimum
  rules (the early-spike complaint in Lightning issue 1767).
- Three rules read every seed's curve (:data:`RULES`): ``"steepest"`` (the
  steepest descent against log10(lr) before the minimum), ``"minimum"`` (a
  tenth of the rate at the minimum) and ``"valley"`` (fastai's: halfway
  along the longest decreasing stretch of the curve). All three are
  reported; ``rule`` picks the one printed. The default, ``"steepest"``, is
  picked by evidence: ``benchmarks/bench_lr_find.py`` checks every rule
  against the range a learning-rate sweep finds good on the seed's models
  (README, "Learning rate and batch size in one short run"): it hit 5 of 5
  tasks with a spread over seeds of 0.10 decades (minimum/10: 5 of 5, 0.31;
  valley: 1 of 5, 0.56, because its longest decreasing stretch starts in the
  flat, noisy beginning of the ramp and lands about a decade too low).

The suggestion is the median (in log scale) of the seeds' suggestions; the
spread is their minimum and maximum.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from epochlab.callbacks.base import Callback
from epochlab.diagnose.lr_rules import RULE_TEXT, RULES
from epochlab.schedules import exponential_decay
from epochlab.sweeps.fused import train_fused
from epochlab.sweeps.fused_layers import is_fusable
from epochlab.train.data import probe_rows, split_indices
from epochlab.train.loop import evaluate, fit, prepare_data
from epochlab.train.runtime import (
    check_precision,
    check_threads,
    fused_or_one_by_one,
    in_own_precision,
    manual_seed,
    using_threads,
)
from epochlab.validation import SEED_MAX, ParameterError, check_float, check_int

__all__ = ["RULES", "LRFindResult", "lr_find", "smooth_curve", "suggest"]



@dataclass
class LRFindResult:
    """Curves and suggestions of a range test over several seeds.

    Attributes:
        lrs: ``(T,)`` the learning rate of every update of the ramp.
        losses: ``(K, T)`` every seed's batch loss (before the update); NaN
            after the seed's curve was stopped.
        smoothed: ``(K, T)`` the same, smoothed (centred, no lag).
        kept: updates kept per seed (where its curve stopped).
        seeds: the seeds.
        suggestions: rule -> ``(K,)`` each seed's suggested rate (NaN when
            the rule found none on that seed's curve).
        rule: the rule :attr:`suggestion` reports.
        fused: whether the seeds trained together (and ``how``: why not).
        seconds: wall time of the training.
        batch_size, n_train: the batch size and training rows used.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    kept: list[int]
    seeds: list[int]
    suggestions: dict[str, np.ndarray]
    rule: str
    fused: bool
    how: str
    seconds: float
    batch_size: int
    n_train: int
    options: dict[str, Any] = field(default_factory=dict)

    def suggested(self, rule: str | None = None) -> tuple[float, float, float, int]:
        """``(suggestion, low, high, seeds with a suggestion)`` for ``rule`` (default :attr:`rule`)."""
        rule = _check_rule(rule or self.rule)
        vals = self.suggestions[rule]
        ok = vals[np.isfinite(vals)]
        if not len(ok):
            return math.nan, math.nan, math.nan, 0
        return float(np.exp(np.median(np.log(ok)))), float(ok.min()), float(ok.max()), len(ok)

    @property
    def suggestion(self) -> float:
        """The suggested learning rate: the median over seeds of :attr:`rule`'s suggestions."""
        return self.suggested()[0]

    def line(self, rule: str | None = None) -> str:
        """``suggested learning rate: 3.2e-03 (1.8e-03 to 5.1e-03 over 5 seeds)``."""
        s, lo, hi, n = self.suggested(rule)
        if n == 0:
            return (f"no learning rate suggested by the {rule or self.rule} rule: the loss did "
                    "not fall before it diverged; lower --start-lr or check the data")
        return f"suggested learning rate: {s:.1e} ({lo:.1e} to {hi:.1e} over {n} seeds)"

    def table(self) -> list[dict[str, Any]]:
        """One row per rule: its suggestion, spread, seeds, and how it reads the curve."""
        rows = []
        for r in RULES:
            s, lo, hi, n = self.suggested(r)
            rows.append({"rule": r, "suggestion": s, "low": lo, "high": hi, "seeds": n,
                         "spread_decades": math.log10(hi / lo) if n else math.nan,
                         "how": RULE_TEXT[r], "chosen": r == self.rule})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready; NaN stays NaN)."""
        return {
            "lrs": self.lrs.tolist(), "losses": self.losses.tolist(),
            "smoothed": self.smoothed.tolist(), "kept": list(self.kept), "seeds": list(self.seeds),
            "suggestions": {k: v.tolist() for k, v in self.suggestions.items()},
            "rule": self.rule, "suggestion": self.suggestion, "rules": self.table(),
            "fused": self.fused, "how": self.how, "seconds": self.seconds,
            "batch_size": self.batch_size, "n_train": self.n_train, "options": dict(self.options),
        }

    def plot(self, path: Any = None) -> Any:
        """The seeds' smoothed curves, their band, and every rule's mark (a Figure).

        See :func:`epochlab.report.lr_find.plot_lr_find`.
        """
        from epochlab.report.lr_find import plot_lr_find

        return plot_lr_find(self, path)


# -- reading the curves -------------------------------------------------------------------------
def smooth_curve(values: np.ndarray, width: float) -> np.ndarray:
    """A centred Gaussian smoothing of ``values`` (sigma ``width`` points); NaN stays out.

    Near the ends and next to NaN the window is renormalised over the points
    that exist, so the curve is not pulled towards zero there.

    Example:
        >>> smooth_curve(np.array([1.0, 1.0, 4.0, 1.0, 1.0]), 0.0).tolist()
        [1.0, 1.0, 4.0, 1.0, 1.0]
        >>> bool(smooth_curve(np.array([1.0, 1.0, 4.0, 1.0, 1.0]), 1.0)[2] < 4)
        True
    """
    v = np.asarray(values, dtype=np.float64)
    if width <= 0:
        return v.copy()
    half = int(math.ceil(3 * width))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / width) ** 2)
    ok = np.isfinite(v)
    n = len(v)
    num = np.convolve(np.where(ok, v, 0.0), k)[half : half + n]
    den = np.convolve(ok.astype(np.float64), k)[half : half + n]
    out = np.full_like(v, np.nan)
    np.divide(num, den, out=out, where=ok & (den > 0))
    return out


def _valley(s: np.ndarray) -> int | None:
    """Index halfway along the longest decreasing subsequence of ``s`` (fastai's valley)."""
    n = len(s)
    if n < 3:
        return None
    run = np.ones(n, dtype=np.int64)  # length of the longest decreasing subsequence ending at i
    for i in range(1, n):
        higher = s[:i] > s[i]
        if higher.any():
            run[i] = run[:i][higher].max() + 1
    end = int(np.argmax(run))  # first index where the longest one ends
    start = end - int(run[end]) + 1
    if end - start < 2:
        return None
    return start + (end - start) // 2


def suggest(lrs: np.ndarray, smoothed: np.ndarray, rule: str, burn_in: int = 0) -> float:
    """One curve's suggested learning rate by ``rule`` (see :data:`RULES`); NaN if none.

    ``smoothed`` is the smoothed loss at ``lrs`` (finite up to where the
    curve stopped); ``burn_in`` updates at the start are ignored by
    ``steepest`` and ``minimum``.

    Example:
        >>> lrs = np.logspace(-5, 0, 101)
        >>> loss = 1 / (1 + np.exp(4 * (np.log10(lrs) + 2.5))) + (lrs > 0.1) * 10 * lrs
        >>> f"{suggest(lrs, loss, 'steepest'):.1e}"
        '3.2e-03'
    """
    rule = _check_rule(rule)
    n = int(np.isfinite(smoothed).cumprod().sum())  # the curve up to its first NaN
    s, x = smoothed[:n], np.log10(lrs[:n])
    if n - burn_in < 3:
        return math.nan
    if rule == "valley":
        i = _valley(s)
        return math.nan if i is None else float(lrs[i])
    i_min = burn_in + int(np.argmin(s[burn_in:]))
    if rule == "minimum":
        return float(lrs[i_min] / 10)
    if i_min - burn_in < 2:
        return math.nan  # the loss never fell after the burn-in
    g = np.gradient(s, x)[burn_in : i_min + 1]
    i = burn_in + int(np.argmin(g))
    return float(lrs[i]) if g[i - burn_in] < 0 else math.nan


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ParameterError(f"The value of `rule` is {rule!r}, but must be one of {RULES}.")
    return rule


def _stop_index(losses: Sequence[float], diverge: float, beta: float = 0.9) -> int:
    """How many updates to keep: up to the first non-finite loss or divergence.

    Divergence: the running (bias-corrected) average of the loss above
    ``diverge`` times its lowest value so far. A running average, not the
    smoothed curve, so that stopping never depends on later updates.
    """
    avg, best = 0.0, math.inf
    for i, v in enumerate(losses):
        if not math.isfinite(v):
            return i
        avg = beta * avg + (1 - beta) * v
        a = avg / (1 - beta ** (i + 1))
        best = min(best, a)
        if i > 0 and a > diverge * best:
            return i
    return len(losses)


class _RangeStop(Callback):
    """Stops fit after ``num_iter`` updates or when the loss diverges (as :func:`_stop_index`)."""

    def __init__(self, num_iter: int, diverge: float) -> None:
        self.num_iter, self.diverge = num_iter, diverge
        self.losses: list[float] = []

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.losses = []

    def on_batch_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.losses.append(float(logs["loss"]))
        n = len(self.losses)
        if n >= self.num_iter or _stop_index(self.losses[-1:], math.inf) == 0 or (
                n % 10 == 0 and _stop_index(self.losses, self.diverge) < n):
            trainer.stop_training = True


# -- running it ---------------------------------------------------------------------------------
def _build(model: nn.Module | Callable[[], nn.Module], seed: int) -> nn.Module:
    """A fresh copy for ``seed``: the factory called after seeding torch, or a deep copy."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        manual_seed(seed)
        built = model()
    if not isinstance(built, nn.Module):
        raise ParameterError(
            f"`model` must be an nn.Module or a function returning one; it returned "
            f"{type(built).__name__}."
        )
    return built


def _arrays(data: Any) -> tuple[Any, Any] | None:
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        return data.x_train, data.y_train
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    return None


def _fusable(models: list[nn.Module], data: Any, optimizer: str, loss: Any,
             batch_size: int, precision: str = "auto") -> tuple[bool, str]:
    if optimizer not in ("adam", "adamw", "sgd"):
        return False, f"optimizer {optimizer!r} is not fused (adam, adamw and sgd are)"
    if loss is not None:
        return False, "a given loss is not fused (the inferred one is)"
    xy = _arrays(data)
    if xy is None:
        return False, "the data is not (X, y) arrays"
    p = next(models[0].parameters(), None)
    if p is None or p.device.type != "cpu":
        return False, "the model is not on the CPU"
    check = is_fusable(models[0])
    if not check:
        return False, check.reason
    # One by one trains with fit's precision="auto": bf16 may beat fused float32.
    ok, why = fused_or_one_by_one(models[0], probe_rows(xy, models[0]), batch_size, precision)
    return ok, "" if ok else why


def _n_train(data: Any, validation_split: float, seed: int) -> int:
    xy = _arrays(data)
    n = len(xy[0]) if xy is not None else len(data)
    return len(split_indices(n, validation_split, seed=seed)[0])


@in_own_precision  # each run's precision is its own, not a caller's autocast
def lr_find(
    model: nn.Module | Callable[[], nn.Module],
    data: Any,
    *,
    batch_size: int = 32,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 200,
    seeds: int | Sequence[int] = 5,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    loss: Any = None,
    validation_split: float = 0.0,
    diverge: float = 4.0,
    smooth: float = 0.04,
    burn_in: float = 0.1,
    rule: str = "steepest",
    fuse: bool = True,
    verbose: int = 0,
    threads: int | str | None = "auto",
    precision: str = "auto",
) -> LRFindResult:
    """Range-test the learning rate on copies of ``model``, over several seeds.

    Args:
        model: An ``nn.Module`` (deep-copied per seed: the seeds then differ
            in batch order only) or a function returning a fresh one (called
            after ``torch.manual_seed(seed)``: initial weights differ too).
        data: ``(X, y)``, a DataBundle (its training split) or a Dataset, as
            :func:`epochlab.fit` takes it.
        batch_size: Rows per update.
        start_lr, end_lr: The ramp's first and last learning rate.
        num_iter: Updates in the ramp (epochs are added as needed).
        seeds: How many seeds (0, 1, ...) or the seeds themselves.
        optimizer, weight_decay, momentum, loss: As for :func:`epochlab.fit`.
        validation_split: Rows held out as ``fit`` would (so the test trains
            on the rows a later ``fit`` with that split trains on).
        diverge: Stop a seed's curve once its running loss exceeds this
            multiple of its lowest value.
        smooth: Width (sigma) of the smoothing as a fraction of ``num_iter``.
        burn_in: Fraction of the first updates the steepest and minimum
            rules ignore.
        rule: The rule :attr:`LRFindResult.suggestion` uses (:data:`RULES`).
        fuse: Train the seeds together when the model allows it.
        verbose: 1: a progress bar for each seed trained one at a time (as ``fit`` shows).
        threads, precision: As for :func:`epochlab.fit`, for each seed trained one at a
            time; the seeds train fused (in float32) only where one at a time would run in
            float32 too, or ``precision="auto"`` finds fused float32 faster. ``threads=N``
            pins the fused run too.

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic(n_samples=400)
        >>> res = el.lr_find(lambda: el.models.mlp(20), d, num_iter=60, seeds=2)
        >>> res.losses.shape, res.fused, 1e-5 < res.suggestion < 1
        ((2, 60), True, True)
    """
    batch_size = check_int("batch_size", batch_size, 1)
    num_iter = check_int("num_iter", num_iter, 10)
    pinned = check_threads(threads)
    precision = check_precision(precision)
    start_lr = check_float("start_lr", start_lr, low=0.0, low_open=True)
    end_lr = check_float("end_lr", end_lr, low=start_lr, low_open=True)
    diverge = check_float("diverge", diverge, low=1.0, low_open=True)
    smooth = check_float("smooth", smooth, low=0.0, high=1.0, high_open=True)
    burn_in = check_float("burn_in", burn_in, low=0.0, high=0.9)
    momentum = check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
    weight_decay = check_float("weight_decay", weight_decay, low=0.0)
    rule = _check_rule(rule)
    seed_list = list(range(check_int("seeds", seeds, 1))) if isinstance(seeds, (int, np.integer)) \
        else [check_int("seeds", s, 0, SEED_MAX) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ParameterError(f"The value of `seeds` is {seeds!r}, but must be distinct ints >= 0.")
    if not isinstance(model, nn.Module) and not callable(model):
        raise ParameterError(f"`model` must be an nn.Module or a function returning one; got "
                             f"{type(model).__name__}.")
    ramp = exponential_decay(start_lr, decay_steps=1,
                             decay_rate=(end_lr / start_lr) ** (1 / (num_iter - 1)))
    lrs = np.array([ramp(i) for i in range(num_iter)])
    models = [_build(model, s) for s in seed_list]
    ok, why = (_fusable(models, data, optimizer, loss, batch_size, precision) if fuse
               else (False, "fuse=False"))
    if ok:
        _check_as_fit(models[0], data, validation_split, seed_list[0])
    t0 = time.perf_counter()
    if ok:
        with using_threads(pinned) if pinned is not None else contextlib.nullcontext():
            raw = _run_fused(models, data, seed_list, ramp, batch_size, num_iter, optimizer,
                             weight_decay, momentum, validation_split)
    else:
        raw = _run_fit(models, data, seed_list, ramp, batch_size, num_iter, optimizer,
                       weight_decay, momentum, loss, validation_split, diverge, verbose,
                       threads=threads, precision=precision)
    seconds = time.perf_counter() - t0
    k = len(seed_list)
    losses = np.full((k, num_iter), np.nan)
    kept = []
    for i, seq in enumerate(raw):
        n = min(_stop_index(seq[:num_iter], diverge), num_iter)
        losses[i, :n] = seq[:n]
        kept.append(n)
    smoothed = np.stack([smooth_curve(row, smooth * num_iter) for row in losses])
    skip = int(burn_in * num_iter)
    suggestions = {r: np.array([suggest(lrs, smoothed[i], r, skip) for i in range(k)])
                   for r in RULES}
    return LRFindResult(
        lrs=lrs, losses=losses, smoothed=smoothed, kept=kept, seeds=seed_list,
        suggestions=suggestions, rule=rule, fused=ok,
        how="fused: all seeds in one vectorized run" if ok else f"one seed at a time ({why})",
        seconds=seconds, batch_size=batch_size,
        n_train=_n_train(data, validation_split, seed_list[0]),
        options=dict(start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, optimizer=optimizer,
                     weight_decay=weight_decay, momentum=momentum, diverge=diverge, smooth=smooth,
                     burn_in=burn_in, validation_split=validation_split, threads=threads,
                     precision=precision),
    )


def _check_as_fit(model: nn.Module, data: Any, validation_split: float, seed: int) -> None:
    """The fused engine trusts its data: check it as fit would (labels the model has no
    output for, NaN, a shape the model cannot take), with fit's messages."""
    prepare_data(model, data, validation_split=validation_split, validation_data=None,
                 validation_split_mode="random", loss=None, seed=seed)


def _run_fused(models, data, seeds, ramp, batch_size, num_iter, optimizer, weight_decay,
               momentum, validation_split) -> list[list[float]]:
    x, y = _arrays(data)
    n_train = _n_train(data, validation_split, seeds[0])
    epochs = math.ceil(num_iter / math.ceil(n_train / batch_size))
    # Members whose loss turns non-finite leave the stack by themselves; the others run the
    # whole ramp (a fused step costs about as much with one member as with all).
    res = train_fused(models, x, y, epochs=epochs, batch_size=batch_size, lrs=ramp, seeds=seeds,
                      optimizer=optimizer, weight_decay=weight_decay, momentum=momentum,
                      validation_split=validation_split)
    return [list(r.step_loss[:num_iter]) + ([math.nan] if r.status == "diverged" else [])
            for r in res]


def _run_fit(models, data, seeds, ramp, batch_size, num_iter, optimizer, weight_decay, momentum,
             loss, validation_split, diverge, verbose=0, threads: Any = "auto",
             precision: str = "auto") -> list[list[float]]:
    out = []
    for m, s in zip(models, seeds, strict=True):
        stop = _RangeStop(num_iter, diverge)
        h = fit(m, data, epochs=num_iter, batch_size=batch_size, validation_split=validation_split,
                optimizer=optimizer, lr=ramp.initial, schedule=ramp, weight_decay=weight_decay,
                momentum=momentum, loss=loss, metrics=(), callbacks=[stop], seed=s,
                verbose=1 if verbose else 0, threads=threads, precision=precision)
        if h.stop_reason == "interrupted":  # Ctrl-C: a cut curve is no range test; stop all
            raise KeyboardInterrupt
        out.append(list(h.iterations["loss"]) + ([math.nan] if h.stop_reason == "diverged" else []))
    return out


# -- checking a suggestion against a sweep --------------------------------------------------------
@dataclass
class LRSweep:
    """Validation loss of short runs at several learning rates, and the range called good.

    Attributes:
        lrs: the learning rates tried, ascending.
        val_loss: ``(len(lrs),)`` validation loss at each run's best epoch, mean over
            seeds (NaN: a seed diverged). The best epoch, not the last, because a rate
            that trains well but overfits a small set within ``epochs`` is still a rate
            that trains (early stopping would keep that epoch).
        initial: validation loss of the untrained model (seed 0's).
        good: the rates whose loss is within ``fraction`` of the best improvement on
            ``initial``: ``val_loss <= best + fraction * (initial - best)``.
        low, high: the smallest and largest good rate.
    """

    lrs: np.ndarray
    val_loss: np.ndarray
    initial: float
    fraction: float
    good: np.ndarray
    low: float
    high: float

    def contains(self, lr: float, slack: float = 0.0) -> bool:
        """Whether ``lr`` lies in ``[low, high]`` widened by ``slack`` decades on each side."""
        f = 10.0 ** slack
        return bool(self.low / f <= lr <= self.high * f)


def lr_sweep(
    model: Callable[[], nn.Module],
    data: Any,
    lrs: Sequence[float],
    *,
    epochs: int,
    batch_size: int = 32,
    seeds: Sequence[int] = (0,),
    optimizer: str = "adam",
    validation_split: float = 0.2,
    fraction: float = 0.1,
    fuse: bool = True,
) -> LRSweep:
    """Train ``epochs`` at each rate in ``lrs`` (per seed) and say which rates are good.

    The yardstick for :func:`lr_find`: a suggestion is right when it lies in
    the good range. ``data`` is ``(X, y)`` or a DataBundle.

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic(n_samples=300)
        >>> sw = lr_sweep(lambda: el.models.mlp(20), d, [1e-5, 1e-2], epochs=5)
        >>> sw.good.tolist(), sw.low
        ([False, True], 0.01)
    """
    lrs = sorted(check_float("lrs", v, low=0.0, low_open=True) for v in lrs)
    fraction = check_float("fraction", fraction, low=0.0, low_open=True, high=1.0, high_open=True)
    xy = _arrays(data)
    if xy is None:
        raise ParameterError(f"`data` must be (X, y) arrays or a DataBundle; got {type(data).__name__}.")
    x, y = np.asarray(xy[0]), np.asarray(xy[1])
    members = [(lr, s) for lr in lrs for s in seeds]
    models = [_build(model, s) for _, s in members]
    stratify = y if y.dtype.kind in "iub" else None
    _, va, _ = split_indices(len(x), validation_split, seed=seeds[0], stratify=stratify)
    initial = evaluate(models[0], (x[va], y[va]), metrics=())["loss"]
    ok, _ = _fusable(models, data, optimizer, None, batch_size) if fuse else (False, "")
    if ok:
        _check_as_fit(models[0], data, validation_split, seeds[0])
        res = train_fused(models, x, y, epochs=epochs, batch_size=batch_size,
                          lrs=[lr for lr, _ in members], seeds=[s for _, s in members],
                          optimizer=optimizer, validation_split=validation_split)
        finals = [min(r.metrics["val_loss"]) if r.status == "completed" else math.nan for r in res]
    else:
        finals = []
        for m, (lr, s) in zip(models, members, strict=True):
            h = fit(m, (x, y), epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                    validation_split=validation_split, metrics=(), seed=s, verbose=0)
            if h.stop_reason == "interrupted":
                raise KeyboardInterrupt
            finals.append(min(h.history["val_loss"]) if h.stop_reason == "completed" else math.nan)
    per = np.array(finals, dtype=np.float64).reshape(len(lrs), len(seeds))
    val = np.where(np.isfinite(per).all(axis=1), per.mean(axis=1), np.nan)
    best = np.nanmin(val)
    good = np.isfinite(val) & (val <= best + fraction * (initial - best))
    arr = np.array(lrs)
    return LRSweep(arr, val, float(initial), fraction, good, float(arr[good].min()),
                   float(arr[good].max()))
