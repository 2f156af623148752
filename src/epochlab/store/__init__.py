"""The result store: every run of every study, with its settings, summary and metrics.

- :mod:`~epochlab.store.base`: the :class:`Store` contract, :class:`RunRecord`,
  statuses and the encoding every backend shares.
- :mod:`~epochlab.store.sqlite`: :class:`SQLiteStore`, the default (one file,
  many processes).
- :mod:`~epochlab.store.memory`: :class:`MemoryStore`, the same contract in memory.
- :mod:`~epochlab.store.record`: :func:`record_history` stores a finished
  ``fit``; :func:`summarize` and :func:`package_versions` build its summary.

Example:
    >>> import epochlab.store as st
    >>> store = st.MemoryStore()
    >>> sid = store.create_study("demo")
    >>> [s["name"] for s in store.studies()]
    ['demo']
"""

from __future__ import annotations

import os
from pathlib import Path

from epochlab._lazy import attach as _lazy_attach
from epochlab.store.base import (
    DONE,
    FINISHED,
    STATUSES,
    Finished,
    RunRecord,
    Store,
    StoreError,
    run_key,
)
from epochlab.store.memory import MemoryStore
from epochlab.store.record import (
    check_study,
    ensure_study,
    package_versions,
    record_history,
    status_of,
    study_conflict,
    summarize,
)
from epochlab.store.sqlite import SQLiteStore
from epochlab.validation import ParameterError, check_store_path

DEFAULT_STORE = "epochlab.db"


def default_store_path() -> Path:
    """``$EPOCHLAB_STORE`` if set, else ``./epochlab.db``.

    Example:
        >>> str(default_store_path()) == (os.environ.get("EPOCHLAB_STORE") or "epochlab.db")
        True
    """
    return Path(os.environ.get("EPOCHLAB_STORE") or DEFAULT_STORE)


def open_store(path: str | os.PathLike | None = None, *, create: bool = True,
               param: str = "store") -> SQLiteStore:
    """Open (and check, before any work) the SQLite store at ``path`` (default: :func:`default_store_path`).

    A path that cannot be a store (a folder, a missing folder, a read-only
    file; with ``create=False`` a missing file), a file that is not an
    epochlab store, and a store of a newer format are refused with a
    :class:`~epochlab.validation.ParameterError` naming ``param``, so a
    command fails before it trains, not after.

    Example:
        >>> import tempfile
        >>> with open_store(tempfile.mkdtemp() + "/runs.db") as store:
        ...     store.studies()
        []
    """
    p = check_store_path(path if path is not None else default_store_path(), param=param,
                         create=create)
    try:
        store = SQLiteStore(p, create=create)  # connects: reads the header, creates the schema
    except StoreError as e:
        hint = "" if "upgrade" in str(e) or "damaged" in str(e) else (
            " Choose another file, or a new one.")
        raise ParameterError(f"The value of `{param}` is {str(p)!r}: {e}{hint}") from None
    return store


__all__ = [
    "open_store", "check_study", "ensure_study", "study_conflict",
    "DONE", "FINISHED", "STATUSES", "Finished", "RunRecord", "Store", "StoreError", "MemoryStore",
    "SQLiteStore", "record_history", "summarize", "package_versions", "status_of", "run_key",
    "default_store_path", "DEFAULT_STORE",
]

# Submodules load on first use as attributes too (`el.store.<module>`), as when the package
# imported them all.
__getattr__, __dir__ = _lazy_attach(__name__, {})
