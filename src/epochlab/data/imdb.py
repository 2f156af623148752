"""IMDB movie-review sentiment: Keras' ``imdb.npz`` or the original tarball.

This module owns turning IMDB into padded integer sequences with Keras'
conventions: index 0 pads, ``start_char`` opens each review, ``oov_char``
stands for words cut by ``num_words``/``skip_top``, and real words start at
``index_from + 1`` in order of frequency. Two sources give the same layout:

* Keras' ``imdb.npz`` (reviews already as word ranks), downloaded on first use
  through :func:`epochlab.data.download.fetch`;
* Stanford's ``aclImdb_v1.tar.gz`` (raw text), extracted safely into the cache
  and tokenized here, with the vocabulary built from the training split only.

Differences from Keras, on purpose: sequences longer than ``maxlen`` are
truncated (``pad_sequences(padding="pre", truncating="pre")``), not dropped;
``start_char`` is a marker and is never replaced by ``oov_char``; with
``num_words=None`` every word is kept (Keras turns the largest index into
``oov_char``). In the tarball, test words never seen in training become
``oov_char`` (Keras' preprocessed file simply lacks them).
"""

from __future__ import annotations

import itertools
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from epochlab.data.base import DataBundle
from epochlab.data.download import DownloadError, cache_dir, fetch
from epochlab.validation import ParameterError

__all__ = ["imdb", "tokenize"]

NPZ_NAME = "imdb.npz"
NPZ_URLS = ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz",)
# keras/src/datasets/imdb.py, `file_hash`.
NPZ_SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"
TARBALL_NAME = "aclImdb_v1.tar.gz"
TARBALL_URLS = (
    "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
    "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
)
# TensorFlow Datasets, url_checksums/imdb_reviews.txt (84,125,825 bytes).
TARBALL_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")  # runs of letters, any alphabet
_SPLITS = ("train", "test")
_LABELS = (("neg", 0), ("pos", 1))


def imdb(
    path: str | Path | None = None,
    *,
    num_words: int | None = 10000,
    maxlen: int | None = 200,
    skip_top: int = 0,
    index_from: int = 3,
    oov_char: int | None = 2,
    start_char: int | None = 1,
    download: bool = True,
    seed: int | None = 113,
) -> DataBundle:
    """IMDB reviews as int64 sequences (N, maxlen), pre-padded with 0; labels 0/1.

    ``path`` may be Keras' ``imdb.npz``, the tarball ``aclImdb_v1.tar.gz``, an
    extracted ``aclImdb`` directory, or a directory holding one of them. With
    no ``path`` the cache (``cache_dir() / "imdb"``) is used; ``imdb.npz`` is
    downloaded there on first use when ``download`` is True.

    Args:
        path: Where the data is; None for the cache.
        num_words: Keep word indices below this bound (the vocabulary size an
            embedding needs); the rest become ``oov_char``. None keeps all.
        maxlen: Length of every sequence: shorter ones are padded with 0 at
            the front, longer ones lose their beginning. None: the longest.
        skip_top: Word indices below this become ``oov_char`` (as in Keras,
            compared with the final index, so the reserved indices count).
        index_from: Offset added to word ranks (rank 1 = most frequent word).
        oov_char: Index of cut words; None drops them instead.
        start_char: Index that opens every review; None for no marker.
        download: Download ``imdb.npz`` when nothing is found.
        seed: Seed of Keras' shuffle of each split (113 reproduces Keras'
            order); None keeps the file order.

    Returns:
        A binary :class:`DataBundle`; ``info["vocab_size"]`` is the number of
        indices an embedding layer needs.

    Example:
        >>> d = imdb(num_words=10000, maxlen=200)  # doctest: +SKIP
        >>> d.x_train.shape, d.info["vocab_size"]  # doctest: +SKIP
        ((25000, 200), 10000)
    """
    _check_int("num_words", num_words, 1, optional=True)
    _check_int("maxlen", maxlen, 1, optional=True)
    _check_int("skip_top", skip_top, 0)
    _check_int("index_from", index_from, 0)
    _check_int("oov_char", oov_char, 1, optional=True)
    _check_int("start_char", start_char, 1, optional=True)
    for name, value in (("oov_char", oov_char), ("start_char", start_char)):
        if value is not None and value > index_from:
            raise ParameterError(
                f"The value of `{name}` is {value}, but must be `{name} <= index_from` "
                f"({index_from}) so that it cannot collide with a word index."
            )

    kind, source = _locate(path, download)
    info: dict = {"source": str(source)}
    if kind == "npz":
        (train, y_train), (test, y_test) = _read_npz(source)
    else:
        root = _extract(source) if kind == "tarball" else source
        (train, y_train), (test, y_test), word_index = _read_reviews(root)
        info["word_index"] = word_index

    if seed is not None:
        rng = np.random.RandomState(seed)  # Keras' order: train first, then test.
        order = np.arange(len(train))
        rng.shuffle(order)
        train, y_train = [train[i] for i in order], y_train[order]
        order = np.arange(len(test))
        rng.shuffle(order)
        test, y_test = [test[i] for i in order], y_test[order]

    upper = num_words
    if upper is None:
        largest = max((max(s, default=0) for s in itertools.chain(train, test)), default=0)
        upper = int(largest) + index_from + 1
    opts = dict(
        upper=upper,
        skip_top=skip_top,
        index_from=index_from,
        oov_char=oov_char,
        start_char=start_char,
    )
    x_train = _encode(train, **opts)
    x_test = _encode(test, **opts)
    width = maxlen if maxlen is not None else max(_longest(x_train), _longest(x_test), 1)
    reserved = [c for c in (oov_char, start_char) if c is not None]
    info.update(
        vocab_size=max([upper, *(c + 1 for c in reserved)]),
        num_words=num_words,
        maxlen=width,
        skip_top=skip_top,
        index_from=index_from,
        oov_char=oov_char,
        start_char=start_char,
        seed=seed,
    )
    return DataBundle(
        name="imdb",
        x_train=_pad(x_train, width),
        y_train=y_train,
        x_test=_pad(x_test, width),
        y_test=y_test,
        task="binary",
        classes=("neg", "pos"),
        input_shape=(width,),
        info=info,
    )


