"""``epochlab fit --nproc N``: the command runs itself under torchrun; process 0 writes."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

import epochlab as el
from epochlab.cli import main


def invoke(*args):
    return CliRunner().invoke(main, ["fit", "--verbose", "0", *args], catch_exceptions=False)


def test_two_processes_write_one_history_with_the_global_accounting(tmp_path):
    out = tmp_path / "run"
    # The schedule's own initial rate: no --lr reaches the processes unless the user gave it.
    result = invoke("--data", "synthetic", "--model", "mlp", "--epochs", "2", "--batch-size",
                    "16", "--validation-split", "0.2", "--nproc", "2", "--out", str(out),
                    "--store", str(tmp_path / "s.db"), "--schedule", "constant:lr=0.002")
    assert result.exit_code == 0, result.output
    h = el.History.load(out / "history.json")
    assert (h.world_size, h.backend, h.n_train, h.global_batch_size) == (2, "gloo", 640, 32)
    assert h.iterations_per_epoch == math.ceil(math.ceil(h.n_train / 2) / 16) == 20
    assert (h.total_updates, h.samples_seen, h.samples_repeated) == (40, 1280, 0)
    assert h.iterations["lr"] == [0.002] * 40
    assert (out / "model.pt").is_file()
    with el.store.SQLiteStore(tmp_path / "s.db") as store:  # one run, stored by process 0
        runs = store.runs("fit")
    assert len(runs) == 1 and runs[0].summary["world_size"] == 2


@pytest.mark.parametrize(("args", "message"), [
    (["--validation-split", "0.001"], "validation set has 1 rows, fewer than the 2 processes"),
    (["--drop-last", "--batch-size", "400"],
     "gives each process 640 // 2 = 320 training rows, less than one batch of 400"),
])
def test_a_split_two_processes_cannot_share_is_refused_before_launching(tmp_path, args, message):
    result = invoke("--nproc", "2", "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2
    assert "--nproc" in result.output and message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()
