"""Shared fixtures: small seeded data and the seed's slide-1 setting."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
import torch

import epochlab as el


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models run faster and steadier on one thread; the test machine has two cores.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_store(tmp_path, monkeypatch):
    # Commands that record runs write to a per-test store, never ./epochlab.db.
    monkeypatch.setenv("EPOCHLAB_STORE", str(tmp_path / "epochlab.db"))


@pytest.fixture(scope="session")
def slide1():
    """1000 make_classification rows split 80/20: 800 training rows, as slide 1."""
    return el.data.synthetic()


@pytest.fixture
def small_xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the whole session (2 CPUs, no dashboard): starting one takes seconds.

    Ray 2.60 writes an auth token and reports usage unless told not to; its
    socket paths must stay short, hence a temp dir directly under /tmp.
    """
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tmp,
             object_store_memory=300 * 1024**2)
    yield ray
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
