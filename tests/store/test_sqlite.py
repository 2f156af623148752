"""SQLiteStore beyond the contract: the file format, several processes, crashes, bad files."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from epochlab.store import DONE, SQLiteStore, StoreError
from epochlab.store.sqlite import SCHEMA_VERSION


def test_file_is_in_wal_mode_with_schema_version_and_application_id(tmp_path):
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x45504C42
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"epochlab_studies", "epochlab_runs", "epochlab_epochs", "epochlab_iterations"}


def test_a_version_1_store_is_upgraded_in_place_keeping_its_runs(tmp_path):
    # Version 1's schema, as epochlab 0.1 wrote it (unprefixed tables).
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
                              spec TEXT NOT NULL, created_at REAL NOT NULL);
        CREATE TABLE runs (id INTEGER PRIMARY KEY,
            study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
            key TEXT NOT NULL, settings TEXT NOT NULL, status TEXT NOT NULL,
            summary TEXT NOT NULL DEFAULT '{}',
            shared_from INTEGER REFERENCES runs(id) ON DELETE SET NULL, grp TEXT,
            created_at REAL NOT NULL, started_at REAL, finished_at REAL,
            UNIQUE (study_id, key));
        CREATE INDEX runs_by_status ON runs(status);
        CREATE TABLE epochs (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            epoch INTEGER NOT NULL, metrics TEXT NOT NULL, PRIMARY KEY (run_id, epoch));
        CREATE TABLE iterations (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            pos INTEGER NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,
            PRIMARY KEY (run_id, pos), UNIQUE (run_id, name));
        INSERT INTO studies VALUES (1, 'old', '{}', 0);
        INSERT INTO runs (id, study_id, key, settings, status, summary, created_at)
            VALUES (1, 1, 'k', '{"lr":0.1}', 'completed', '{"total_updates":20}', 0);
        INSERT INTO epochs VALUES (1, 0, '{"epoch":0,"loss":0.5}');
        PRAGMA application_id=1162890306;
        PRAGMA user_version=1;
    """)
    conn.close()
    store = SQLiteStore(path, create=False)
    [run] = store.runs("old")
    assert (run.settings, run.status, run.summary) == ({"lr": 0.1}, "completed", {"total_updates": 20})
    assert store.epochs(run.id) == [{"epoch": 0, "loss": 0.5}]
    with pytest.raises(ValueError, match="not overwritten"):  # the constraints came along
        store.finish_run(run.id, "failed", {}, [])
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == {"epochlab_studies", "epochlab_runs", "epochlab_epochs", "epochlab_iterations"}
    assert conn.execute("SELECT count(*) FROM pragma_foreign_key_check").fetchone()[0] == 0


