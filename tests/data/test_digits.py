"""digits(): the offline image dataset's shapes, scaling, label subsets and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from epochlab.data import digits


def test_upsampled_images_are_channels_first_28x28_in_unit_range():
    d = digits()
    assert d.x_train.shape == (1437, 1, 28, 28) and d.x_test.shape == (360, 1, 28, 28)
    assert d.input_shape == (1, 28, 28)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    assert d.classes == tuple("0123456789") and d.task == "multiclass"


def test_upsampling_is_bilinear_interpolation_of_the_scaled_8x8_image():
    flat = digits(upsample=False, seed=3)
    up = digits(upsample=True, seed=3)
    np.testing.assert_array_equal(flat.y_train, up.y_train)  # same rows, same order
    expected = F.interpolate(
        torch.from_numpy(flat.x_train[:5]).reshape(-1, 1, 8, 8),
        size=(28, 28), mode="bilinear", align_corners=False,
    )
    np.testing.assert_allclose(up.x_train[:5], expected.numpy(), atol=1e-6)


def test_flat_vectors_without_upsampling_are_the_pixels_over_16():
    d = digits(upsample=False)
    assert d.x_train.shape == (1437, 64) and d.input_shape == (64,)
    raw = load_digits()
    all_rows = np.concatenate([d.x_train, d.x_test]) * 16
    assert np.allclose(np.sort(all_rows.sum(axis=1)), np.sort(raw.data.sum(axis=1)))


def test_split_is_stratified_and_seeded():
    a, b, c = digits(seed=1), digits(seed=1), digits(seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    per_class = np.bincount(load_digits().target)
    assert np.all(np.abs(np.bincount(a.y_test) - 0.2 * per_class) <= 1)  # stratified


def test_label_subset_keeps_only_those_digits_relabelled_in_order():
    first = digits(upsample=False, labels=(0, 1, 2, 3, 4))
    second = digits(upsample=False, labels=(5, 6, 7, 8, 9))
    assert first.classes == ("0", "1", "2", "3", "4")
    assert second.classes == ("5", "6", "7", "8", "9")
    assert set(second.y_train) == set(range(5)) and second.n_classes == 5
    raw = load_digits()
    sevens = raw.data[raw.target == 7] / 16
    assert len(sevens) == np.sum(second.y_train == 2) + np.sum(second.y_test == 2)
    # every relabelled "2" in the second half is really an image of a 7
    rows = {r.tobytes() for r in sevens.astype(np.float32)}
    assert all(r.tobytes() in rows for r in second.x_train[second.y_train == 2])


def test_two_labels_make_a_binary_task():
    assert digits(labels=(3, 8)).task == "binary"


@pytest.mark.parametrize("labels", [(), (3,), (1, 1), (0, 10), (-1, 2), (0.5, 1)])
def test_bad_labels_are_refused_with_the_parameter_named(labels):
    with pytest.raises(ValueError, match="`labels`"):
        digits(labels=labels)


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.1])
def test_test_size_outside_the_open_unit_interval_is_refused(test_size):
    with pytest.raises(ValueError, match="`test_size`"):
        digits(test_size=test_size)
