"""Mini-batch gradient descent for logistic regression, in NumPy (the seed's slide 7).

The slide's function, kept readable, with the two things it silently lacks
made options:

- ``shuffle``: the slide walks the rows in the same order every epoch, so
  every epoch sees the same batches (and data sorted by class gives batches
  of one class). Here each epoch can follow a new permutation, drawn from a
  seeded NumPy generator or given explicitly (``orders``), which is how
  :mod:`epochlab.recipes` feeds it the very batch order epochlab's loop uses.
- ``drop_last``: the slide computes ``n_batches = n_samples // batch_size``
  and never visits the rows after the last full batch, and divides each
  gradient by ``batch_size`` rather than by the rows in the batch. With
  ``drop_last=False`` the last partial batch is trained on, its gradient a
  mean over its own rows.

``shuffle=False, drop_last=True`` is the slide exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MiniBatchResult", "mini_batch_gradient_descent"]


@dataclass
class MiniBatchResult:
    """Final weights and bias, updates made, and the mean training loss of every epoch."""

    w: np.ndarray
    b: float
    updates: int
    iterations_per_epoch: int
    epoch_loss: list[float] = field(default_factory=list)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Written to never overflow: the slide's 1 / (1 + exp(-z)) warns for z << 0.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def mini_batch_gradient_descent(
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    epochs: int,
    lr: float = 0.01,
    *,
    shuffle: bool = False,
    drop_last: bool = True,
    seed: int = 0,
    orders: Sequence[np.ndarray] | None = None,
    w0: np.ndarray | None = None,
    b0: float = 0.0,
) -> MiniBatchResult:
    """Train ``sigmoid(X @ w + b)`` with plain mini-batch gradient descent on the log loss.

    Args:
        X: (n, d) features; y: (n,) labels 0/1. Computed in float64.
        batch_size: rows per batch.
        epochs: passes over the rows.
        lr: the step size (the slide's 0.01).
        shuffle: a new row order each epoch (from ``np.random.default_rng(seed)``).
        drop_last: skip the last partial batch, as the slide does.
        seed: seeds the shuffle.
        orders: explicit row orders, one per epoch (overrides ``shuffle``).
        w0, b0: initial weights and bias (the slide's zeros by default).

    Example:
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]]); y = np.array([0, 0, 1, 1, 1])
        >>> r = mini_batch_gradient_descent(X, y, batch_size=2, epochs=3)
        >>> r.iterations_per_epoch, r.updates      # the slide: 5 // 2, the 5th row never seen
        (2, 6)
        >>> mini_batch_gradient_descent(X, y, 2, 3, drop_last=False).updates
        9
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n, d = X.shape
    if y.shape[0] != n:
        raise ValueError(f"`X` has {n} rows but `y` has {y.shape[0]}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"The value of `batch_size` is {batch_size!r}, but must be `batch_size >= 1`.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"The value of `epochs` is {epochs!r}, but must be `epochs >= 1`.")
    if orders is not None and len(orders) < epochs:
        raise ValueError(f"`orders` has {len(orders)} row orders, but {epochs} epochs need one each.")
    n_batches = n // batch_size if drop_last else -(-n // batch_size)
    w = np.zeros(d) if w0 is None else np.array(w0, dtype=np.float64).reshape(d)
    b = float(b0)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    for epoch in range(epochs):
        if orders is not None:
            order = np.asarray(orders[epoch])
        elif shuffle:
            order = rng.permutation(n)
        else:
            order = np.arange(n)
        total = 0.0
        for i in range(n_batches):
            rows = order[i * batch_size:(i + 1) * batch_size]
            X_batch, y_batch = X[rows], y[rows]
            z = X_batch @ w + b
            y_pred = _sigmoid(z)
            # log loss from the logits: log(1 + e^z) - y z, stable for any z
            total += float(np.sum(np.logaddexp(0.0, z) - y_batch * z))
            m = len(rows)  # the slide divides by batch_size even for a short batch
            dw = X_batch.T @ (y_pred - y_batch) / m
            db = np.sum(y_pred - y_batch) / m
            w -= lr * dw
            b -= lr * db
        seen = min(n, n_batches * batch_size)
        losses.append(total / seen)
    return MiniBatchResult(w, b, epochs * n_batches, n_batches, losses)
