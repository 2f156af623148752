"""mnist(): IDX (gzip or plain) and npz reading, validation, download into the cache."""

from __future__ import annotations

import gzip
import hashlib
import importlib

import numpy as np
import pytest

from epochlab.data.download import ChecksumError, DownloadError
from epochlab.data.mnist import mnist, read_idx

# The package exports the function `mnist`, which hides the module's name.
mnist_module = importlib.import_module("epochlab.data.mnist")


def write_files(directory, files, compress=True):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if compress:
            (directory / name).write_bytes(data)
        else:
            (directory / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))


def assert_matches(bundle, arrays):
    assert bundle.x_train.shape == (20, 1, 28, 28) and bundle.x_test.shape == (10, 1, 28, 28)
    assert bundle.x_train.dtype == np.float32 and bundle.y_train.dtype == np.int64
    np.testing.assert_allclose(bundle.x_train[:, 0] * 255, arrays["x_train"], atol=1e-3)
    np.testing.assert_array_equal(bundle.y_test, arrays["y_test"])
    assert 0.0 <= bundle.x_train.min() and bundle.x_train.max() <= 1.0
    assert bundle.task == "multiclass" and bundle.classes == tuple("0123456789")
    assert bundle.input_shape == (1, 28, 28)


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_reads_the_four_idx_files_from_a_directory(tmp_path, mnist_files, mnist_arrays, compress):
    write_files(tmp_path / "m", mnist_files, compress)
    assert_matches(mnist(tmp_path / "m", download=False), mnist_arrays)


def test_reads_a_keras_style_npz(tmp_path, mnist_arrays):
    np.savez(tmp_path / "mnist.npz", **mnist_arrays)
    assert_matches(mnist(tmp_path / "mnist.npz", download=False), mnist_arrays)
    assert_matches(mnist(tmp_path, download=False), mnist_arrays)  # found in the directory


def test_npz_missing_an_array_names_what_is_expected(tmp_path, mnist_arrays):
    del mnist_arrays["y_test"]
    np.savez(tmp_path / "mnist.npz", **mnist_arrays)
    with pytest.raises(ValueError, match="y_test"):
        mnist(tmp_path / "mnist.npz")


