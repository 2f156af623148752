"""The Store contract (epochlab/store/base.py), checked once against every backend."""

from __future__ import annotations

import math

import pytest

from epochlab.store import DONE, Finished, MemoryStore, SQLiteStore, Store, run_key


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path) -> Store:
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "runs.db")
    yield s
    s.close()


def _finished(store: Store, study_id: int, key: str, status: str = "completed") -> int:
    rid = store.add_run(study_id, key, {"key": key})
    store.start_run(rid)
    store.finish_run(rid, status, {"final": {"loss": 0.1}}, [{"epoch": 0, "loss": 0.1}],
                     {"step": [0], "loss": [0.1]})
    return rid


class TestStoreContract:
    def test_create_study_is_idempotent_and_keeps_the_first_spec(self, store):
        sid = store.create_study("sweep", {"lr": [0.1, 0.01]})
        assert store.create_study("sweep", {"lr": [1.0]}) == sid
        assert store.create_study("sweep") == sid
        assert store.study("sweep")["spec"] == {"lr": [0.1, 0.01]}
        assert store.study("sweep")["id"] == sid
        assert store.study("nope") is None
        other = store.create_study("other")
        assert other != sid
        assert [s["name"] for s in store.studies()] == ["sweep", "other"]

    def test_studies_count_runs_per_status(self, store):
        sid = store.create_study("s")
        _finished(store, sid, "a")
        _finished(store, sid, "b", "diverged")
        store.add_run(sid, "c", {})
        store.create_study("empty")
        counts = {s["name"]: s["runs"] for s in store.studies()}
        assert counts == {"s": {"pending": 1, "completed": 1, "diverged": 1}, "empty": {}}

    def test_add_run_never_duplicates_a_key(self, store):
        sid = store.create_study("s")
        key = run_key({"lr": 0.1, "batch_size": 32})
        assert key == run_key({"batch_size": 32, "lr": 0.1})
        rid = store.add_run(sid, key, {"lr": 0.1, "batch_size": 32})
        assert store.add_run(sid, key, {"lr": 0.1, "batch_size": 32}) == rid
        assert len(store.runs("s")) == 1
        # The same key in another study is another run.
        assert store.add_run(store.create_study("t"), key, {}) != rid
        rec = store.run(rid)
        assert (rec.study, rec.key, rec.status, rec.settings) == (
            "s", key, "pending", {"lr": 0.1, "batch_size": 32})

    def test_add_run_to_an_unknown_study_raises(self, store):
        with pytest.raises(KeyError, match="no study with id 99"):
            store.add_run(99, "k", {})

    def test_empty_name_or_key_is_rejected(self, store):
        with pytest.raises(ValueError, match="`name`"):
            store.create_study("")
        with pytest.raises(ValueError, match="`key`"):
            store.add_run(store.create_study("s"), "", {})

    def test_status_flow_pending_running_finished(self, store):
        sid = store.create_study("s")
        rid = store.add_run(sid, "k", {})
        assert store.run(rid).status == "pending" and store.run(rid).started_at is None
        store.start_run(rid)
        rec = store.run(rid)
        assert rec.status == "running" and rec.started_at is not None and rec.finished_at is None
        with pytest.raises(ValueError, match="running"):
            store.start_run(rid)  # a second worker cannot claim a running run
        store.finish_run(rid, "early_stopped", {"best": {"epoch": 3}}, [], group="g1")
        rec = store.run(rid)
        assert rec.status == "early_stopped" and rec.finished_at >= rec.started_at
        assert rec.summary == {"best": {"epoch": 3}} and rec.group == "g1"

    @pytest.mark.parametrize("status", DONE)
    def test_a_done_run_is_never_restarted_or_overwritten(self, store, status):
        sid = store.create_study("s")
        rid = _finished(store, sid, "k", status)
        with pytest.raises(ValueError, match=status):
            store.start_run(rid)
        with pytest.raises(ValueError, match="not overwritten"):
            store.finish_run(rid, "failed", {}, [])
        assert store.run(rid).status == status
        assert store.epochs(rid) == [{"epoch": 0, "loss": 0.1}]

    @pytest.mark.parametrize("status", ["interrupted", "failed"])
    def test_an_interrupted_or_failed_run_can_run_again_from_scratch(self, store, status):
        sid = store.create_study("s")
        rid = _finished(store, sid, "k", status)
        store.start_run(rid)
        rec = store.run(rid)
        assert rec.status == "running" and rec.summary == {}
        assert store.epochs(rid) == [] and store.iterations(rid) == {}
        store.finish_run(rid, "completed", {"ok": 1}, [{"epoch": 0, "loss": 0.2}])
        assert store.run(rid).status == "completed"
        assert store.epochs(rid) == [{"epoch": 0, "loss": 0.2}]

    def test_a_shared_prefix_run_finishes_straight_from_pending(self, store):
        sid = store.create_study("s")
        source = _finished(store, sid, "15 epochs")
        rid = store.add_run(sid, "5 epochs", {"epochs": 5})
        store.finish_run(rid, "completed", {}, [{"epoch": 0, "loss": 1.0}], shared_from=source)
        assert store.run(rid).shared_from == source
        with pytest.raises(KeyError, match="12345"):
            store.finish_run(store.add_run(sid, "x", {}), "completed", {}, [], shared_from=12345)

    @pytest.mark.parametrize("status", ["pending", "running", "done", ""])
    def test_finish_run_rejects_a_status_that_is_not_final(self, store, status):
        rid = store.add_run(store.create_study("s"), "k", {})
        with pytest.raises(ValueError, match="`status`"):
            store.finish_run(rid, status, {}, [])
        assert store.run(rid).status == "pending"

    def test_unknown_run_ids_raise_keyerror_naming_the_id(self, store):
        for call in (store.run, store.start_run, store.epochs, store.iterations,
                     lambda r: store.finish_run(r, "completed", {}, [])):
            with pytest.raises(KeyError, match="777"):
                call(777)

    def test_finish_run_with_unstorable_metrics_writes_nothing(self, store):
        sid = store.create_study("s")
        rid = store.add_run(sid, "k", {})
        store.start_run(rid)
        good_epochs = [{"epoch": 0, "loss": 0.5}, {"epoch": 1, "loss": 0.4}]
        with pytest.raises(TypeError):  # the last row holds something JSON cannot
            store.finish_run(rid, "completed", {"final": 1.0},
                             good_epochs + [{"epoch": 2, "loss": object()}], {"step": [0, 1]})
        with pytest.raises(TypeError):
            store.finish_run(rid, "completed", {"final": 1.0}, good_epochs,
                             {"step": [0, 1], "loss": [0.1, {1, 2}]})
        with pytest.raises(ValueError, match="same length"):
            store.finish_run(rid, "completed", {}, good_epochs, {"step": [0, 1], "loss": [0.1]})
        rec = store.run(rid)
        assert rec.status == "running" and rec.summary == {} and rec.finished_at is None
        assert store.epochs(rid) == [] and store.iterations(rid) == {}

    def test_add_runs_adds_a_grid_at_once_and_never_duplicates_a_key(self, store):
        sid = store.create_study("s")
        first = store.add_run(sid, "a", {"lr": 0.1})
        ids = store.add_runs(sid, [("b", {"lr": 0.01}), ("a", {"lr": 9.9}), ("b", {})])
        assert ids[1] == first and ids[0] == ids[2] != first
        assert [r.key for r in store.runs("s")] == ["a", "b"]
        assert store.run(first).settings == {"lr": 0.1}  # the first settings are kept
        with pytest.raises(TypeError):  # one unstorable: none added
            store.add_runs(sid, [("c", {}), ("d", {"x": object()})])
        with pytest.raises(ValueError, match="`key`"):
            store.add_runs(sid, [("e", {}), ("", {})])
        with pytest.raises(KeyError, match="4321"):
            store.add_runs(4321, [("f", {})])
        assert [r.key for r in store.runs("s")] == ["a", "b"]

    def test_add_runs_of_a_large_grid_gives_each_key_its_own_id(self, store):
        # More keys than one SQL statement binds at once: the ids still follow the keys.
        sid = store.create_study("s")
        other = store.add_run(store.create_study("t"), "k7", {})
        keys = [f"k{i}" for i in range(1203)]
        ids = store.add_runs(sid, [(k, {}) for k in [*keys, "k7", "k1200"]])
        assert len(set(ids[:1203])) == 1203 and other not in ids
        assert ids[1203] == ids[7] and ids[1204] == ids[1200]
        assert {r.id: r.key for r in store.runs("s")} == dict(zip(ids, [*keys, "k7", "k1200"], strict=True))

    def test_start_runs_starts_a_tasks_runs_all_or_none(self, store):
        sid = store.create_study("s")
        done = _finished(store, sid, "done")
        a, b = store.add_runs(sid, [("a", {}), ("b", {})])
        for bad in ([a, done], [a, 999], [a, b, a]):  # done, unknown, named twice
            with pytest.raises((ValueError, KeyError)):
                store.start_runs(bad)
            assert store.run(a).status == store.run(b).status == "pending"
        store.start_runs([a, b])
        assert store.run(a).status == store.run(b).status == "running"

    def test_finish_runs_writes_a_tasks_runs_all_or_none(self, store):
        # A sweep records a task's runs in one transaction: a run that cannot be finished
        # (already done, unknown, unstorable) leaves every run of the call as it was.
        sid = store.create_study("s")
        done = _finished(store, sid, "done")
        a, b = store.add_run(sid, "a", {}), store.add_run(sid, "b", {})
        store.start_run(a)
        ok = Finished(a, "completed", {"final": 1.0}, [{"epoch": 0, "loss": 0.5}], {"step": [0]})
        for bad, error in ((Finished(done, "completed", {}, []), ValueError),
                           (Finished(999, "completed", {}, []), KeyError),
                           (Finished(b, "completed", {}, [], shared_from=998), KeyError),
                           (Finished(b, "completed", {}, [{"loss": object()}]), TypeError),
                           (ok, ValueError)):  # the same run twice: the 2nd would overwrite
            with pytest.raises(error):
                store.finish_runs([ok, bad])
            assert store.run(a).status == "running" and store.epochs(a) == []
            assert store.run(b).status == "pending"
        store.finish_runs([ok, Finished(b, "completed", {}, [{"epoch": 0, "loss": 0.4}],
                                        shared_from=a, group="g")])
        assert store.run(a).status == "completed" and store.iterations(a) == {"step": [0]}
        assert store.run(b).shared_from == a and store.epochs(b) == [{"epoch": 0, "loss": 0.4}]

    def test_a_run_finished_twice_in_one_call_keeps_the_last_unless_the_first_is_final(self, store):
        sid = store.create_study("s")
        a = store.add_run(sid, "a", {})
        store.finish_runs([Finished(a, "failed", {"error": "x"}, [{"epoch": 0, "loss": 9.0}],
                                    {"step": [0, 1]}),
                           Finished(a, "completed", {"final": 1.0}, [{"epoch": 0, "loss": 0.5}],
                                    {"step": [0]})])  # a failed run may be finished again
        assert store.run(a).status == "completed" and store.run(a).summary == {"final": 1.0}
        assert store.epochs(a) == [{"epoch": 0, "loss": 0.5}] and store.iterations(a) == {"step": [0]}

    def test_reset_stale_marks_running_runs_interrupted_and_reruns_only_unfinished(self, store):
        sid = store.create_study("s")
        other = store.create_study("other")
        done = _finished(store, sid, "done")
        stale = store.add_run(sid, "stale", {})
        store.start_run(stale)
        pending = store.add_run(sid, "pending", {})
        elsewhere = store.add_run(other, "elsewhere", {})
        store.start_run(elsewhere)
        assert store.reset_stale(sid) == 1
        assert store.reset_stale(sid) == 0
        assert store.run(stale).status == "interrupted"
        assert store.epochs(stale) == [] and store.iterations(stale) == {}
        assert store.run(elsewhere).status == "running"  # other studies are left alone
        todo = [r.id for r in store.runs("s") if r.status not in DONE]
        assert todo == [stale, pending]
        assert store.run(done).status == "completed"

    def test_reads_return_copies(self, store):
        sid = store.create_study("s", {"grid": [1, 2]})
        rid = _finished(store, sid, "k")
        store.run(rid).settings["key"] = "changed"
        store.run(rid).summary["final"]["loss"] = -1
        store.epochs(rid)[0]["loss"] = -1
        store.iterations(rid)["loss"].append(5.0)
        store.study("s")["spec"]["grid"].append(3)
        store.runs()[0].summary.clear()
        rec = store.run(rid)
        assert rec.settings == {"key": "k"} and rec.summary == {"final": {"loss": 0.1}}
        assert store.epochs(rid) == [{"epoch": 0, "loss": 0.1}]
        assert store.iterations(rid) == {"step": [0], "loss": [0.1]}
        assert store.study("s")["spec"] == {"grid": [1, 2]}

    def test_writes_do_not_alias_the_callers_objects(self, store):
        sid = store.create_study("s")
        settings = {"lr": [0.1]}
        rid = store.add_run(sid, "k", settings)
        epochs = [{"epoch": 0, "loss": 0.5}]
        cols = {"loss": [0.5]}
        store.finish_run(rid, "completed", {}, epochs, cols)
        settings["lr"].append(1)
        epochs[0]["loss"] = 9.0
        cols["loss"][0] = 9.0
        assert store.run(rid).settings == {"lr": [0.1]}
        assert store.epochs(rid)[0]["loss"] == 0.5 and store.iterations(rid)["loss"] == [0.5]

    def test_nan_and_inf_round_trip(self, store):
        sid = store.create_study("s", {"bound": math.inf})
        rid = store.add_run(sid, "k", {"clip": -math.inf})
        nan, inf = math.nan, math.inf
        store.finish_run(rid, "diverged", {"final": {"loss": nan}, "best": {"val": inf}},
                         [{"epoch": 0, "loss": inf, "val_loss": nan}],
                         {"loss": [0.5, inf, -inf, nan]})
        rec = store.run(rid)
        assert math.isnan(rec.summary["final"]["loss"]) and rec.summary["best"]["val"] == inf
        assert rec.settings == {"clip": -inf} and store.study("s")["spec"] == {"bound": inf}
        row = store.epochs(rid)[0]
        assert row["loss"] == inf and math.isnan(row["val_loss"])
        loss = store.iterations(rid)["loss"]
        assert loss[:3] == [0.5, inf, -inf] and math.isnan(loss[3])

    def test_iteration_columns_round_trip_with_their_types_and_order(self, store):
        rid = store.add_run(store.create_study("s"), "k", {})
        n = 2500
        cols = {
            "step": list(range(n)),
            "epoch": [i // 100 for i in range(n)],
            "loss": [1.0 / (i + 1) for i in range(n)],
            "lr": [0.1 * 0.999**i for i in range(n)],
            "grad_norm": [float(i) for i in range(n - 1)] + [None],  # a missing value
            "batch_size": [32] * (n - 1) + [8],
            "mixed": [1, 2.5] * (n // 2),
            "note": ["a"] * n,
        }
        store.finish_run(rid, "completed", {}, [], cols)
        got = store.iterations(rid)
        assert list(got) == list(cols)
        assert got == {**cols, "mixed": [1.0, 2.5] * (n // 2)}
        assert all(type(v) is int for v in got["step"])
        assert all(type(v) is float for v in got["loss"])
        assert store.iterations(store.add_run(store.run(rid).study_id, "none", {})) == {}

    @pytest.mark.parametrize("col", [
        [0, 127, -128], [0, 128], [-129, 5], [32767, -32768], [32768, 0], [2**31 - 1, -(2**31)],
        [2**31, 0], [2**63 - 1, -(2**63)],                      # each int width's edges
        [0.5, 0.75, -0.0, float("inf"), float("nan")],         # float32 values
        [0.1, 0.5], [1e300, 0.5], [1e-45, 1.0], [3.4028235e38, 2.0**-149],
    ])
    def test_iteration_columns_come_back_exactly_whatever_width_they_are_stored_in(self, store, col):
        rid = store.add_run(store.create_study("s"), "k", {})
        store.finish_run(rid, "completed", {}, [], {"c": col})
        got = store.iterations(rid)["c"]
        assert [type(v) for v in got] == [type(v) for v in col]
        assert [repr(v) for v in got] == [repr(v) for v in col]  # -0.0, nan, every bit

    def test_epoch_rows_keep_their_column_order(self, store):
        rid = store.add_run(store.create_study("s"), "k", {})
        row = {"epoch": 0, "loss": 0.5, "accuracy": 0.7, "val_loss": 0.6, "lr": 0.1}
        store.finish_run(rid, "completed", {}, [row, {**row, "epoch": 1}])
        assert [list(r) for r in store.epochs(rid)] == [list(row)] * 2
        assert [r["epoch"] for r in store.epochs(rid)] == [0, 1]

    def test_runs_filter_by_study_and_status_in_creation_order(self, store):
        a, b = store.create_study("a"), store.create_study("b")
        r1 = _finished(store, a, "1")
        r2 = store.add_run(b, "2", {})
        r3 = _finished(store, a, "3", "failed")
        assert [r.id for r in store.runs()] == [r1, r2, r3]
        assert [r.id for r in store.runs("a")] == [r1, r3]
        assert [r.id for r in store.runs(status="pending")] == [r2]
        assert [r.id for r in store.runs("a", "failed")] == [r3]
        assert store.runs("missing") == []
        with pytest.raises(ValueError, match="`status`"):
            store.runs(status="finished")

    def test_settings_that_json_cannot_hold_are_rejected(self, store):
        sid = store.create_study("s")
        with pytest.raises(TypeError):
            store.add_run(sid, "k", {"model": object()})
        assert store.runs("s") == []