def test_iterations_are_stored_as_one_blob_per_column(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    rid = store.add_run(store.create_study("s"), "k", {})
    store.finish_run(rid, "completed", {}, [], {"step": list(range(5000)),
                                               "loss": [0.5] * 5000})
    conn = sqlite3.connect(tmp_path / "runs.db")
    rows = conn.execute("SELECT name, kind, length(data) FROM epochlab_iterations").fetchall()
    assert rows == [("step", "i2", 10000), ("loss", "f4", 20000)]  # narrowest exact types


def test_a_failure_inside_finish_runs_transaction_rolls_everything_back(tmp_path, monkeypatch):
    store = SQLiteStore(tmp_path / "runs.db")
    rid = store.add_run(store.create_study("s"), "k", {})
    store.start_run(rid)

    def fail(*args):  # runs after the status update and the epoch rows
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(SQLiteStore, "_insert_iterations", staticmethod(fail))
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.finish_run(rid, "completed", {"final": {"loss": 0.1}},
                         [{"epoch": 0, "loss": 0.1}], {"step": [0]})
    monkeypatch.undo()
    fresh = SQLiteStore(tmp_path / "runs.db")
    for s in (store, fresh):
        assert s.run(rid).status == "running" and s.run(rid).summary == {}
        assert s.epochs(rid) == [] and s.iterations(rid) == {}
    # The connection is usable afterwards: no transaction was left open.
    store.finish_run(rid, "completed", {}, [{"epoch": 0, "loss": 0.1}], {"step": [0]})
    assert fresh.epochs(rid) == [{"epoch": 0, "loss": 0.1}]


def test_a_pickled_store_reconnects_and_sees_the_same_file(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    sid = store.create_study("s")
    copy = pickle.loads(pickle.dumps(store))
    rid = copy.add_run(sid, "k", {"lr": 0.1})
    assert store.run(rid).settings == {"lr": 0.1}
    assert copy.path == store.path


def _worker(path: str, worker: int, n: int, barrier) -> None:
    """Adds the same n keys as every other worker; finishes the ones it claims."""
    barrier.wait(timeout=60)  # start together (imports done), so the writes overlap
    store = SQLiteStore(path, timeout=30)
    sid = store.create_study("shared", {"n": n})
    for i in range(n):
        rid = store.add_run(sid, f"run-{i}", {"i": i})
        try:
            store.start_run(rid)
        except ValueError:
            continue  # another worker has it
        store.finish_run(rid, "completed", {"worker": worker}, [{"epoch": 0, "loss": float(i)}],
                         {"step": list(range(200)), "loss": [float(i)] * 200})
        time.sleep(0.005)  # leave the other worker room to interleave
    store.close()


def test_a_store_created_between_the_two_header_reads_is_still_recognized(tmp_path, monkeypatch):
    # Another process creates the store just after this one read the application id: read
    # one by one, the header looked like (0, its version), "not an epochlab store".
    from epochlab.store import sqlite as sqlite_store

    path = tmp_path / "race.db"
    empty = sqlite3.connect(path)
    empty.execute("PRAGMA journal_mode=WAL")  # as the other process leaves it: readers and
    empty.close()                             # one writer at once
    real_connect, other = sqlite3.connect, []

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        if not other:
            def trace(sql: str) -> None:
                if sql.strip().lower() == "pragma user_version" and not other:
                    other.append(SQLiteStore(path))  # the other process, creating the store
            conn.set_trace_callback(trace)
        return conn

    monkeypatch.setattr(sqlite_store.sqlite3, "connect", connect)
    store = SQLiteStore(path, timeout=5)
    assert other, "the other store was not created between the reads"
    assert store.create_study("s") == other[0].create_study("s")
    store.close()
    other[0].close()


def test_two_processes_writing_one_file_lose_and_duplicate_nothing(tmp_path):
    path = str(tmp_path / "shared.db")  # neither process finds a schema: both race to create it
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_worker, args=(path, w, 40, barrier)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = SQLiteStore(path)
    runs = store.runs("shared")
    assert sorted(r.key for r in runs) == sorted(f"run-{i}" for i in range(40))
    assert all(r.status == "completed" for r in runs)
    for r in runs:
        i = r.settings["i"]
        assert store.epochs(r.id) == [{"epoch": 0, "loss": float(i)}]
        assert store.iterations(r.id)["loss"] == [float(i)] * 200
    assert len(store.studies()) == 1


_WRITER = textwrap.dedent("""
    import sys
    from epochlab.store import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    sid = store.create_study("crash")
    n = 40_000
    for i in range(10_000):
        rid = store.add_run(sid, f"run-{i}", {"i": i})
        store.start_run(rid)
        store.finish_run(rid, "completed", {"i": i},
                         [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(50)],
                         {"step": list(range(n)), "loss": [0.5] * n, "lr": [0.1] * n})
""")


def test_a_process_killed_mid_write_leaves_a_consistent_file(tmp_path):
    path = tmp_path / "crash.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)])
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if path.exists():
                try:
                    with SQLiteStore(path, create=False) as reader:
                        done = len(reader.runs(status="completed"))
                except StoreError:
                    pass  # the schema is not written yet
        assert done >= 3, "the writer did not get going"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    store = SQLiteStore(path)
    runs = store.runs("crash")
    for r in runs:  # every run is finished with all its metrics or has none of them
        if r.status == "completed":
            assert len(store.epochs(r.id)) == 50
            assert [len(c) for c in store.iterations(r.id).values()] == [40_000] * 3
        else:
            assert r.status in ("pending", "running")
            assert store.epochs(r.id) == [] and store.iterations(r.id) == {}
    running = sum(r.status == "running" for r in runs)
    assert store.reset_stale(store.study("crash")["id"]) == running
    assert all(r.status in (*DONE, "interrupted", "pending") for r in store.runs())


def test_a_missing_file_is_not_created_by_a_reader(tmp_path):
    path = tmp_path / "nothing.db"
    with pytest.raises(StoreError, match=f"No runs stored yet at {path}"):
        SQLiteStore(path, create=False)
    assert not path.exists()


def test_a_file_that_is_not_sqlite_is_refused_naming_the_path(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are not runs\n" * 100)
    with pytest.raises(StoreError, match=f"{path} is not an epochlab store"):
        SQLiteStore(path)
    assert path.read_text() == "these are not runs\n" * 100


def test_another_applications_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"{path} is not an epochlab store"):
        SQLiteStore(path)


def test_an_empty_database_is_refused_by_a_reader_and_initialized_by_a_writer(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StoreError, match="empty"):
        SQLiteStore(path, create=False)
    assert SQLiteStore(path).studies() == []


def test_a_store_from_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"{path} has store schema version {SCHEMA_VERSION + 1}"):
        SQLiteStore(path, create=False)


def test_timeout_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="`timeout` is 0"):
        SQLiteStore(tmp_path / "x.db", timeout=0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_store_inherited_through_fork_opens_its_own_connection(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    sid = store.create_study("s")
    parent_conn = store._conn
    pid = os.fork()
    if pid == 0:  # the child: write through the inherited store object, then leave at once
        ok = False
        try:
            store.add_run(sid, "from-child", {})
            ok = store._conn is not parent_conn
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [r.key for r in store.runs("s")] == ["from-child"]
    store.add_run(sid, "from-parent", {})  # the parent's connection still works
    assert len(store.runs("s")) == 2
