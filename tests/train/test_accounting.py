"""The seed's arithmetic, exact: rows after the split, iterations, updates, samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import epochlab as el
from epochlab.train.accounting import iterations_per_epoch


def test_slide1_trains_640_rows_in_20_iterations_not_25(slide1):
    torch.manual_seed(0)
    h = el.fit(el.models.mlp(20), slide1.train, epochs=10, batch_size=32,
               validation_split=0.2, verbose=0)
    assert len(slide1.x_train) == 800
    assert (h.n_train, h.n_val) == (640, 160)
    assert h.iterations_per_epoch == 20  # the slide prints len(X_train) // 32 == 25
    assert h.total_updates == 200 == len(h.iterations["step"])
    assert h.samples_seen == 6400
    assert h.epochs_run == 10 and len(h.history["loss"]) == 10
    assert [row["updates"] for row in h.epochs] == [20 * (e + 1) for e in range(10)]


@pytest.mark.parametrize("drop_last, expected", [(True, 13), (False, 14)])
def test_batch_48_gives_13_or_14_iterations(slide1, drop_last, expected):
    h = el.fit(el.models.mlp(20), slide1.train, epochs=2, batch_size=48,
               validation_split=0.2, drop_last=drop_last, verbose=0)
    assert h.iterations_per_epoch == expected
    assert h.total_updates == 2 * expected
    sizes = h.iterations["batch_size"][:expected]
    assert sizes == [48] * 13 + ([] if drop_last else [640 - 13 * 48])
    assert h.samples_seen == 2 * sum(sizes)


def test_every_row_is_seen_once_per_epoch():
    x = torch.arange(50, dtype=torch.float32).reshape(50, 1)
    seen: list[float] = []
    model = torch.nn.Linear(1, 1)
    orig_forward = model.forward
    model.forward = lambda inp: (seen.extend(inp[:, 0].tolist()), orig_forward(inp))[1]
    el.fit(model, (x, x * 2.0 + 0.5), epochs=1, batch_size=8, loss="mse", metrics=(),
           verbose=0)
    # the probe forward sees 2 rows before training starts
    assert sorted(seen[2:]) == list(range(50))


def test_iterations_per_epoch_formula():
    assert iterations_per_epoch(640, 32) == 20
    assert iterations_per_epoch(1, 32) == 1
    assert iterations_per_epoch(1, 32, drop_last=True) == 0
    with pytest.raises(ValueError, match="batch_size"):
        iterations_per_epoch(10, 0)


def test_tail_split_holds_out_the_last_rows(small_xy):
    x, y = small_xy
    h = el.fit(el.models.mlp(5), (x, y), epochs=1, batch_size=16, validation_split=0.25,
               validation_split_mode="tail", verbose=0)
    assert h.n_train == 90 and h.n_val == 30
    assert h.validation_split.startswith("tail")


def test_random_split_is_stratified(slide1):
    from epochlab.train.data import split_indices

    y = slide1.y_train
    tr, va, how = split_indices(len(y), 0.2, seed=3, stratify=y)
    assert how == "random, stratified"
    assert abs(y[va].mean() - y.mean()) < 0.01
    assert len(set(tr) | set(va)) == 800 and not set(tr) & set(va)


def test_a_repeated_split_is_the_same_split_and_the_caller_may_change_its_copy(slide1):
    # Sweeps split the same rows with the same seed for every member; the split is made once.
    from epochlab.train.data import split_indices

    y = slide1.y_train
    tr, va, _ = split_indices(len(y), 0.2, seed=5, stratify=y)
    tr[:] = -1  # the caller's arrays are its own
    tr2, va2, how = split_indices(len(y), 0.2, seed=5, stratify=y)
    assert how == "random, stratified" and (tr2 >= 0).all()
    np.testing.assert_array_equal(va, va2)
    other = split_indices(len(y), 0.2, seed=5, stratify=1 - y)[1]  # other labels, other split
    assert not np.array_equal(other, va2)
    assert not np.array_equal(split_indices(len(y), 0.2, seed=6, stratify=y)[1], va2)
    strings = np.array(["a", "b"], dtype=object)[y]  # labels without bytes to key: still split
    np.testing.assert_array_equal(split_indices(len(y), 0.2, seed=5, stratify=strings)[1], va2)


def test_the_split_is_scikit_learns_train_test_split_row_for_row():
    # epochlab draws the split itself (scikit-learn's validation cost more than the split);
    # stored runs and a user's own train_test_split must keep seeing the same rows.
    from sklearn.model_selection import train_test_split

    from epochlab.train.data import _random_split

    rs = np.random.RandomState(7)
    for _ in range(300):
        n = int(rs.randint(4, 300))
        k = int(rs.randint(1, 7))
        labels = rs.choice(k, size=n, p=rs.dirichlet(np.ones(k)))  # imbalanced, some ties
        if rs.rand() < 0.3:
            labels = labels.astype(np.float32)  # binary targets come as floats
        n_val, seed = int(rs.randint(1, n)), int(rs.randint(0, 2**31))
        stratify = labels if rs.rand() < 0.8 else None
        tr, va, how = _random_split(n, n_val, seed, stratify)
        want = train_test_split(np.arange(n), test_size=n_val, random_state=seed, shuffle=True,
                                stratify=stratify if how == "random, stratified" else None)
        np.testing.assert_array_equal(tr, want[0])
        np.testing.assert_array_equal(va, want[1])
