"""Slide 7: the NumPy reference and epochlab's loop train the same logistic regression alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epochlab.recipes.slides_mlp import reference_agreement
from epochlab.reference import mini_batch_gradient_descent


@pytest.fixture(scope="module")
def slide_data(slide1):
    return slide1.x_train.astype(np.float64), slide1.y_train


@pytest.mark.parametrize("batch_size,shuffle,drop_last", [
    (32, False, True),   # the slide exactly: rows in order, 800 // 32 = 25 batches
    (48, True, False),   # reshuffled each epoch, the last partial batch of 32 rows kept
    (48, False, True),   # the slide's loop where // drops 32 rows every epoch
    (33, True, True),
])
def test_reference_and_fit_end_with_the_same_weights(slide_data, batch_size, shuffle, drop_last):
    X, y = slide_data
    r = reference_agreement(X, y, batch_size=batch_size, epochs=5, shuffle=shuffle,
                            drop_last=drop_last, seed=7)
    assert r["updates"] == r["reference"].updates
    assert r["max_abs_dw"] < 1e-6 and r["abs_db"] < 1e-6
    # Not vacuous: the weights moved well away from their zero start.
    assert np.abs(r["w"]).max() > 1e-2
    # The per-epoch training loss agrees too (both are means of each batch's loss before its update).
    np.testing.assert_allclose(r["history"].history["loss"], r["reference"].epoch_loss, rtol=1e-9)


def test_float32_loop_agrees_with_the_float64_reference_to_1e_6(slide_data):
    X, y = slide_data
    r = reference_agreement(X, y, batch_size=48, epochs=10, shuffle=True, drop_last=False,
                            dtype=torch.float32)
    assert r["max_abs_dw"] < 1e-6


def test_another_batch_order_gives_other_weights(slide_data):
    X, y = slide_data
    a = mini_batch_gradient_descent(X, y, 48, 3, shuffle=True, drop_last=False, seed=0)
    b = mini_batch_gradient_descent(X, y, 48, 3, shuffle=True, drop_last=False, seed=1)
    assert np.abs(a.w - b.w).max() > 1e-4


def test_drop_last_counts_batches_as_the_slide_does():
    X = np.zeros((100, 2))
    y = np.zeros(100)
    assert mini_batch_gradient_descent(X, y, 32, 2).iterations_per_epoch == 3
    assert mini_batch_gradient_descent(X, y, 32, 2, drop_last=False).updates == 8


def test_the_slide_without_options_never_shuffles():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)), rng.integers(0, 2, 64)
    in_order = [np.arange(64)] * 2
    a = mini_batch_gradient_descent(X, y, 16, 2)
    b = mini_batch_gradient_descent(X, y, 16, 2, orders=in_order)
    np.testing.assert_array_equal(a.w, b.w)


def test_bad_arguments_are_named():
    X, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="batch_size"):
        mini_batch_gradient_descent(X, y, 0, 1)
    with pytest.raises(ValueError, match="orders"):
        mini_batch_gradient_descent(X, y, 2, 3, orders=[np.arange(4)])
    with pytest.raises(ValueError, match="rows"):
        mini_batch_gradient_descent(X, np.zeros(3), 2, 1)
