"""A sweep killed with SIGKILL and run again: finished runs kept, the rest rerun, none twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from epochlab.store import SQLiteStore

SPEC = """
name = "S"
data = "synthetic"
model = "mlp"
epochs = [5, 20]
batch_size = [2, 3, 4, 5, 6, 7]
[data_options]
n_samples = 200
"""


def _sweep(tmp_path):
    cmd = [sys.executable, "-c", "from epochlab.cli import main; main()", "sweep",
           "--spec", str(tmp_path / "spec.toml"), "--study", "S",
           "--store", str(tmp_path / "tmp.db"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _runs(db):
    store = SQLiteStore(db, create=False)
    try:
        return store.runs("S")
    finally:
        store.close()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkilled_sweep_resumes_without_redoing_or_duplicating(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    db = tmp_path / "tmp.db"
    proc = _sweep(tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                statuses = {r.status for r in _runs(db)}
            except Exception:  # the file is being created
                statuses = set()
            # Kill mid-task: some runs finished and the next task's runs marked running
            # (not in the moment between recording one task and starting the next).
            if {"completed", "running"} <= statuses:
                break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep ended before it could be killed:\n" + proc.stdout.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    before = {r.key: r for r in _runs(db)}
    assert len(before) == 12
    kept = {k: r for k, r in before.items() if r.status == "completed"}
    assert 0 < len(kept) < 12
    # Usually killed mid-task (a run left "running", reset and rerun below); a task can
    # end in the moment between the last look and the kill, which must resume just as well.

    proc = _sweep(tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    after = _runs(db)
    assert len(after) == 12 and len({r.key for r in after}) == 12
    assert {r.status for r in after} == {"completed"}
    assert sorted((r.settings["epochs"], r.settings["batch_size"]) for r in after) == sorted(
        (e, b) for e in (5, 20) for b in (2, 3, 4, 5, 6, 7))
    for r in after:  # finished runs were not redone
        if r.key in kept:
            assert r.id == kept[r.key].id and r.finished_at == kept[r.key].finished_at
    assert f"{len(kept)} already done" in out