def tokenize(text: str) -> list[str]:
    """Lowercase, drop HTML line breaks, split on anything that is not a letter.

    Example:
        >>> tokenize("Great film!<br /><br />I'd watch it AGAIN.")
        ['great', 'film', 'i', 'd', 'watch', 'it', 'again']
    """
    return _WORD.findall(_BREAK.sub(" ", text.lower()))


# --- finding the data -------------------------------------------------------


def _locate(path: str | Path | None, download: bool) -> tuple[str, Path]:
    """Return ``(kind, location)`` with kind ``npz``, ``tarball`` or ``dir``."""
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            if path.name.endswith(".npz"):
                return "npz", path
            if path.name.endswith((".tar.gz", ".tgz", ".tar")):
                return "tarball", path
            raise ParameterError(
                f"The value of `path` is {str(path)!r}, but must be an .npz file, a .tar.gz "
                "tarball, an extracted aclImdb directory or a directory holding one."
            )
        directory, in_cache = path, False
    else:
        directory, in_cache = cache_dir() / "imdb", True

    npz = directory / NPZ_NAME
    for candidate in (directory, directory / "aclImdb"):
        if _is_review_dir(candidate) and not (in_cache and npz.is_file()):
            return "dir", candidate
    if (directory / TARBALL_NAME).is_file() and not npz.is_file():
        return "tarball", directory / TARBALL_NAME
    if npz.is_file() and not (in_cache and download):
        return "npz", npz
    if not download:
        raise FileNotFoundError(
            f"No IMDB data in {directory}: expected {NPZ_NAME}, {TARBALL_NAME} or an "
            "extracted aclImdb directory. Put one there, or pass `download=True`."
        )
    try:
        # Cached copies are re-verified here and fetched again when corrupt.
        return "npz", fetch(list(NPZ_URLS), npz, NPZ_SHA256)
    except DownloadError as exc:
        raise type(exc)(
            f"{exc}\nFor IMDB, put {NPZ_NAME} (or {TARBALL_NAME}) in {directory}."
        ) from exc


def _is_review_dir(directory: Path) -> bool:
    return all((directory / s / lab).is_dir() for s in _SPLITS for lab, _ in _LABELS)


def _extract(tarball: Path) -> Path:
    """Safely extract the train/test reviews of ``tarball`` into the cache."""
    into = cache_dir() / "imdb"
    target = into / "aclImdb"
    if _is_review_dir(target):
        return target
    into.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".aclImdb-", dir=into))
    try:
        with tarfile.open(tarball) as tar:
            members = tar.getmembers()
            for member in members:
                _refuse_unsafe(member, staging, tarball)
            wanted = [m for m in members if m.isfile() and _is_review(m.name)]
            if hasattr(tarfile, "data_filter"):  # Python 3.12, 3.11.4+, 3.10.12+
                tar.extractall(staging, members=wanted, filter="data")
            else:  # Older Pythons: _refuse_unsafe above is the whole defence.
                tar.extractall(staging, members=wanted)  # noqa: S202
        roots = [p for p in (staging / "aclImdb", staging) if _is_review_dir(p)]
        if not roots:
            raise ValueError(
                f"{tarball} does not hold aclImdb/{{train,test}}/{{pos,neg}}/ review files."
            )
        roots[0].replace(target)  # atomic: a half-extracted tree never looks complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_review(name: str) -> bool:
    parts = Path(name).parts
    return (
        len(parts) >= 3
        and parts[-3] in _SPLITS
        and parts[-2] in ("pos", "neg")
        and parts[-1].endswith(".txt")
    )


