"""Threads and precision chosen per workload: the choice, its record, and the caller's setting kept."""

from __future__ import annotations

import ctypes
import gc
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import epochlab as el
from epochlab.cli import main
from epochlab.train import runtime


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 12, 12, generator=g)
    y = torch.randint(0, 3, (96,), generator=g)
    return x, y


def small_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return el.models.cnn("small", n_classes=3, input_size=12, hidden=8)


def params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fit_restores_the_callers_thread_count_and_records_its_own(slide1):
    torch.set_num_threads(2)
    h = el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=32, verbose=0)
    assert torch.get_num_threads() == 2
    rt = h.extra["runtime"]
    assert rt["threads"] == 1 and "small workload" in rt["threads_reason"]
    assert rt["precision"] == "fp32"


def test_threads_override_is_used_during_training_and_restored_after(slide1):
    seen = []

    class Spy(el.Callback):
        def on_epoch_end(self, trainer, logs):
            seen.append(torch.get_num_threads())

    torch.set_num_threads(1)
    h = el.fit(el.models.mlp(20), slide1.train, epochs=2, batch_size=32, threads=2,
               callbacks=[Spy()], verbose=0)
    assert seen == [2, 2] and torch.get_num_threads() == 1
    assert h.extra["runtime"]["threads"] == 2
    assert h.extra["runtime"]["threads_reason"] == "set by threads=2"


def test_thread_count_is_restored_when_training_fails(slide1):
    class Boom(el.Callback):
        def on_epoch_end(self, trainer, logs):
            raise RuntimeError("boom")

    torch.set_num_threads(1)
    with pytest.raises(RuntimeError, match="boom"):
        el.fit(el.models.mlp(20), slide1.train, epochs=2, batch_size=32, threads=2,
               callbacks=[Boom()], verbose=0)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True, 2**31])
def test_bad_threads_are_a_parameter_error_naming_threads(slide1, bad):
    with pytest.raises(el.ParameterError, match="`threads`"):
        el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=32, threads=bad, verbose=0)


def test_bad_precision_is_a_parameter_error_naming_precision(slide1):
    with pytest.raises(el.ParameterError, match="`precision`.*'fp16'"):
        el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=32, precision="fp16",
               verbose=0)


def test_auto_threads_one_for_small_work_more_only_where_cores_are_idle(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    assert runtime.choose_threads(200_000, ceiling=4)[0] == 1
    monkeypatch.setattr(runtime, "idle_cores", lambda window=0.03: 4.0)
    n, why = runtime.choose_threads(10 * runtime.MACS_PER_THREAD, ceiling=4)
    assert n == 4 and "4.0 of 4 cores idle" in why
    assert runtime.choose_threads(2 * runtime.MACS_PER_THREAD, ceiling=4)[0] == 2
    # a busy process on one core: do not put a thread there
    monkeypatch.setattr(runtime, "idle_cores", lambda window=0.03: 1.0)
    n, why = runtime.choose_threads(10 * runtime.MACS_PER_THREAD, ceiling=4)
    assert n == 1 and "1.0 of 4 cores are idle" in why
    # the caller's count (OMP_NUM_THREADS) is a ceiling
    assert runtime.choose_threads(10 * runtime.MACS_PER_THREAD, ceiling=1)[0] == 1


def test_a_fused_group_takes_a_second_thread_from_less_work_than_one_model(monkeypatch):
    # 64 of slide 5's MLPs trained together: 6.9 M multiply-adds a step.
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime, "idle_cores", lambda window=0.03: 2.0)
    macs = 64 * 107_520
    assert runtime.choose_threads(macs, ceiling=2)[0] == 1
    n, why = runtime.choose_threads(macs, ceiling=2, per_thread=runtime.FUSED_MACS_PER_THREAD)
    assert n == 2 and "6.9 M multiply-adds a step" in why
    n, why = runtime.choose_threads(8 * 107_520, ceiling=2,
                                    per_thread=runtime.FUSED_MACS_PER_THREAD)
    assert n == 1 and "a 2nd thread pays from 1 M" in why
    n, _ = runtime.choose_threads(12 * 107_520, ceiling=2, per_thread=runtime.FUSED_MACS_PER_THREAD)
    assert n == 2


