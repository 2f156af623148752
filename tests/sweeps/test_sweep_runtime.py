"""Sweeps take fit's ``threads`` and ``precision``; a fused group chooses threads for all members."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import epochlab as el
from epochlab.cli import main
from epochlab.store.memory import MemoryStore
from epochlab.sweeps import SweepSpec, sweep
from epochlab.sweeps.worker import _runtime_of
from epochlab.sweeps.workload import NO_SOURCES

SMALL = {"data": "synthetic", "data_options": {"n_samples": 200}, "model": "mlp"}


def test_fused_group_records_its_thread_choice_and_restores_the_callers():
    torch.set_num_threads(2)
    spec = SweepSpec(**SMALL, epochs=[2], lr=[1e-2, 1e-3])
    result = sweep(spec, MemoryStore(), progress=False)
    assert torch.get_num_threads() == 2
    for r in result.runs:
        rt = r.summary["runtime"]
        assert r.summary["fused"]["members"] == 2
        assert rt["threads"] == 1 and rt["threads_reason"].startswith("2 members trained together")
        assert rt["precision"] == "fp32"


@pytest.mark.parametrize("fuse", [True, False])
def test_runs_read_off_a_longer_one_record_how_it_trained(fuse):
    spec = SweepSpec(**SMALL, epochs=[1, 2], lr=[1e-2, 1e-3])
    result = sweep(spec, MemoryStore(), progress=False, fuse=fuse)
    assert any(r.shared_from is not None for r in result.runs)
    for r in result.runs:
        assert r.summary["runtime"]["precision"] == "fp32", r.key


def test_a_fused_group_takes_a_second_thread_only_for_a_run_long_enough_to_pay(monkeypatch):
    # Choosing 2 threads costs a 30 ms reading of the idle cores: 12 of slide 5's MLPs over
    # 50 epochs (1.3 G multiply-adds) get it; the same group over 2 epochs keeps one thread.
    from epochlab.train import runtime

    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime, "idle_cores", lambda window=0.03: 2.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    from epochlab.sweeps.plan import make_plan
    from epochlab.sweeps.worker import _fused_runtime

    monkeypatch.setattr(runtime, "idle_window_left", lambda window=0.03: 0.0)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    for epochs, threads, words in [(50, 2, "1.3 M multiply-adds a step"), (2, 1, "a short run")]:
        spec = SweepSpec(data="synthetic", model="mlp", epochs=[epochs],
                         lr=[0.1, 0.01, 0.001, 0.0001], seed=[0, 1, 2])
        task = make_plan(spec.configs()).tasks[0]
        choice, later, _ = _fused_runtime(task, NO_SOURCES, None, "auto")
        if later is not None:  # chosen between epochs, once the reading is in
            assert choice.threads == 1 and later() is True
            choice = later.choice
        assert choice.threads == threads and words in choice.threads_reason, choice


def test_a_group_with_batch_norm_chooses_its_threads_before_it_starts(monkeypatch):
    # torch's batch norm sums a channel's rows in per-thread parts (1 and 2 threads differ in
    # the last bits): a switch between epochs, timed by the reading of idle cores, would make
    # the numbers depend on when the reading came in. Such a group waits for it, as convs do.
    from epochlab.sweeps.plan import make_plan
    from epochlab.sweeps.worker import _fused_runtime
    from epochlab.train import runtime

    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime, "idle_cores", lambda window=0.03: 2.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    for batch_norm, later_expected in ((False, True), (True, False)):
        spec = SweepSpec(data="synthetic", model="mlp", epochs=[50], batch_norm=batch_norm,
                         lr=[0.1, 0.01, 0.001, 0.0001], seed=[0, 1, 2])
        choice, later, _ = _fused_runtime(make_plan(spec.configs()).tasks[0], NO_SOURCES, None,
                                          "auto")
        assert (later is not None) is later_expected
        if later is None:
            assert choice.threads == 2 and "first epochs" not in choice.threads_reason


@pytest.mark.parametrize("epochs", [[6], [2, 6]])
def test_a_group_that_takes_its_threads_between_epochs_trains_to_the_same_bits(monkeypatch,
                                                                                epochs):
    # The first epochs run on 1 thread while idle cores are read, the rest on 2: the numbers
    # are those of a sweep pinned to 1 thread (a group without convolutions). A run read off
    # the first 2 epochs ran them on 1 thread, and its record says so.
    from epochlab.train import runtime

    spec = SweepSpec(data="synthetic", data_options={"n_samples": 400}, model="mlp",
                     epochs=epochs, lr=[0.1, 0.01, 0.001, 0.0001], seed=[0, 1, 2])
    pinned = sweep(spec, MemoryStore(), progress=False, threads=1)
    polls = iter([0.02, 0.01])  # two epochs before the reading is in
    monkeypatch.setattr(runtime, "FUSED_THREADS_MIN_RUN", 0)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime, "idle_cores", lambda window=0.03: 2.0)
    monkeypatch.setattr(runtime, "idle_window_left", lambda window=0.03: next(polls, 0.0))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        later = sweep(spec, MemoryStore(), progress=False)
        assert torch.get_num_threads() == 2  # the caller's count is back
    finally:
        torch.set_num_threads(before)
    for a, b in zip(pinned.runs, later.runs, strict=True):
        rt = b.summary["runtime"]
        if b.settings["epochs"] == 2:  # read off the 6-epoch run
            assert b.shared_from is not None
            assert rt["threads"] == 1 and "threads_by_epoch" not in rt
            assert "its 2 epochs ran before the group it trained in took 2" in \
                rt["threads_reason"], rt["threads_reason"]
        else:
            assert rt["threads"] == 2 and rt["threads_by_epoch"] == [[1, 2], [2, 4]]
            assert rt["threads_reason"].endswith("(its first 2 epochs ran on 1 thread while idle "
                                                 "cores were read)"), rt["threads_reason"]
        assert _untimed(pinned.history(a)) == _untimed(later.history(b))
        assert pinned.history(a).iterations == later.history(b).iterations


def _untimed(h: el.History) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in h.epochs]


def test_unfused_runs_record_fits_choice_and_the_pinned_threads():
    spec = SweepSpec(**SMALL, epochs=[1], lr=[1e-2, 1e-3])
    result = sweep(spec, MemoryStore(), progress=False, fuse=False, threads=1)
    assert all(r.summary["runtime"]["threads_reason"] == "set by threads=1" for r in result.runs)


def test_bf16_asked_for_trains_a_fusable_group_one_by_one_in_bf16():
    spec = SweepSpec(**SMALL, epochs=[1], lr=[1e-2, 1e-3])
    bf = sweep(spec, MemoryStore(), progress=False, precision="bf16")
    fp = sweep(spec, MemoryStore(), progress=False, precision="fp32")
    for a, b in zip(bf.runs, fp.runs, strict=True):
        assert a.summary["runtime"]["precision"] == "bf16" and "fused" not in a.summary
        assert b.summary["runtime"]["precision"] == "fp32" and "fused" in b.summary
        assert a.summary["total_updates"] == b.summary["total_updates"]


def test_bad_runtime_options_fail_before_training():
    spec = SweepSpec(**SMALL, epochs=[1])
    with pytest.raises(el.ParameterError, match="`precision`"):
        sweep(spec, MemoryStore(), progress=False, precision="half")
    with pytest.raises(el.ParameterError, match="`threads`"):
        sweep(spec, MemoryStore(), progress=False, threads=0)


def test_cli_sweep_prints_the_runtime_and_takes_the_options(tmp_path):
    r = CliRunner().invoke(main, ["sweep", "--data", "synthetic", "--epochs", "1", "--lr",
                                  "1e-2,1e-3", "--threads", "1", "--precision", "fp32",
                                  "--no-progress", "--store", str(tmp_path / "s.db")])
    assert r.exit_code == 0, r.output
    assert "runtime: 1 thread (set by --threads) · float32 (set by precision='fp32')" in r.output
    bad = CliRunner().invoke(main, ["sweep", "--epochs", "1", "--threads", "none"])
    assert bad.exit_code == 2 and "--threads" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("batch_norm", [False, True])
def test_the_model_the_thread_choice_probed_trains_as_one_built_afresh(batch_norm):
    """A fused task trains its first seed's model from the one its runtime choice built and
    probed (in eval mode): the same numbers, batch norm's statistics included, as a task
    that builds every model itself."""
    from epochlab.sweeps.fused_runs import train_task_fused
    from epochlab.sweeps.plan import make_plan
    from epochlab.sweeps.worker import execute_task

    spec = SweepSpec(**SMALL, epochs=[2], lr=[1e-2, 1e-3], seed=[0, 1], batch_norm=[batch_norm])
    [task] = make_plan(spec.configs()).tasks
    assert task.fused
    out = execute_task(task, NO_SOURCES, threads=1)
    fresh = {m.key: h for m, h, _, _ in train_task_fused(task)}
    assert len(out.runs) == 4

    def untimed(rows):
        return [{k: v for k, v in e.items() if k != "time"} for e in rows]

    for run in out.runs:
        want = fresh[run.key]
        assert untimed(run.epochs) == untimed(want.epochs)  # bit for bit
        assert run.iterations["loss"] == want.iterations["loss"]


def test_the_header_says_the_threads_each_worker_process_is_given():
    from epochlab.cli.sweep import _runtime_line

    spec = SweepSpec(**SMALL, epochs=[1])
    assert _runtime_line(spec, 2, "auto", workers=1).startswith(
        "runtime: 2 threads in each worker process (set by --threads)")
    assert _runtime_line(spec, "auto", "auto", workers=2).startswith(
        "runtime: 1 thread per worker process")
    assert _runtime_line(spec, 1, "auto", workers=0).startswith("runtime: 1 thread (set by")


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_runs_kept_from_another_precision_are_said_to_be_kept():
    store = MemoryStore()
    spec = SweepSpec(**SMALL, epochs=[1], lr=[1e-2, 1e-3])
    sweep(spec, store, progress=False, precision="fp32")
    with pytest.warns(UserWarning, match="2 of this study's finished runs were trained in fp32, "
                                         "not bf16: they are kept"):
        again = sweep(spec, store, progress=False, precision="bf16")
    assert again.skipped == 2


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_a_run_read_off_a_bf16_cnn_is_tested_as_the_separate_run():
    # Read out mid-run the weights were channels-last; the separate run is tested after fit
    # gave the model back in its own layout, and float32 convolutions round by layout.
    spec = SweepSpec(data="digits", model="cnn_small", epochs=[1, 2], batch_size=[128])
    kw = dict(progress=False, fuse=False, precision="bf16")
    shared = sweep(spec, MemoryStore(), **kw)
    alone = sweep(spec, MemoryStore(), share_prefixes=False, **kw)
    assert any(r.shared_from is not None for r in shared.runs)
    for a, b in zip(shared.runs, alone.runs, strict=True):
        assert a.summary["test"] == b.summary["test"], a.key


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
@pytest.mark.parametrize(("precision", "fuse"), [("fp32", True), ("bf16", False)])
def test_a_sweep_inside_a_callers_autocast_trains_as_outside(precision, fuse):
    spec = SweepSpec(**SMALL, epochs=[2], lr=[1e-2, 1e-3])
    kw = dict(progress=False, precision=precision, fuse=fuse, threads=1)
    plain = sweep(spec, MemoryStore(), **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = sweep(spec, MemoryStore(), **kw)
    for a, b in zip(plain.runs, inside.runs, strict=True):
        assert a.summary["final"] == b.summary["final"]


def test_each_fused_run_records_the_thread_counts_its_own_epochs_ran_on():
    from epochlab.train.runtime import RuntimeChoice

    group = RuntimeChoice(2, "12 members trained together: 1.3 M multiply-adds a step", "fp32",
                          "auto", False)
    # took 2 threads after 2 epochs on 1
    rt = _runtime_of(group, [[1, 2], [2, 48]])
    assert rt["threads"] == 2 and rt["threads_by_epoch"] == [[1, 2], [2, 48]]
    assert rt["threads_reason"].endswith("(its first 2 epochs ran on 1 thread while idle cores "
                                         "were read)")
    # a later memory chunk: every epoch on the count its group took
    assert _runtime_of(group, [[2, 50]]) == group.as_dict()
    # stopped early, before its group took 2 threads
    rt = _runtime_of(group, [[1, 3]])
    assert rt["threads"] == 1 and "threads_by_epoch" not in rt
    assert rt["threads_reason"] == ("1 thread: its epochs ended before its group took 2 (12 "
                                    "members trained together: 1.3 M multiply-adds a step)")
    assert _runtime_of(group, []) == group.as_dict()  # diverged in its first epoch
