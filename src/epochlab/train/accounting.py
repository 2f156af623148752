"""Epoch and iteration arithmetic, defined once.

An *epoch* is one pass over the training rows; an *iteration* is one
optimizer update on one batch. ``n_train`` is what remains after the
validation split, so the seed's slide 1 (800 rows, ``validation_split=0.2``,
batch 32) has 640 training rows and 20 iterations per epoch, not the
``len(X_train) // 32 = 25`` the slide prints.
"""

from __future__ import annotations

import math

from epochlab.validation import check_int

__all__ = ["check_int", "iterations_per_epoch", "validation_count"]


def iterations_per_epoch(n_train: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer updates in one epoch: ``ceil(n / b)``, or ``floor`` with ``drop_last``.

    Example:
        >>> iterations_per_epoch(640, 32), iterations_per_epoch(640, 48), iterations_per_epoch(640, 48, True)
        (20, 14, 13)
    """
    check_int("n_train", n_train, 0)
    check_int("batch_size", batch_size, 1)
    return n_train // batch_size if drop_last else math.ceil(n_train / batch_size)


def validation_count(n_rows: int, validation_split: float) -> int:
    """Rows held out by ``validation_split``: ``ceil(fraction * n)``, as scikit-learn counts.

    Example:
        >>> validation_count(800, 0.2)
        160
    """
    return math.ceil(validation_split * n_rows) if validation_split > 0 else 0
