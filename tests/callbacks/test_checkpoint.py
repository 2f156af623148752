"""ModelCheckpoint and load_checkpoint: round trips, full-state resume, atomic writes, bad files."""

from __future__ import annotations

import os

import pytest
import torch

import epochlab as el
from epochlab.callbacks.checkpoint import FORMAT, load_checkpoint, save_atomic
from epochlab.train.loop import prepare_data, run


class Inject(el.Callback):
    """Writes a crafted ``val_fake_loss`` into each epoch row (given before the checkpoint)."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, trainer, logs):
        logs["val_fake_loss"] = self.values[int(logs["epoch"])]


def fit_small(xy, callbacks, epochs=3, model=None):
    torch.manual_seed(0)
    model = model or el.models.mlp(5)
    h = el.fit(model, xy, epochs=epochs, batch_size=16, validation_split=0.25,
               callbacks=callbacks, verbose=0)
    return model, h


def test_model_weights_round_trip_with_epoch_placeholders(small_xy, tmp_path):
    ck = el.ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.pt")
    model, h = fit_small(small_xy, [ck])
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3 and names[0].startswith("m-01-") and names[2].startswith("m-03-")
    assert f"{h.epochs[2]['val_loss']:.3f}" in names[2]
    d = load_checkpoint(tmp_path / names[2])
    assert d["checkpoint"] == {"format": FORMAT, "kind": "model", "epoch": 2,
                               "monitor": "val_loss", "value": h.epochs[2]["val_loss"]}
    fresh = el.models.mlp(5)
    fresh.load_state_dict(d["model"])
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_save_best_only_writes_on_improvement_only(small_xy, tmp_path):
    inj = Inject([3.0, 2.0, 2.5, 1.0, 1.5])
    ck = el.ModelCheckpoint(tmp_path / "best-{epoch}.pt", monitor="val_fake_loss", mode="min",
                            save_best_only=True)
    _, h = fit_small(small_xy, [inj, ck], epochs=5)
    assert [os.path.basename(p) for p in ck.saved] == ["best-1.pt", "best-2.pt", "best-4.pt"]
    assert ck.best_epoch == 3 and ck.best_value == 1.0
    assert load_checkpoint(ck.best_path)["checkpoint"]["value"] == 1.0
    assert h.extra["checkpoint"]["best_path"] == ck.best_path


def test_full_state_loads_into_a_fresh_train_state_and_resumes_exactly(small_xy, tmp_path):
    ck = el.ModelCheckpoint(tmp_path / "state-{epoch}.pt", save_full_state=True)
    _, ref = fit_small(small_xy, [ck], epochs=4)
    d = load_checkpoint(tmp_path / "state-2.pt")
    assert d["checkpoint"]["kind"] == "full_state"

    torch.manual_seed(123)  # different initial weights: everything must come from the file
    model = el.models.mlp(5)
    resumed_ck = el.ModelCheckpoint(tmp_path / "resumed-{epoch}.pt", save_full_state=True)
    trainer = el.Trainer(model, callbacks=[resumed_ck])
    trainer.state.load_state_dict(d, callbacks=[resumed_ck])
    assert (trainer.state.epoch, trainer.state.global_step) == (2, 2 * ref.iterations_per_epoch)
    assert resumed_ck.saved == [str(tmp_path / f"state-{e}.pt") for e in (1, 2)]
    prepared, spec = prepare_data(model, small_xy, validation_split=0.25, validation_data=None,
                                  validation_split_mode="random", loss=None, seed=0)
    trainer.attach_loss(spec, targets_ready=True)
    h = run(trainer, prepared, epochs=4, batch_size=16, seed=0)
    assert h.iterations["loss"] == ref.iterations["loss"]
    assert [r["val_loss"] for r in h.epochs] == [r["val_loss"] for r in ref.epochs]
    assert h.total_updates == ref.total_updates


def test_atomic_write_leaves_no_temporary_files(small_xy, tmp_path):
    ck = el.ModelCheckpoint(tmp_path / "last.pt", save_full_state=True)
    fit_small(small_xy, [ck])
    assert os.listdir(tmp_path) == ["last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["checkpoint"]["epoch"] == 2


def test_a_failed_save_keeps_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "ckpt.pt"
    save_atomic({"model": {"w": torch.ones(3)}}, target)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        save_atomic({"model": {"w": torch.zeros(3)}, "bad": lambda: 0}, target)
    assert os.listdir(tmp_path) == ["ckpt.pt"]
    assert torch.equal(load_checkpoint(target)["model"]["w"], torch.ones(3))


def test_truncated_checkpoint_gives_a_clear_error(small_xy, tmp_path):
    ck = el.ModelCheckpoint(tmp_path / "m.pt")
    fit_small(small_xy, [ck], epochs=1)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"m\.pt: the file is truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "m.pt")


def test_foreign_files_give_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint at all")
    with pytest.raises(ValueError, match="truncated or not a checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save({"w": torch.ones(2)}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="not an epochlab checkpoint.*no 'model' entry"):
        load_checkpoint(tmp_path / "bare.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unknown_placeholder_lists_the_available_ones(small_xy, tmp_path):
    ck = el.ModelCheckpoint(tmp_path / "m-{val_acc}.pt")
    with pytest.raises(ValueError, match="val_acc.*Available placeholders: .*val_accuracy"):
        fit_small(small_xy, [ck], epochs=1)


def test_arguments_are_validated_at_construction(tmp_path):
    with pytest.raises(ValueError, match="valid format string"):
        el.ModelCheckpoint(tmp_path / "m-{epoch.pt")
    with pytest.raises(TypeError, match="`save_best_only` is 'yes'"):
        el.ModelCheckpoint(tmp_path / "m.pt", save_best_only="yes")
    with pytest.raises(ValueError, match="set `mode='min'` or `mode='max'`"):
        el.ModelCheckpoint(tmp_path / "m.pt", monitor="val_score", save_best_only=True)
    # Without save_best_only the direction is not needed, so an unclear name is accepted.
    assert el.ModelCheckpoint(tmp_path / "m.pt", monitor="val_score").mode_ is None


def test_a_folder_given_as_a_file_path_is_refused_at_once(small_xy, tmp_path):
    # It failed after the first epoch, naming a temporary file (History.save too).
    with pytest.raises(ValueError, match=r"a folder, but must be a file path, e\.g\. .*model-\{epoch\}\.pt"):
        el.ModelCheckpoint(tmp_path)
    h = el.History()
    with pytest.raises(IsADirectoryError, match=r"it is a folder; give the path of a file"):
        h.save(tmp_path)
    assert os.listdir(tmp_path) == []
