"""Training data as tensors indexed by a permutation, and the validation split.

Arrays (NumPy or tensors) become tensors once, on the model's device; every
epoch draws one permutation and gathers the epoch's rows in one call, and
batches are slices of that (no DataLoader, no per-batch copies). A
``torch.utils.data.Dataset`` is batched through a DataLoader driven by the
same permutation, so the accounting and the batch order are the same.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from epochlab.train.accounting import iterations_per_epoch, validation_count
from epochlab.validation import ParameterError

# Above this size the epoch's rows are gathered batch by batch instead of at once.
_EPOCH_GATHER_BYTES = 256 * 2**20


def as_tensor(name: str, a: Any, device: torch.device | None = None) -> torch.Tensor:
    """Convert arrays, lists and tensors to a tensor, with a clear error otherwise."""
    if isinstance(a, torch.Tensor):
        t = a.detach()  # data, not part of a graph: fit's own backward never reaches it
    else:
        try:
            arr = np.asarray(a)
            text = arr.dtype.kind in "US"
            t = torch.empty(0) if text else torch.as_tensor(arr)
        except (TypeError, ValueError) as e:
            raise ParameterError(
                f"`{name}` must be a NumPy array, a tensor or a list of numbers; "
                f"got {type(a).__name__} ({e})."
            ) from None
        if text:  # say how to make numbers of it
            example = str(arr.flat[0]) if arr.size else ""
            fix = ("encode the classes as integer ids 0..K-1 first, e.g. "
                   "`classes, y = np.unique(y, return_inverse=True)`"
                   if name.split()[-1] == "y" else "turn them into numbers first")
            raise ParameterError(f"`{name}` holds strings (e.g. {example!r}); {fix}.")
    return t.to(device) if device is not None else t


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise naming the rows and columns that hold NaN or inf."""
    if not t.is_floating_point() or t.numel() == 0:
        return
    # The extremes are finite exactly when every value is (they propagate NaN): one fast pass
    # (0.8 ms for 12,000 MNIST images, where isfinite took 17).
    lo, hi = torch.aminmax(t)
    if math.isfinite(float(lo)) and math.isfinite(float(hi)):
        return
    bad = ~torch.isfinite(t)
    flat = bad.reshape(bad.shape[0], -1)
    rows = torch.nonzero(flat.any(dim=1)).flatten().tolist()
    cols = torch.nonzero(flat.any(dim=0)).flatten().tolist()
    show = lambda xs: ", ".join(map(str, xs[:10])) + (", ..." if len(xs) > 10 else "")  # noqa: E731
    raise ParameterError(
        f"`{name}` contains {int(bad.sum())} non-finite values (NaN or inf) in "
        f"{len(rows)} rows [{show(rows)}] and columns [{show(cols)}]. "
        "Remove or impute them before training."
    )


def check_pair(x: torch.Tensor, y: torch.Tensor, where: str) -> None:
    """Same number of rows, at least one row, all values finite."""
    if x.ndim == 0 or y.ndim == 0:
        raise ParameterError(f"{where}: X and y must have a row dimension; got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}.")
    if x.shape[0] != y.shape[0]:
        raise ParameterError(
            f"{where}: X has {x.shape[0]} rows but y has {y.shape[0]}; "
            "they must have the same number of rows."
        )
    if x.shape[0] == 0:
        raise ParameterError(f"{where}: the data has 0 rows; training needs at least one row.")
    check_finite(f"{where} X", x)
    check_finite(f"{where} y", y)


