"""Synthetic labelled token sequences for the seed's text model (slide 12).

This module owns :func:`sequences`, an offline stand-in for IMDB in which
word *order* decides the label, so a model has to read the sequence rather
than count its words; :func:`bag_of_words`, the counts a baseline classifier
sees instead; and :func:`pad_sequences`, Keras-style padding/truncation.

The rule: a sequence holds neutral words, one or three sentiment words
(positive or negative), and negation words. A negation word flips the
polarity of the word *right after it*; a negation before a neutral word does
nothing. The label is the sign of the summed (possibly flipped) polarities:
odd counts of +-1 terms never tie. Because negations also appear before
neutral words, the counts of words alone do not say which sentiment words
were flipped, so a bag-of-words model is left guessing where an LSTM is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from epochlab.data.base import DataBundle
from epochlab.validation import ParameterError

PAD, START = 0, 1
N_NEGATIONS, N_POLAR = 3, 10  # negation words; sentiment words per polarity
NEGATIONS = range(2, 2 + N_NEGATIONS)
POSITIVE = range(NEGATIONS.stop, NEGATIONS.stop + N_POLAR)
NEGATIVE = range(POSITIVE.stop, POSITIVE.stop + N_POLAR)
FIRST_NEUTRAL = NEGATIVE.stop
MIN_VOCAB = FIRST_NEUTRAL + 5
NEGATION_RATE = 0.3  # chance that a sentiment word is negated
ZIPF_EXPONENT = 1.3  # neutral word frequency ~ 1 / rank ** ZIPF_EXPONENT
# Longest example before neutral filler: start + 3 negated sentiment words
# (2 tokens each) + 2 negations before neutral words (2 tokens each).
MIN_MAXLEN = 1 + 3 * 2 + 2 * 2

RULE = (
    "Token 0 is padding and 1 the start token. Ids 2-4 are negations, 5-14 positive and "
    "15-24 negative words, the rest neutral. A negation flips the polarity of the word right "
    "after it (and does nothing before a neutral word). Each sequence has 1 or 3 sentiment "
    "words; the label is 1 (positive) if the sum of their (flipped) polarities is > 0, else 0."
)


def pad_sequences(
    seqs: Sequence[Sequence[int]],
    maxlen: int,
    padding: Literal["pre", "post"] = "pre",
    truncating: Literal["pre", "post"] = "pre",
    value: int = PAD,
) -> np.ndarray:
    """Pad or truncate each sequence to ``maxlen`` ids, as Keras' ``pad_sequences`` does.

    Keras' defaults are ``padding="pre"`` and ``truncating="pre"`` (keep the
    end of long sequences).

    Example:
        >>> pad_sequences([[5, 6], [1, 2, 3, 4]], maxlen=3).tolist()
        [[0, 5, 6], [2, 3, 4]]
    """
    if maxlen < 1:
        raise ParameterError(f"The value of `maxlen` is {maxlen}, but must be `maxlen >= 1`.")
    for name, side in (("padding", padding), ("truncating", truncating)):
        if side not in ("pre", "post"):
            raise ParameterError(f"The value of `{name}` is {side!r}, but must be 'pre' or 'post'.")
    out = np.full((len(seqs), maxlen), value, dtype=np.int64)
    for i, seq in enumerate(seqs):
        seq = list(seq)
        seq = seq[-maxlen:] if truncating == "pre" else seq[:maxlen]
        if seq:
            if padding == "pre":
                out[i, maxlen - len(seq):] = seq
            else:
                out[i, : len(seq)] = seq
    return out


def bag_of_words(x: np.ndarray, vocab_size: int, padding_idx: int | None = PAD) -> np.ndarray:
    """Word counts per row, ``(N, vocab_size)`` float32, for a baseline that ignores order.

    Padding is not counted. Feed the counts to logistic regression or an MLP
    to see how far a model gets without reading the order.

    Example:
        >>> bag_of_words(np.array([[0, 2, 2, 3]]), vocab_size=4).tolist()
        [[0.0, 0.0, 2.0, 1.0]]
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ParameterError(f"`x` must be token ids shaped (N, T), but has shape {x.shape}.")
    if x.size and (x.min() < 0 or x.max() >= vocab_size):
        raise ParameterError(
            f"Token ids must be in [0, vocab_size) = [0, {vocab_size}), but `x` holds ids "
            f"from {x.min()} to {x.max()}."
        )
    n = x.shape[0]
    flat = (np.arange(n)[:, None] * vocab_size + x).ravel()
    counts = np.bincount(flat, minlength=n * vocab_size).reshape(n, vocab_size)
    if padding_idx is not None:
        counts[:, padding_idx] = 0
    return counts.astype(np.float32)


