"""registry.load(): datasets by name, with clear errors for names and parameters."""

from __future__ import annotations

import numpy as np
import pytest

import epochlab.data as data
from epochlab.data.registry import NAMES, load, parameters


def test_every_dataset_the_cli_knows_is_registered():
    assert set(NAMES) == {"synthetic", "digits", "sequences", "mnist", "imdb"}
    assert data.NAMES == NAMES and data.load is load


def test_load_passes_keywords_to_the_loader():
    d = load("digits", upsample=False, labels=(0, 1, 2))
    np.testing.assert_array_equal(d.x_train, data.digits(upsample=False, labels=(0, 1, 2)).x_train)
    assert load("synthetic", n_samples=50).x_train.shape == (40, 20)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        load("cifar10")
    message = str(err.value)
    assert "'cifar10'" in message and all(name in message for name in NAMES)


def test_unknown_parameter_names_the_dataset_and_its_accepted_parameters():
    with pytest.raises(ValueError) as err:
        load("digits", upsampel=False)
    message = str(err.value)
    assert "'upsampel'" in message and "'digits'" in message
    assert all(p in message for p in ("upsample", "test_size", "seed", "labels"))


def test_parameters_reports_keyword_only_arguments_too():
    assert "download" in parameters("mnist") and "num_words" in parameters("imdb")


def test_offline_datasets_load_by_name_with_no_arguments(cache):
    for name in ("synthetic", "digits"):
        assert load(name).x_train.shape[0] > 0


def test_downloaded_datasets_without_network_or_files_fail_clearly(cache):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load("mnist", download=False)
