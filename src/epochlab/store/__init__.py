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

from epochlab.store.base import DONE, FINISHED, STATUSES, RunRecord, Store, StoreError, run_key
from epochlab.store.memory import MemoryStore
from epochlab.store.record import package_versions, record_history, status_of, summarize
from epochlab.store.sqlite import SQLiteStore

DEFAULT_STORE = "epochlab.db"


def default_store_path() -> Path:
    """``$EPOCHLAB_STORE`` if set, else ``./epochlab.db``.

    Example:
        >>> str(default_store_path()) == (os.environ.get("EPOCHLAB_STORE") or "epochlab.db")
        True
    """
    return Path(os.environ.get("EPOCHLAB_STORE") or DEFAULT_STORE)


__all__ = [
    "DONE", "FINISHED", "STATUSES", "RunRecord", "Store", "StoreError", "MemoryStore",
    "SQLiteStore", "record_history", "summarize", "package_versions", "status_of", "run_key",
    "default_store_path", "DEFAULT_STORE",
]
