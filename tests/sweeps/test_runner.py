"""The sweep driver: shared results equal separate runs bit for bit; outcomes are recorded."""

from __future__ import annotations

import math

import pytest

from epochlab.store.memory import MemoryStore
from epochlab.sweeps.driver import best_run, metric_values, sweep
from epochlab.sweeps.spec import SweepSpec

SMALL = {"data": "synthetic", "data_options": {"n_samples": 200}, "model": "mlp"}


def _strip_time(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _by_key(store, result):
    return {r.key: r for r in result.runs}


def test_shared_results_equal_separate_runs_bit_for_bit():
    spec = SweepSpec(**SMALL, epochs=[1, 2, 3], batch_size=[16, 64], name="s")
    shared_store, separate_store = MemoryStore(), MemoryStore()
    shared = sweep(spec, shared_store, progress=False)
    separate = sweep(spec, separate_store, progress=False, share_prefixes=False)
    assert shared.trained == 2 and separate.trained == 6
    a, b = _by_key(shared_store, shared), _by_key(separate_store, separate)
    assert set(a) == set(b) and len(a) == 6
    for key, ra in a.items():
        rb = b[key]
        assert ra.status == rb.status == "completed"
        assert _strip_time(shared_store.epochs(ra.id)) == _strip_time(separate_store.epochs(rb.id))
        assert shared_store.iterations(ra.id) == separate_store.iterations(rb.id)
        for k in ("total_updates", "samples_seen", "epochs_run", "iterations_per_epoch",
                  "n_train", "weights_epoch", "final", "best", "test"):
            assert ra.summary[k] == rb.summary[k], k
        assert rb.shared_from is None
        trained = ra.settings["epochs"] == 3
        assert (ra.shared_from is None) == trained
        if not trained:
            src = shared_store.run(ra.shared_from)
            assert src.settings["epochs"] == 3
            assert src.settings["batch_size"] == ra.settings["batch_size"]
            assert ra.group == src.group == f"prefix-{src.id}"
    # the accounting of a read-off is that of its own epoch count
    for r in a.values():
        assert r.summary["total_updates"] == r.settings["epochs"] * r.summary["iterations_per_epoch"]


def test_a_failing_run_is_recorded_failed_and_the_sweep_goes_on(monkeypatch):
    import epochlab.sweeps.worker as worker

    real = worker.build_model

    def flaky(config, data, sources):
        if config.batch_size == 16:
            raise RuntimeError("boom in batch 16")
        return real(config, data, sources)

    monkeypatch.setattr(worker, "build_model", flaky)
    store = MemoryStore()
    result = sweep(SweepSpec(**SMALL, epochs=[1, 2], batch_size=[16, 32]), store, progress=False)
    status = {(r.settings["batch_size"], r.settings["epochs"]): r.status for r in result.runs}
    assert status == {(16, 1): "failed", (16, 2): "failed", (32, 1): "completed",
                      (32, 2): "completed"}
    failed = [r for r in result.runs if r.status == "failed"]
    assert all("boom in batch 16" in r.summary["error"] for r in failed)
    assert result.best is not None and result.best.settings["batch_size"] == 32


def test_a_diverged_run_is_recorded_diverged_and_its_read_offs_are_exact():
    spec = SweepSpec(**SMALL, epochs=[1, 3], batch_size=[8], optimizer="sgd", lr=[1e6, 1e-2])
    store = MemoryStore()
    result = sweep(spec, store, progress=False)
    by = {(r.settings["lr"], r.settings["epochs"]): r for r in result.runs}
    assert by[(1e6, 3)].status == "diverged"
    assert by[(1e-2, 3)].status == "completed"
    separate = sweep(spec, MemoryStore(), progress=False, share_prefixes=False)
    sep = {(r.settings["lr"], r.settings["epochs"]): r for r in separate.runs}
    for k, r in by.items():
        assert r.status == sep[k].status
        assert r.summary["total_updates"] == sep[k].summary["total_updates"]


def test_best_prefers_fewer_updates_on_ties_and_names_its_metric():
    store = MemoryStore()
    sid = store.create_study("t")
    rows = {"a": ([0.5, 0.9], 20), "b": ([0.9], 10), "c": ([0.7, 0.8, 0.9], 30)}
    runs = []
    for key, (values, updates) in rows.items():
        rid = store.add_run(sid, key, {})
        store.finish_run(rid, "completed", {"total_updates": updates},
                         [{"epoch": i, "val_accuracy": v} for i, v in enumerate(values)])
        runs.append(store.run(rid))
    assert best_run(store, runs, "val_accuracy", "max").key == "b"
    assert best_run(store, runs, "val_accuracy", "max", select="best").key == "b"
    assert best_run(store, runs, "val_loss", "min") is None
    with pytest.raises(ValueError, match="`select`"):
        best_run(store, runs, "val_accuracy", select="peak")


def test_metric_values_final_is_at_the_kept_weights():
    rows = [{"val_loss": 0.5}, {"val_loss": 0.3}, {"val_loss": 0.4}]
    assert metric_values(rows, "val_loss", "min") == {"final": 0.4, "best": 0.3, "best_epoch": 2}
    assert metric_values(rows, "val_loss", "min", weights_epoch=1)["final"] == 0.3
    assert math.isnan(metric_values(rows, "val_accuracy", "max")["final"])


def test_early_stopping_is_wired_and_stops_runs():
    spec = SweepSpec(**SMALL, epochs=[40], batch_size=[16], lr=[0.05],
                     early_stopping="val_loss:patience=0,restore=true")
    result = sweep(spec, MemoryStore(), progress=False)
    (run,) = result.runs
    assert run.status == "early_stopped"
    assert run.summary["epochs_run"] < 40
    assert run.summary["extra"]["early_stopping"]["restored"] is True


def test_bad_model_fails_before_any_training():
    with pytest.raises(ValueError, match="Cannot build model 'cnn_small' on data 'synthetic'"):
        sweep(SweepSpec(**{**SMALL, "model": "cnn_small"}, epochs=[1]), progress=False)


def test_process_pool_gives_the_same_runs():
    spec = SweepSpec(**SMALL, epochs=[1, 2], batch_size=[32, 64], name="pool")
    store = MemoryStore()
    result = sweep(spec, store, workers=1, progress=False)
    assert result.statuses() == {"completed": 4} and result.trained == 2
    assert sum(r.shared_from is not None for r in result.runs) == 2


def test_process_pool_runs_fused_tasks_as_in_process():
    spec = SweepSpec(**SMALL, epochs=[1, 2], batch_size=[32, 64], lr=[1e-3, 1e-2], name="pool2")
    pool_store, here_store = MemoryStore(), MemoryStore()
    pooled = sweep(spec, pool_store, workers=1, progress=False)
    here = sweep(spec, here_store, progress=False)
    assert [t.fused for t in pooled.executed.tasks] == [True, True]
    assert pooled.statuses() == {"completed": 8} and pooled.trained == 4
    for a, b in zip(pooled.runs, here.runs, strict=True):
        assert a.key == b.key and a.summary["total_updates"] == b.summary["total_updates"]
        assert a.summary["fused"] == b.summary["fused"]
        for ra, rb in zip(pool_store.epochs(a.id), here_store.epochs(b.id), strict=True):
            assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-5)


