"""A sweep run interrupted mid-training continues from its checkpoint when the sweep runs again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import epochlab as el
from epochlab.store import SQLiteStore
from epochlab.sweeps import worker


class Stop:
    """Raises KeyboardInterrupt (a Ctrl-C) in the forward pass number ``at``, once."""

    at: int | None = None
    calls = 0


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))

    def forward(self, x):
        if self.training:
            Stop.calls += 1
            if Stop.at is not None and Stop.calls == Stop.at:
                Stop.at = None
                raise KeyboardInterrupt
        return self.body(x)


def make_model() -> nn.Module:
    return Net()


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def run(xy, store):
    return el.sweep(make_model, xy, epochs=8, batch_size=16, lr=1e-2, seed=[0, 1], store=store,
                    fuse=False, progress=False, share_prefixes=False)


def test_an_interrupted_run_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_one(
        xy, tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "CHECKPOINT_EVERY", "epoch")
    torch.set_num_threads(1)
    ref_store = SQLiteStore(tmp_path / "ref.db")
    ref = {r.key: r for r in run(xy, ref_store).runs}

    store = SQLiteStore(tmp_path / "s.db")
    folder = tmp_path / "s.db.checkpoints"
    Stop.calls, Stop.at = 0, 8 * 8 + 50  # in the second run, mid-way
    with pytest.raises(KeyboardInterrupt):
        run(xy, store)
    assert list(folder.rglob("ckpt-*.pt"))  # the interrupted run's checkpoints are kept
    result = run(xy, store)
    assert not folder.exists()  # removed once every run was recorded
    resumed = [r for r in result.runs if r.summary.get("resumed")]
    assert len(resumed) == 1 and 0 < resumed[0].summary["resumed"][0]["epoch"] < 8
    for r in result.runs:
        want = ref[r.key]
        assert r.status == want.status == "completed"
        strip = lambda rows: [{k: v for k, v in e.items() if k != "time"} for e in rows]  # noqa: E731
        assert strip(store.epochs(r.id)) == strip(ref_store.epochs(want.id))
        assert store.iterations(r.id) == ref_store.iterations(want.id)
        assert r.summary["test"] == want.summary["test"]
