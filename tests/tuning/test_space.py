"""The search space: what parses, and errors that point at the bad part."""

from __future__ import annotations

import optuna
import pytest

from epochlab.tuning.space import parse_space
from epochlab.validation import ParameterError


def test_the_issue_space_parses_into_optuna_suggestions():
    space = parse_space("lr=loguniform(1e-4,1e-1), batch_size=choice(16,32,64,128),epochs=int(5,50)")
    assert space.names == ("lr", "batch_size", "epochs")
    assert (space["lr"].low, space["lr"].high) == (1e-4, 1e-1)
    assert space["batch_size"].values == (16, 32, 64, 128)
    assert space["epochs"].largest() == 50
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = space.suggest(study.ask())
        assert 1e-4 <= params["lr"] <= 1e-1
        assert params["batch_size"] in (16, 32, 64, 128)
        assert isinstance(params["epochs"], int) and 5 <= params["epochs"] <= 50


def test_a_dict_space_and_words_in_choices():
    space = parse_space({"optimizer": ["adam", "sgd"], "momentum": "uniform(0,0.9)"})
    assert space["optimizer"].values == ("adam", "sgd")
    assert space["momentum"].kind == "uniform"


@pytest.mark.parametrize("text, part, why", [
    ("lr=logunif(1e-4,1e-1)", "lr=logunif(1e-4,1e-1)", "unknown distribution 'logunif'"),
    ("lr=loguniform(1e-4,1e-1),bs=choice(1,2)", "bs=choice(1,2)", "unknown setting `bs`"),
    ("lr=loguniform(0,1e-1)", "lr=loguniform(0,1e-1)", "log range needs low > 0"),
    ("lr=loguniform(1e-1,1e-4)", "lr=loguniform(1e-1,1e-4)", "low < high"),
    ("lr=loguniform(1e-4)", "lr=loguniform(1e-4)", "takes 2 arguments, got 1"),
    ("batch_size=choice(16,0)", "batch_size=choice(16,0)", "`batch_size` must be an int >= 1, got 0"),
    ("batch_size=uniform(16,64)", "batch_size=uniform(16,64)", "integer setting"),
    ("epochs=int(5,x)", "epochs=int(5,x)", "needs two integers"),
    ("optimizer=choice(adam,lbfgs)", "optimizer=choice(adam,lbfgs)", "got 'lbfgs'"),
    ("lr=loguniform(1e-4,1e-1),,epochs=int(1,3)", "", "empty part"),
    ("lr=loguniform(1e-4,1e-1", "lr=loguniform(1e-4,1e-1", "never closed"),
    ("lr", "lr", "expected name=distribution(args)"),
    ("lr=choice(0.1,0.1)", "lr=choice(0.1,0.1)", "listed twice"),
    ("lr=choice(0.1),lr=choice(0.2)", "lr=choice(0.2)", "given twice"),
])
def test_a_malformed_space_names_the_bad_part(text, part, why):
    with pytest.raises(ParameterError) as e:
        parse_space(text)
    msg = str(e.value)
    assert f"wrong at `{part}`" in msg and why in msg
    assert isinstance(e.value, ValueError)


def test_the_error_says_where_the_bad_part_starts():
    with pytest.raises(ParameterError, match=r"`epochs=int\(5\)` \(character 28\)"):
        parse_space("lr=loguniform(1e-4,1e-1),  epochs=int(5)")


def test_grid_needs_finite_values_and_enumerates_int_ranges():
    assert parse_space("epochs=int(1,3),batch_size=choice(16,32)").grid() == {
        "epochs": [1, 2, 3], "batch_size": [16, 32]}
    with pytest.raises(ParameterError, match="`lr=loguniform"):
        parse_space("lr=loguniform(1e-4,1e-1)").grid()
