"""Epoch and iteration arithmetic, defined once.

An *epoch* is one pass over the training rows; an *iteration* is one
optimizer update on one batch. ``n_train`` is what remains after the
validation split, so the seed's slide 1 (800 rows, ``validation_split=0.2``,
batch 32) has 640 training rows and 20 iterations per epoch, not the
``len(X_train) // 32 = 25`` the slide prints.
"""

from __future__ import annotations

import math
import numbers

from epochlab.validation import ParameterError


def check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the bound.

    Example:
        >>> check_int("epochs", 10, 1)
        10
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(
            f"The value of `{name}` is {value!r} ({type(value).__name__}), "
            f"but must be an integer `{name} >= {minimum}`."
        )
    if value < minimum:
        raise ParameterError(f"The value of `{name}` is {value}, but must be `{name} >= {minimum}`.")
    return int(value)


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
