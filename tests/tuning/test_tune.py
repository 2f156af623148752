"""el.tune: trials are epochlab runs, pruned by flag, stored with the epochs they ran, resumable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import optuna
import pytest
import torch

import epochlab as el
from epochlab.store import MemoryStore, SQLiteStore
from epochlab.tuning import TrialPruning, make_budget
from epochlab.validation import ParameterError

SPACE = "lr=loguniform(1e-4,1e-1),batch_size=choice(16,32,64,128),epochs=int(3,12)"


@pytest.fixture(scope="module")
def small():
    return el.data.synthetic(n_samples=300)


def test_hyperband_prunes_and_stores_pruned_runs_with_the_epochs_they_ran(small):
    store = MemoryStore()
    r = el.tune("mlp", small, space=SPACE, trials=12, pruner="hyperband", store=store)
    runs = {x.id: x for x in store.runs(r.study)}
    assert len(runs) == 12 == len(r.trials)
    pruned = [t for t in r.trials if t.state == "PRUNED"]
    assert pruned, "hyperband pruned nothing"
    for t in r.trials:
        run = runs[t.run_id]
        epochs = store.epochs(run.id)
        assert run.settings["trial"] == t.number and run.settings["lr"] == t.params["lr"]
        assert len(epochs) == t.epochs_run == run.summary["epochs_run"]
        assert epochs[-1]["updates"] == t.updates == run.summary["total_updates"]
        if t.state == "PRUNED":
            assert run.status == "pruned" and t.epochs_run < t.epochs_planned
            assert "Pruned after epoch" in run.summary["stop_message"]
        else:
            assert run.status == "completed" and t.epochs_run == t.epochs_planned
    assert r.total_updates < r.full_updates
    assert r.update_ratio == r.total_updates / r.full_updates
    assert r.best is not None and r.best.state == "COMPLETE"
    assert r.best_value == max(t.value for t in r.trials if t.state == "COMPLETE")


def test_pruning_stops_by_flag_after_the_epoch_it_was_told():
    class PruneAtTwo(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.last_step >= 2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=PruneAtTwo())
    trial = study.ask()
    cb = TrialPruning(trial, "val_accuracy", make_budget("epochs", batch_sizes=[32],
                                                         max_epochs=5, n_train=640))
    h = el.fit(el.models.mlp(20), el.data.synthetic().train, epochs=5, batch_size=32,
               validation_split=0.2, callbacks=[cb], verbose=0)
    assert h.stop_reason == "pruned" and len(h.epochs) == 2 and h.total_updates == 40
    assert cb.pruned_at == 2 and [s for s, _ in cb.reported] == [1, 2]
    assert study.trials[0].intermediate_values == dict(cb.reported)


def test_updates_axis_reports_at_updates_so_batch_sizes_meet_at_equal_steps():
    b = make_budget("auto", batch_sizes=[16, 128], max_epochs=10, n_train=640)
    assert (b.by, b.min_resource, b.max_resource) == ("updates", 40, 400)
    # Batch 16 after epoch 1 and batch 128 after epoch 8 both report at step 40.
    assert b.step({"epoch": 0, "updates": 40}) == b.step({"epoch": 7, "updates": 40}) == 40
    e = make_budget("auto", batch_sizes=[32], max_epochs=10, n_train=640)
    assert (e.by, e.min_resource, e.max_resource) == ("epochs", 1, 10)
    assert make_budget("epochs", batch_sizes=[16, 128], max_epochs=10, n_train=640).by == "epochs"


def test_a_users_own_model_and_arrays_each_trial_seeded_as_documented(small):
    def make_model():
        return torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

    store = MemoryStore()
    r = el.tune(make_model, small.train, space="lr=choice(0.01,0.001)", trials=2, pruner="none",
                sampler="grid", epochs=3, seed=5, store=store)
    assert sorted(t.params["lr"] for t in r.trials) == [0.001, 0.01]
    run = store.run(r.trials[0].run_id)
    torch.manual_seed(5)
    h = el.fit(make_model(), small.train, epochs=3, batch_size=32, validation_split=0.2,
               lr=r.trials[0].params["lr"], seed=5, verbose=0)
    assert store.epochs(run.id)[-1]["val_loss"] == h.epochs[-1]["val_loss"]


def test_regression_targets_are_tuned_on_val_loss_by_default():
    # Regression logs no accuracy: without `metric`, tune minimizes val_loss (it refused).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = x @ torch.tensor([1.0, -1.0, 0.5, 2.0])
    r = el.tune(lambda: el.models.mlp(4, out_features=1), (x, y), space="lr=choice(0.01,0.001)",
                trials=2, pruner="none", sampler="grid", epochs=2)
    assert (r.metric, r.mode) == ("val_loss", "min")
    assert all(t.value is not None for t in r.trials)


def test_optunas_tables_live_beside_the_stores_in_one_file(tmp_path, small):
    path = tmp_path / "epochlab.db"
    store = SQLiteStore(path)
    r = el.tune("mlp", small, space="lr=loguniform(1e-3,1e-1)", trials=3, pruner="median",
                epochs=2, store=store, study="shared")
    assert r.storage == f"sqlite:///{path}"
    loaded = optuna.load_study(study_name="shared", storage=f"sqlite:///{path}")
    assert len(loaded.trials) == 3
    assert {t.user_attrs["epochlab_run"] for t in loaded.trials} == {x.id for x in store.runs("shared")}
    store.close()
    assert [x.status for x in SQLiteStore(path, create=False).runs("shared")] == ["completed"] * 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(space="lr=loguniform(1e-4,1e-1)", trials=0), "`trials`"),
    (dict(space="lr=loguniform(1e-4,1e-1)", pruner="asha"), "`pruner`"),
    (dict(space="lr=loguniform(1e-4,1e-1)", sampler="grid"), "not a finite set"),
    (dict(space="lr=loguniform(1e-4,1e-1)", metric="accuracy"), "validation metric"),
    (dict(space="lr=loguniform(1e-4,1e-1)", metric="val_f1"), "trials log only val_loss"),
    (dict(space="lr=loguniform(1e-4,1e-1)", metric="val_auc", mode="max"), "log only val_loss"),
    (dict(space="lr=loguniform(1e-4,1e-1)", metric="val_acc"), "did you mean 'val_accuracy'"),
    (dict(space="lr=loguniform(1e-4,1e-1)", validation_split=0.0), "`validation_split`"),
    (dict(space="lr=loguniform(1e-4,1e-1)", prune_by="samples"), "`prune_by`"),
    (dict(space="bs=choice(1,2)"), "unknown setting `bs`"),
])
def test_bad_arguments_fail_before_any_trial(small, kwargs, match):
    store = MemoryStore()
    with pytest.raises(ParameterError, match=match):
        el.tune("mlp", small, store=store, **kwargs)
    assert store.runs() == []


def test_a_model_instance_is_refused_with_what_to_pass_instead(small):
    # A module is callable: tune called it as a factory and said "forward() missing 1
    # required positional argument".
    with pytest.raises(ParameterError, match=r"is a model \(Sequential\), but must be a "
                                             r"zero-argument function that builds one"):
        el.tune(el.models.mlp(small.input_shape[0]), small, space="lr=loguniform(1e-4,1e-1)")


_KILLED = textwrap.dedent("""
    import os, signal, sys
    import epochlab as el
    from epochlab.store import SQLiteStore

    kill_after = int(sys.argv[3])
    calls = []

    def make_model():
        calls.append(1)
        # sys.argv read here, not a module-level int: a model's fingerprint covers the plain
        # values its factory reads, and this one is the same model in all three processes.
        if len(calls) == int(sys.argv[2]) + 2:  # +2: the study's fingerprint, the preflight
            os.kill(os.getpid(), signal.SIGKILL)  # mid-trial: its run is 'running'
        return el.models.mlp(20)

    def on_trial(t):
        if t.number == kill_after:  # stored, not yet told to Optuna
            os.kill(os.getpid(), signal.SIGKILL)

    el.tune(make_model, el.data.synthetic(n_samples=200), space="lr=loguniform(1e-3,1e-1)",
            trials=6, pruner="none", epochs=2, study="k", store=SQLiteStore(sys.argv[1]),
            on_trial=on_trial)
