"""Downloads that survive bad networks: mirrors, resume, checksum, atomic write.

This module owns every byte epochlab fetches from the internet and the cache
those bytes live in. :func:`fetch` is the one entry point; the dataset loaders
(:mod:`epochlab.data.mnist`, :mod:`epochlab.data.imdb`) call it with the
file's known SHA-256 and never write to the cache themselves.

A download goes to ``<dest>.part``; an interrupted one is resumed with an
HTTP ``Range`` request on the next call. Only a file whose SHA-256 matches is
moved into place (after ``fsync``, with an atomic rename), so the cache never
holds a half-written or corrupt file under its final name. HTTP uses only the
standard library (``urllib.request``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from epochlab.validation import ParameterError

__all__ = ["ChecksumError", "DownloadError", "cache_dir", "fetch", "sha256_file"]

_CHUNK = 1 << 16
_USER_AGENT = "epochlab (+https://github.com/epochlab)"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(RuntimeError):
    """No mirror delivered the file (network down, HTTP error, cut transfer)."""


class ChecksumError(DownloadError):
    """A freshly downloaded file does not have the expected SHA-256."""


def cache_dir() -> Path:
    """Directory that holds downloaded datasets.

    ``$EPOCHLAB_DATA`` when set, else ``~/.cache/epochlab``. The directory is
    not created here; :func:`fetch` creates what it writes into.

    Example:
        >>> cache_dir() / "mnist"  # doctest: +SKIP
        PosixPath('/home/me/.cache/epochlab/mnist')
    """
    env = os.environ.get("EPOCHLAB_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "epochlab"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks.

    Example:
        >>> p = Path("/tmp/epochlab-empty"); _ = p.write_bytes(b"")
        >>> sha256_file(p)[:8]
        'e3b0c442'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    url_or_urls: str | Sequence[str],
    dest: str | Path,
    sha256: str,
    *,
    timeout: float = 30,
    progress: bool = True,
    verify: Callable[[Path], str | None] | None = None,
) -> Path:
    """Download a file to ``dest`` unless a verified copy is already there.

    Mirrors are tried in order. The transfer writes ``<dest>.part`` and resumes
    an existing ``.part`` with an HTTP ``Range`` request (a server that
    ignores ``Range`` and answers 200 gets a full download instead). The file
    is renamed to ``dest`` only when its SHA-256 matches. A file already at
    ``dest`` is re-verified on every call. When its bytes differ, ``verify``
    (if given) checks its *content* (a re-compressed copy of the right data
    is kept); a file that fails is never deleted: it is moved aside to
    ``<dest>.corrupt`` (the message names it and the check it failed) and
    the file is fetched again.

    Args:
        url_or_urls: One URL, or mirrors to try in order.
        dest: Final path of the file.
        sha256: Expected hex SHA-256 (64 characters).
        timeout: Seconds to wait on the network before giving up on a mirror.
        progress: Show a ``rich`` progress bar on stderr.
        verify: ``verify(path)`` returns None when a file whose SHA-256
            differs still holds the right content, else what is wrong with it.

    Returns:
        ``dest``, holding a file with the expected checksum.

    Raises:
        ChecksumError: A mirror delivered a file with the wrong checksum (and
            no later mirror delivered a good one).
        DownloadError: No mirror could be reached or none completed; the
            message says where to put the file by hand.

    Example:
        >>> fetch("https://example.org/f.bin", cache_dir() / "f.bin",
        ...       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ...       progress=False)  # doctest: +SKIP
        PosixPath('.../f.bin')
    """
    urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
    if not urls or not all(isinstance(u, str) and u for u in urls):
        raise ParameterError(
            f"The value of `url_or_urls` is {url_or_urls!r}, but must be a URL or a "
            "non-empty sequence of URLs."
        )
    expected = sha256.lower() if isinstance(sha256, str) else sha256
    if not isinstance(expected, str) or not _SHA256_RE.match(expected):
        raise ParameterError(
            f"The value of `sha256` is {sha256!r}, but must be 64 hexadecimal characters."
        )
    if not timeout > 0:
        raise ParameterError(f"The value of `timeout` is {timeout}, but must be `timeout > 0`.")

    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    moved = ""
    if dest.exists():
        if sha256_file(dest) == expected:
            return dest
        problem = "its SHA-256 differs from the expected one" if verify is None else verify(dest)
        if problem is None:
            return dest  # other bytes, the right content (e.g. re-compressed): kept as it is
        # Corrupt, truncated or another file: this call did not write it, so it is
        # moved aside, never deleted, and the file is fetched again.
        aside = dest.with_name(dest.name + ".corrupt")
        os.replace(dest, aside)
        moved = f"{dest} failed its check ({problem}) and was moved to {aside}. "
        warnings.warn(moved.strip(), stacklevel=2)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if part.exists() and sha256_file(part) == expected:
        # A previous run finished the transfer but died before the rename.
        return _commit(part, dest)

    failures: list[str] = []
    mismatches: list[str] = []
    for url in urls:
        try:
            got = _download_verified(url, part, expected, timeout, progress)
        except (OSError, http.client.HTTPException, _IncompleteTransfer) as exc:
            failures.append(f"{url}: {_reason(exc)}")
            continue
        if got == expected:
            return _commit(part, dest)
        mismatches.append(f"{url}: expected sha256 {expected}, got {got}")

    if mismatches:
        raise ChecksumError(
            moved + f"Checksum mismatch for {dest.name}; the download was discarded and nothing was "
            "written to the cache.\n  " + "\n  ".join(mismatches + failures)
        )
    kept = (
        f"\nThe partial file {part} was kept; run again to resume."
        if part.exists() and part.stat().st_size > 0
        else ""
    )
    raise DownloadError(
        moved + f"Could not download {dest.name} from any mirror:\n  "
        + "\n  ".join(failures)
        + kept
        + f"\nWithout network access, download it elsewhere and put it at {dest} "
        f"(the cache directory is {cache_dir()}; set $EPOCHLAB_DATA to move it), "
        "or pass the file's location as `path=`. The `digits` dataset ships with "
        "scikit-learn and works offline: epochlab.data.digits()."
    )


class _IncompleteTransfer(Exception):
    """The server closed the connection before sending all it announced."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _download_verified(url: str, part: Path, expected: str, timeout: float, progress: bool) -> str:
    """Download (or resume) ``url`` into ``part``; return the file's SHA-256.

    A resumed file whose checksum fails may hold bad bytes from an earlier
    attempt, so it is fetched once more from scratch before giving up.
    """
    resumed = _download(url, part, timeout, progress)
    got = sha256_file(part)
    if got != expected and resumed:
        part.unlink()
        _download(url, part, timeout, progress)
        got = sha256_file(part)
    if got != expected:
        part.unlink()
    return got


