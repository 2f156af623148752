"""The plan: which configurations share one training, and why the others do not."""

from __future__ import annotations

import pytest

from epochlab.sweeps.plan import Task, make_plan
from epochlab.sweeps.spec import SweepSpec


def test_slide13_grid_is_three_trainings_read_out_at_5_10_15():
    plan = make_plan(SweepSpec(epochs=[5, 10, 15], batch_size=[32, 64, 128]).configs())
    assert plan.n_configs == 9 and plan.n_trained == 3
    assert sorted(t.members[0].batch_size for t in plan.tasks) == [32, 64, 128]
    assert all(t.epochs == 15 and t.read_outs == (5, 10, 15) for t in plan.tasks)
    assert plan.trained_epochs == 45
    shared = [e for e in plan.entries if e.shared]
    assert len(shared) == 6 and all(e.config.epochs < 15 for e in shared)
    assert "9 configurations -> 3 training runs (45 epochs trained instead of 90)" in plan.describe()


@pytest.mark.parametrize(("schedule", "early_stopping", "reason"), [
    ("cosine", None, "cosine depends on the run length"),
    ("one_cycle:max_lr=0.01", None, "one_cycle depends on the run length"),
    (None, "val_loss:patience=2", "early stopping decides where each run ends"),
])
def test_runs_whose_length_matters_are_not_shared_and_say_why(schedule, early_stopping, reason):
    spec = SweepSpec(epochs=[2, 4], schedule=schedule, early_stopping=early_stopping)
    plan = make_plan(spec.configs())
    assert len(plan.tasks) == 2 and not any(e.shared for e in plan.entries)
    assert {e.reason for e in plan.entries} == {reason}
    assert reason in plan.describe()


@pytest.mark.parametrize("schedule", [None, "constant", "step:factor=0.5,every_epochs=1",
                                      "exponential:decay_steps=10,decay_rate=0.9"])
def test_schedules_of_steps_alone_share(schedule):
    plan = make_plan(SweepSpec(epochs=[1, 3], schedule=schedule).configs())
    assert len(plan.tasks) == 1 and plan.tasks[0].read_outs == (1, 3)


def test_only_epochs_may_differ_within_a_task_when_not_fused():
    spec = SweepSpec(epochs=[2, 4], lr=[1e-3, 1e-2], seed=[0, 1], batch_norm=["on", "off"])
    plan = make_plan(spec.configs(), fuse=False)
    assert len(plan.tasks) == 8
    for t in plan.tasks:
        runs = t.runs()
        assert {r.epochs for r in runs} == {2, 4}
        assert len({r.with_epochs(1) for r in runs}) == 1


def test_fused_tasks_hold_prefix_groups_that_differ_only_in_lr_seed_wd_schedule():
    # rmsprop has no fused update: those 8 trainings stay one task each.
    spec = SweepSpec(epochs=[2, 4], lr=[1e-3, 1e-2], seed=[0, 1], optimizer=["adam", "rmsprop"],
                     batch_size=[16, 32])
    plan = make_plan(spec.configs())
    fused = [t for t in plan.tasks if t.fused]
    assert len(plan.tasks) == 8 + 2 and len(fused) == 2
    for t in fused:
        assert len(t.members) == 4 and t.read_outs == (2, 4)
        assert len({(m.batch_size, m.optimizer) for m in t.members}) == 1
        assert {(m.lr, m.seed) for m in t.members} == {(a, b) for a in (1e-3, 1e-2) for b in (0, 1)}
    assert plan.n_trained == 16 and plan.n_configs == 32
    assert sorted(len(t.runs()) for t in plan.tasks) == [2] * 8 + [8, 8]


def test_sharing_can_be_turned_off_and_entries_keep_grid_order():
    configs = SweepSpec(epochs=[1, 2, 3], batch_size=[8, 16]).configs()
    plan = make_plan(configs, share_prefixes=False)
    assert len(plan.tasks) == 6 and [e.config for e in plan.entries] == configs
    assert plan.entry(configs[0]).reason == "prefix sharing turned off"


def test_task_checks_its_shape():
    c = SweepSpec(epochs=[3]).configs()[0]
    with pytest.raises(ValueError, match="largest read-out"):
        Task("t", (c,), 3, (1, 2))
    with pytest.raises(ValueError, match="no members"):
        Task("t", (), 3, (3,))


def test_fused_groups_split_to_max_members_per_task():
    spec = SweepSpec(epochs=[2], lr=[1e-3, 1e-2, 1e-1], seed=[0, 1, 2])
    plan = make_plan(spec.configs(), fusable=lambda c: None, max_members=4)
    assert sorted(len(t.members) for t in plan.tasks) == [3, 3, 3]
    assert all(t.fused for t in plan.tasks) and plan.n_trained == 9
    one = make_plan(spec.configs(), fusable=lambda c: None, max_members=1)
    assert not any(t.fused for t in one.tasks)
    assert "split to at most 1" in one.entries[0].fuse_reason
    with pytest.raises(ValueError, match="max_members"):
        make_plan(spec.configs(), fusable=lambda c: None, max_members=0)
