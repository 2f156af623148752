"""Atomic file writes: a temporary file beside the target, fsync, then ``os.replace``.

A reader (or a crash) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], *, binary: bool) -> Path:
    """Call ``write(f)`` on a temporary file and move it over ``path`` once it is on disk.

    Example:
        >>> import tempfile
        >>> p = atomic_write(tempfile.mkdtemp() + "/a.txt", lambda f: f.write("hi"), binary=False)
        >>> p.read_text()
        'hi'
    """
    path = Path(path)
    if path.is_dir():  # else the rename fails naming the temporary file
        raise IsADirectoryError(f"Cannot write {str(path)!r}: it is a folder; give the path of a "
                                "file (a new name, or one to replace).")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target: os.replace is atomic only within one file system.
    # mkstemp makes the file private (0600): give it the mode of the file it replaces, or
    # the mode a new file gets here (0666 less the umask), as open() would.
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # by path: os.fchmod is missing on Windows before Python 3.13
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    # Reading the umask means setting it: set it straight back (a file another thread
    # creates in between gets the usual 022).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; directories cannot be opened on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
