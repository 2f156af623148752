"""The seed's slide-1 data: scikit-learn's ``make_classification``, seeded."""

from __future__ import annotations

import math

import numpy as np

from epochlab.data.base import DataBundle
from epochlab.validation import ParameterError


def synthetic(
    n_samples: int = 1000,
    n_features: int = 20,
    n_classes: int = 2,
    test_size: float = 0.2,
    seed: int = 42,
) -> DataBundle:
    """Seeded ``make_classification`` data split into train and test.

    The defaults are the seed's slide 1: 1000 rows, 20 features, 2 classes,
    an 80/20 train/test split with ``random_state=42``, so ``x_train`` has
    800 rows (and ``fit(..., validation_split=0.2)`` then trains on 640).

    Example:
        >>> d = synthetic()
        >>> d.x_train.shape
        (800, 20)
    """
    if n_samples < 2:
        raise ParameterError(f"The value of `n_samples` is {n_samples}, but must be `n_samples >= 2`.")
    if not 0.0 < test_size < 1.0:
        raise ParameterError(f"The value of `test_size` is {test_size}, but must be in (0, 1).")
    from sklearn.datasets import make_classification  # 0.5 s: only when the data is made
    from sklearn.model_selection import train_test_split

    x, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_classes=n_classes,
        # 2 informative features (the slide's default) when they suffice for
        # two clusters per class; more for many classes.
        n_informative=min(n_features, max(2, math.ceil(math.log2(2 * n_classes)))),
        random_state=seed,
    )
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed)
    task = "binary" if n_classes == 2 else "multiclass"
    return DataBundle(
        name="synthetic",
        x_train=x_tr.astype(np.float32),
        y_train=y_tr.astype(np.int64),
        x_test=x_te.astype(np.float32),
        y_test=y_te.astype(np.int64),
        task=task,
        classes=tuple(str(c) for c in range(n_classes)),
        input_shape=(n_features,),
        info={"source": "sklearn.datasets.make_classification", "seed": seed},
    )
