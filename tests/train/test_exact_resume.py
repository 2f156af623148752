"""fit(checkpoint_dir=, resume=True): exact resume, refused settings, bad files, the folder.

A run "crashes" by an exception from a callback at a chosen update (the loop
lets it through after on_train_end), and is resumed in a fresh model. "The
same History" is every field but the wall-clock ``time`` and
``extra["resume"]``.
"""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import epochlab as el
from epochlab.train.resume import CheckpointWarning, checkpoint_paths
from epochlab.validation import ParameterError


class Crash(el.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_batch_end(self, trainer, logs):
        if trainer.state.global_step == self.at:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def make_model(width: int = 16) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Dropout(0.3), nn.Linear(width, 2))


def train(data, folder, *, extra=(), resume=False, every=3, width=16, batch_size=16,
          schedule="cosine", callbacks=None, epochs=40):
    model = make_model(width)
    if callbacks is None:
        callbacks = [el.EarlyStopping(patience=2, restore_best_weights=True),
                     el.ReduceLROnPlateau(patience=1)]
    sched = el.schedules.cosine(0.01) if schedule == "cosine" else schedule
    h = el.fit(model, data, epochs=epochs, batch_size=batch_size, validation_split=0.2,
               verbose=0, schedule=sched, callbacks=list(callbacks) + list(extra),
               checkpoint_dir=folder, checkpoint_every=every, resume=resume)
    return model, h


def crash(data, folder, at, **kw):
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(data, folder, extra=[Crash(at)], **kw)


@pytest.fixture(scope="module")
def reference(xy, tmp_path_factory):
    """The uninterrupted run (model, History) with the default settings of :func:`train`."""
    return train(xy, tmp_path_factory.mktemp("ref"))


def comparable(h):
    d = h.to_dict()
    for row in d["epochs"]:
        row.pop("time")
    d["extra"].pop("resume", None)
    return d


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def test_resume_after_crashes_anywhere_gives_the_uninterrupted_result(xy, tmp_path, reference):
    ref_model, ref = reference
    assert ref.stop_reason == "early_stopping" and ref.extra["reduce_lr"]  # all of it active
    folder = tmp_path / "ck"
    # Crash repeatedly into the same folder: mid-epoch, at an epoch's last batch, late.
    for at in (4, 8, 16, 31, 40, 77, 130):
        crash(xy, folder, at, resume=at != 4)
    model, h = train(xy, folder, resume=True)
    assert comparable(h) == comparable(ref)
    assert same_weights(model, ref_model)
    starts = [(r["global_step"], r["batch_in_epoch"]) for r in h.extra["resume"]]
    assert starts == [(3, 3), (6, 6), (15, 7), (30, 6), (39, 7), (75, 3), (129, 1)]


def test_epoch_checkpoints_resume_exactly_and_keep_two(xy, tmp_path):
    ref_model, ref = train(xy, tmp_path / "ref", every="epoch")
    assert [p.name for p in checkpoint_paths(tmp_path / "ref")] == [
        f"ckpt-{ref.total_updates:09d}.pt", f"ckpt-{ref.total_updates - 8:09d}.pt"]
    crash(xy, tmp_path / "ck", 45, every="epoch")
    model, h = train(xy, tmp_path / "ck", every="epoch", resume=True)
    assert h.extra["resume"][0]["global_step"] == 40  # epoch 5's end: the epoch is redone
    assert comparable(h) == comparable(ref) and same_weights(model, ref_model)
    assert not [n for n in os.listdir(tmp_path / "ck") if n.endswith(".tmp")]


def test_a_dataset_with_dropout_resumes_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 6, generator=g)
    ds = TensorDataset(x, (x[:, 0] > 0).long())
    ref_model, ref = train(ds, tmp_path / "ref", callbacks=[], epochs=4)
    crash(ds, tmp_path / "ck", 10, callbacks=[], epochs=4)
    model, h = train(ds, tmp_path / "ck", callbacks=[], epochs=4, resume=True)
    assert comparable(h) == comparable(ref) and same_weights(model, ref_model)