def _neutral_cdf(vocab_size: int) -> np.ndarray:
    # Zipf-like word frequencies (p ~ 1/rank), as in real text: a few neutral
    # words are common, most are rare.
    weights = np.arange(1, vocab_size - FIRST_NEUTRAL + 1) ** -ZIPF_EXPONENT
    return np.cumsum(weights / weights.sum())


def _neutral(rng: np.random.Generator, cdf: np.ndarray, size: int) -> list[int]:
    ranks = np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)
    return (FIRST_NEUTRAL + ranks).tolist()


def _example(rng: np.random.Generator, label: int, maxlen: int, cdf: np.ndarray) -> list[int]:
    k = int(rng.choice([1, 3]))
    signs = rng.choice([-1, 1], size=k)
    if (signs.sum() > 0) != bool(label):
        signs = -signs  # the flip keeps the distribution symmetric
    chunks: list[list[int]] = []
    for s in signs:
        negated = bool(rng.random() < NEGATION_RATE)
        polarity = -s if negated else s
        word = int(rng.choice(POSITIVE if polarity > 0 else NEGATIVE))
        chunks.append([int(rng.choice(NEGATIONS)), word] if negated else [word])
    for word in _neutral(rng, cdf, int(rng.integers(3))):  # negations before neutral words
        chunks.append([int(rng.choice(NEGATIONS)), word])
    used = 1 + sum(len(c) for c in chunks)
    length = int(rng.integers(max(used, maxlen // 4), maxlen + 1))
    chunks += [[word] for word in _neutral(rng, cdf, length - used)]
    # No chunk ends with a negation, so shuffling chunks never puts one in
    # front of a sentiment word by accident.
    order = rng.permutation(len(chunks))
    return [START] + [t for i in order for t in chunks[i]]


def sequences(
    n_samples: int = 4000,
    vocab_size: int = 1000,
    maxlen: int = 50,
    test_size: float = 0.2,
    seed: int = 0,
    padding: Literal["pre", "post"] = "pre",
) -> DataBundle:
    """A seeded binary sentiment task on token ids where word order matters.

    See the module docstring (and ``info["rule"]``) for the rule. Sequences
    have between ``maxlen // 4`` and ``maxlen`` tokens, start with token 1 and
    are padded with 0 to ``maxlen`` on the ``padding`` side ("pre" is Keras'
    default, as in the seed's IMDB slide). The classes are balanced and the
    train/test split is stratified.

    Example:
        >>> d = sequences(n_samples=100, maxlen=20)
        >>> d.x_train.shape, d.task, d.classes, d.info["vocab_size"]
        ((80, 20), 'binary', ('negative', 'positive'), 1000)
    """
    if n_samples < 2:
        raise ParameterError(f"The value of `n_samples` is {n_samples}, but must be `n_samples >= 2`.")
    if vocab_size < MIN_VOCAB:
        raise ParameterError(
            f"The value of `vocab_size` is {vocab_size}, but must be `vocab_size >= {MIN_VOCAB}`."
        )
    if maxlen < MIN_MAXLEN:
        raise ParameterError(f"The value of `maxlen` is {maxlen}, but must be `maxlen >= {MIN_MAXLEN}`.")
    if not 0.0 < test_size < 1.0:
        raise ParameterError(f"The value of `test_size` is {test_size}, but must be in (0, 1).")
    if padding not in ("pre", "post"):
        raise ParameterError(f"The value of `padding` is {padding!r}, but must be 'pre' or 'post'.")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_samples) % 2).astype(np.int64)
    cdf = _neutral_cdf(vocab_size)
    x = pad_sequences([_example(rng, int(label), maxlen, cdf) for label in y], maxlen, padding=padding)
    from sklearn.model_selection import train_test_split  # 0.5 s: only when used

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return DataBundle(
        name="sequences",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        task="binary",
        classes=("negative", "positive"),
        input_shape=(maxlen,),
        info={
            "source": "synthetic (epochlab.data.sequences)",
            "seed": seed,
            "vocab_size": vocab_size,
            "maxlen": maxlen,
            "padding": padding,
            "padding_idx": PAD,
            "rule": RULE,
        },
    )