def _download(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """Write ``url`` to ``part``, resuming what is there. Return True if it resumed."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # Range not satisfiable: the partial file is not a prefix we can extend.
        part.unlink()
        return _download(url, part, timeout, progress)
    with response:
        resuming = offset > 0 and response.status == 206 and _range_start(response) == offset
        if response.status == 206 and offset and not resuming:
            # Some other slice than the one asked for: useless; ask for the whole file.
            response.close()
            part.unlink(missing_ok=True)
            return _download(url, part, timeout, progress)
        if not resuming:
            offset = 0  # Range ignored (200): the body is the whole file; start over.
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = offset + remaining if remaining is not None else None
        received = 0
        with open(part, "ab" if resuming else "wb") as out, _progress_bar(
            part.name.removesuffix(".part"), total, offset, progress
        ) as advance:
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                out.write(block)
                received += len(block)
                advance(len(block))
            out.flush()
            os.fsync(out.fileno())
    if remaining is not None and received < remaining:
        raise _IncompleteTransfer(
            f"connection closed after {offset + received} of {total} bytes"
        )
    return resuming


def _range_start(response: Any) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _commit(part: Path, dest: Path) -> Path:
    """Atomically move a verified ``part`` to ``dest`` and persist the rename."""
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    try:
        dir_fd = os.open(dest.parent, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; the rename is still atomic.
        return dest
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return dest


def _progress_bar(name: str, total: int | None, done: int, enabled: bool) -> Any:
    """Context manager yielding ``advance(n)``; a no-op when disabled."""
    if not enabled:
        return nullcontext(lambda n: None)
    return _RichBar(name, total, done)


class _RichBar:
    def __init__(self, name: str, total: int | None, done: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TransferSpeedColumn,
        )

        columns: list[Any] = [TextColumn("{task.description}")]
        # A bar only makes sense when the size is known; otherwise a spinner.
        columns.append(BarColumn() if total is not None else SpinnerColumn())
        columns += [DownloadColumn(), TransferSpeedColumn()]
        self._progress = Progress(*columns, console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task(f"Downloading {name}", total=total, completed=done)

    def __enter__(self) -> Any:
        self._progress.start()
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