def test_resuming_leaves_the_callers_rng_alone(xy, tmp_path):
    crash(xy, tmp_path, 10)
    model = make_model()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    el.fit(model, xy, epochs=40, batch_size=16, validation_split=0.2, verbose=0,
           schedule=el.schedules.cosine(0.01), checkpoint_dir=tmp_path, checkpoint_every=3,
           resume=True, callbacks=[el.EarlyStopping(patience=2, restore_best_weights=True),
                                   el.ReduceLROnPlateau(patience=1)])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("change", "named"), [
    ({"batch_size": 32}, "batch_size: 16 in the checkpoint, 32 now"),
    ({"width": 8}, "model: parameter '0.bias' shape is [16] in the checkpoint, [8] now"),
    ({"schedule": el.schedules.constant(0.01)}, "schedule: {'name': 'cosine'"),
    ({"epochs": 30}, "epochs: 40 in the checkpoint, 30 now"),
])
def test_other_settings_are_refused_naming_the_difference(xy, tmp_path, change, named):
    crash(xy, tmp_path, 10)
    with pytest.raises(ParameterError, match="other settings") as e:
        train(xy, tmp_path, resume=True, **change)
    assert named in str(e.value)


def test_other_data_is_refused(xy, tmp_path):
    crash(xy, tmp_path, 10)
    x, y = xy
    x = x.copy()
    x[0, 0] += 1.0
    with pytest.raises(ParameterError, match="data: the training or validation rows differ"):
        train((x, y), tmp_path, resume=True)


def test_callback_states_are_matched_by_key_not_position(xy, tmp_path):
    es, rl = el.EarlyStopping(patience=2), el.ReduceLROnPlateau(patience=1)
    crash(xy, tmp_path, 60, callbacks=[es, rl])
    es2, rl2 = el.EarlyStopping(patience=2), el.ReduceLROnPlateau(patience=1)
    # Given in the other order, each still gets its own state back.
    with pytest.raises(RuntimeError):
        train(xy, tmp_path, resume=True, callbacks=[rl2, es2], extra=[Crash(61)])
    assert es2.best_value == es.best_value and es2.wait == es.wait
    assert rl2.best_value == rl.best_value and rl2.reductions == rl.reductions
    with pytest.raises(ParameterError, match=r"checkpoint has \['EarlyStopping\(val_loss\)', "
                                             r"'ReduceLROnPlateau\(val_loss\)'\], this run has "
                                             r"\['EarlyStopping\(val_accuracy\)'"):
        train(xy, tmp_path, resume=True, callbacks=[el.EarlyStopping("val_accuracy"), rl2])


def test_an_existing_run_is_not_overwritten_without_resume(xy, tmp_path):
    crash(xy, tmp_path, 10)
    with pytest.raises(ParameterError, match="already holds checkpoints.*resume=True"):
        train(xy, tmp_path)


def test_resume_with_nothing_to_resume_starts_from_the_beginning(xy, tmp_path, reference):
    ref_model, ref = reference
    model, h = train(xy, tmp_path / "b", resume=True)
    assert "resume" not in h.extra and comparable(h) == comparable(ref)