def split_indices(
    n: int,
    validation_split: float,
    *,
    mode: str = "random",
    seed: int = 0,
    stratify: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Train and validation row indices, and how the split was made.

    ``mode="random"`` (default) is a seeded random split, stratified when
    ``stratify`` labels are given and every class has two rows or more.
    ``mode="tail"`` holds out the *last* rows, as Keras' ``validation_split``
    does: a trap when the data is sorted by class.

    Example:
        >>> tr, va, how = split_indices(800, 0.2, seed=0)
        >>> len(tr), len(va), how
        (640, 160, 'random')
    """
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real):
        raise ParameterError(
            f"The value of `validation_split` is {validation_split!r}, but must be a float in [0, 1)."
        )
    # A NumPy float as the Python float it prints as: float(np.float32(0.2)) is 0.2000000030,
    # which would hold out one row more than 0.2 does.
    validation_split = (float(str(validation_split)) if isinstance(validation_split, np.floating)
                        else float(validation_split))
    if not 0.0 <= validation_split < 1.0:
        raise ParameterError(
            f"The value of `validation_split` is {validation_split}, but must be in [0, 1)."
        )
    if mode not in ("random", "tail"):
        raise ParameterError(
            f"The value of `validation_split_mode` is {mode!r}, but must be 'random' or 'tail'."
        )
    n_val = validation_count(n, validation_split)
    if validation_split > 0 and n_val >= n:
        raise ParameterError(
            f"`validation_split={validation_split}` of {n} rows leaves no training rows; "
            "use a smaller fraction (or, from Python, pass `validation_data`)."
        )
    if n_val == 0:
        return np.arange(n), np.arange(0), "none"
    if mode == "tail":
        return np.arange(n - n_val), np.arange(n - n_val, n), "tail (last rows, as Keras)"
    labels = None if stratify is None else np.ascontiguousarray(stratify)
    if (labels is not None and labels.dtype.kind == "f" and labels.size
            and (labels % 1 == 0).all() and (np.abs(labels) < 2**53).all()):
        # Class ids as floats (fit stratifies by its prepared float targets, the fused engine
        # by the raw int labels): the same classes, the same split, one cache entry.
        labels = labels.astype(np.int64)
    if labels is not None and labels.dtype == object:  # no bytes to key it by
        return _random_split(n, n_val, seed, labels)
    digest = None if labels is None else hashlib.blake2b(labels.tobytes(), digest_size=16)
    key = (n, n_val, seed, None if labels is None else
           (labels.dtype.str, labels.shape, digest.digest()))
    hit = _SPLITS.get(key)
    if hit is None:
        hit = _random_split(n, n_val, seed, labels)
        if len(_SPLITS) >= _SPLITS_KEPT:
            _SPLITS.pop(next(iter(_SPLITS)))
        _SPLITS[key] = hit
    tr, va, how = hit
    return tr.copy(), va.copy(), how


# The splits made lately: a sweep splits the same rows with the same seed for every member
# (12 runs of slide 5 share 3 splits), and a stratified split costs ~0.15 ms.
_SPLITS: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, str]] = {}
_SPLITS_KEPT = 32


def _random_split(
    n: int, n_val: int, seed: int, stratify: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, str]:
    how = "random"
    if stratify is not None:
        _, inverse, counts = np.unique(stratify, return_inverse=True, return_counts=True)
        if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
            how = "random, stratified"
        else:
            stratify = None
            how = "random (not stratified: a class has too few rows)"
    if stratify is not None and (stratify.ndim != 1 or stratify.dtype == object):
        from sklearn.model_selection import train_test_split

        tr, va = train_test_split(
            np.arange(n), test_size=n_val, random_state=seed, shuffle=True, stratify=stratify
        )
        return tr, va, how
    rng = np.random.RandomState(seed)
    if stratify is None:
        order = rng.permutation(n)
        return order[n_val:], order[:n_val], how
    tr, va = _stratified_split(inverse.reshape(-1), counts, n - n_val, n_val, rng)
    return tr, va, how


def _stratified_split(
    inverse: np.ndarray, counts: np.ndarray, n_train: int, n_val: int,
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows scikit-learn's ``train_test_split(..., stratify=labels, random_state=seed)``
    picks (``StratifiedShuffleSplit``, the same draws from the same ``RandomState``), from the
    labels' class of each row (``inverse``) and rows per class (``counts``), without its
    input validation, which cost more than the split (~0.4 of ~0.45 ms; a sweep command
    splits once per seed). ``tests/train/test_accounting.py`` compares the two."""
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    train_per_class = _class_quota(counts, n_train, rng)
    val_per_class = _class_quota(counts - train_per_class, n_val, rng)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for rows, k_train, k_val in zip(by_class, train_per_class, val_per_class, strict=True):
        shuffled = rows[rng.permutation(len(rows))]
        train.append(shuffled[:k_train])
        val.append(shuffled[k_train : k_train + k_val])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _class_quota(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Rows per class out of ``draws``: each class's share rounded down, the rows left given
    to the largest remainders, ties broken at random (scikit-learn's ``_approximate_mode``)."""
    share = counts / counts.sum() * draws
    quota = np.floor(share)
    missing = int(draws - quota.sum())
    remainder = share - quota
    for value in np.unique(remainder)[::-1]:  # the largest remainders first
        if missing <= 0:
            break
        (tied,) = np.nonzero(remainder == value)
        take = min(len(tied), missing)
        quota[rng.choice(tied, size=take, replace=False)] += 1
        missing -= take
    return quota.astype(int)


class ArraySource:
    """In-memory training rows served as permuted batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self._gather_epoch = (x.element_size() * x.numel()) <= _EPOCH_GATHER_BYTES
        # Unshuffled batches are views of x; a model that writes into its input gets copies.
        self.copy_rows = False

    def __len__(self) -> int:
        return self.x.shape[0]

    def batches(
        self, order: torch.Tensor | None, batch_size: int, drop_last: bool, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield batches ``start, start+1, ...`` of the epoch given by ``order``.

        ``order`` may be shorter than the data: a rank's shard of the permutation.
        """
        n = len(self) if order is None else order.shape[0]
        nb = iterations_per_epoch(n, batch_size, drop_last)
        if order is None:
            x, y = self.x, self.y
            if self.copy_rows:
                for b in range(start, nb):
                    s = b * batch_size
                    yield x[s : s + batch_size].clone(), y[s : s + batch_size]
                return
        elif self._gather_epoch:
            x, y = self.x[order], self.y[order]  # one gather per epoch; batches are views
        else:
            for b in range(start, nb):
                idx = order[b * batch_size : (b + 1) * batch_size]
                yield self.x[idx], self.y[idx]
            return
        for b in range(start, nb):
            s = b * batch_size
            yield x[s : s + batch_size], y[s : s + batch_size]


class DatasetSource:
    """A map-style ``Dataset`` batched in the order of the same permutation."""

    def __init__(
        self,
        dataset: Dataset,
        indices: np.ndarray,
        device: torch.device,
        target_fn: Any = None,
        x_fn: Any = None,
    ) -> None:
        self.dataset, self.indices, self.device = dataset, indices, device
        self.target_fn = target_fn or (lambda y: y)
        self.x_fn = x_fn or (lambda x: x)

    def __len__(self) -> int:
        return len(self.indices)

    def batches(
        self, order: torch.Tensor | None, batch_size: int, drop_last: bool, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = self.indices if order is None else self.indices[order.cpu().numpy()]
        nb = iterations_per_epoch(len(rows), batch_size, drop_last)
        plan = [rows[b * batch_size : (b + 1) * batch_size].tolist() for b in range(start, nb)]
        # A private generator: a DataLoader draws a worker seed from torch's global RNG on
        # every iteration start, which would shift dropout's stream when a resume starts
        # the DataLoader mid-epoch (no workers here, so the seed is never used).
        loader = DataLoader(self.dataset, batch_sampler=plan, generator=torch.Generator(),
                            collate_fn=_stack_pairs)
        for xb, yb in loader:
            yield self.x_fn(xb.to(self.device)), self.target_fn(yb.to(self.device))


def _stack_pairs(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``(x, y)`` items as two tensors; an x given as a list of numbers is one row
    (torch's default collate would make a list of per-feature tensors of it)."""
    xs, ys = zip(*items, strict=True)
    return (torch.stack([as_tensor("x", x) for x in xs]),
            torch.stack([as_tensor("y", y) for y in ys]))


@dataclass
class PreparedData:
    """What the loop trains on: sources, sizes and how the split was made."""

    train: ArraySource | DatasetSource
    val: tuple[torch.Tensor, torch.Tensor] | None
    n_train: int
    n_val: int
    split: str


def probe_rows(data: Any, model: torch.nn.Module | None = None) -> torch.Tensor:
    """Two training rows of ``data`` as a tensor on ``model``'s device, floating ones in its
    dtype: what a probe (a shape check, a count of multiply-adds) runs through the model.

    ``data`` is a :class:`~epochlab.data.base.DataBundle` (or anything with
    ``x_train``), ``(X, y)`` arrays, or a map-style Dataset of ``(x, y)`` (one row then).

    Example:
        >>> probe_rows((np.zeros((5, 3), dtype=np.float32), np.zeros(5)), torch.nn.Linear(3, 1).double())
        tensor([[0., 0., 0.],
                [0., 0., 0.]], dtype=torch.float64)
    """
    if hasattr(data, "x_train"):
        rows = as_tensor("X", data.x_train[:2])
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        rows = as_tensor("X", data[0][:2])
    else:  # a map-style Dataset
        rows = as_tensor("X", data[0][0]).unsqueeze(0)
    p = next(model.parameters(), None) if model is not None else None
    if p is not None:
        rows = rows.to(p.device, p.dtype if rows.is_floating_point() else rows.dtype)
    return rows


def check_forward(model: torch.nn.Module, data: Any, model_name: str, data_name: str) -> None:
    """Run two training rows of ``data`` through ``model``: refuse a model that cannot take them.

    ``data`` is anything :func:`probe_rows` takes. The model runs in eval mode
    without gradients; a failure becomes one
    :class:`~epochlab.validation.ParameterError` naming both, before anything
    is created or trained.

    Example:
        >>> import torch
        >>> check_forward(torch.nn.Linear(3, 1), (torch.zeros(4, 3), torch.zeros(4)), "m", "d")
        >>> check_forward(torch.nn.Linear(5, 1), (torch.zeros(4, 3), torch.zeros(4)), "m", "d")
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: The model 'm' cannot run on the data 'd': ...
    """
    was_training = model.training
    rows = None
    try:
        rows = probe_rows(data, model)
        model.eval()
        with torch.no_grad():
            model(rows.clone())  # a model writing into its input leaves the data alone
    except (ValueError, TypeError, RuntimeError, IndexError) as e:
        from epochlab.train.losses import integer_input_hint

        hint = integer_input_hint(rows, e) if isinstance(rows, torch.Tensor) else ""
        raise ParameterError(f"The model {model_name!r} cannot run on the data {data_name!r}: "
                             f"{e}{hint}") from None
    finally:
        model.train(was_training)
