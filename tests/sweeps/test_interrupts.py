"""Sweeps with worker processes under Ctrl-C and SIGKILL, and two drivers of one study at once.

- Ctrl-C (SIGINT to the driver) exits 130 and the runs the workers were
  training are stored as ``interrupted``; no worker outlives the driver.
- Ctrl-C at a terminal (SIGINT to the whole group), even while workers are
  being spawned: the same, and no worker prints a traceback.
- SIGKILL of the driver: its worker processes exit too (nothing of the
  process group is left).
- Two identical sweeps on one store at once both exit 0; each run is stored
  once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from epochlab.store import SQLiteStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and groups")

# Long enough that the runs are still training when the signal comes.
LONG = ["--data", "synthetic", "--epochs", "400", "--batch-size", "1,2", "--no-fuse",
        "--no-progress", "--study", "S"]
SHORT = ["--data", "synthetic", "--epochs", "2", "--batch-size", "32,64", "--lr", "1e-3,1e-2",
         "--no-progress", "--study", "S"]


def _start(tmp_path, *args):
    cmd = [sys.executable, "-c", "from epochlab.cli import main; main()", "sweep",
           "--store", str(tmp_path / "runs.db"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # A session of its own: the test can then see every process the sweep started.
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _statuses(db):
    if not db.exists():
        return []
    try:
        store = SQLiteStore(db, create=False)
    except Exception:  # being created
        return []
    try:
        return [r.status for r in store.runs("S")]
    finally:
        store.close()


def _wait_running(proc, db, n, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _statuses(db).count("running") >= n:
            return
        time.sleep(0.05)
    out = proc.stdout.read() if proc.poll() is not None else ""
    pytest.fail(f"the sweep never had {n} runs running:\n{out}")


def _group_gone(pgid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_sigkill_of_a_workers_sweep_leaves_no_process_of_its_group(tmp_path):
    proc = _start(tmp_path, *LONG, "--workers", "2")
    _wait_running(proc, tmp_path / "runs.db", 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    alive = not _group_gone(proc.pid)
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not alive, "worker processes outlived the SIGKILLed driver"


def test_ctrl_c_with_workers_exits_130_and_stores_the_runs_in_flight_as_interrupted(tmp_path):
    proc = _start(tmp_path, *LONG, "--workers", "2")
    db = tmp_path / "runs.db"
    _wait_running(proc, db, 2)
    os.kill(proc.pid, signal.SIGINT)  # the driver only, as `kill -INT` would
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "Interrupted" in out
    statuses = _statuses(db)
    assert "running" not in statuses and statuses.count("interrupted") == 2, statuses
    assert _group_gone(proc.pid), "a worker outlived the interrupted driver"


@pytest.mark.parametrize("running", [1, 2])
def test_ctrl_c_at_a_terminal_while_workers_start_exits_130_without_a_traceback(tmp_path, running):
    # A terminal's Ctrl-C reaches the whole process group. At one run running, the
    # second worker is being spawned: a SIGINT there used to cut the driver's write
    # of the worker's start-up data, and the worker printed an EOFError traceback.
    proc = _start(tmp_path, *LONG, "--workers", "2")
    db = tmp_path / "runs.db"
    _wait_running(proc, db, running)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "Error" not in out.replace("Interrupted", ""), out
    statuses = _statuses(db)
    assert "running" not in statuses and "interrupted" in statuses, statuses
    assert _group_gone(proc.pid), "a worker outlived the interrupted driver"


def test_two_identical_sweeps_at_once_both_succeed_and_store_each_run_once(tmp_path):
    procs = [_start(tmp_path, *SHORT) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    store = SQLiteStore(tmp_path / "runs.db", create=False)
    runs = store.runs("S")
    store.close()
    assert len(runs) == 4 and len({r.key for r in runs}) == 4
    assert {r.status for r in runs} == {"completed"}
