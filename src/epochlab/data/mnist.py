"""MNIST from the four standard IDX files or a Keras-style ``mnist.npz``.

This module owns reading MNIST: finding the files (a path you give, or the
cache directory), downloading the four standard files on first use through
:func:`epochlab.data.download.fetch` (mirrors, resume, SHA-256), and parsing
IDX with its magic numbers and sizes checked. Files you put in place yourself
are read as they are; files in the cache are re-verified on every load.
Anything in the IDX or npz layout works, Fashion-MNIST included.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from epochlab.data.base import DataBundle
from epochlab.data.download import DownloadError, cache_dir, fetch

__all__ = ["FILES", "MIRRORS", "mnist", "read_idx"]

# Base URLs tried in order: torchvision's mirror, the TensorFlow Datasets
# copy, then Yann LeCun's original site (which now often refuses robots).
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# The standard gzipped files and their SHA-256 (as listed by TensorFlow
# Datasets, url_checksums/mnist.txt; sizes 9912422, 28881, 1648877, 4542 bytes).
FILES: dict[str, tuple[str, str]] = {
    "x_train": (
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "y_train": (
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "x_test": (
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "y_test": (
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}

# Keras' single-file copy, read when found (not downloaded: the IDX files are
# the reference). https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz
NPZ_NAME = "mnist.npz"
NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"

# What the official files hold: shapes, and the count of each digit among the labels.
# A cached file whose compressed bytes differ from the official archive (re-compressed,
# or stored uncompressed under the .gz name) is kept when its content matches these.
CONTENT: dict[str, tuple[tuple[int, ...], tuple[int, ...] | None]] = {
    "x_train": ((60000, 28, 28), None),
    "y_train": ((60000,), (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)),
    "x_test": ((10000, 28, 28), None),
    "y_test": ((10000,), (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)),
}

_IDX_UBYTE = 0x08
_EXPECTED_NDIM = {"x_train": 3, "y_train": 1, "x_test": 3, "y_test": 1}


def mnist(
    path: str | Path | None = None,
    *,
    download: bool = True,
    test_size: float | None = None,
    seed: int = 0,
) -> DataBundle:
    """MNIST as float32 images in [0, 1], shape (N, 1, 28, 28), and int64 labels.

    Files are looked for in ``path`` (a directory holding the four IDX files,
    gzipped or not, or ``mnist.npz``; or the path of an ``.npz`` file), else
    in ``cache_dir() / "mnist"``. Missing IDX files are downloaded when
    ``download`` is True (into ``path`` when given, else the cache).

    Args:
        path: A directory with the files, or an ``.npz`` file. None: the cache.
        download: Fetch missing files from the mirrors in :data:`MIRRORS`.
        test_size: None keeps the standard split (60,000 / 10,000). A
            fraction in (0, 1) pools both and makes a stratified split.
        seed: Seed of that re-split (unused when ``test_size`` is None).

    Returns:
        A :class:`DataBundle`; ``classes`` are ``"0"`` to ``"9"``.

    Raises:
        FileNotFoundError: Files are missing and ``download`` is False.
        DownloadError: Files are missing and could not be downloaded.
        ValueError: A file is not valid IDX or npz (magic number, sizes).

    Example:
        >>> d = mnist()  # doctest: +SKIP
        >>> d.x_train.shape, d.x_test.shape  # doctest: +SKIP
        ((60000, 1, 28, 28), (10000, 1, 28, 28))
    """
    if test_size is not None and not 0.0 < test_size < 1.0:
        raise ValueError(
            f"The value of `test_size` is {test_size}, but must be None (the standard "
            "split) or in (0, 1)."
        )
    arrays, source = _load_arrays(path, download)
    x_tr, y_tr, x_te, y_te = (arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    _check_pairs(x_tr, y_tr, "train", source)
    _check_pairs(x_te, y_te, "test", source)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(
            f"Train images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]} in {source}."
        )
    if test_size is not None:
        from sklearn.model_selection import train_test_split  # 0.6 s to import: when used

        x_all, y_all = np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])
        x_tr, x_te, y_tr, y_te = train_test_split(
            x_all, y_all, test_size=test_size, random_state=seed, stratify=y_all
        )

    def images(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) / 255.0)[:, None, :, :]

    return DataBundle(
        name="mnist",
        x_train=images(x_tr),
        y_train=y_tr.astype(np.int64),
        x_test=images(x_te),
        y_test=y_te.astype(np.int64),
        task="multiclass",
        classes=tuple(str(c) for c in range(10)),
        input_shape=(1, *x_tr.shape[1:]),
        info={"source": str(source), "test_size": test_size, "seed": seed},
    )


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzipped or not) into a uint8 array.

    The header is checked: two zero bytes, type ``0x08`` (unsigned byte), the
    number of dimensions (``expected_ndim`` when given), and a body of exactly
    the size the dimensions announce.

    Example:
        >>> read_idx("train-labels-idx1-ubyte.gz", expected_ndim=1).shape  # doctest: +SKIP
        (60000,)
    """
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path} is a corrupt or truncated gzip file ({exc}).") from exc
    if len(data) < 4:
        raise ValueError(f"{path} is not an IDX file: {len(data)} bytes, shorter than a header.")
    magic = int.from_bytes(data[:4], "big")
    zero, dtype, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype != _IDX_UBYTE:
        raise ValueError(
            f"{path} is not an IDX file of unsigned bytes: magic number 0x{magic:08x}, "
            "expected 0x0000080N (0x00000803 for images, 0x00000801 for labels)."
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(
            f"{path} has magic number 0x{magic:08x} ({ndim} dimensions), but "
            f"0x{0x800 + expected_ndim:08x} ({expected_ndim} dimensions) was expected."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated inside its header ({len(data)} bytes).")
    dims = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body != expected:
        raise ValueError(
            f"{path} announces dimensions {dims} ({expected} bytes of data) but holds "
            f"{body} bytes: the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_arrays(path: str | Path | None, download: bool) -> tuple[dict[str, np.ndarray], Path]:
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            if path.suffix != ".npz":
                raise ValueError(
                    f"The value of `path` is {str(path)!r}, a file that is not .npz; pass the "
                    "directory holding the four IDX files instead."
                )
            return _read_npz(path), path
        directory, in_cache = path, False
    else:
        directory, in_cache = cache_dir() / "mnist", True

    found = {key: _find_idx(directory, name) for key, (name, _) in FILES.items()}
    npz = directory / NPZ_NAME
    if all(found.values()) and not (in_cache and download):
        return {k: read_idx(p, _EXPECTED_NDIM[k]) for k, p in found.items()}, directory
    if not all(found.values()) and npz.is_file():
        return _read_npz(npz), npz
    if not download:
        missing = [FILES[k][0] for k, p in found.items() if p is None]
        raise FileNotFoundError(
            f"MNIST files are missing from {directory}: {', '.join(missing)} (gzipped or "
            f"not), or {NPZ_NAME}. Put them there, or pass `download=True`."
        )
    paths = {}
    for key, (name, sha) in FILES.items():
        local = found[key]
        # Cached downloads are re-verified; files you placed yourself are trusted.
        if local is not None and not (in_cache and local.name == name):
            paths[key] = local
            continue
        try:
            paths[key] = fetch([m + name for m in MIRRORS], directory / name, sha,
                               verify=_content_check(key))
        except DownloadError as exc:
            raise type(exc)(
                f"{exc}\nFor MNIST the directory is {directory}: the four files "
                f"{', '.join(n for n, _ in FILES.values())}, or {NPZ_NAME}."
            ) from exc
    return {k: read_idx(p, _EXPECTED_NDIM[k]) for k, p in paths.items()}, directory


def _content_check(key: str):
    """``check(path)``: None when the IDX file holds MNIST's ``key`` array, else what is wrong."""

    def check(path: Path) -> str | None:
        try:
            array = read_idx(path, _EXPECTED_NDIM[key])
        except ValueError as e:
            return str(e)
        shape, counts = CONTENT[key]
        if array.shape != shape:
            return f"it holds an array of shape {array.shape}, not MNIST's {shape}"
        if counts is not None:
            found = tuple(int(c) for c in np.bincount(array.ravel(), minlength=10))
            if found != counts:
                return f"its label counts {found} are not MNIST's {counts}"
        return None

    return check


def _find_idx(directory: Path, name: str) -> Path | None:
    """The file for ``name`` in any of its usual spellings, or None."""
    stem = name.removesuffix(".gz")
    dotted = stem.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte
    for candidate in (name, stem, dotted, dotted + ".gz"):
        p = directory / candidate
        if p.is_file():
            return p
    return None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    # Numeric arrays only: no pickle, so a hostile file cannot run code.
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in FILES if k not in f.files]
        if missing:
            raise ValueError(
                f"{path} lacks the arrays {missing}; a Keras-style mnist.npz holds "
                f"x_train, y_train, x_test, y_test (found {sorted(f.files)})."
            )
        arrays = {k: np.asarray(f[k]) for k in FILES}
    for k, ndim in _EXPECTED_NDIM.items():
        if arrays[k].ndim != ndim:
            raise ValueError(
                f"{path}: `{k}` has shape {arrays[k].shape}, but must have {ndim} dimensions."
            )
    return arrays


def _check_pairs(x: np.ndarray, y: np.ndarray, split: str, source: Path) -> None:
    if len(x) != len(y):
        raise ValueError(
            f"{source}: {len(x)} {split} images but {len(y)} {split} labels; they must match."
        )
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(
            f"{source}: {split} labels range over {y.min()}..{y.max()}, but must be digits 0..9."
        )


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
