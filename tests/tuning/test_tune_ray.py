"""el.tune with executor="ray": trials as Ray tasks reporting to Optuna through its storage."""

from __future__ import annotations

import optuna
import pytest

import epochlab as el
from epochlab.store import MemoryStore, SQLiteStore
from epochlab.validation import ParameterError

pytest.importorskip("ray")
GRID = "lr=choice(0.01,0.001),batch_size=choice(32,64)"


@pytest.fixture(scope="module")
def small():
    return el.data.synthetic(n_samples=200)


def test_ray_trials_store_what_in_process_trials_store(local_ray, tmp_path, small):
    here = MemoryStore()
    local = el.tune("mlp", small, space=GRID, sampler="grid", pruner="none", trials=4, epochs=3,
                    store=here, study="g")
    there = SQLiteStore(tmp_path / "ray.db")
    remote = el.tune("mlp", small, space=GRID, sampler="grid", pruner="none", trials=4, epochs=3,
                     store=there, study="g", executor="ray")
    assert [t.state for t in remote.trials] == ["COMPLETE"] * 4

    def by_params(store, result):
        return {tuple(sorted(t.params.items())): [
            {k: v for k, v in row.items() if k != "time"} for row in store.epochs(t.run_id)]
            for t in result.trials}

    assert by_params(there, remote) == by_params(here, local)
    # The workers reported every epoch to the study in the shared file, at the updates
    # made (batch sizes differ, so trials are compared at equal updates).
    assert remote.budget.by == "updates"
    loaded = {t.number: t for t in optuna.load_study(study_name="g", storage=remote.storage).trials}
    for t in remote.trials:
        steps = [int(row["updates"]) for row in there.epochs(t.run_id)]
        assert sorted(loaded[t.number].intermediate_values) == steps


def test_hyperband_on_ray_stores_each_trial_once_pruned_ones_with_their_epochs(local_ray, tmp_path,
                                                                                small):
    store = SQLiteStore(tmp_path / "hb.db")
    r = el.tune("mlp", small, space="lr=loguniform(1e-4,1e-1),batch_size=choice(16,64)",
                trials=8, pruner="hyperband", epochs=6, store=store, study="hb", executor="ray")
    assert len(r.trials) == 8 and {t.state for t in r.trials} <= {"COMPLETE", "PRUNED"}
    runs = store.runs("hb")
    assert sorted(x.id for x in runs) == sorted(t.run_id for t in r.trials)
    loaded = {t.number: t for t in optuna.load_study(study_name="hb", storage=r.storage).trials}
    for t in r.trials:
        run = store.run(t.run_id)
        assert run.status == ("pruned" if t.state == "PRUNED" else "completed")
        assert len(store.epochs(run.id)) == t.epochs_run == len(loaded[t.number].intermediate_values)


def test_ray_needs_a_storage_the_workers_can_open(small):
    with pytest.raises(ParameterError, match="storage the workers can open"):
        el.tune("mlp", small, space=GRID, store=MemoryStore(), executor="ray")
