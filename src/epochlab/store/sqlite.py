"""The SQLite :class:`~epochlab.store.base.Store`: one file, safe for many processes.

This module owns the file format. Tables: ``epochlab_studies``,
``epochlab_runs`` (unique ``(study_id, key)``), ``epochlab_epochs`` (one JSON
row per epoch) and ``epochlab_iterations`` (one row per run and column: a
packed little-endian array whose ``kind`` is its numpy type code, the
narrowest exact one of int8 to int64 and float32 or float64, or JSON; see
:func:`~epochlab.store.base.pack_columns`), so thousands of iterations cost
one small BLOB per column, not thousands of rows. ``PRAGMA application_id`` marks
the file as an epochlab store and ``PRAGMA user_version`` holds the schema
version.

The tables carry a prefix so that other tools can keep their own tables in
the same file: ``epochlab tune`` puts Optuna's study there (Optuna has a
``studies`` table of its own), so ``optuna-dashboard sqlite:///epochlab.db``
shows the tuning while ``epochlab runs`` shows its runs. Version 1 files
(unprefixed names) are renamed in place, in one transaction, when opened.

Concurrency: each process opens its own connection (a store pickled to a
worker, or inherited across ``fork``, reconnects there). The file is in WAL
mode, so readers never wait for writers; every write is one ``BEGIN
IMMEDIATE`` transaction, retried while another process holds the write
lock. A process killed at any point leaves the last committed state.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from epochlab.store.base import (
    STATUSES,
    Finished,
    RunRecord,
    Store,
    StoreError,
    check_finishing,
    check_starting,
    check_status,
    check_text,
    dumps,
    loads,
    pack_columns,
    unpack_columns,
)
from epochlab.validation import ParameterError

SCHEMA_VERSION = 2
_TABLES = ("studies", "runs", "epochs", "iterations")
APPLICATION_ID = 0x45504C42  # "EPLB": tells an epochlab store from any other SQLite file

_SCHEMA = """
CREATE TABLE epochlab_studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE epochlab_runs (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES epochlab_studies(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    settings TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}',
    shared_from INTEGER REFERENCES epochlab_runs(id) ON DELETE SET NULL,
    grp TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    UNIQUE (study_id, key)
);
CREATE INDEX epochlab_runs_by_status ON epochlab_runs(status);
CREATE TABLE epochlab_epochs (
    run_id INTEGER NOT NULL REFERENCES epochlab_runs(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE epochlab_iterations (
    run_id INTEGER NOT NULL REFERENCES epochlab_runs(id) ON DELETE CASCADE,
    pos INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, pos),
    UNIQUE (run_id, name)
);
"""

_RUN_COLUMNS = ("r.id, r.study_id, s.name, r.key, r.settings, r.status, r.summary, "
                "r.shared_from, r.grp, r.created_at, r.started_at, r.finished_at")

T = TypeVar("T")
_INHERITED: list[sqlite3.Connection] = []


def damaged_message(path: str | os.PathLike | None, error: BaseException) -> str:
    """What to say about a store whose SQLite file cannot be read: damaged, not a bug."""
    name = str(path) if path else "STORE.db"
    which = f"The store {name}" if path else "The store"
    return (f"{which} is damaged ({error}): SQLite cannot read it. Save what can be "
            f"saved with `sqlite3 {name} .recover | sqlite3 recovered.db`, then use "
            "--store recovered.db (or another store).")


class SQLiteStore(Store):
    """A store in one SQLite file.

    Args:
        path: the file; created with the schema when missing (if ``create``).
        create: False to only open an existing store (readers such as
            ``epochlab runs``): a missing file raises :class:`StoreError`
            instead of leaving an empty database behind.
        timeout: seconds a write waits for another process's write lock
            before it gives up.

    Raises:
        StoreError: the file is missing (with ``create=False``), is not an
            epochlab store, or was written by a newer epochlab.

    Example:
        >>> import tempfile
        >>> store = SQLiteStore(tempfile.mkdtemp() + "/runs.db")
        >>> sid = store.create_study("demo")
        >>> rid = store.add_run(sid, "lr=0.1", {"lr": 0.1})
        >>> store.finish_run(rid, "completed", {"final": {"loss": float("nan")}}, [])
        >>> store.run(rid).summary
        {'final': {'loss': nan}}
        >>> store.close()
    """

    def __init__(self, path: str | os.PathLike = "epochlab.db", *, create: bool = True,
                 timeout: float = 60.0) -> None:
        if not timeout > 0:
            raise ParameterError(f"The value of `timeout` is {timeout}, but must be `timeout > 0`.")
        self.path = Path(path)
        self.create = create
        self.timeout = float(timeout)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._connection()  # open now, so a bad file fails here and not at the first read

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # --- connection ---------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # A connection cannot cross processes; the copy reconnects on first use.
        return {"path": self.path, "create": self.create, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._conn = None
        self._pid = -1

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:
            # Inherited through fork: SQLite forbids using it, and closing it here could
            # disturb the parent's locks, so it is kept, unused, for this process's lifetime.
            _INHERITED.append(self._conn)
            self._conn = None
        if not self.create and not self.path.exists():
            raise StoreError(f"No runs stored yet at {self.path}: the file does not exist.")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a store file.")
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.OperationalError as e:  # e.g. a missing folder
            raise StoreError(f"Cannot open the store {self.path}: {e}.") from None
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA synchronous=NORMAL")  # first: creating the schema syncs less
            app_id, version = self._header(conn)
            if app_id == 0 and version == 0:
                if not self._has_tables(conn):
                    if not self.create:
                        raise StoreError(f"{self.path} is not an epochlab store: the database "
                                         "is empty.")
                    self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
                    self._transaction(conn, self._initialize)
                else:
                    # Tables but no header yet: another process may be creating the store
                    # right now. Its transaction sets both; read them again behind its lock.
                    self._transaction(conn, lambda c: None)
                app_id, version = self._header(conn)
            if app_id != APPLICATION_ID:
                raise StoreError(f"{self.path} is not an epochlab store "
                                 f"(SQLite application_id {app_id:#x}, expected {APPLICATION_ID:#x}).")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has store schema version {version}, newer than this epochlab "
                    f"reads (up to {SCHEMA_VERSION}): upgrade epochlab to read it."
                )
            if version < 1:
                raise StoreError(f"{self.path} has unknown store schema version {version}.")
            if version == 1:
                self._transaction(conn, self._upgrade_from_1)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        except sqlite3.DatabaseError as e:
            if "malformed" in str(e):  # an SQLite file, damaged: the runs in it may be saved
                raise StoreError(damaged_message(self.path, e)) from None
            raise StoreError(f"{self.path} is not an epochlab store ({e}).") from None

    @staticmethod
    def _header(conn: sqlite3.Connection) -> tuple[int, int]:
        # Both fields from one snapshot: read one by one, another process creating the store
        # could commit between them (application_id 0 with its user_version: "not a store").
        conn.execute("BEGIN")
        try:
            return (conn.execute("PRAGMA application_id").fetchone()[0],
                    conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.execute("COMMIT")

    @staticmethod
    def _has_tables(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0

    @staticmethod
    def _upgrade_from_1(conn: sqlite3.Connection) -> None:
        # Version 1 named its tables without a prefix; SQLite (>= 3.26) rewrites the foreign
        # keys that point at a renamed table. Another process may have upgraded meanwhile.
        if conn.execute("PRAGMA user_version").fetchone()[0] != 1:
            return
        for table in _TABLES:
            conn.execute(f"ALTER TABLE {table} RENAME TO epochlab_{table}")
        conn.execute("DROP INDEX IF EXISTS runs_by_status")
        conn.execute("CREATE INDEX epochlab_runs_by_status ON epochlab_runs(status)")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _initialize(self, conn: sqlite3.Connection) -> None:
        # Another process may have created the schema while this one waited for the lock.
        if conn.execute("PRAGMA user_version").fetchone()[0] or self._has_tables(conn):
            return
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` again while SQLite says the database is locked, up to ``timeout``."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(f"{self.path} stayed locked for {self.timeout:g} s: {e}") from None
            except sqlite3.DatabaseError as e:
                if "malformed" in str(e):  # damaged, not a bug: say how to save the runs
                    raise StoreError(damaged_message(self.path, e)) from None
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)

    def _transaction(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._retry(attempt)

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return self._transaction(self._connection(), fn)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # One read transaction, so several SELECTs see the same snapshot.
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):  # the error in flight is the one to see
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")  # a read: the same as COMMIT
                if isinstance(e, sqlite3.DatabaseError) and "malformed" in str(e):
                    raise StoreError(damaged_message(self.path, e)) from None  # damaged: not a bug
                raise
            conn.execute("COMMIT")

    # --- the contract ---------------------------------------------------------------------------

    def create_study(self, name: str, spec: dict[str, Any] | None = None) -> int:
        check_text(name, "name")
        spec_json = dumps(spec or {})

        def write(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO epochlab_studies (name, spec, created_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (name) DO NOTHING", (name, spec_json, time.time()))
            return conn.execute("SELECT id FROM epochlab_studies WHERE name = ?", (name,)).fetchone()[0]

        return self._write(write)

    def study(self, name: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute("SELECT id, name, spec, created_at FROM epochlab_studies WHERE name = ?",
                               (name,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "name": row[1], "spec": loads(row[2]), "created_at": row[3]}

    def studies(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute("SELECT id, name, spec, created_at FROM epochlab_studies ORDER BY id").fetchall()
            counts = conn.execute("SELECT study_id, status, count(*) FROM epochlab_runs "
                                  "GROUP BY study_id, status").fetchall()
        by_study: dict[int, dict[str, int]] = {}
        for sid, status, n in counts:
            by_study.setdefault(sid, {})[status] = n
        return [{"id": sid, "name": name, "spec": loads(spec), "created_at": created,
                 "runs": {k: by_study[sid][k] for k in STATUSES if k in by_study.get(sid, {})}}
                for sid, name, spec, created in rows]

    def add_run(self, study_id: int, key: str, settings: dict[str, Any]) -> int:
        return self.add_runs(study_id, [(key, settings)])[0]

    def add_runs(self, study_id: int, runs: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        rows = []
        for key, settings in runs:  # checked and encoded before the transaction
            check_text(key, "key")
            rows.append((key, dumps(settings)))

        def write(conn: sqlite3.Connection) -> list[int]:
            if conn.execute("SELECT 1 FROM epochlab_studies WHERE id = ?", (study_id,)).fetchone() is None:
                raise KeyError(f"There is no study with id {study_id} in {self.path}.")
            now = time.time()
            conn.executemany(  # in order: new runs' ids follow the order given
                "INSERT INTO epochlab_runs (study_id, key, settings, status, created_at) "
                "VALUES (?, ?, ?, 'pending', ?) ON CONFLICT (study_id, key) DO NOTHING",
                [(study_id, key, settings_json, now) for key, settings_json in rows])
            # The ids of these keys only (through the (study_id, key) index): a study of
            # thousands of fits or trials is not read whole to add one run.
            keys = list(dict.fromkeys(key for key, _ in rows))
            by_key: dict[str, int] = {}
            for i in range(0, len(keys), 500):  # under SQLite's limit on bound values
                part = keys[i:i + 500]
                by_key.update(conn.execute(
                    "SELECT key, id FROM epochlab_runs WHERE study_id = ? AND key IN "
                    f"({', '.join('?' * len(part))})", (study_id, *part)))
            return [by_key[key] for key, _ in rows]

        return self._write(write)

    def start_run(self, run_id: int) -> None:
        self.start_runs([run_id])

    def start_runs(self, run_ids: Sequence[int]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            check_starting(run_ids, lambda run_id: self._status(conn, run_id))
            self._delete_metrics(conn, list(run_ids))
            now = time.time()
            conn.executemany("UPDATE epochlab_runs SET status = 'running', summary = '{}', "
                             "started_at = ?, finished_at = NULL WHERE id = ?",
                             [(now, run_id) for run_id in run_ids])

        self._write(write)

    def finish_run(
        self,
        run_id: int,
        status: str,
        summary: dict[str, Any],
        epochs: list[dict[str, float]],
        iterations: dict[str, list] | None = None,
        *,
        shared_from: int | None = None,
        group: str | None = None,
    ) -> None:
        self.finish_runs([Finished(run_id, status, summary, epochs, iterations, shared_from, group)])

    def finish_runs(self, finished: Sequence[Finished]) -> None:
        # Encode everything before the transaction, so it holds the write lock only briefly
        # and a value that cannot be stored writes nothing.
        updates, epoch_rows, iteration_rows = [], [], []
        last = {f.run_id: i for i, f in enumerate(finished)}
        for i, f in enumerate(finished):
            check_status(f.status)
            summary = dumps(f.summary)
            epochs = [(f.run_id, e, dumps(row)) for e, row in enumerate(f.epochs)]
            packed = pack_columns(f.iterations)
            if last[f.run_id] != i:  # a run named twice: checked, and written as the last says
                continue
            updates.append([f.status, summary, f.shared_from, f.group, 0.0, f.run_id])
            epoch_rows += epochs
            iteration_rows += [(f.run_id, pos, name, kind, data)
                               for pos, (name, kind, data) in enumerate(packed)]

        def write(conn: sqlite3.Connection) -> None:
            # Every run checked before any is written, then each kind of row in one statement
            # for all runs.
            check_finishing(finished, lambda run_id: self._status(conn, run_id))
            self._delete_metrics(conn, list(last))
            now = time.time()
            for row in updates:
                row[4] = now
            conn.executemany("UPDATE epochlab_runs SET status = ?, summary = ?, shared_from = ?, "
                             "grp = ?, finished_at = ? WHERE id = ?", updates)
            conn.executemany("INSERT INTO epochlab_epochs (run_id, epoch, metrics) VALUES (?, ?, ?)",
                             epoch_rows)
            self._insert_iterations(conn, iteration_rows)

        self._write(write)

    def reset_stale(self, study_id: int) -> int:
        def write(conn: sqlite3.Connection) -> int:
            stale = [r[0] for r in conn.execute(
                "SELECT id FROM epochlab_runs WHERE study_id = ? AND status = 'running'", (study_id,))]
            self._delete_metrics(conn, stale)
            conn.executemany(
                "UPDATE epochlab_runs SET status = 'interrupted', summary = ?, finished_at = NULL "
                "WHERE id = ?", [(dumps({"reset_stale_at": time.time()}), rid) for rid in stale])
            return len(stale)

        return self._write(write)

    def run(self, run_id: int) -> RunRecord:
        with self._read() as conn:
            row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM epochlab_runs r JOIN epochlab_studies s "
                               "ON s.id = r.study_id WHERE r.id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"There is no run with id {run_id} in {self.path}.")
        return _record(row)

    def runs(self, study: str | None = None, status: str | None = None) -> list[RunRecord]:
        if status is not None:
            check_status(status, STATUSES)
        sql = f"SELECT {_RUN_COLUMNS} FROM epochlab_runs r JOIN epochlab_studies s ON s.id = r.study_id"
        where, args = [], []
        if study is not None:
            where.append("s.name = ?")
            args.append(study)
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY r.id", args).fetchall()
        return [_record(row) for row in rows]

    def epochs(self, run_id: int) -> list[dict[str, float]]:
        with self._read() as conn:
            self._status(conn, run_id)
            rows = conn.execute("SELECT metrics FROM epochlab_epochs WHERE run_id = ? ORDER BY epoch",
                                (run_id,)).fetchall()
        return [loads(r[0]) for r in rows]

    def iterations(self, run_id: int) -> dict[str, list]:
        with self._read() as conn:
            self._status(conn, run_id)
            rows = conn.execute("SELECT name, kind, data FROM epochlab_iterations WHERE run_id = ? "
                                "ORDER BY pos", (run_id,)).fetchall()
        return unpack_columns(rows)

    # --- helpers used inside transactions ------------------------------------------------------

    def _status(self, conn: sqlite3.Connection, run_id: int) -> str:
        row = conn.execute("SELECT status FROM epochlab_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"There is no run with id {run_id} in {self.path}.")
        return row[0]

    @staticmethod
    def _delete_metrics(conn: sqlite3.Connection, run_ids: list[int]) -> None:
        conn.executemany("DELETE FROM epochlab_epochs WHERE run_id = ?", [(r,) for r in run_ids])
        conn.executemany("DELETE FROM epochlab_iterations WHERE run_id = ?", [(r,) for r in run_ids])

    @staticmethod
    def _insert_iterations(conn: sqlite3.Connection, rows: list[tuple[int, int, str, str, bytes]],
                           ) -> None:
        """``(run_id, pos, name, kind, data)`` rows, every run's in one statement."""
        conn.executemany(
            "INSERT INTO epochlab_iterations (run_id, pos, name, kind, data) VALUES (?, ?, ?, ?, ?)",
            rows)


def _record(row: tuple) -> RunRecord:
    return RunRecord(
        id=row[0], study_id=row[1], study=row[2], key=row[3], settings=loads(row[4]),
        status=row[5], summary=loads(row[6]), shared_from=row[7], group=row[8],
        created_at=row[9], started_at=row[10], finished_at=row[11],
    )