""")


def test_a_killed_tune_resumes_settling_or_retrying_its_stale_trials(tmp_path):
    db = str(tmp_path / "epochlab.db")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.run([sys.executable, "-c", _KILLED, db, "99", "2"], env=env)
    assert first.returncode == -signal.SIGKILL  # killed after trial 2 was stored
    second = subprocess.run([sys.executable, "-c", _KILLED, db, "2", "99"], env=env)
    assert second.returncode == -signal.SIGKILL  # killed inside trial 5 (the 2nd it trains)
    store = SQLiteStore(db)
    ostudy = optuna.load_study(study_name="k", storage=f"sqlite:///{db}")
    killed = [t for t in ostudy.trials if t.state.name == "RUNNING"]
    assert [t.number for t in killed] == [4]
    killed_lr = killed[0].params["lr"]
    store.close()
    # Resumed by the same command (the same model function: a study keeps its model).
    third = subprocess.run([sys.executable, "-c", _KILLED, db, "99", "99"], env=env)
    assert third.returncode == 0
    store = SQLiteStore(db)
    trials = optuna.load_study(study_name="k", storage=f"sqlite:///{db}").trials
    states = {t.number: t.state.name for t in trials}
    # Trial 2 was settled from its stored run; trial 4 failed and its settings ran again.
    assert states[2] == "COMPLETE" and states[4] == "FAIL"
    assert sum(s == "COMPLETE" for s in states.values()) == 6
    retried = [t for t in trials if t.number > 4 and t.params["lr"] == killed_lr]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE"
    runs = store.runs("k")
    assert len({x.key for x in runs}) == len(runs)
    assert sorted(x.status for x in runs) == ["completed"] * 6 + ["interrupted"]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_extending_a_study_draws_new_points_not_the_first_commands_again(small, sampler):
    store = MemoryStore()
    kw = dict(space="lr=loguniform(1e-3,1e-1)", pruner="none", sampler=sampler, epochs=1,
              store=store)
    el.tune("mlp", small, trials=2, **kw)
    r = el.tune("mlp", small, trials=4, **kw)
    lrs = [t.params["lr"] for t in r.trials]
    assert len(lrs) == 4 and len(set(lrs)) == 4
    again = el.tune("mlp", small, trials=4, **{**kw, "store": MemoryStore()})
    assert [t.params["lr"] for t in again.trials][:2] == lrs[:2]  # the first command's points


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
@pytest.mark.filterwarnings("ignore:threads=2 is more than")
def test_trials_take_threads_and_precision_and_a_rerun_at_another_precision_warns(small, tmp_path):
    # Not what auto gives an MLP (1 thread, float32): each trial must get them from tune.
    store = SQLiteStore(tmp_path / "e.db")
    args = dict(space="lr=loguniform(1e-3,1e-1)", trials=2, pruner="none", sampler="random",
                epochs=2, study="rt", store=store)
    el.tune("mlp", small, threads=2, precision="bf16", **args)
    runtimes = [r.summary["extra"]["runtime"] for r in store.runs("rt")]
    assert [(t["threads"], t["precision"]) for t in runtimes] == [(2, "bf16")] * 2
    assert all(t["threads_reason"].startswith("set by") for t in runtimes)
    with pytest.warns(UserWarning, match="2 of this study's finished runs were trained in bf16, "
                                         "not fp32: they are kept.*another study name"):
        again = el.tune("mlp", small, precision="fp32", **{**args, "trials": 3})
    assert again.resumed == 2
    new = [r for r in store.runs("rt") if r.settings["trial"] == 2]
    assert [r.summary["extra"]["runtime"]["precision"] for r in new] == ["fp32"]
    with pytest.raises(ParameterError, match="precision"):
        el.tune("mlp", small, precision="fp16", **args)
    with pytest.raises(ParameterError, match="threads"):
        el.tune("mlp", small, threads=0, **args)


def test_a_study_rerun_with_other_choices_is_refused_before_any_trial(small, tmp_path):
    # Optuna keeps a setting's choices for the study: every new trial would fail, silently.
    store = SQLiteStore(tmp_path / "e.db")
    args = dict(trials=2, pruner="none", sampler="grid", epochs=2, study="g", store=store)
    el.tune("mlp", small, space="lr=choice(0.01,0.001)", **args)
    with pytest.raises(ParameterError, match=r"Study 'g' searched lr=choice\(0.01,0.001\); "
                                             r"this tune asks for `lr=choice\(0.01,0.001,0.1\)`"):
        el.tune("mlp", small, space="lr=choice(0.01,0.001,0.1)", **{**args, "trials": 3})
    assert len(store.runs("g")) == 2
    with pytest.raises(ParameterError, match=r"searched lr=choice\(0.01,0.001\); this tune asks "
                                             r"for `lr=loguniform\(1e-3,1e-1\)`"):
        el.tune("mlp", small, space="lr=loguniform(1e-3,1e-1)", **{**args, "sampler": "random"})
    wider = el.tune("mlp", small, space="lr=choice(0.01,0.001),epochs=choice(2,3)",
                    **{**args, "study": "g2", "trials": 4})
    assert {t.state for t in wider.trials} == {"COMPLETE"}
