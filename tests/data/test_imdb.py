"""imdb(): Keras' index conventions, padding, tarball tokenization and safe extraction."""

from __future__ import annotations

import hashlib
import importlib
import tarfile

import numpy as np
import pytest

from epochlab.data.imdb import imdb, tokenize

imdb_module = importlib.import_module("epochlab.data.imdb")  # hidden by the function


@pytest.fixture
def tiny_npz(tmp_path, ragged):
    """Two train and two test reviews as word ranks (1 = most frequent)."""
    path = tmp_path / "imdb.npz"
    np.savez(
        path,
        x_train=ragged([[1, 2, 3], [4, 5, 6, 7, 8]]),
        y_train=np.array([1, 0]),
        x_test=ragged([[2], [9, 1]]),
        y_test=np.array([0, 1]),
    )
    return path


def test_num_words_turns_rare_words_into_oov_and_start_char_opens_each_review(tiny_npz):
    d = imdb(tiny_npz, num_words=7, maxlen=6, seed=None)
    # ranks + index_from(3): [4,5,6] kept; [7..11] are >= num_words -> oov 2.
    assert d.x_train.tolist() == [[0, 0, 1, 4, 5, 6], [1, 2, 2, 2, 2, 2]]
    assert d.x_test.tolist() == [[0, 0, 0, 0, 1, 5], [0, 0, 0, 1, 2, 4]]
    assert d.y_train.tolist() == [1, 0] and d.y_train.dtype == np.int64
    assert d.x_train.dtype == np.int64 and d.input_shape == (6,)
    assert d.task == "binary" and d.classes == ("neg", "pos")
    assert d.info["vocab_size"] == 7


def test_maxlen_pads_and_truncates_at_the_front(tiny_npz):
    d = imdb(tiny_npz, num_words=None, maxlen=4, seed=None)
    assert d.x_train.tolist() == [[1, 4, 5, 6], [8, 9, 10, 11]]  # start char cut, as Keras
    assert d.x_test.tolist() == [[0, 0, 1, 5], [0, 1, 12, 4]]
    assert d.info["vocab_size"] == 13  # the largest word (rank 9 -> 12) is kept


def test_skip_top_cuts_the_most_frequent_words_but_not_the_start_char(tiny_npz):
    d = imdb(tiny_npz, num_words=None, skip_top=6, maxlen=4, seed=None)
    assert d.x_train[0].tolist() == [1, 2, 2, 6]


def test_oov_none_drops_cut_words_and_start_none_omits_the_marker(tiny_npz):
    d = imdb(tiny_npz, num_words=7, maxlen=4, oov_char=None, seed=None)
    assert d.x_train.tolist() == [[1, 4, 5, 6], [0, 0, 0, 1]]
    d = imdb(tiny_npz, num_words=None, maxlen=None, start_char=None, oov_char=None,
             index_from=0, seed=None)
    assert d.x_train.tolist() == [[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]]


def keras_reference(x_train, y_train, x_test, y_test, num_words, maxlen, seed=113):
    """keras.datasets.imdb.load_data (skip_top=0) followed by pad_sequences."""
    rng = np.random.RandomState(seed)
    order = np.arange(len(x_train))
    rng.shuffle(order)
    x_train, y_train = [x_train[i] for i in order], y_train[order]
    order = np.arange(len(x_test))
    rng.shuffle(order)
    x_test, y_test = [x_test[i] for i in order], y_test[order]

    def encode(rows):
        rows = [[1] + [w + 3 for w in r] for r in rows]
        rows = [[w if w < num_words else 2 for w in r] for r in rows]
        out = np.zeros((len(rows), maxlen), dtype=np.int64)
        for i, r in enumerate(rows):
            r = r[-maxlen:]
            out[i, maxlen - len(r) :] = r
        return out

    return encode(x_train), y_train, encode(x_test), y_test


def test_random_reviews_match_keras_load_data_then_pad_sequences(tmp_path, ragged):
    rng = np.random.default_rng(0)
    rows = [list(rng.integers(1, 60, rng.integers(0, 25))) for _ in range(30)]
    labels = rng.integers(0, 2, 30)
    path = tmp_path / "imdb.npz"
    np.savez(path, x_train=ragged(rows[:20]), y_train=labels[:20],
             x_test=ragged(rows[20:]), y_test=labels[20:])

    d = imdb(path, num_words=40, maxlen=12)

    ref = keras_reference(rows[:20], labels[:20], rows[20:], labels[20:], 40, 12)
    for got, want in zip((d.x_train, d.y_train, d.x_test, d.y_test), ref, strict=True):
        np.testing.assert_array_equal(got, want)


