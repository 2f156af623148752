"""The gradient noise scale (McCandlish et al. 2018), measured while a model trains.

This module owns :class:`GradientNoiseScale`, a callback, and the arithmetic
behind it. The "simple" noise scale is ``B_simple = tr(Sigma) / |G|^2``:
``G`` the true gradient, ``Sigma`` the covariance of one example's gradient.
Batches much smaller than ``B_simple`` are dominated by noise (a bigger
batch makes each update better at little cost in examples); batches much
larger waste examples (each update barely improves). The paper's model of
the trade-off, used by :func:`batch_size_advice`: to reach a given loss,
``epochs(B) ~ E_min (1 + B / B_noise)`` examples and
``steps(B) ~ S_min (1 + B_noise / B)`` updates.

How it is measured, in one process: every ``every`` updates the callback
draws ``parts`` small batches of ``small`` rows (with replacement, from the
training rows it was given) at the *current* weights, and takes each one's
gradient ``g_i``; their mean is the gradient of one big batch of
``B = parts * small`` rows. With ``|G_b|^2`` the mean of ``|g_i|^2`` and
``|G_B|^2`` the squared norm of the mean, the paper's unbiased estimators
(its Appendix A.1) are::

    |G|^2    ~ (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(Sigma) ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

Each is unbiased but noisy, and their ratio is biased, so (as the paper
does) the two are averaged first and divided after: per epoch over that
epoch's measurements (``gns``, with a jackknife standard error ``gns_err``)
and with a running average over the whole run (``gns_smoothed``, factor
``beta``). These go into the epoch's row of the History.

The measurement never changes training: gradients are taken with
``torch.autograd.grad`` (``.grad`` untouched), buffers (batch-norm running
statistics) are restored, and torch's random state is forked, so a run with
the callback is bit-identical to one without. It costs ``parts * small``
rows of forward and backward per measurement and nothing when not asked for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from epochlab.callbacks.base import Callback
from epochlab.train.losses import out_features_of, prepare_targets
from epochlab.validation import SEED_MAX, ParameterError, check_float, check_int

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.trainer import Trainer

__all__ = ["GradientNoiseScale", "batch_size_advice", "estimate", "noise_scale"]


def estimate(g_small_sq: float, g_big_sq: float, small: int, big: int) -> tuple[float, float]:
    """The paper's unbiased ``(|G|^2, tr(Sigma))`` from squared gradient norms at two sizes.

    Example:
        >>> # |G|^2 = 1, tr(Sigma) = 64: E|G_b|^2 = 1 + 64/8, E|G_B|^2 = 1 + 64/64
        >>> estimate(9.0, 2.0, 8, 64)
        (1.0, 64.0)
    """
    g2 = (big * g_big_sq - small * g_small_sq) / (big - small)
    s = (g_small_sq - g_big_sq) / (1.0 / small - 1.0 / big)
    return g2, s


def noise_scale(g2: Sequence[float], s: Sequence[float]) -> tuple[float, float]:
    """``B_simple = mean(s) / mean(g2)`` and its jackknife standard error.

    Example:
        >>> b, err = noise_scale([1.0, 1.2, 0.8], [60.0, 70.0, 50.0])
        >>> round(b, 6), err > 0
        (60.0, True)
    """
    g2a, sa = np.asarray(g2, dtype=np.float64), np.asarray(s, dtype=np.float64)
    n = len(g2a)
    if n == 0:
        return math.nan, math.nan
    b = sa.mean() / g2a.mean()
    if n < 2:
        return float(b), math.nan
    loo = (sa.sum() - sa) / (g2a.sum() - g2a)  # leave-one-out ratios
    err = math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))
    return float(b), err


class GradientNoiseScale(Callback):
    """Measure ``B_simple`` during training; write ``gns``, ``gns_err``, ``gns_smoothed`` per epoch.

    Args:
        data: the training rows ``(X, y)`` (or a DataBundle's training split)
            the measurement batches are drawn from.
        small: rows per small batch (default: the run's batch size).
        parts: small batches per measurement; the big batch is
            ``parts * small`` rows (>= 2).
        every: updates between measurements (default: about 8 per epoch).
        beta: running-average factor of ``gns_smoothed`` (per measurement).
        seed: seeds the draws of measurement rows (never training's RNG).

    Besides the epoch columns, :attr:`records` keeps every measurement
    (``step``, ``g2``, ``s``) and ``trainer.history.extra["gns"]`` the
    settings and the last smoothed value.

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic(n_samples=300)
        >>> h = el.fit(el.models.mlp(20), d.train, epochs=2, batch_size=16, verbose=0,
        ...            callbacks=[GradientNoiseScale(d.train, parts=4)])
        >>> [k for k in h.history if k.startswith("gns")]
        ['gns', 'gns_err', 'gns_smoothed', 'gns_measurements']
    """

    def __init__(self, data: Any, *, small: int | None = None, parts: int = 8,
                 every: int | None = None, beta: float = 0.9, seed: int = 0) -> None:
        if hasattr(data, "x_train"):
            data = (data.x_train, data.y_train)
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise ParameterError(f"`data` must be (X, y) training rows or a DataBundle; got "
                                 f"{type(data).__name__}.")
        self.x = torch.as_tensor(np.asarray(data[0]))
        self.y = torch.as_tensor(np.asarray(data[1]))
        if len(self.x) != len(self.y) or len(self.x) < 2:
            raise ParameterError(f"`data` must have as many X as y rows (>= 2); got "
                                 f"{len(self.x)} and {len(self.y)}.")
        self.small = _opt_int("small", small, 1)
        self.parts = _opt_int("parts", parts, 2)
        self.every = _opt_int("every", every, 1)
        self.beta = check_float("beta", beta, low=0.0, high=1.0, high_open=True)
        self.seed = check_int("seed", seed, 0, SEED_MAX)
        self.records: list[dict[str, float]] = []

    # -- hooks ----------------------------------------------------------------------------
    def on_train_begin(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        h = trainer.history
        self._small = self.small or h.batch_size or 32
        self._every = self.every or max(1, (h.iterations_per_epoch or 8) // 8)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._epoch: list[tuple[float, float]] = []
        self._ema = [0.0, 0.0, 0]  # running sums of g2 and s, and the count, for debiasing
        self.records = []
        self._targets: torch.Tensor | None = None

    def on_batch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if (int(logs["step"]) + 1) % self._every == 0:
            g2, s = self.measure(trainer)
            if math.isfinite(g2) and math.isfinite(s):
                self._epoch.append((g2, s))
                self.records.append({"step": int(logs["step"]) + 1, "g2": g2, "s": s})
                e = self._ema
                e[0] = self.beta * e[0] + (1 - self.beta) * g2
                e[1] = self.beta * e[1] + (1 - self.beta) * s
                e[2] += 1

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        g2s = [g for g, _ in self._epoch]
        ss = [s for _, s in self._epoch]
        b, err = noise_scale(g2s, ss)
        e = self._ema
        smoothed = e[1] / e[0] if e[2] and e[0] > 0 else math.nan  # the bias factors cancel
        row = trainer.history.epochs[-1]  # the row the loop just appended for this epoch
        row.update(gns=b, gns_err=err, gns_smoothed=smoothed, gns_measurements=len(g2s))
        trainer.history.extra["gns"] = {
            "small": self._small, "big": self._small * self.parts, "every": self._every,
            "beta": self.beta, "last_smoothed": smoothed}
        self._epoch = []

    # -- the measurement ------------------------------------------------------------------
    def measure(self, trainer: Trainer) -> tuple[float, float]:
        """One ``(|G|^2, tr(Sigma))`` estimate at the model's current weights."""
        model, spec = trainer.model, trainer.spec
        params = [p for p in model.parameters() if p.requires_grad]
        device = params[0].device
        b, parts = self._small, self.parts
        idx = torch.randint(len(self.x), (parts, b), generator=self._gen)
        if self._targets is None:
            self._targets = self._prepare(trainer)
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        grads = []
        with torch.random.fork_rng(devices=[]):
            for rows in idx:
                x = self.x[rows].to(device)
                x = x.to(params[0].dtype) if x.is_floating_point() else x
                loss = spec.fn(model(x), self._targets[rows].to(device))
                gs = torch.autograd.grad(loss, params, allow_unused=True)
                grads.append(torch.cat([
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(gs, params, strict=True)]).double())
        if buffers:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
        stacked = torch.stack(grads)
        g_small_sq = float((stacked**2).sum(dim=1).mean())
        g_big_sq = float((stacked.mean(dim=0) ** 2).sum())
        return estimate(g_small_sq, g_big_sq, b, b * parts)

    def _prepare(self, trainer: Trainer) -> torch.Tensor:
        p = next(trainer.model.parameters())
        x2 = self.x[:2].to(p.device)
        x2 = x2.to(p.dtype) if x2.is_floating_point() else x2
        with torch.random.fork_rng(devices=[]):
            shape = out_features_of(trainer.model, x2)
        return prepare_targets(trainer.spec, self.y, (len(self.y), *shape[1:]), "gns data", p.dtype)


def _opt_int(name: str, value: Any, low: int) -> int | None:
    return None if value is None else check_int(name, value, low)


def batch_size_advice(
    noise: float,
    *,
    n_train: int,
    batch_size: int,
    epochs_reached: float,
    batch_sizes: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024),
) -> dict[str, Any]:
    """The paper's trade-off from a noise scale and one run: epochs and updates per batch size.

    A run at ``batch_size`` reached its target loss after ``epochs_reached``
    epochs of ``n_train`` rows; with ``E(B) = E_min (1 + B / noise)``
    examples that fixes ``E_min``, and every other batch size's epochs and
    updates follow.

    Example:
        >>> a = batch_size_advice(100.0, n_train=1000, batch_size=100, epochs_reached=10)
        >>> a["rows"][0]["batch_size"], round(a["rows"][0]["epochs"], 2)
        (16, 5.8)
        >>> a["text"].split(";")[0]
        'batches beyond about 100 give diminishing returns'
    """
    noise = check_float("noise", noise, low=0.0, low_open=True)
    e_min = epochs_reached / (1 + batch_size / noise)  # epochs at a vanishing batch
    rows = []
    for b in sorted({*batch_sizes, batch_size}):
        ep = e_min * (1 + b / noise)
        # An epoch is ceil(n_train / b) updates (the last batch partial), as fit counts them.
        rows.append({"batch_size": b, "epochs": ep, "updates": ep * math.ceil(n_train / b),
                     "current": b == batch_size})
    best = max(1, 2 ** int(round(math.log2(noise))))  # the power of two nearest the noise scale
    ep_b = e_min * (1 + best / noise)
    text = (f"batches beyond about {noise:.0f} give diminishing returns; with batch {best}, about "
            f"{ep_b:.1f} epochs ({max(1, round(ep_b * math.ceil(n_train / best)))} updates) to "
            "reach the loss this run "
            f"reached in {epochs_reached:g} epochs at batch {batch_size}")
    return {"noise": noise, "e_min_epochs": e_min, "rows": rows, "text": text,
            "suggested_batch_size": best}
