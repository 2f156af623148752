"""Data-parallel fit under torchrun (2 processes, gloo on the CPU): exact global accounting.

One torchrun launch (module fixture) trains every case in ``ddp_worker.py``;
the tests read what each rank saved.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ddp_worker import data, net  # beside this file

import epochlab as el
from epochlab.train import distributed as d
from epochlab.train.distributed import DistContext

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = d.launch_command(2, [str(WORKER), str(out)], d.free_port())
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def load(runs: Path, name: str, rank: int = 0) -> tuple[el.History, dict]:
    return (el.History.load(runs / f"{name}.rank{rank}.json"),
            torch.load(runs / f"{name}.rank{rank}.pt", weights_only=True))


def test_padding_counts_the_duplicate_separately(runs):
    h, _ = load(runs, "pad")
    # 101 rows: 51 per rank (one row repeated), ceil(51 / 16) = 4 updates of 32, 32, 32, 6.
    assert (h.world_size, h.backend, h.n_train, h.batch_size, h.global_batch_size) == (
        2, "gloo", 101, 16, 32)
    assert h.iterations_per_epoch == math.ceil(math.ceil(101 / 2) / 16) == 4
    assert h.iterations["batch_size"] == [32, 32, 32, 6] * 2
    assert (h.total_updates, h.samples_seen, h.samples_repeated) == (8, 202, 2)
    assert [r["updates"] for r in h.epochs] == [4, 8]
    assert [r["samples_seen"] for r in h.epochs] == [101, 202]


def test_drop_last_drops_the_tail_and_repeats_nothing(runs):
    h, _ = load(runs, "drop")
    # floor(101 / 2) = 50 rows per rank, floor(50 / 16) = 3 full batches of 16 per rank.
    assert h.iterations_per_epoch == 3 and h.iterations["batch_size"] == [32] * 6
    assert (h.total_updates, h.samples_seen, h.samples_repeated) == (6, 192, 0)


def test_ranks_end_with_the_same_weights_and_history(runs):
    for name in ("pad", "drop", "same_adam"):
        h0, w0 = load(runs, name, 0)
        h1, w1 = load(runs, name, 1)
        for k in w0:
            assert torch.equal(w0[k], w1[k]), (name, k)
        assert h0.iterations["loss"] == h1.iterations["loss"]
        assert h0.history == {k: v for k, v in h1.history.items() if k != "time"} | {
            "time": h0.history["time"]}


def test_early_stopping_stops_every_rank_at_the_same_epoch_and_writers_run_on_rank_0(runs):
    h0, _ = load(runs, "early", 0)
    h1, _ = load(runs, "early", 1)
    for h in (h0, h1):
        assert (h.stop_reason, h.epochs_run, h.total_updates) == ("early_stopping", 2, 2 * 3)
    assert h0.extra["marker_rank"] == 0 and "marker_rank" not in h1.extra


def test_validation_metrics_cover_every_validation_row(runs):
    h, weights = load(runs, "pad")
    model = net(torch.float32)
    model.load_state_dict(weights)
    full = el.evaluate(model, data(27))  # the 27 validation rows, in one process
    assert h.n_val == 27
    assert h.epochs[-1]["val_loss"] == pytest.approx(full["loss"], rel=1e-6)
    assert h.epochs[-1]["val_accuracy"] == pytest.approx(full["accuracy"], abs=1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_ranks_of_16_equal_one_process_of_32(runs, optimizer):
    h2, w2 = load(runs, f"same_{optimizer}")
    model = net(torch.float64)
    h1 = el.fit(model, data(100, np.float64), epochs=1, batch_size=32, optimizer=optimizer,
                lr=0.05, verbose=0, distributed=False)
    assert h1.iterations_per_epoch == h2.iterations_per_epoch == 4
    assert h1.iterations["batch_size"] == h2.iterations["batch_size"] == [32, 32, 32, 4]
    for k, v in model.state_dict().items():
        assert torch.allclose(w2[k], v, rtol=0, atol=1e-12), (k, (w2[k] - v).abs().max())
    np.testing.assert_allclose(h2.iterations["loss"], h1.iterations["loss"], rtol=1e-12)


def test_linear_lr_scaling_warms_up_to_twice_the_rate_and_is_recorded(runs):
    h, _ = load(runs, "scaled")
    rule = h.params["lr_scaling"]
    assert (rule["factor"], rule["global_batch"], rule["warmup_steps"]) == (2.0, 32, 4)
    assert h.iterations["lr"] == pytest.approx([0.01, 0.0125, 0.015, 0.0175, 0.02, 0.02, 0.02,
                                                0.02])


# -- the arithmetic, without processes ------------------------------------------------------

def test_shards_are_distributed_sampler_shards():
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    sampler = torch.utils.data.DistributedSampler(range(11), num_replicas=3, rank=0, shuffle=False)
    for drop_last in (False, True):
        for rank in range(3):
            ctx = DistContext(rank=rank, world_size=3, local_rank=rank, backend="gloo")
            sampler = torch.utils.data.DistributedSampler(
                range(11), num_replicas=3, rank=rank, shuffle=False, drop_last=drop_last)
            assert ctx.shard(order, drop_last).tolist() == [order[i].item() for i in sampler]


def test_rows_of_batch_splits_the_last_batch_into_real_and_padded():
    ctx = DistContext(rank=0, world_size=2, local_rank=0, backend="gloo", n_train=101,
                      batch_size=16)
    assert [ctx.rows_of_batch(k, n) for k, n in enumerate([16, 16, 16, 3])] == [
        (32, 0), (32, 0), (32, 0), (5, 1)]


@pytest.mark.parametrize(("n_train", "n_val", "drop_last", "match"), [
    (1, 10, False, "training set has 1 rows, fewer than the 2 processes"),
    (100, 1, False, "validation set has 1 rows, fewer than the 2 processes"),
    (40, 10, True, "40 // 2 = 20 training rows, less than one batch of 32"),
])
def test_a_split_the_ranks_cannot_share_is_refused_with_the_numbers(n_train, n_val, drop_last,
                                                                    match):
    with pytest.raises(el.ParameterError, match=match):
        d.check_split(n_train, n_val, 2, 32, drop_last)


def test_distributed_true_without_torchrun_says_how_to_launch(small_xy, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(el.ParameterError, match="torchrun --nproc_per_node N"):
        el.fit(el.models.mlp(5), small_xy, epochs=1, batch_size=8, distributed=True, verbose=0)


def test_bad_lr_scaling_is_refused(small_xy):
    with pytest.raises(el.ParameterError, match="`lr_scaling` is 'sqrt'"):
        el.fit(el.models.mlp(5), small_xy, epochs=1, batch_size=8, lr_scaling="sqrt", verbose=0)


def test_launch_command_is_torchrun_on_localhost():
    cmd = d.launch_command(2, ["-m", "epochlab.cli", "fit"], 1234)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--master_addr") + 1] == "127.0.0.1"


def test_summary_and_store_carry_the_data_parallel_accounting(runs):
    from epochlab.store import MemoryStore, record_history

    h, _ = load(runs, "pad")
    text = h.summary()
    assert "processes: 2 (gloo)   batch size: 16 per process, 32 global" in text
    assert "iterations per epoch: 4 = ceil(ceil(101 / 2) / 16)" in text
    assert "samples seen: 202 (+ 2 repeated)" in text
    store = MemoryStore()
    summary = store.run(record_history(store, "ddp", None, {"nproc": 2}, h)).summary
    assert (summary["world_size"], summary["backend"], summary["global_batch_size"],
            summary["samples_repeated"], summary["n_train"]) == (2, "gloo", 32, 2, 101)


def test_a_failed_process_ends_the_launch_with_its_exit_code_and_no_torchrun_report(
        tmp_path, capfd):
    # Rank 1 waits: were it to fail first, torchrun would stop rank 0 before it could say
    # anything on a loaded machine (seen once in ~10 runs of the whole suite).
    script = tmp_path / "fail.py"
    script.write_text("import os, sys, time\n"
                      "if os.environ['RANK'] != '0':\n"
                      "    time.sleep(30)\n"
                      "print('Error: process', os.environ['RANK'], 'refused', file=sys.stderr)\n"
                      "sys.exit(2)\n")
    assert d.launch(2, [str(script)]) == 2
    err = capfd.readouterr().err
    assert "Error: process 0 refused" in err
    assert "Traceback" not in err and "ChildFailedError" not in err


def test_a_stopped_run_resumes_on_every_rank_to_the_uninterrupted_weights(runs):
    # 131 rows, 27 for validation: 104 training rows, 52 per rank, 4 updates per epoch.
    for rank in (0, 1):
        whole, w_whole = load(runs, "whole", rank)
        resumed, w_resumed = load(runs, "resumed", rank)
        assert resumed.extra["resume"][0]["global_step"] == 6
        for k in w_whole:
            assert torch.equal(w_whole[k], w_resumed[k]), (rank, k)
        assert resumed.iterations == whole.iterations
        strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
        assert strip(resumed.epochs) == strip(whole.epochs)
    assert sorted(p.name for p in (runs / "ckpts").iterdir()) == [
        "ckpt-000000009.pt", "ckpt-000000012.pt"]