def test_tokenize_lowercases_strips_breaks_and_splits_on_non_letters():
    assert tokenize("It's GREAT!<br /><br />10/10, a must-see") == [
        "it", "s", "great", "a", "must", "see",
    ]


REVIEWS = {
    "train": {"pos": ["Great great movie<br />loved it"], "neg": ["Bad movie. Awful!"]},
    "test": {"pos": ["zebra zebra zebra great"], "neg": ["bad"]},
}


def test_tarball_is_tokenized_with_a_vocabulary_from_train_only(
    tmp_path, cache, review_tarball
):
    tarball = review_tarball(tmp_path / "aclImdb_v1.tar.gz", REVIEWS)

    d = imdb(tarball, num_words=None, maxlen=6, seed=None)

    # train counts: great 2, movie 2, then 1 each (ties alphabetical)
    assert d.info["word_index"] == {
        "great": 1, "movie": 2, "awful": 3, "bad": 4, "it": 5, "loved": 6,
    }
    # neg files come first: "bad movie awful" -> ranks 4 2 3 -> +3
    assert d.x_train.tolist() == [[0, 0, 1, 7, 5, 6], [1, 4, 4, 5, 9, 8]]
    # "zebra" was only in test: out of vocabulary however often it occurs there.
    assert d.x_test.tolist() == [[0, 0, 0, 0, 1, 7], [0, 1, 2, 2, 2, 4]]
    assert d.y_train.tolist() == [0, 1] and d.y_test.tolist() == [0, 1]
    assert (cache / "imdb" / "aclImdb" / "train" / "pos" / "0_7.txt").is_file()
    # The extracted tree is reused, and can be passed directly.
    again = imdb(cache / "imdb" / "aclImdb", num_words=None, maxlen=6, seed=None)
    np.testing.assert_array_equal(again.x_test, d.x_test)


@pytest.mark.parametrize(
    "evil", ["aclImdb/../../escaped.txt", "../escaped.txt", "/tmp/epochlab-escaped.txt"]
)
def test_tar_member_escaping_the_cache_is_refused(tmp_path, cache, review_tarball, evil):
    tarball = review_tarball(tmp_path / "evil.tar.gz", REVIEWS, extra=[(evil, b"pwned")])

    with pytest.raises(ValueError, match="Refusing to extract"):
        imdb(tarball)

    assert not (tmp_path / "escaped.txt").exists() and not (cache / "escaped.txt").exists()
    assert list((cache / "imdb").iterdir()) == []  # nothing half-extracted left behind


def test_tar_symlink_member_is_refused(tmp_path, cache):
    tarball = tmp_path / "link.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        link = tarfile.TarInfo("aclImdb/train/pos/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match="link or device"):
        imdb(tarball)


def test_downloads_imdb_npz_into_the_cache(http_files, cache, tiny_npz, monkeypatch):
    data = tiny_npz.read_bytes()
    url = http_files.add("imdb.npz", data)
    monkeypatch.setattr(imdb_module, "NPZ_URLS", (url,))
    monkeypatch.setattr(imdb_module, "NPZ_SHA256", hashlib.sha256(data).hexdigest())

    d = imdb(num_words=7, maxlen=6, seed=None)

    assert d.x_train.tolist()[0] == [0, 0, 1, 4, 5, 6]
    assert (cache / "imdb" / "imdb.npz").read_bytes() == data


def test_nothing_found_without_download_names_the_expected_files(cache):
    with pytest.raises(FileNotFoundError, match="imdb.npz"):
        imdb(download=False)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"maxlen": 0}, "maxlen"),
        ({"num_words": -1}, "num_words"),
        ({"skip_top": -1}, "skip_top"),
        ({"oov_char": 5}, "oov_char"),
    ],
)
def test_bad_arguments_name_the_parameter(tiny_npz, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        imdb(tiny_npz, **kwargs)