class Evil:
    """Unpickling this would create a file (and could run anything)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _spoil(path, how, marker):
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "code_pickle_torch":
        torch.save({"model": Evil(marker)}, path)
    elif how == "code_pickle_raw":
        path.write_bytes(pickle.dumps({"model": Evil(marker)}))


@pytest.mark.parametrize("how", ["truncated", "random_bytes", "code_pickle_torch",
                                 "code_pickle_raw"])
def test_a_bad_newest_checkpoint_is_reported_and_the_previous_one_used(xy, tmp_path, how,
                                                                     reference):
    ref_model, ref = reference
    folder, marker = tmp_path / "ck", tmp_path / "code-ran"
    crash(xy, folder, 20)
    newest, previous = checkpoint_paths(folder)
    _spoil(newest, how, marker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, h = train(xy, folder, resume=True)
    assert not marker.exists()  # nothing ran
    msgs = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert len(msgs) == 1 and f"Skipped checkpoint {newest}" in msgs[0]
    assert "truncated or not a checkpoint" in msgs[0]
    assert h.extra["resume"][0]["path"] == str(previous)
    assert h.extra["resume"][0]["skipped"][0]["path"] == str(newest)
    assert (folder / (newest.name + ".corrupt")).exists()
    assert comparable(h) == comparable(ref) and same_weights(model, ref_model)


def test_no_readable_checkpoint_stops_cleanly_before_training(xy, tmp_path):
    marker = tmp_path / "code-ran"
    crash(xy, tmp_path / "ck", 20)
    a, b = checkpoint_paths(tmp_path / "ck")
    _spoil(a, "truncated", marker)
    _spoil(b, "code_pickle_torch", marker)
    model = make_model()
    before = [p.clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(ParameterError, match="No checkpoint in `checkpoint_dir` .* can be read"):
            el.fit(model, xy, epochs=40, batch_size=16, validation_split=0.2, verbose=0,
                   schedule=el.schedules.cosine(0.01), checkpoint_dir=tmp_path / "ck",
                   checkpoint_every=3, resume=True)
    assert not marker.exists()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_a_stale_temporary_file_is_removed(xy, tmp_path):
    crash(xy, tmp_path, 10)
    (tmp_path / ".ckpt-000000012.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    train(xy, tmp_path, resume=True, epochs=40)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_bad_arguments_name_the_parameter(xy, tmp_path):
    with pytest.raises(ParameterError, match="`resume=True` needs `checkpoint_dir`"):
        el.fit(make_model(), xy, epochs=1, batch_size=16, verbose=0, resume=True)
    with pytest.raises(ParameterError, match="`checkpoint_every` is 0, but must be 'epoch'"):
        el.fit(make_model(), xy, epochs=1, batch_size=16, verbose=0, checkpoint_dir=tmp_path,
               checkpoint_every=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(ParameterError, match="that is a file"):
        el.fit(make_model(), xy, epochs=1, batch_size=16, verbose=0,
               checkpoint_dir=tmp_path / "file")


def test_train_state_load_keeps_the_saved_schedule():
    model = make_model()
    t1 = el.Trainer(model, lr=0.1, schedule=el.schedules.cosine(0.1, total_steps=100))
    t1.state.global_step = 50
    t2 = el.Trainer(make_model(), lr=0.1)  # no schedule given
    t2.state.load_state_dict(t1.state.state_dict())
    assert t2.state.schedule == t1.state.schedule
    assert t2.state.lr_at(50, 0) == t1.state.lr_at(50, 0) != 0.1


def test_a_csv_log_of_a_resumed_run_has_every_epoch_once(xy, tmp_path):
    log = tmp_path / "log.csv"
    crash(xy, tmp_path / "ck", 45, every="epoch", callbacks=[el.CSVLogger(log)])
    assert len(log.read_text().splitlines()) == 1 + 5  # 5 epochs done, crashed in the 6th
    _, h = train(xy, tmp_path / "ck", every="epoch", resume=True, callbacks=[el.CSVLogger(log)])
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + len(h.epochs)
    assert [line.split(",")[0] for line in lines[1:]] == [str(e) for e in range(len(h.epochs))]


def test_a_resume_keeps_the_thread_count_and_refuses_another_precision(xy, tmp_path):
    crash(xy, tmp_path, 10)  # trained with the automatic choice: one thread, fp32
    model = make_model()
    with pytest.warns(UserWarning, match="threads=2 is not used"):
        h = el.fit(model, xy, epochs=40, batch_size=16, validation_split=0.2, verbose=0,
                   schedule=el.schedules.cosine(0.01), checkpoint_dir=tmp_path,
                   checkpoint_every=3, resume=True, threads=2,
                   callbacks=[el.EarlyStopping(patience=2, restore_best_weights=True),
                              el.ReduceLROnPlateau(patience=1)])
    assert h.extra["runtime"]["threads"] == 1
    with pytest.raises(ParameterError, match="precision: 'fp32' in the checkpoint, 'bf16' now"):
        el.fit(make_model(), xy, epochs=40, batch_size=16, validation_split=0.2, verbose=0,
               schedule=el.schedules.cosine(0.01), checkpoint_dir=tmp_path, checkpoint_every=3,
               resume=True, precision="bf16")


@pytest.mark.parametrize("verbose", [1, 2])
def test_a_mid_epoch_resume_shows_its_progress(xy, tmp_path, verbose):
    # The bar's epoch began before the stop: resumed mid-epoch, its on_epoch_begin does not
    # run again (the bar failed with AttributeError at the first batch).
    kw = dict(epochs=3, batch_size=16, validation_split=0.2, checkpoint_dir=tmp_path,
              checkpoint_every=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        el.fit(make_model(), xy, verbose=0, callbacks=[Crash(7)], **kw)
    h = el.fit(make_model(), xy, verbose=verbose, resume=True, **kw)
    assert h.extra["resume"][0]["batch_in_epoch"] == 4  # of the epoch's 8
    assert h.total_updates == 3 * 8