def test_macs_per_step_counts_convolutions_and_linear_layers():
    model = el.models.cnn("small")  # conv 32x1x3x3 on 26x26, Linear 5408->64, Linear 64->10
    per_row = 288 * 26 * 26 + 5408 * 64 + 64 * 10
    assert runtime.macs_per_step(model, torch.zeros(2, 1, 28, 28), 64) == per_row * 64
    assert runtime.macs_per_step(el.models.mlp(20), torch.zeros(2, 20), 32) == (
        (20 * 64 + 64 * 32 + 32) * 32)


def test_auto_precision_needs_native_bf16_and_layers_where_it_pays(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device="cpu": (True, "the CPU has X"))
    assert runtime.choose_precision(small_cnn()) == (
        "bf16", "auto: the CPU has X, the model has convolutions", True)
    assert runtime.choose_precision(el.models.mlp(20))[0] == "fp32"
    assert runtime.choose_precision(el.models.mlp(512, hidden=(512,)))[0] == "bf16"
    assert runtime.choose_precision(el.models.lstm_classifier(50))[:2] == (
        "bf16", "auto: the CPU has X, the model has recurrent layers")
    assert runtime.choose_precision(small_cnn().double()) == ("fp64", "the model is float64",
                                                               False)  # said as it trains
    assert runtime.choose_precision(small_cnn(), "fp32")[0] == "fp32"
    monkeypatch.setattr(runtime, "native_bf16", lambda device="cpu": (False, "no bf16 here"))
    assert runtime.choose_precision(small_cnn()) == ("fp32", "auto: no bf16 here", False)
    with pytest.warns(UserWarning, match="emulated, usually slower than float32"):
        asked = runtime.choose_precision(small_cnn(), "bf16")
    assert asked == ("bf16", "set by precision='bf16' (no bf16 here: emulated)", True)  # done


def test_bf16_asked_for_a_float64_model_says_it_has_no_effect(monkeypatch):
    # Autocast lowers only float32 operations: a float64 model would train in float64 while
    # its history said bf16.
    monkeypatch.setattr(runtime, "native_bf16", lambda device="cpu": (True, "the CPU has X"))
    with pytest.warns(UserWarning, match="no effect on a float64 model"):
        prec, why, _ = runtime.choose_precision(small_cnn().double(), "bf16")
    assert prec == "fp64" and "the model is float64" in why


