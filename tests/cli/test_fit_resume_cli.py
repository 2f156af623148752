"""`epochlab fit` SIGKILLed at random moments and resumed: the same weights and History.

"The same History" means every field of history.json except the wall-clock
``time`` of each epoch and ``extra["resume"]`` (the log of where each
resume started), bit for bit; the weights are compared with ``torch.equal``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from epochlab.train.resume import checkpoint_paths

BASE = ["fit", "--data", "digits", "--model", "cnn_small", "--batch-size", "32",
        "--no-store", "--verbose", "0"]
KILLS = {"plain": 2, "early_stopping_and_schedule": 3}
SCENARIOS = {
    "plain": ["--epochs", "3"],
    "early_stopping_and_schedule": [
        "--epochs", "6", "--schedule", "cosine",
        "--early-stopping", "val_loss:patience=0,min_delta=0.05,restore=true"],
}


def _start(tmp_path: Path, args: list[str], out: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from epochlab.cli import main; main()", *BASE, *args,
           "--out", str(tmp_path / out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def _newest_step(folder: Path) -> int:
    paths = checkpoint_paths(folder)
    return int(paths[0].stem.split("-")[1]) if paths else -1


def _comparable(out_dir: Path) -> dict:
    h = json.loads((out_dir / "history.json").read_text())
    for row in h["epochs"]:
        row.pop("time")
    h["extra"].pop("resume", None)
    return h


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sigkilled_fit_resumes_to_the_uninterrupted_result(tmp_path, scenario):
    args = SCENARIOS[scenario]
    ck = tmp_path / "ck"
    save = ["--checkpoint-dir", str(ck), "--checkpoint-every", "7"]
    _finish(_start(tmp_path, args, "ref"))  # uninterrupted, no checkpoints at all
    total = json.loads((tmp_path / "ref" / "history.json").read_text())["total_updates"]

    # Kill points are chosen by progress (a checkpoint at or past a random update), not by
    # wall-clock time, so a fast machine cannot finish a run before it is killed.
    rng = random.Random(f"{scenario}-12")
    targets = sorted(rng.sample(range(8, int(total * 0.8)), KILLS[scenario]))
    kills = 0
    for i, target in enumerate(targets):
        proc = _start(tmp_path, args + save + (["--resume"] if i else []), f"k{i}")
        # A new checkpoint at or past the target: every kill is then resumed from its own one.
        goal, deadline = max(target, _newest_step(ck) + 1), time.monotonic() + 120
        while proc.poll() is None and _newest_step(ck) < goal and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.02))  # a few updates later: between two checkpoints
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            kills += 1
    out = _finish(_start(tmp_path, args + save + ["--resume"], "final"))
    assert kills >= 2, "the runs ended before they could be killed"
    assert "resumed from" in out

    ref, final = _comparable(tmp_path / "ref"), _comparable(tmp_path / "final")
    assert final == ref
    resumes = json.loads((tmp_path / "final" / "history.json").read_text())["extra"]["resume"]
    assert len(resumes) >= kills and any(r["batch_in_epoch"] > 0 for r in resumes)
    w_ref = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    w_final = torch.load(tmp_path / "final" / "model.pt", weights_only=True)
    assert w_ref.keys() == w_final.keys()
    assert all(torch.equal(w_ref[k], w_final[k]) for k in w_ref)
    if scenario != "plain":
        assert ref["stop_reason"] == "early_stopping" and ref["extra"]["early_stopping"]["restored"]
    assert len(checkpoint_paths(ck)) == 2
    assert not [p for p in os.listdir(ck) if p.endswith(".tmp")]


def _invoke(*args):
    from click.testing import CliRunner

    from epochlab.cli import main

    return CliRunner().invoke(main, ["fit", "--verbose", "0", "--no-store", *args])


def test_resume_refuses_other_settings_in_one_line(tmp_path):
    ck = str(tmp_path / "ck")
    first = _invoke("--epochs", "2", "--checkpoint-dir", ck, "--out", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    again = _invoke("--epochs", "2", "--batch-size", "64", "--checkpoint-dir", ck, "--resume",
                    "--out", str(tmp_path / "b"))
    assert again.exit_code == 2 and "Traceback" not in again.output
    assert "batch_size: 32 in the checkpoint, 64 now" in again.output
    fresh = _invoke("--epochs", "2", "--checkpoint-dir", ck, "--out", str(tmp_path / "c"))
    assert fresh.exit_code == 2 and "already holds checkpoints" in fresh.output


def test_resume_flags_need_a_checkpoint_dir_and_a_valid_interval(tmp_path):
    r = _invoke("--resume")
    assert r.exit_code == 2 and "--resume needs --checkpoint-dir" in r.output
    r = _invoke("--checkpoint-dir", str(tmp_path), "--checkpoint-every", "often")
    assert r.exit_code == 2 and "'epoch', a number of updates >= 1" in r.output


def test_resume_says_so_when_the_folder_has_no_checkpoint_yet(tmp_path):
    # Keras' BackupAndRestore starts afresh silently; a mistyped folder should not.
    ck = tmp_path / "ck"
    r = _invoke("--epochs", "1", "--checkpoint-dir", str(ck), "--resume", "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert f"--resume: no checkpoint in {ck} yet, so training starts from the beginning" in flat
    again = _invoke("--epochs", "1", "--checkpoint-dir", str(ck), "--resume", "--out",
                    str(tmp_path / "b"))
    assert again.exit_code == 0 and "no checkpoint in" not in again.output
    assert "resumed from" in again.output


def test_a_corrupted_checkpoint_is_reported_and_the_previous_used(tmp_path):
    ck = tmp_path / "ck"
    r = _invoke("--epochs", "2", "--checkpoint-dir", str(ck), "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    newest, previous = checkpoint_paths(ck)
    newest.write_bytes(newest.read_bytes()[:1000])
    r = _invoke("--epochs", "2", "--checkpoint-dir", str(ck), "--resume",
                "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert f"skipped checkpoint {newest}" in flat and "truncated or not a checkpoint" in flat
    assert f"resumed from {previous} at the start of epoch 2 (20 updates done)" in flat
    assert _comparable(tmp_path / "a") == _comparable(tmp_path / "b")