def _refuse_unsafe(member: tarfile.TarInfo, root: Path, tarball: Path) -> None:
    """Raise unless ``member`` is a plain file or directory that stays inside ``root``."""
    base = root.resolve()
    dest = (base / member.name).resolve()
    inside = dest == base or base in dest.parents
    if not inside or Path(member.name).is_absolute():
        raise ValueError(
            f"Refusing to extract {tarball}: member {member.name!r} would be written "
            f"outside {cache_dir() / 'imdb'}."
        )
    if not (member.isfile() or member.isdir()):
        raise ValueError(
            f"Refusing to extract {tarball}: member {member.name!r} is a link or device; "
            "the IMDB archive holds only files and directories."
        )


# --- reading ----------------------------------------------------------------


def _read_npz(path: Path) -> tuple[tuple[list, np.ndarray], tuple[list, np.ndarray]]:
    # Keras' file stores ragged lists as object arrays, which only pickle can
    # read: load npz files you trust (the cached download is checksummed).
    with np.load(path, allow_pickle=True) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
        if missing:
            raise ValueError(
                f"{path} lacks the arrays {missing}; a Keras-style imdb.npz holds x_train, "
                f"y_train, x_test, y_test (found {sorted(f.files)})."
            )
        out = []
        for split in _SPLITS:
            xs = [list(map(int, s)) for s in f[f"x_{split}"]]
            ys = np.asarray(f[f"y_{split}"]).astype(np.int64)
            _check_labels(xs, ys, split, path)
            out.append((xs, ys))
    return out[0], out[1]


def _read_reviews(root: Path) -> tuple[tuple[list, np.ndarray], tuple[list, np.ndarray], dict]:
    """Tokenize an aclImdb tree; rank words by their frequency in train only."""
    tokens: dict[str, list[list[str]]] = {}
    labels: dict[str, np.ndarray] = {}
    for split in _SPLITS:
        docs, ys = [], []
        for folder, label in _LABELS:
            for file in sorted((root / split / folder).glob("*.txt")):
                docs.append(tokenize(file.read_text(encoding="utf-8", errors="replace")))
                ys.append(label)
        tokens[split], labels[split] = docs, np.asarray(ys, dtype=np.int64)
    counts = Counter(itertools.chain.from_iterable(tokens["train"]))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: alphabetical
    word_index = {word: rank for rank, (word, _) in enumerate(ranked, start=1)}
    # Words never seen in training get rank -1, which always becomes oov_char.
    seqs = {s: [[word_index.get(w, -1) for w in doc] for doc in tokens[s]] for s in _SPLITS}
    for s in _SPLITS:
        _check_labels(seqs[s], labels[s], s, root)
    return (seqs["train"], labels["train"]), (seqs["test"], labels["test"]), word_index


def _check_labels(xs: list, ys: np.ndarray, split: str, source: Path) -> None:
    if len(xs) != len(ys):
        raise ValueError(f"{source}: {len(xs)} {split} reviews but {len(ys)} labels.")
    if not xs:
        raise ValueError(f"{source}: the {split} split holds no reviews.")
    if not np.isin(ys, (0, 1)).all():
        raise ValueError(f"{source}: {split} labels must be 0 or 1, found {np.unique(ys)}.")


# --- encoding ---------------------------------------------------------------


def _encode(
    seqs: Sequence[Sequence[int]],
    *,
    upper: int,
    skip_top: int,
    index_from: int,
    oov_char: int | None,
    start_char: int | None,
) -> list[np.ndarray]:
    """Word ranks to final indices, with Keras' cut and reserved characters."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter(
        itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum())
    )
    index = flat + index_from
    keep = (flat >= 1) & (index >= skip_top) & (index < upper)
    if oov_char is not None:
        index = np.where(keep, index, oov_char)
    else:
        cum = np.concatenate([[0], np.cumsum(keep)])
        ends = np.cumsum(lengths)
        lengths = cum[ends] - cum[ends - lengths]
        index = index[keep]
    rows = np.split(index, np.cumsum(lengths)[:-1]) if len(seqs) else []
    if start_char is not None:
        rows = [np.concatenate(([start_char], r)) for r in rows]
    return rows


def _longest(rows: list[np.ndarray]) -> int:
    return max((len(r) for r in rows), default=0)


def _pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    """``pad_sequences(rows, maxlen=width, padding="pre", truncating="pre", value=0)``."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        take = min(len(row), width)
        if take:
            out[i, width - take :] = row[len(row) - take :]
    return out


def _check_int(name: str, value: object, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        allowed = f"`{name} >= {minimum}`" + (" or None" if optional else "")
        raise ParameterError(f"The value of `{name}` is {value!r}, but must be {allowed}.")
