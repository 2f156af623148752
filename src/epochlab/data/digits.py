"""scikit-learn's bundled 8x8 digits: the image dataset that needs no network.

This module owns the offline stand-in for MNIST. The 1,797 digits ship inside
scikit-learn, so the seed's CNN and transfer-learning slides run anywhere:
upsampled to 1x28x28 (channels first) they take MNIST's shape; flat they feed
an MLP; a ``labels`` subset (0-4, then 5-9) gives the transfer-learning split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from epochlab.data.base import DataBundle
from epochlab.validation import ParameterError

__all__ = ["digits"]

# load_digits pixels are counts of set pixels in 4x4 blocks: integers 0..16.
_MAX_PIXEL = 16.0
_SIDE = 28


def digits(
    upsample: bool = True,
    test_size: float = 0.2,
    seed: int = 0,
    labels: Sequence[int] | None = None,
) -> DataBundle:
    """The 8x8 digits, scaled to [0, 1], split into stratified train and test.

    Args:
        upsample: Bilinearly resize each image to 1x28x28 (MNIST's shape,
            channels first) so MNIST models run unchanged. When False, each
            example is a flat vector of 64 pixels for an MLP.
        test_size: Fraction of the rows held out as the test set, in (0, 1).
        seed: Seed of the stratified train/test split.
        labels: Keep only these digits, relabelled ``0..k-1`` in the order
            given; ``classes`` keeps their names. ``(0, 1, 2, 3, 4)`` and
            ``(5, 6, 7, 8, 9)`` are the transfer-learning pair.

    Returns:
        A :class:`DataBundle` with float32 ``x`` in [0, 1] and int64 ``y``.

    Example:
        >>> d = digits()
        >>> d.x_train.shape, d.input_shape, d.classes[:3]
        ((1437, 1, 28, 28), (1, 28, 28), ('0', '1', '2'))
        >>> digits(upsample=False, labels=(5, 6, 7, 8, 9)).classes
        ('5', '6', '7', '8', '9')
    """
    if not 0.0 < test_size < 1.0:
        raise ParameterError(f"The value of `test_size` is {test_size}, but must be in (0, 1).")
    keep = _check_labels(labels)

    from sklearn.datasets import load_digits  # 0.6 s to import: only when loaded
    from sklearn.model_selection import train_test_split

    raw = load_digits()
    x = (raw.data / _MAX_PIXEL).astype(np.float32)
    y = raw.target.astype(np.int64)
    if keep != tuple(range(10)):
        mask = np.isin(y, keep)
        x, y = x[mask], y[mask]
        remap = np.full(10, -1, dtype=np.int64)
        remap[list(keep)] = np.arange(len(keep))
        y = remap[y]

    if upsample:
        import torch  # on first use: the data package itself loads neither torch nor sklearn
        import torch.nn.functional as F

        images = torch.from_numpy(x).reshape(-1, 1, 8, 8)
        resized = F.interpolate(images, size=(_SIDE, _SIDE), mode="bilinear", align_corners=False)
        # Bilinear weights are convex, so values stay in [0, 1] up to rounding.
        x = resized.clamp_(0.0, 1.0).numpy()
        input_shape: tuple[int, ...] = (1, _SIDE, _SIDE)
    else:
        input_shape = (x.shape[1],)

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return DataBundle(
        name="digits",
        x_train=np.ascontiguousarray(x_tr),
        y_train=y_tr,
        x_test=np.ascontiguousarray(x_te),
        y_test=y_te,
        task="binary" if len(keep) == 2 else "multiclass",
        classes=tuple(str(c) for c in keep),
        input_shape=input_shape,
        info={
            "source": "sklearn.datasets.load_digits",
            "seed": seed,
            "upsample": upsample,
            "labels": keep,
        },
    )


def _check_labels(labels: Sequence[int] | None) -> tuple[int, ...]:
    if labels is None:
        return tuple(range(10))
    keep = tuple(labels)
    bad = [v for v in keep if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
    bad += [v for v in keep if v not in bad and not 0 <= v <= 9]
    if bad or len(keep) < 2 or len(set(keep)) != len(keep):
        raise ParameterError(
            f"The value of `labels` is {labels!r}, but must be at least two distinct "
            "digits from 0 to 9, e.g. (0, 1, 2, 3, 4)."
        )
    return tuple(int(v) for v in keep)
