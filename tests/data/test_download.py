"""fetch(): mirrors, resume, checksums and the cache, against a local server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from epochlab.data.download import ChecksumError, DownloadError, cache_dir, fetch

DATA = bytes(range(256)) * 40  # 10 KiB, distinct bytes so corruption is visible


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_good_download_lands_verified_and_leaves_no_part_file(http_files, cache):
    url = http_files.add("f.bin", DATA)
    dest = cache / "f.bin"

    assert fetch(url, dest, sha256(DATA), progress=False) == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_suffix(".bin.part").exists()


@pytest.mark.parametrize("mode", ["ok", "no-length"])
def test_progress_bar_handles_known_and_unknown_sizes(http_files, cache, mode):
    url = http_files.add("f.bin", DATA, mode)
    fetch(url, cache / "f.bin", sha256(DATA), progress=True)
    assert (cache / "f.bin").read_bytes() == DATA


def test_progress_false_writes_nothing(http_files, cache, capfd):
    url = http_files.add("f.bin", DATA)
    fetch(url, cache / "f.bin", sha256(DATA), progress=False)
    assert capfd.readouterr() == ("", "")


def test_a_cached_good_file_is_not_downloaded_again(http_files, cache):
    url = http_files.add("f.bin", DATA)
    fetch(url, cache / "f.bin", sha256(DATA), progress=False)
    fetch(url, cache / "f.bin", sha256(DATA), progress=False)
    assert len(http_files.requests("f.bin")) == 1


def test_checksum_mismatch_raises_with_expected_got_and_url_and_caches_nothing(
    http_files, cache
):
    url = http_files.add("f.bin", DATA, "corrupt")
    dest = cache / "f.bin"

    with pytest.raises(ChecksumError) as err:
        fetch(url, dest, sha256(DATA), progress=False)

    message = str(err.value)
    assert sha256(DATA) in message and url in message and "got" in message
    assert list(cache.iterdir()) == []


def test_truncated_download_is_resumed_with_range_on_the_next_call(http_files, cache):
    url = http_files.add("f.bin", DATA, "truncate", "ok")
    dest = cache / "f.bin"
    part = cache / "f.bin.part"

    with pytest.raises(DownloadError, match="run again to resume"):
        fetch(url, dest, sha256(DATA), progress=False)
    assert not dest.exists()
    assert part.stat().st_size == len(DATA) // 2

    fetch(url, dest, sha256(DATA), progress=False)

    assert dest.read_bytes() == DATA
    assert not part.exists()
    assert http_files.requests("f.bin")[-1] == (f"bytes={len(DATA) // 2}-", "ok")


def test_resume_falls_back_to_a_full_download_when_range_is_ignored(http_files, cache):
    url = http_files.add("f.bin", DATA, "truncate", "ignore-range")
    dest = cache / "f.bin"
    with pytest.raises(DownloadError):
        fetch(url, dest, sha256(DATA), progress=False)

    fetch(url, dest, sha256(DATA), progress=False)

    assert dest.read_bytes() == DATA  # not the half file plus the whole file
    assert http_files.requests("f.bin")[-1][1] == "ignore-range"


def test_a_bad_partial_file_is_discarded_and_downloaded_again_in_full(http_files, cache):
    url = http_files.add("f.bin", DATA)
    (cache).mkdir()
    (cache / "f.bin.part").write_bytes(b"garbage!" * 10)

    fetch(url, cache / "f.bin", sha256(DATA), progress=False)

    assert (cache / "f.bin").read_bytes() == DATA
    assert [rng is not None for rng, _ in http_files.requests("f.bin")] == [True, False]


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_cached_file_is_detected_and_fetched_again(http_files, cache, damage):
    url = http_files.add("f.bin", DATA)
    dest = cache / "f.bin"
    fetch(url, dest, sha256(DATA), progress=False)
    broken = DATA[:100] if damage == "truncated" else b"X" + DATA[1:]
    dest.write_bytes(broken)

    with pytest.warns(UserWarning, match=r"SHA-256 differs .* moved to .*f\.bin\.corrupt"):
        fetch(url, dest, sha256(DATA), progress=False)

    assert dest.read_bytes() == DATA
    assert len(http_files.requests("f.bin")) == 2
    # Never deleted: a file this call did not download is moved aside.
    assert (cache / "f.bin.corrupt").read_bytes() == broken


def test_a_cached_file_with_other_bytes_but_the_right_content_is_kept(http_files, cache):
    url = http_files.add("f.bin", DATA)
    dest = cache / "f.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"same content, other bytes")
    assert fetch(url, dest, sha256(DATA), progress=False, verify=lambda p: None) == dest
    assert dest.read_bytes() == b"same content, other bytes"
    assert http_files.requests("f.bin") == []


def test_404_on_the_first_mirror_falls_through_to_the_second(http_files, cache):
    dead = http_files.url("missing.bin")
    good = http_files.add("f.bin", DATA)

    fetch([dead, good], cache / "f.bin", sha256(DATA), progress=False)

    assert (cache / "f.bin").read_bytes() == DATA
    assert http_files.requests("missing.bin") == [(None, "404")]


def test_a_bad_mirror_is_skipped_when_a_later_one_is_good(http_files, cache):
    bad = http_files.add("bad.bin", DATA, "corrupt")
    good = http_files.add("f.bin", DATA)
    fetch([bad, good], cache / "f.bin", sha256(DATA), progress=False)
    assert (cache / "f.bin").read_bytes() == DATA


def test_no_network_error_says_where_to_put_the_file_and_that_digits_is_offline(
    refused_url, cache
):
    dest = cache / "f.bin"
    with pytest.raises(DownloadError) as err:
        fetch(refused_url, dest, sha256(DATA), progress=False, timeout=5)

    message = str(err.value)
    assert str(cache) in message and str(dest) in message
    assert "digits" in message and refused_url in message
    assert not isinstance(err.value, ChecksumError)


def test_cache_dir_follows_epochlab_data_else_home(monkeypatch, tmp_path):
    monkeypatch.setenv("EPOCHLAB_DATA", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("EPOCHLAB_DATA")
    assert cache_dir() == Path.home() / ".cache" / "epochlab"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"sha256": "abc"}, "`sha256`"),
        ({"url_or_urls": []}, "`url_or_urls`"),
        ({"timeout": 0}, "`timeout`"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(cache, kwargs, pattern):
    args = {"url_or_urls": "http://127.0.0.1:9/x", "sha256": "0" * 64, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        fetch(args.pop("url_or_urls"), cache / "x", args.pop("sha256"), **args)
    assert not cache.exists() or not os.listdir(cache)