def test_bad_magic_number_is_rejected_with_the_number_in_the_message(tmp_path, make_idx):
    data = bytearray(make_idx(np.zeros((3, 28, 28), np.uint8)))
    data[2] = 0x0D  # float32 type code: not unsigned bytes
    (tmp_path / "x.idx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="0x00000d03"):
        read_idx(tmp_path / "x.idx")


def test_labels_file_given_where_images_are_expected_is_rejected(tmp_path, make_idx):
    (tmp_path / "y.idx").write_bytes(make_idx(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="3 dimensions"):
        read_idx(tmp_path / "y.idx", expected_ndim=3)


def test_truncated_idx_body_is_rejected(tmp_path, make_idx):
    (tmp_path / "x.idx").write_bytes(make_idx(np.zeros((3, 28, 28), np.uint8))[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(tmp_path / "x.idx")


def test_truncated_gzip_is_rejected_as_corrupt(tmp_path, make_idx):
    data = gzip.compress(make_idx(np.arange(3000, dtype=np.uint8).reshape(3, 1000)))
    (tmp_path / "x.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(tmp_path / "x.gz")


def test_image_and_label_counts_must_agree(tmp_path, mnist_files, make_idx):
    write_files(tmp_path, mnist_files)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(make_idx(np.zeros(9, np.uint8)))
    with pytest.raises(ValueError, match="10 test images but 9 test labels"):
        mnist(tmp_path, download=False)


def test_missing_files_without_download_say_which_and_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz") as err:
        mnist(tmp_path, download=False)
    assert str(tmp_path) in str(err.value)


def test_test_size_pools_and_makes_a_stratified_seeded_split(tmp_path, mnist_files):
    write_files(tmp_path, mnist_files)
    a = mnist(tmp_path, test_size=1 / 3, seed=1)
    b = mnist(tmp_path, test_size=1 / 3, seed=1)
    assert a.x_train.shape[0] == 20 and a.x_test.shape[0] == 10
    assert np.bincount(a.y_test, minlength=10).tolist() == [1] * 10
    np.testing.assert_array_equal(a.x_train, b.x_train)
    with pytest.raises(ValueError, match="`test_size`"):
        mnist(tmp_path, test_size=1.5)


@pytest.fixture
def served_mnist(http_files, mnist_files, monkeypatch):
    """The tiny files on the local server, with their checksums in the table."""
    for name, data in mnist_files.items():
        http_files.add(name, data)
    monkeypatch.setattr(mnist_module, "MIRRORS", (http_files.url("dead/"), http_files.url("")))
    table = {
        key: (name, hashlib.sha256(mnist_files[name]).hexdigest())
        for key, (name, _) in mnist_module.FILES.items()
    }
    monkeypatch.setattr(mnist_module, "FILES", table)
    return http_files


def test_downloads_into_the_cache_on_first_use_through_the_mirrors(
    served_mnist, cache, mnist_arrays
):
    assert_matches(mnist(), mnist_arrays)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(
        name for name, _ in mnist_module.FILES.values()
    )
    # Loading again re-verifies the cache and downloads nothing.
    served = len(served_mnist.log)
    assert_matches(mnist(), mnist_arrays)
    assert len(served_mnist.log) == served


def test_a_corrupt_cached_file_is_fetched_again(served_mnist, cache, mnist_arrays):
    mnist()
    (cache / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bnonsense")
    with pytest.warns(UserWarning, match="corrupt or truncated gzip"):
        assert_matches(mnist(), mnist_arrays)


def test_wrong_checksum_in_the_table_fails_loudly(served_mnist, cache, monkeypatch):
    name = "train-labels-idx1-ubyte.gz"
    monkeypatch.setitem(mnist_module.FILES, "y_train", (name, "0" * 64))
    with pytest.raises(ChecksumError, match="expected sha256 0000"):
        mnist()
    assert not (cache / "mnist" / name).exists()


def test_no_network_points_to_the_cache_directory_and_to_digits(cache, refused_url, monkeypatch):
    monkeypatch.setattr(mnist_module, "MIRRORS", (refused_url.removesuffix("file.bin"),))
    with pytest.raises(DownloadError) as err:
        mnist()
    message = str(err.value)
    assert str(cache / "mnist") in message and "digits" in message


@pytest.fixture
def tiny_content(mnist_arrays, monkeypatch):
    """The content table describes the tiny files, as it describes the real ones."""
    table = {k: (a.shape, None if k.startswith("x") else
                 tuple(int(c) for c in np.bincount(a, minlength=10)))
             for k, a in mnist_arrays.items()}
    monkeypatch.setattr(mnist_module, "CONTENT", table)


def test_a_recompressed_valid_file_in_the_cache_is_read_and_kept(
    served_mnist, cache, mnist_arrays, tiny_content
):
    mnist()
    path = cache / "mnist" / "train-images-idx3-ubyte.gz"
    # The same IDX bytes, gzipped at another level with a time stamp: other gzip bytes.
    recompressed = gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=12345)
    path.write_bytes(recompressed)
    served = len(served_mnist.log)
    assert_matches(mnist(), mnist_arrays)
    assert path.read_bytes() == recompressed  # kept, not replaced
    assert len(served_mnist.log) == served  # nothing downloaded
    assert not path.with_name(path.name + ".corrupt").exists()


def test_a_file_with_other_content_is_moved_aside_never_deleted(
    served_mnist, cache, mnist_arrays, tiny_content, make_idx
):
    mnist()
    path = cache / "mnist" / "train-labels-idx1-ubyte.gz"
    other = gzip.compress(make_idx(np.zeros(20, dtype=np.uint8)))  # valid IDX, wrong labels
    path.write_bytes(other)
    with pytest.warns(UserWarning, match=r"label counts .* moved to .*\.corrupt"):
        assert_matches(mnist(), mnist_arrays)
    assert path.with_name(path.name + ".corrupt").read_bytes() == other
    assert hashlib.sha256(path.read_bytes()).hexdigest() == mnist_module.FILES["y_train"][1]


def test_a_failed_redownload_names_the_moved_file(cache, refused_url, monkeypatch, mnist_files):
    monkeypatch.setattr(mnist_module, "MIRRORS", (refused_url.removesuffix("file.bin"),))
    write_files(cache / "mnist", {"train-images-idx3-ubyte.gz": b"\x1f\x8bnot really"})
    with pytest.raises(DownloadError) as err, pytest.warns(UserWarning):
        mnist()
    assert "moved to" in str(err.value) and ".corrupt" in str(err.value)
    assert (cache / "mnist" / "train-images-idx3-ubyte.gz.corrupt").read_bytes() == (
        b"\x1f\x8bnot really")