def test_the_epochs_a_sweep_recorded_are_those_its_store_gives_back(tmp_path):
    # The ranking and the report read the rows the sweep just wrote from memory, not the store:
    # they must be the same rows, read-offs, a diverged run and a rerun sweep included.
    from epochlab.store import SQLiteStore

    store = SQLiteStore(tmp_path / "s.db")
    spec = SweepSpec(**SMALL, epochs=[1, 3], batch_size=[8], optimizer="sgd", lr=[1e-2, 1e6], name="s")
    first = sweep(spec, store, progress=False)
    assert {r.status for r in first.runs} >= {"completed", "diverged"}
    assert set(first.recorded) == {r.id for r in first.runs}
    again = sweep(spec, store, progress=False)  # nothing to train: every row from the store
    assert again.trained == 0 and again.recorded == {}
    for r in first.runs:
        assert first.epochs(r) == store.epochs(r.id) == again.epochs(r.id)
    assert first.best.id == again.best.id
    store.close()


def test_a_sweep_in_this_process_gives_memory_back_once_not_after_every_run(monkeypatch):
    """Each fit returns freed memory to the system as it ends (malloc_trim); in a sweep the
    runs reuse it from one to the next and the heap is trimmed once, at the end."""
    from epochlab.train import runtime

    class Libc:  # glibc's two calls, counted
        trims = 0

        def mallopt(self, *args):
            return 1

        def malloc_trim(self, pad):
            Libc.trims += 1
            return 1

    monkeypatch.setattr(runtime, "_glibc", Libc)
    spec = SweepSpec(**SMALL, epochs=[1], lr=[1e-2, 1e-3], seed=[0, 1], name="m")
    result = sweep(spec, MemoryStore(), progress=False, fuse=False)
    assert len(result.runs) == 4 and Libc.trims == 1
