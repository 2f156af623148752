"""``epochlab fit --schedule ... --early-stopping ...``, and slide 8's schedule through fit."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import epochlab as el
from epochlab.cli import main

SLIDE8 = "exponential:initial=0.1,decay_steps=1000,decay_rate=0.96,staircase=true"


def invoke(*args):
    return CliRunner().invoke(main, ["fit", "--verbose", "0", *args], catch_exceptions=False)


def test_slide8_schedule_is_the_lr_used_at_every_step(slide1):
    # 52 epochs of 20 updates cross the staircase's first step (update 1000).
    torch.manual_seed(0)
    h = el.fit(el.models.mlp(20), slide1.train, epochs=52, batch_size=32, validation_split=0.2,
               schedule=el.schedules.parse(SLIDE8), verbose=0)
    sched = el.schedules.parse(SLIDE8)
    assert h.iterations["step"] == list(range(1040))
    assert h.iterations["lr"] == [sched(s) for s in range(1040)]
    assert h.iterations["lr"][999] == 0.1 and h.iterations["lr"][1000] == pytest.approx(0.096)


def test_fit_with_schedule_and_early_stopping_writes_history_and_lr_plot(tmp_path):
    out = tmp_path / "run"
    result = invoke("--epochs", "3", "--schedule",
                    "exponential:initial=0.05,decay_steps=20,decay_rate=0.5,staircase=true",
                    "--early-stopping", "val_loss:patience=5,restore=true,min_delta=0,mode=auto,"
                    "start_from_epoch=0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "history.json").is_file() and (out / "lr.png").stat().st_size > 0
    h = el.History.load(out / "history.json")
    assert h.params["schedule"]["name"] == "exponential"
    # 20 updates per epoch, halved every 20 updates: one rate per epoch.
    assert [r["lr"] for r in h.epochs] == [0.05, 0.025, 0.0125]
    es = h.extra["early_stopping"]
    assert es["monitor"] == "val_loss" and es["restored"] is True
    assert h.weights_epoch == es["best_epoch"]
    assert f"best val_loss {es['best_value']:.4f} at epoch {es['best_epoch'] + 1}" in result.output
    assert "did not stop early" in result.output
    # The advice is printed and kept in the History, with the numbers behind it.
    advice = {a["topic"]: a for a in h.extra["advice"]}
    assert advice["best_epoch"]["numbers"]["epoch"] == es["best_epoch"] + 1
    assert "Advice" in result.output and advice["best_epoch"]["text"] in result.output


def test_early_stopping_flag_stops_and_prints_the_stopped_epoch(tmp_path):
    result = invoke("--epochs", "30", "--lr", "0.05", "--early-stopping", "loss:patience=0",
                    "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    h = el.History.load(tmp_path / "history.json")
    assert h.stop_reason == "early_stopping" and len(h.epochs) < 30
    assert f"stopped at epoch {len(h.epochs)} (patience 0)" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--schedule", "expo:initial=0.1"],
         ["--schedule", "Unknown schedule 'expo'", "exponential", "cosine", "one_cycle"]),
        (["--schedule", "cosine:warm=3"],
         ["--schedule", "Unknown parameter 'warm'", "warmup_steps", "min_lr"]),
        (["--early-stopping", "val_loss:patiense=3"],
         ["--early-stopping", "Unknown parameter 'patiense'", "patience, restore, min_delta"]),
        (["--early-stopping", "val_acc:patience=3"],
         ["--early-stopping", "'val_acc'", "loss, accuracy, val_loss, val_accuracy"]),
        (["--early-stopping", "val_loss:mode=lowest"], ["--early-stopping", "'auto', 'min', 'max'"]),
        (["--validation-split", "0", "--early-stopping", "val_loss"],
         ["--validation-split > 0", "Valid metrics: loss, accuracy."]),
    ],
)
def test_bad_flag_text_is_a_usage_error_listing_the_valid_choices(args, expected, tmp_path):
    result = invoke("--epochs", "1", "--out", str(tmp_path), *args)
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # click wraps long messages
    for piece in expected:
        assert piece in text, text
    assert not (tmp_path / "history.json").exists()  # rejected before training
