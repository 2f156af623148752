"""Sweeps on Ray: the same results as in this process, a killed worker's task retried, once.

One local Ray (2 CPUs, no dashboard, no auth token, a small object store;
the ``local_ray`` fixture of ``tests/conftest.py``) serves every Ray test:
starting one takes seconds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from epochlab.store import MemoryStore, SQLiteStore
from epochlab.sweeps import SweepSpec, sweep

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def _ray(local_ray):
    return local_ray


def _comparable(store, runs):
    """Everything stored about each run except wall-clock times."""
    out = {}
    for r in runs:
        summary = {k: v for k, v in r.summary.items() if k not in ("seconds",)}
        epochs = [{k: v for k, v in row.items() if k != "time"} for row in store.epochs(r.id)]
        out[r.key] = (r.status, summary, epochs, store.iterations(r.id))
    return out


def test_a_sweep_on_ray_stores_what_the_in_process_sweep_stores_bit_for_bit(tmp_path):
    spec = SweepSpec(data="synthetic", data_options={"n_samples": 200}, epochs=[1, 2],
                     batch_size=[16, 32], lr=[1e-3, 1e-2], name="r")
    here = MemoryStore()
    local = sweep(spec, here, progress=False)
    there = SQLiteStore(tmp_path / "ray.db")
    remote = sweep(spec, there, progress=False, executor="ray")
    assert remote.executed.n_trained == local.executed.n_trained
    assert any(t.fused for t in remote.executed.tasks)  # fused groups went as Ray tasks too
    assert _comparable(there, remote.runs) == _comparable(here, local.runs)
    assert {r.status for r in remote.runs} == {"completed"}


def _kill_first_ray_task(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker seen running a task (its title is ray::_run_item)."""
    while not stop.is_set():
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::_run_item"):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds workers in /proc")
def test_a_worker_killed_mid_task_is_retried_and_every_run_stored_once(tmp_path):
    spec = SweepSpec(data="synthetic", epochs=[15], batch_size=[16], lr=[1e-3, 3e-3, 1e-2],
                     seed=[0], name="kill")
    store = SQLiteStore(tmp_path / "kill.db")
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_first_ray_task, args=(killed, stop), daemon=True)
    watcher.start()
    try:
        result = sweep(spec, store, progress=False, fuse=False, executor="ray")
    finally:
        stop.set()
        watcher.join()
    assert killed, "no Ray worker was seen running a task"
    runs = store.runs("kill")
    assert len(runs) == 3 and len({r.key for r in runs}) == 3
    assert {r.status for r in runs} == {"completed"}
    assert all(len(store.epochs(r.id)) == 15 for r in runs)
    reference = MemoryStore()
    local = sweep(spec, reference, progress=False, fuse=False)
    assert _comparable(store, result.runs) == _comparable(reference, local.runs)


def test_sweep_cli_with_executor_ray(tmp_path):
    from epochlab.cli import main

    db = str(tmp_path / "cli.db")
    res = CliRunner().invoke(main, ["sweep", "--data", "synthetic", "--epochs", "1,2",
                                    "--batch-size", "32,64", "--executor", "ray", "--study", "c",
                                    "--store", db, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "4 completed" in res.output
    assert [r.status for r in SQLiteStore(db, create=False).runs("c")] == ["completed"] * 4
