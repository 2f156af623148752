"""``epochlab lr-find`` and ``epochlab batch-size``: the suggestion line, the figures, bad input."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from epochlab.cli import main


def test_lr_find_prints_the_suggestion_and_writes_the_figure(tmp_path):
    res = CliRunner().invoke(main, ["lr-find", "--data", "synthetic", "--seeds", "3",
                                    "--num-iter", "80", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    m = re.search(r"suggested learning rate: (\S+) \((\S+) to (\S+) over 3 seeds\)", res.output)
    assert m, res.output
    s, lo, hi = (float(v) for v in m.groups())
    assert lo <= s <= hi
    for rule in ("steepest *", "minimum", "valley"):
        assert rule in res.output
    assert "fused" in res.output
    assert (tmp_path / "lr_find.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["rule"] == "steepest" and len(saved["losses"]) == 3
    assert f"{saved['suggestion']:.1e}" == m.group(1)


def test_lr_find_bad_input_is_a_usage_error():
    res = CliRunner().invoke(main, ["lr-find", "--start-lr", "1", "--end-lr", "0.5"])
    assert res.exit_code == 2 and "end_lr" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["lr-find", "--model", "nope"])
    assert res.exit_code == 2 and "--model" in res.output
    res = CliRunner().invoke(main, ["lr-find", "--threads", "0"])
    assert res.exit_code == 2 and "--threads" in res.output


def test_lr_find_takes_threads_and_precision(tmp_path):
    res = CliRunner().invoke(main, ["lr-find", "--seeds", "2", "--num-iter", "20", "--threads", "1",
                                    "--precision", "fp32", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["options"]["threads"] == 1 and saved["options"]["precision"] == "fp32"


def test_batch_size_prints_noise_per_epoch_and_advice_and_writes_the_figure(tmp_path):
    res = CliRunner().invoke(main, ["batch-size", "--data", "synthetic", "--epochs", "3",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "gradient noise scale per epoch" in res.output
    m = re.search(r"batches beyond about (\d+) give diminishing returns; with batch (\d+), "
                  r"about ([\d.]+) epochs", res.output)
    assert m, res.output
    assert (tmp_path / "gns.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "batch_size.json").read_text())
    assert f"{saved['noise_scale']:.0f}" == m.group(1)
    assert len(saved["records"]) > 0


def test_an_earlier_result_is_kept_unless_overwrite_is_given(tmp_path):
    # lr-find replaced an earlier lr_find.json without a word; batch-size and tune told the
    # user to pass --overwrite, which they did not have.
    runs = {"lr-find": ["--seeds", "1", "--num-iter", "20"], "batch-size": ["--epochs", "1"]}
    for command, args in runs.items():
        out = tmp_path / command
        first = CliRunner().invoke(main, [command, "--data", "synthetic", *args, "--out", str(out)])
        assert first.exit_code == 0, first.output
        kept = {p.name: p.read_bytes() for p in out.iterdir()}
        again = CliRunner().invoke(main, [command, "--data", "synthetic", *args, "--out", str(out)])
        assert again.exit_code == 2 and "already holds a run" in again.output
        assert {p.name: p.read_bytes() for p in out.iterdir()} == kept
        forced = CliRunner().invoke(main, [command, "--data", "synthetic", *args, "--out",
                                           str(out), "--overwrite"])
        assert forced.exit_code == 0, forced.output
    res = CliRunner().invoke(main, ["tune", "--help"])
    assert "--overwrite" in res.output


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_batch_size_takes_threads_and_precision_and_says_them(tmp_path):
    # Not what auto gives an MLP (1 thread, float32): fit must get them from the command.
    res = CliRunner().invoke(main, ["batch-size", "--epochs", "2", "--threads", "2",
                                    "--precision", "bf16", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "runtime: 2 threads (set by threads=2) · bfloat16 mixed precision" in res.output
    assert "the measurements in float32" in res.output
    saved = json.loads((tmp_path / "history.json").read_text())
    assert (saved["extra"]["runtime"]["threads"], saved["extra"]["runtime"]["precision"]) == (2, "bf16")
    res = CliRunner().invoke(main, ["batch-size", "--threads", "x"])
    assert res.exit_code == 2 and "--threads" in res.output
