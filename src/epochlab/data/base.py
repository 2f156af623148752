"""The one shape every dataset takes: a :class:`DataBundle`.

Every loader in :mod:`epochlab.data` (synthetic, digits, sequences, mnist,
imdb) returns a ``DataBundle`` so that ``fit``, sweeps and the CLI can take
any of them by name. Arrays are NumPy; ``fit`` turns them into tensors once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Task = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class DataBundle:
    """Train and test arrays plus what a model needs to know about them.

    Attributes:
        name: The dataset's name as the CLI spells it (``"synthetic"``).
        x_train, y_train, x_test, y_test: NumPy arrays; rows are examples.
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        classes: Class names, in label order (empty for regression).
        input_shape: Shape of one example, e.g. ``(20,)`` or ``(1, 28, 28)``.
        info: Free-form facts (source, seed, vocabulary size, ...).

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic()
        >>> d.x_train.shape, d.x_test.shape, d.task
        ((800, 20), (200, 20), 'binary')
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: Task
    classes: tuple[str, ...] = ()
    input_shape: tuple[int, ...] = ()
    info: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.classes)

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x_train, y_train)``, ready to pass to :func:`epochlab.fit`."""
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x_test, y_test)``."""
        return self.x_test, self.y_test

    def __repr__(self) -> str:
        return (
            f"DataBundle(name={self.name!r}, train={self.x_train.shape}, "
            f"test={self.x_test.shape}, task={self.task!r}, classes={len(self.classes)})"
        )
