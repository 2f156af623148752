"""Every bad input gets an error that says what was given and what is expected."""

from __future__ import annotations

import numpy as np
import pytest

import epochlab as el


def _fit(x, y, model=None, **kw):
    kw = {"epochs": 1, "batch_size": 8, "verbose": 0, **kw}
    return el.fit(model or el.models.mlp(x.shape[1] if x.ndim > 1 else 1), (x, y), **kw)


def test_mismatched_lengths(small_xy):
    x, y = small_xy
    with pytest.raises(ValueError, match="X has 120 rows but y has 100"):
        _fit(x, y[:100])


def test_empty_data():
    with pytest.raises(ValueError, match="0 rows"):
        _fit(np.zeros((0, 5), np.float32), np.zeros(0, np.int64))


def test_nan_and_inf_name_rows_and_columns(small_xy):
    x, y = small_xy
    x = x.copy()
    x[3, 2] = np.nan
    x[7, 4] = np.inf
    with pytest.raises(ValueError, match=r"2 non-finite values .* rows \[3, 7\] and columns \[2, 4\]"):
        _fit(x, y)


@pytest.mark.parametrize("bs, err", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                     ("32", TypeError), (True, TypeError)])
def test_bad_batch_size(small_xy, bs, err):
    with pytest.raises(err, match="`batch_size`"):
        _fit(*small_xy, batch_size=bs)


def test_bad_epochs(small_xy):
    with pytest.raises(ValueError, match="The value of `epochs` is 0, but must be `epochs >= 1`"):
        _fit(*small_xy, epochs=0)


@pytest.mark.parametrize("vs", [1.0, -0.1, 1.5])
def test_validation_split_outside_range(small_xy, vs):
    with pytest.raises(ValueError, match=r"`validation_split` is .*, but must be in \[0, 1\)"):
        _fit(*small_xy, validation_split=vs)


def test_validation_split_leaving_no_training_rows():
    x = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="leaves no training rows"):
        _fit(x, np.array([0, 1, 0]), validation_split=0.9)


def test_validation_split_and_data_together(small_xy):
    with pytest.raises(ValueError, match="pass one of them"):
        _fit(*small_xy, validation_split=0.2, validation_data=small_xy)


def test_three_classes_with_one_output(small_xy):
    x, _ = small_xy
    y = np.arange(120) % 3
    with pytest.raises(ValueError, match=r"values \[0, 1, 2\].*out_features=3"):
        _fit(x, y)


def test_labels_beyond_the_outputs(small_xy):
    x, _ = small_xy
    y = np.arange(120) % 5
    with pytest.raises(ValueError, match=r"labels 0..4 \(5 classes\) but the model outputs 3"):
        _fit(x, y, model=el.models.mlp(5, out_features=3))


def test_model_output_shape_mismatch(small_xy):
    x, _ = small_xy
    y = np.random.default_rng(0).normal(size=(120, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"outputs shape \(2, 1\) but the regression targets"):
        _fit(x, y)


def test_wrong_input_width_names_the_shape(small_xy):
    x, y = small_xy
    with pytest.raises(ValueError, match=r"input shape \(2, 5\)"):
        _fit(x, y, model=el.models.mlp(7))


def test_unknown_optimizer_and_loss(small_xy):
    with pytest.raises(ValueError, match="Unknown optimizer 'adamm'"):
        _fit(*small_xy, optimizer="adamm")
    with pytest.raises(ValueError, match="Unknown loss 'hinge'"):
        _fit(*small_xy, loss="hinge")


def test_drop_last_with_too_few_rows(small_xy):
    with pytest.raises(ValueError, match="no full batch"):
        _fit(*small_xy, batch_size=500, drop_last=True)


def test_text_labels_say_how_to_encode_them(small_xy):
    x, y = small_xy
    names = np.array(["cat", "dog"])[y % 2]
    with pytest.raises(ValueError, match=r"`y` holds strings \(e.g. '(cat|dog)'\); encode the "
                                         r"classes as integer ids 0..K-1 first"):
        _fit(x, names)


def test_integer_x_for_a_float_model_says_to_convert_it(small_xy):
    x, y = small_xy
    with pytest.raises(ValueError, match=r"X holds integers \(int64\).*convert them to floats"):
        _fit(x.astype(np.int64), y)


def test_8_bit_images_for_a_cnn_say_to_scale_them_to_floats():
    import epochlab as el

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(32, 1, 8, 8)).astype(np.uint8)
    with pytest.raises(ValueError, match=r"X holds integers \(uint8\).*/ 255` for 8-bit images"):
        el.fit(el.models.cnn("small", n_classes=3, input_size=8), (x, rng.integers(0, 3, 32)),
               epochs=1, batch_size=16, verbose=0)


def test_a_dataloader_says_to_pass_its_dataset(small_xy):
    import torch

    x, y = small_xy
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.as_tensor(x), torch.as_tensor(y)), batch_size=8)
    with pytest.raises(ValueError, match=r"got DataLoader\. Pass its dataset and batch size"):
        el.fit(el.models.mlp(x.shape[1]), loader, epochs=1, batch_size=8)


def test_fractional_labels_for_a_classifier_say_they_were_read_as_regression(small_xy):
    import torch

    x, y = small_xy
    model = torch.nn.Linear(x.shape[1], 3)
    with pytest.raises(ValueError, match=r"not whole numbers \(e.g. [01].5\), so it was read as "
                                         r"regression targets; class labels must be the "
                                         r"integers 0..2"):
        _fit(x, y + 0.5, model=model)