def test_bf16_trains_with_float32_loss_parameters_and_optimizer_state(images):
    model = small_cnn()
    trainer_seen = {}

    class Spy(el.Callback):
        def on_train_end(self, trainer, logs):
            trainer_seen["opt"] = trainer.optimizer

    h = el.fit(model, images, epochs=2, batch_size=16, precision="bf16", validation_split=0.25,
               callbacks=[Spy()], verbose=0)
    assert h.extra["runtime"]["precision"] == "bf16" and h.extra["runtime"]["channels_last"]
    assert all(np.isfinite(h.history["loss"])) and all(np.isfinite(h.history["val_loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for state in trainer_seen["opt"].state.values():
        assert state["exp_avg"].dtype == torch.float32
    # the model still computes the same function in its own dtype after training
    assert model(images[0][:4]).dtype == torch.float32


def test_bf16_is_deterministic_and_differs_from_fp32(images):
    runs = []
    for precision in ("bf16", "bf16", "fp32"):
        model = small_cnn()
        h = el.fit(model, images, epochs=2, batch_size=16, precision=precision, verbose=0)
        runs.append((params(model), h.iterations["loss"]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])
    # ...but it trains the same model: close to float32 after a few steps
    assert torch.allclose(runs[0][0], runs[2][0], atol=0.05)


def test_cli_fit_takes_threads_and_precision_and_records_them(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["fit", "--verbose", "0", "--epochs", "1", "--threads", "1",
                                  "--precision", "fp32", "--out", str(out), "--no-store"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "runtime: 1 thread (set by threads=1) · float32 (set by precision='fp32')" in r.output
    h = el.History.load(out / "history.json")
    assert h.extra["runtime"]["threads"] == 1 and h.params["precision"] == "fp32"


def test_a_numpy_int_is_a_thread_count(slide1):
    h = el.fit(el.models.mlp(20), slide1.train, epochs=1, batch_size=32, verbose=0,
               threads=np.int64(2))
    assert h.extra["runtime"]["threads"] == 2


@pytest.mark.parametrize("args", [["--threads", "0"], ["--threads", "many"], ["--precision", "fp16"],
                                  ["--threads", "2147483648"]])
def test_cli_fit_rejects_bad_runtime_options_without_a_traceback(args):
    r = CliRunner().invoke(main, ["fit", "--verbose", "0", "--epochs", "1", *args])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert args[0] in r.output


def test_idle_cores_and_usable_cores_are_within_the_machine():
    cores = runtime.usable_cores()
    assert 1 <= cores <= (os.cpu_count() or cores)
    assert 0.0 <= runtime.idle_cores(window=0.01) <= cores


@pytest.mark.parametrize("own_seconds, idle", [(0.0, 1.0), (0.03, 2.0)])
def test_idle_cores_counts_this_process_own_busy_core_as_idle(monkeypatch, own_seconds, idle):
    # /proc/stat says 3 of 6 ticks idle on 2 CPUs over the window: one core busy. When this
    # process itself kept a core busy (its OpenMP threads spinning after training), that core
    # is not taken by another process.
    from types import SimpleNamespace

    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime, "_proc_stat", iter([(100, 50), (106, 53)]).__next__)
    clock = SimpleNamespace(sleep=lambda s: None, process_time=iter([5.0, 5.0 + own_seconds]).__next__,
                            monotonic=iter([7.0, 7.03]).__next__)
    monkeypatch.setattr(runtime, "time", clock)
    monkeypatch.setattr(runtime, "_window", None)
    assert runtime.idle_cores() == pytest.approx(idle)


def test_a_reading_begun_early_waits_only_for_the_rest_of_its_window_and_is_used_once(monkeypatch):
    # A sweep begins the reading as it starts; the thread choice ~20 ms later sleeps only
    # the 10 ms left of the 30 ms window and reads /proc/stat from the sweep's start.
    from types import SimpleNamespace

    now = {"t": 100.0}
    slept = []
    clock = SimpleNamespace(
        monotonic=lambda: now["t"], process_time=lambda: 0.0,
        sleep=lambda s: (slept.append(round(s, 6)), now.__setitem__("t", now["t"] + s)))
    monkeypatch.setattr(runtime, "time", clock)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    stats = iter([(100, 50), (106, 56), (200, 100), (206, 103)])
    monkeypatch.setattr(runtime, "_proc_stat", lambda: next(stats))
    monkeypatch.setattr(runtime, "_window", None)
    runtime.start_idle_window()
    now["t"] += 0.02
    runtime.start_idle_window()  # begun 20 ms ago: kept
    now["t"] += 0.0  # the choice comes at once
    assert runtime.idle_cores() == pytest.approx(2.0) and slept == [0.01]
    assert runtime.idle_cores() == pytest.approx(1.0) and slept == [0.01, 0.03]  # read anew
    now["t"] += 5.0
    stats = iter([(300, 150), (400, 160), (406, 163)])
    runtime.start_idle_window()
    now["t"] += 2.0  # a second later the early reading is stale: read anew
    slept.clear()
    assert runtime.idle_cores() == pytest.approx(1.0) and slept == [0.03]


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert runtime.native_bf16("cpu") == (True, "the CPU has AVX512-BF16")
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert runtime.native_bf16("cpu")[0]
    monkeypatch.setattr(runtime, "_cpu_flags", lambda: {"avx2"})
    assert runtime.native_bf16("cpu") == (False, "the CPU has no AMX or AVX-512 BF16")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mmapped_bytes() -> int:
    libc = runtime._glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblkhd)


def test_training_memory_is_kept_for_the_next_step_and_given_back_after():
    # A CNN's activations are blocks of MBs: freed and unmapped each step, they are
    # page-faulted in anew at the next (the seed CNN's epoch took 7 s instead of 4).
    gc.collect()  # no cyclic garbage left to unmap its blocks while we count
    with runtime.reusing_memory(), runtime.reusing_memory():  # nested: one setting
        for _ in range(3):
            before = _mmapped_bytes()
            block = torch.ones(2_000_000)  # 8 MB: mmapped by default, from the heap here
            assert _mmapped_bytes() - before < 8_000_000
            del block
        with pytest.raises(RuntimeError):
            with runtime.reusing_memory():
                raise RuntimeError("a failing step leaves the setting balanced")
        before = _mmapped_bytes()
        block = torch.ones(2_000_000)
        assert _mmapped_bytes() - before < 8_000_000
        del block
    assert runtime._memory_depth == 0


def test_subnormals_are_flushed_while_training_and_the_callers_mode_comes_back():
    tiny = torch.tensor([1e-38])
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormal floats")
    with runtime.for_training():
        assert float(tiny / 10) == 0.0  # flushed: no slow subnormal arithmetic
    assert float(tiny / 10) != 0.0  # the caller's mode (off) again
    torch.set_flush_denormal(True)
    try:
        with runtime.flushing_denormals():
            pass
        assert float(tiny / 10) == 0.0  # a caller who flushes keeps flushing
    finally:
        torch.set_flush_denormal(False)


def test_more_threads_than_usable_cores_are_kept_but_warned_about(monkeypatch, tmp_path):
    # 64 threads on 2 cores made a 4 s CNN epoch take 93 s: the user is told, not overruled.
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    with pytest.warns(UserWarning, match=r"threads=3 is more than the 2 core\(s\)"):
        n, why = runtime.choose_threads(10**6, threads=3)
    assert n == 3 and "more than the 2 usable core(s)" in why
    assert runtime.choose_threads(10**6, threads=2) == (2, "set by threads=2")
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["fit", "--verbose", "0", "--epochs", "1", "--threads", "3",
                                  "--out", str(out), "--no-store"])
    assert r.exit_code == 0, r.output
    assert "Warning: threads=3 is more than the 2 core(s)" in r.output
    assert el.History.load(out / "history.json").extra["runtime"]["threads"] == 3


def test_evaluation_chunks_keep_each_layer_output_under_16_mib(monkeypatch):
    # 1,024 rows of the seed CNN made a 44 MB first-conv output: glibc maps such blocks
    # afresh and the validation pass page-faulted ~23,000 times an epoch (9% of it).
    cnn = el.models.cnn("seed")
    rows = runtime.eval_rows(cnn, torch.zeros(2, 1, 28, 28), 64)
    assert rows == runtime.EVAL_ACTIVATION_BYTES // (4 * 32 * 26 * 26)  # 193
    assert runtime.eval_rows(cnn, torch.zeros(2, 1, 28, 28), 512) == 512  # the batch at least
    assert runtime.eval_rows(el.models.mlp(20), torch.zeros(2, 20), 32) == runtime.EVAL_ROWS
    seen = []
    evaluate = el.Trainer.evaluate
    monkeypatch.setattr(el.Trainer, "evaluate",
                        lambda self, x, y, batch_size=1024: seen.append(batch_size)
                        or evaluate(self, x, y, batch_size))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g)
    h = el.fit(cnn, (x, y), epochs=1, batch_size=32, validation_split=0.8, verbose=0,
               precision="fp32")
    assert seen == [193] and h.n_val == 240
    whole = el.evaluate(cnn, (x, y), batch_size=300)
    chunked = el.evaluate(cnn, (x, y))  # 193 rows, then 107
    assert chunked["accuracy"] == whole["accuracy"]
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    with pytest.raises(el.ParameterError, match="batch_size"):
        el.evaluate(cnn, (x, y), batch_size=0)


class ViewAfterConv(torch.nn.Module):
    """The PyTorch tutorials' pattern: ``x.view(n, -1)`` after a convolution, which
    channels-last activations refuse."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_bf16_trains_a_model_that_views_its_activations_with_channels_last_off(images):
    x, y = images
    model = ViewAfterConv()
    h = el.fit(model, (x, y), epochs=1, batch_size=32, verbose=0, precision="bf16")
    rt = h.extra["runtime"]
    assert rt["precision"] == "bf16" and not rt["channels_last"]
    assert "channels-last off" in rt["precision_reason"]
    # The probe left the generators alone: the same run as with them untouched twice.
    again = el.fit(ViewAfterConv(), (x, y), epochs=1, batch_size=32, verbose=0, precision="bf16")
    assert h.epochs[0]["loss"] == again.epochs[0]["loss"]


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_bf16_trains_conv1d_and_conv3d_models_without_channels_last(images):
    torch.manual_seed(0)
    x3 = torch.randn(16, 2, 4, 6, 6)
    y3 = torch.randint(0, 3, (16,))
    model = torch.nn.Sequential(torch.nn.Conv2d(2 * 4, 2 * 4, 1), torch.nn.Unflatten(1, (2, 4)),
                                torch.nn.Conv3d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 2 * 4 * 4, 3))

    class Fold(torch.nn.Module):  # 5-d images through a Conv2d on folded channels first
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, x):
            return self.body(x.flatten(1, 2))

    h = el.fit(Fold(), (x3, y3), epochs=1, batch_size=8, verbose=0, precision="bf16")
    assert h.extra["runtime"]["precision"] == "bf16"  # the Conv2d's 4-d weight went channels-last
    assert all(p.is_contiguous() for p in model.parameters())  # and came back
    conv1d = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(40, 3))
    h = el.fit(conv1d, (torch.randn(16, 1, 12), y3), epochs=1, batch_size=8, verbose=0,
               precision="bf16")
    assert not h.extra["runtime"]["channels_last"]


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_a_channels_last_model_comes_back_channels_last(images):
    x, y = images
    for precision in ("bf16", "fp32"):
        model = small_cnn().to(memory_format=torch.channels_last)
        model.backbone.body[0].weight.data = torch.randn(32, 1, 3, 3)  # contiguous: kept so
        strides = [p.stride() for p in model.parameters()]
        el.fit(model, (x, y), epochs=1, batch_size=32, verbose=0, precision=precision)
        assert [p.stride() for p in model.parameters()] == strides, precision


def test_an_autocast_around_fit_does_not_reach_a_float32_run(images):
    x, y = images
    kw = dict(epochs=1, batch_size=32, verbose=0, precision="fp32", validation_split=0.25)
    plain = el.fit(small_cnn(), (x, y), **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = el.fit(small_cnn(), (x, y), **kw)
    assert inside.epochs[0]["loss"] == plain.epochs[0]["loss"]
    assert inside.epochs[0]["val_loss"] == plain.epochs[0]["val_loss"]


def test_a_resumed_run_says_it_keeps_its_thread_count(slide1, tmp_path):
    class Crash(el.Callback):
        def on_batch_end(self, trainer, logs):
            if trainer.state.global_step == 5:
                raise RuntimeError("crash")

    kw = dict(epochs=1, batch_size=32, verbose=0, checkpoint_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(RuntimeError, match="crash"):
        el.fit(el.models.mlp(20), slide1.train, threads=1, callbacks=[Crash()], **kw)
    with pytest.warns(UserWarning, match="threads=2 is not used: this resumed run keeps the 1"):
        h = el.fit(el.models.mlp(20), slide1.train, threads=2, resume=True, **kw)
    assert h.extra["runtime"]["threads"] == 1


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_bf16_training_learns_and_resumes_exactly(images, tmp_path):
    # Each step's forward must see the last update (an autocast cache kept across steps
    # once froze the weights the forward used: the loss never moved).
    x, y = images
    kw = dict(epochs=3, batch_size=32, verbose=0, precision="bf16", validation_split=0.25)
    ref_model = small_cnn()
    ref = el.fit(ref_model, (x, y), **kw)
    losses = [r["loss"] for r in ref.epochs]
    assert losses[2] < losses[1] < losses[0]

    class Crash(el.Callback):
        def on_batch_end(self, trainer, logs):
            if trainer.state.global_step == 4:
                raise RuntimeError("crash")

    ck = dict(checkpoint_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(RuntimeError, match="crash"):
        el.fit(small_cnn(), (x, y), callbacks=[Crash()], **kw, **ck)
    model = small_cnn()
    h = el.fit(model, (x, y), resume=True, **kw, **ck)
    assert [r["loss"] for r in h.epochs] == losses
    assert torch.equal(params(model), params(ref_model))


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_bf16_keeps_odd_buffers_and_the_optimizers_state_in_step_with_its_parameters(images):
    x, y = images
    model = small_cnn()
    model.register_buffer("mask", torch.ones(1, 2, 1, 1).expand(1, 2, 6, 6))  # stride 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(x[:4]).sum().backward()
    opt.step()  # the state exists before fit, in the parameters' own (contiguous) layout
    opt.zero_grad()
    el.fit(model, (x, y), epochs=1, batch_size=32, verbose=0, precision="bf16", optimizer=opt)
    assert model.mask.stride() == (2, 1, 0, 0)  # as it came
    for p in model.parameters():
        st = opt.state[p]
        assert st["exp_avg"].stride() == st["exp_avg_sq"].stride() == p.stride()


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_a_callers_autocast_changes_no_run_and_no_evaluation(images):
    # bf16 inside a caller's autocast: torch clears the weight cache only when the outermost
    # autocast exits, so a cached cast froze the weights the steps used.
    x, y = images
    kw = dict(epochs=2, batch_size=32, verbose=0, validation_split=0.25, threads=1)
    for precision in ("bf16", "fp32"):
        plain = el.fit(small_cnn(), (x, y), precision=precision, **kw)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = el.fit(small_cnn(), (x, y), precision=precision, **kw)
        assert inside.history["loss"] == plain.history["loss"], precision
        assert inside.history["loss"][1] < inside.history["loss"][0]
    model = small_cnn()
    want = el.evaluate(model, (x, y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert el.evaluate(model, (x, y)) == want


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_a_full_state_checkpoint_of_a_bf16_run_is_in_the_models_own_layout(images, tmp_path):
    x, y = images
    el.fit(small_cnn(), (x, y), epochs=1, batch_size=32, verbose=0, precision="bf16",
           validation_split=0.25,
           callbacks=[el.ModelCheckpoint(tmp_path / "c.pt", save_full_state=True)])
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    fresh = small_cnn().state_dict()
    for k, v in saved["model"].items():
        assert v.stride() == fresh[k].stride(), k
    for st in saved["optimizer"]["state"].values():
        assert all(t.is_contiguous() for t in st.values() if isinstance(t, torch.Tensor))


@pytest.mark.filterwarnings("ignore:precision='bf16' without native")
def test_a_weight_used_twice_in_one_forward_trains_the_same_inside_a_callers_autocast():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.inner = torch.nn.Linear(256, 256)  # bf16 where auto picks it: 256x256
            self.out = torch.nn.Linear(256, 2)

        def forward(self, x):
            return self.out(torch.relu(self.inner(torch.relu(self.inner(x)))))

    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 256, generator=g)
    y = (x[:, 0] > 0).long()
    kw = dict(epochs=2, batch_size=32, verbose=0, precision="bf16", threads=1)
    plain = el.fit(Twice(), (x, y), **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = el.fit(Twice(), (x, y), **kw)
    assert inside.history["loss"] == plain.history["loss"]
    assert plain.history["loss"][1] < plain.history["loss"][0]


def test_lr_find_fused_is_the_same_inside_a_callers_autocast():
    d = el.data.synthetic(n_samples=300)
    a = el.lr_find(lambda: el.models.mlp(20), d.train, num_iter=30, seeds=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        b = el.lr_find(lambda: el.models.mlp(20), d.train, num_iter=30, seeds=2)
    assert a.fused and np.array_equal(a.losses, b.losses, equal_nan=True)
