"""The synthetic sequence task: shapes, padding, balance, determinism and the rule itself."""

from __future__ import annotations

import numpy as np
import pytest

from epochlab.data.sequences import (
    FIRST_NEUTRAL,
    NEGATIONS,
    NEGATIVE,
    POSITIVE,
    bag_of_words,
    pad_sequences,
    sequences,
)


def _label_by_rule(row: np.ndarray) -> int:
    tokens = [t for t in row.tolist() if t != 0]
    total = 0
    for prev, tok in zip([None] + tokens[:-1], tokens, strict=True):
        polarity = 1 if tok in POSITIVE else -1 if tok in NEGATIVE else 0
        total += -polarity if prev in NEGATIONS else polarity
    assert total != 0
    return int(total > 0)


def test_bundle_shapes_and_metadata():
    d = sequences(n_samples=200, vocab_size=100, maxlen=30, seed=1)
    assert d.x_train.shape == (160, 30) and d.x_test.shape == (40, 30)
    assert d.x_train.dtype == np.int64 and d.y_train.dtype == np.int64
    assert d.task == "binary" and d.classes == ("negative", "positive")
    assert d.input_shape == (30,)
    assert d.info["vocab_size"] == 100 and "negation" in d.info["rule"]
    assert d.x_train.max() < 100 and d.x_train.min() >= 0


def test_labels_follow_the_negation_rule_and_classes_are_balanced():
    d = sequences(n_samples=400, seed=3)
    x = np.concatenate([d.x_train, d.x_test])
    y = np.concatenate([d.y_train, d.y_test])
    assert [_label_by_rule(r) for r in x] == y.tolist()
    assert y.sum() == 200
    # Negation happens both before sentiment words and before neutral ones.
    after_negation = x[:, 1:][np.isin(x[:, :-1], list(NEGATIONS))]
    assert (after_negation >= FIRST_NEUTRAL).any() and (after_negation < FIRST_NEUTRAL).any()


def test_padding_side_and_start_token():
    pre = sequences(n_samples=50, seed=0, padding="pre")
    post = sequences(n_samples=50, seed=0, padding="post")
    assert (pre.x_train[:, -1] != 0).all() and (post.x_train[:, 0] == 1).all()
    # Same sequences, only the padding side differs.
    strip = [[t for t in r if t] for r in pre.x_train.tolist()]
    assert strip == [[t for t in r if t] for r in post.x_train.tolist()]
    assert all(r[0] == 1 for r in strip)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = sequences(100, seed=5), sequences(100, seed=5), sequences(100, seed=6)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_bag_of_words_counts_ignore_padding():
    counts = bag_of_words(np.array([[0, 0, 3, 3, 1], [2, 0, 0, 0, 0]]), vocab_size=4)
    assert counts.tolist() == [[0, 1, 0, 2], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match="vocab_size"):
        bag_of_words(np.array([[5]]), vocab_size=4)


def test_pad_sequences_keras_conventions():
    assert pad_sequences([[1, 2, 3, 4]], 2).tolist() == [[3, 4]]
    assert pad_sequences([[1, 2, 3, 4]], 2, truncating="post").tolist() == [[1, 2]]
    assert pad_sequences([[7], []], 3, padding="post").tolist() == [[7, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"vocab_size": 10}, "vocab_size"), ({"maxlen": 5}, "maxlen"),
     ({"test_size": 1.0}, "test_size"), ({"padding": "middle"}, "padding"),
     ({"n_samples": 1}, "n_samples")],
)
def test_invalid_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        sequences(**kwargs)


def test_bag_of_words_baseline_cannot_solve_the_task():
    from sklearn.linear_model import LogisticRegression

    d = sequences(n_samples=2000, vocab_size=40, maxlen=12, seed=0)
    clf = LogisticRegression(max_iter=1000).fit(bag_of_words(d.x_train, 40), d.y_train)
    # Word counts alone leave the negations ambiguous (an LSTM gets > 85% here).
    assert clf.score(bag_of_words(d.x_test, 40), d.y_test) < 0.8
