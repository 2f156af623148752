"""How epochlab uses the machine: intra-op threads and numeric precision, chosen per workload.

This module owns two decisions that ``fit`` and sweeps make before training
and record in the History:

- **Threads.** torch's default (one thread per core) is the wrong choice for
  the seed's tiny models: a 20-64-32-1 MLP step is ~0.1 M multiply-adds, there
  is nothing to split, and as soon as another process uses a core the threads
  wait for each other (slide 5 ran 4x to 60x slower on a 2-core machine with
  one busy core). :func:`choose_threads` gives one thread below
  :data:`MACS_PER_THREAD` * 2 multiply-adds a step, and above it one thread per
  :data:`MACS_PER_THREAD`, never more than the cores idle when training starts
  nor more than the caller's own ``torch.get_num_threads()`` (so
  ``OMP_NUM_THREADS`` stays a ceiling). :func:`using_threads` sets the count for
  epochlab's work and restores the caller's afterwards. Results are
  bit-identical for the same thread count; pass ``threads=N`` to pin it.
- **Precision.** ``"bf16"`` trains the forward pass under
  ``torch.autocast(dtype=torch.bfloat16)`` (and convolutions in channels-last
  memory layout); the loss, the metrics, the gradients' master copies and the
  optimizer state stay float32. ``"auto"`` picks bf16 only where the hardware
  has native bf16 arithmetic (CPU: AMX or AVX-512 BF16; CUDA:
  ``torch.cuda.is_bf16_supported()``) *and* the model has convolutions,
  recurrent layers or large linear layers; without native support bf16 is
  slower than float32, and on small linear layers the casts cost more than
  they save.

And two settings of the process while training runs (:func:`for_training`
enters both): :func:`reusing_memory` keeps freed memory for the next step
(glibc's malloc returns large blocks to the system at once, and a CNN then
page-faults its activations afresh every step: 30% of the seed CNN's step
time on a 2-core CPU); :func:`flushing_denormals` flushes subnormal floats to
zero, as TensorFlow does by default (Adam's first moment of a dead ReLU's
weights decays into subnormals, which x86 CPUs compute ~50x slower: slide 5's
lr-1e-4 member had half its moments subnormal by epoch 50).

Example:
    >>> import torch, epochlab as el
    >>> choice = resolve(el.models.mlp(20), torch.zeros(2, 20), batch_size=32)
    >>> choice.threads, choice.precision
    (1, 'fp32')
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import numbers
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from epochlab.validation import MAX_THREADS, ParameterError

F = TypeVar("F", bound=Callable[..., Any])

PRECISIONS = ("auto", "fp32", "bf16")

# Forward multiply-adds per step each extra thread needs before it pays.
# Measured on a 2-core AMD EPYC (Zen 5): below ~64 M a step (the seed's MLP,
# cnn_small at batch 64) a second thread was slower even on a quiet machine
# and 3x-60x slower with another process on a core; the seed CNN at batch 128
# (360 M) ran 1.7x faster on two.
MACS_PER_THREAD = 32_000_000

# The same for a fused group (K members' batched matmuls split well across threads):
# through el.sweep, slide 5's MLP (0.1 M a member step, 50 epochs), 1 thread against 2
# (pinned, so without the 30 ms idle-core reading that "auto" adds for 2): K=4 0.115 vs
# 0.106 s, K=8 0.164 vs 0.143, K=16 0.287 vs 0.233, K=32 0.48 vs 0.34; K=64 0.92 vs 0.64;
# cnn_small on 8x8 digits, K=8 (7.5 M) 0.29 vs 0.24. A 2nd thread for a group from 1 M a
# step (slide 5's K=10), where it saves 10-30% of the step...
FUSED_MACS_PER_THREAD = 500_000

# ...but only in a run long enough to buy back the idle-core reading that choosing it takes
# (30 ms, part of it while the sweep sets up): from this many forward multiply-adds over the
# whole run (~0.1 s of fused training at the ~7 G a second these groups run). Slide 5's 12
# members (3 seeds, 1.3 G) through `epochlab sweep`: 230 ms on 1 thread, 197 on 2 pinned.
FUSED_THREADS_MIN_RUN = 700_000_000

# A sweep's fused task (K configurations trained as one, in float32) beats training them
# one by one in bf16 up to this many forward multiply-adds a step per member: with
# precision "auto" it then stays fused in float32. Measured on the 2-core AMD EPYC
# (AVX-512 BF16, 1 thread), cnn_small (fused by hand), 8 configurations, batch 32, 2
# epochs: 2.6 M a step (12x12 images) fused 0.42 s vs bf16 one by one 0.75 s; 5.0 M 0.92
# vs 1.00; 8.3 M 1.46 vs 1.35; 17 M (28x28) 2.86 vs 2.28; 8x8 (0.9 M, 3 epochs) 0.20 vs
# 0.82. (Against float32 one by one fused won at every size: 3.9 vs 5.0 s at 17 M.)
FUSED_FP32_MAX_MACS = 4_000_000

# Evaluation (validation, test metrics) runs in chunks of at most this many rows, fewer
# where one layer's output would pass EVAL_ACTIVATION_BYTES (see eval_rows): below glibc's
# 32 MiB mmap threshold, so reusing_memory keeps the blocks from one chunk to the next.
EVAL_ROWS = 1024
EVAL_ACTIVATION_BYTES = 16 * 1024 * 1024

# A Linear layer counts as large for bf16 from this many weights (256 x 256):
# on AVX-512 BF16 bf16 autocast ran a 256-wide MLP 1.16x, a 512-wide 1.4x
# faster, and a 64- or 128-wide one slower than float32.
LARGE_LINEAR = 256 * 256

_RECURRENT = (nn.RNNBase,)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Layers whose results may depend on the thread count: convolutions, and batch norm (its
# kernel sums each channel's rows in per-thread parts: 1 and 2 threads differ in the last
# bits, for (32, 192) inputs already). Layer norm and the batched matmuls do not.
THREAD_SENSITIVE_LAYERS = (*_CONV, nn.modules.batchnorm._BatchNorm)


@dataclass(frozen=True)
class RuntimeChoice:
    """What epochlab uses for one training: threads and precision, and why."""

    threads: int
    threads_reason: str
    precision: str  # "fp32" or "bf16" ("fp64": a float64 model, trained as it is)
    precision_reason: str
    channels_last: bool = False  # convolutions in channels-last layout (bf16 with convs)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


# -- hardware ----------------------------------------------------------------------------
def native_bf16(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` has native bfloat16 arithmetic, and what says so.

    Example:
        >>> ok, why = native_bf16("cpu")
        >>> isinstance(ok, bool) and isinstance(why, str)
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return ok, "the GPU supports bf16" if ok else "the GPU has no native bf16"
    if device.type != "cpu":
        return False, f"no bf16 policy for device {device.type!r}"
    flags = _cpu_flags()
    if flags is not None:
        for flag in ("amx_bf16", "avx512_bf16"):
            if flag in flags:
                return True, f"the CPU has {flag.upper().replace('_', '-', 1)}"
        return False, "the CPU has no AMX or AVX-512 BF16"
    try:  # not Linux: ask torch what it was built to detect
        if torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported():
            return True, "the CPU has AMX or AVX-512 BF16"
    except AttributeError:
        pass
    return False, "no native bf16 detected on this CPU"


def _cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def usable_cores() -> int:
    """CPUs this process may run on (its affinity set), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def idle_cores(window: float = 0.03) -> float:
    """Cores left idle by other processes on the machine over the next ``window`` seconds.

    Read from ``/proc/stat`` (so a busy process that started a moment ago
    counts, unlike the load average); elsewhere from the 1-minute load average.
    This process's own CPU time in the window is counted as idle: after a
    training run its OpenMP threads spin a few ms before they sleep, and that
    is not a competitor. The counters tick every 10 ms per core: over 30 ms a
    quiet 2-core machine read 1.7-2.0 idle cores and one with a core busy 1.0-1.2,
    as over 100 ms; over 10 ms the reading swung between 0.7 and 2.0. The wait is
    part of every decision, so it is kept short (0.1 s was 10% of a one-epoch CNN
    fit and of a K=64 sweep).
    """
    global _window
    cores = usable_cores()
    started, _window = _window, None
    if started is not None and 0.0 <= time.monotonic() - started[0] < _WINDOW_FRESH:
        t0, a, own0 = started  # begun by start_idle_window: wait only for the rest
        time.sleep(max(0.0, window - (time.monotonic() - t0)))
    else:
        a, own0, t0 = _proc_stat(), time.process_time(), time.monotonic()
        if a is not None:
            time.sleep(window)
    if a is None:
        try:
            return max(0.0, cores - os.getloadavg()[0])
        except (AttributeError, OSError):
            return float(cores)
    b = _proc_stat()
    own = (time.process_time() - own0) / max(time.monotonic() - t0, 1e-9)
    if b is None:
        return float(cores)
    total, idle = b[0] - a[0], b[1] - a[1]
    if total <= 0:
        return float(cores)
    n_cpus = os.cpu_count() or cores
    return min(float(cores), n_cpus * idle / total + own)


# A reading begun early (start_idle_window): (monotonic time, /proc/stat, process CPU time).
_window: tuple[float, tuple[int, int] | None, float] | None = None
_WINDOW_FRESH = 1.0  # seconds a begun reading stays usable


def start_idle_window() -> None:
    """Begin :func:`idle_cores`' next reading now, at the start of a sweep or a fit, so that
    the thread choice made after the plan, the data and the models waits only for what is
    left of its window (a sweep of slide 5's 12 members waited 30 ms; its set-up takes
    ~15). The next :func:`idle_cores` within a second uses it up; later ones read anew.
    A reading begun less than 0.1 s ago is kept (the command, then its sweep, begin it).

    Example:
        >>> start_idle_window(); 0.0 <= idle_cores() <= usable_cores()
        True
    """
    global _window
    now = time.monotonic()
    if _window is None or not 0.0 <= now - _window[0] < 0.1:
        _window = (now, _proc_stat(), time.process_time())


def idle_window_left(window: float = 0.03) -> float:
    """Seconds until the reading begun by :func:`start_idle_window` spans ``window`` (0.0
    when it does, or when none is begun): then :func:`idle_cores` answers without waiting.

    Example:
        >>> start_idle_window(); 0.0 <= idle_window_left() <= 0.03
        True
    """
    if _window is None:
        return 0.0
    return max(0.0, window - (time.monotonic() - _window[0]))


def _proc_stat() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(values), values[3] + values[4]


# -- workload ----------------------------------------------------------------------------
def macs_per_step(model: nn.Module, x_rows: torch.Tensor, batch_size: int) -> int:
    """Forward multiply-adds of one batch of ``batch_size`` rows (from a probe on ``x_rows``).

    Counts Linear, convolution and recurrent layers, the ones that hold the
    arithmetic; elementwise layers are noise beside them. A model of Linear
    layers on flat rows is counted from its weights, without running it.

    Example:
        >>> import torch, epochlab as el
        >>> macs_per_step(el.models.mlp(20), torch.zeros(2, 20), 32)  # (20*64 + 64*32 + 32) * 32
        107520
    """
    return int(_probe(model, x_rows)[0] * batch_size)


def eval_rows(model: nn.Module, x_rows: torch.Tensor, batch_size: int,
              most: int = EVAL_ROWS) -> int:
    """Rows per forward pass when evaluating: ``most``, fewer where the model's largest layer
    output would pass :data:`EVAL_ACTIVATION_BYTES`, never fewer than ``batch_size``.

    glibc maps blocks above 32 MiB afresh and unmaps them when freed, so a larger
    activation is page-faulted in at every pass (the seed CNN's 1,024-row chunks: 44 MB
    for the first convolution's output, ~23,000 faults a validation pass; at 192 rows
    its 12,000-image epoch took 0.81 s instead of 0.89). Smaller chunks also keep a big
    model's evaluation within the memory its training batches need.

    Example:
        >>> import torch, epochlab as el
        >>> eval_rows(el.models.mlp(20), torch.zeros(2, 20), 32)
        1024
        >>> eval_rows(el.models.cnn("seed"), torch.zeros(2, 1, 28, 28), 64)  # 86.5 KB a row
        193
    """
    per_row = _probe(model, x_rows)[1]
    fit = EVAL_ACTIVATION_BYTES // max(per_row, 1)
    return max(batch_size, min(most, fit))


def _probe(model: nn.Module, x_rows: torch.Tensor) -> tuple[float, int]:
    """Forward multiply-adds per row, and the bytes per row of the largest output of a layer
    (float32), from a forward pass over ``x_rows`` in eval mode; a model of Linear layers on
    flat rows from its weights, without running it."""
    leaves = [m for m in model.modules() if not list(m.children())]
    layers = [m for m in leaves if isinstance(m, (nn.Linear, *_CONV, *_RECURRENT))]
    if x_rows.dim() == 2 and layers and all(isinstance(m, nn.Linear) for m in layers):
        widest = max([x_rows.shape[1], *(m.out_features for m in layers)])
        return float(sum(m.weight.numel() for m in layers)), 4 * widest
    total, largest, rows = [0], [0], max(x_rows.shape[0], 1)

    def hook(mod: nn.Module, inp: object, out: object) -> None:
        if isinstance(out, tuple):  # recurrent layers: (output, state)
            out = out[0]
        if isinstance(out, nn.utils.rnn.PackedSequence):
            out = out.data
        if not isinstance(out, torch.Tensor):
            return
        largest[0] = max(largest[0], out.numel())
        if isinstance(mod, nn.Linear):
            total[0] += mod.weight.numel() * (out.numel() // max(out.shape[-1], 1))
        elif isinstance(mod, _CONV):
            total[0] += mod.weight.numel() * (out.numel() // max(out.shape[1], 1))
        elif isinstance(mod, _RECURRENT):
            weights = sum(p.numel() for n, p in mod.named_parameters() if n.startswith("weight"))
            total[0] += weights * (out.numel() // max(out.shape[-1], 1))

    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x_rows.clone())  # a model writing into its input leaves the data alone
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0] / rows, 4 * -(-largest[0] // rows)


def bf16_layers(model: nn.Module) -> str | None:
    """The kind of layer that makes bf16 pay in ``model`` (None when nothing does)."""
    for m in model.modules():
        if isinstance(m, _CONV):
            return "convolutions"
    for m in model.modules():
        if isinstance(m, _RECURRENT):
            return "recurrent layers"
    for m in model.modules():
        if isinstance(m, nn.Linear) and m.weight.numel() >= LARGE_LINEAR:
            return "large linear layers"
    return None


# -- the two choices ---------------------------------------------------------------------
def check_threads(threads: object) -> int | None:
    """``None`` or ``"auto"`` -> None (choose per workload); an int from 1 to
    :data:`~epochlab.validation.MAX_THREADS` passes (NumPy's too).

    Example:
        >>> check_threads("auto") is None, check_threads(2)
        (True, 2)
    """
    if threads is None or (isinstance(threads, str) and threads == "auto"):
        return None
    if (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
            or not 1 <= threads <= MAX_THREADS):
        raise ParameterError(
            f"The value of `threads` is {threads!r}, but must be 'auto', None or an int from 1 "
            f"to {MAX_THREADS}."
        )
    return int(threads)


def check_precision(precision: object) -> str:
    if precision not in PRECISIONS:
        raise ParameterError(
            f"The value of `precision` is {precision!r}, but must be one of {PRECISIONS}."
        )
    return str(precision)


def choose_threads(macs: int, threads: object = None, *, ceiling: int | None = None,
                   per_thread: int = MACS_PER_THREAD) -> tuple[int, str]:
    """Intra-op threads for a workload of ``macs`` forward multiply-adds a step, and why.

    ``ceiling`` is the most to use (default: the caller's ``torch.get_num_threads()``);
    ``per_thread``: the work each thread needs before it pays (:data:`MACS_PER_THREAD`
    for one model, :data:`FUSED_MACS_PER_THREAD` for a fused group).

    Example:
        >>> choose_threads(107_520, ceiling=2)
        (1, 'small workload: 0.1 M multiply-adds a step; a 2nd thread pays from 64 M')
        >>> choose_threads(10**9, threads=1)
        (1, 'set by threads=1')
    """
    pinned = check_threads(threads)
    if pinned is not None:
        cores = usable_cores()
        if pinned <= cores:
            return pinned, f"set by threads={pinned}"
        warnings.warn(
            f"threads={pinned} is more than the {cores} core(s) this process may use: the "
            "extra threads wait for each other, and training can be many times slower "
            "(`epochlab fit --data digits --model cnn --epochs 1` took 93 s on 64 threads, "
            "4 s on 2 cores). Use "
            f"threads='auto' (--threads auto) or at most {cores}.", stacklevel=3)
        return pinned, f"set by threads={pinned}: more than the {cores} usable core(s)"
    ceiling = torch.get_num_threads() if ceiling is None else ceiling
    if ceiling <= 1:
        return 1, "torch.get_num_threads() (or this process's share of the cores) is 1"
    want = max(1, macs // per_thread)
    m = f"{macs / 1e6:.1f} M multiply-adds a step"
    if want == 1:
        return 1, f"small workload: {m}; a 2nd thread pays from {2 * per_thread / 1e6:g} M"
    want = min(want, ceiling, usable_cores())
    free = idle_cores()
    n = max(1, min(want, int(free + 0.25)))
    if n < want:
        return n, f"{m} would use {want} threads, but {free:.1f} of {usable_cores()} cores are idle"
    return n, f"{m}; {free:.1f} of {usable_cores()} cores idle"


def choose_precision(model: nn.Module, precision: object = "auto") -> tuple[str, str, bool]:
    """``("fp32" | "bf16", why, channels_last)`` for training ``model`` on its device.

    Example:
        >>> import epochlab as el
        >>> choose_precision(el.models.mlp(20))[:2]
        ('fp32', 'auto: only small linear layers')
    """
    precision = check_precision(precision)
    # Channels-last is a layout of 4-d tensors: 2-d convolutions' (Conv1d and Conv3d have none).
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    p = next(model.parameters(), None)
    if p is not None and p.dtype == torch.float64:  # trained as it is: say so, not "float32"
        if precision == "bf16":
            warnings.warn("precision='bf16' has no effect on a float64 model: autocast lowers "
                          "only float32 operations, so it trains in float64.", stacklevel=3)
        return "fp64", "the model is float64", False
    if precision == "fp32":
        return "fp32", "set by precision='fp32'", False
    if precision == "bf16":
        if p is not None and p.dtype != torch.float32:
            dtype = str(p.dtype).replace("torch.", "")
            warnings.warn(f"precision='bf16' has no effect on a {dtype} model: autocast lowers "
                          f"only float32 operations, so it trains in {dtype}.", stacklevel=3)
            return "fp32", f"precision='bf16' has no effect: the model is {dtype}", False
        ok, why = native_bf16(p.device if p is not None else "cpu")
        if not ok:
            warnings.warn(f"precision='bf16' without native bfloat16 ({why}): it is emulated, "
                          "usually slower than float32. precision='auto' picks float32 here.",
                          stacklevel=3)
            return "bf16", f"set by precision='bf16' ({why}: emulated)", has_conv
        return "bf16", "set by precision='bf16'", has_conv
    layers = bf16_layers(model)
    if layers is None:
        return "fp32", "auto: only small linear layers", False
    if p is not None and p.dtype != torch.float32:
        return "fp32", f"auto: the model is {str(p.dtype).replace('torch.', '')}", False
    ok, why = native_bf16(p.device if p is not None else "cpu")
    if not ok:
        return "fp32", f"auto: {why}", False
    return "bf16", f"auto: {why}, the model has {layers}", has_conv


def fused_or_one_by_one(model: nn.Module, x_rows: torch.Tensor, batch_size: int,
                        precision: object = "auto") -> tuple[bool, str]:
    """Whether copies of ``model`` should train fused (the engine computes in float32)
    rather than one by one at ``precision``, and why.

    Fused when one by one would run in float32 too; with ``precision="auto"``
    and native bf16, fused while a member's step is at most
    :data:`FUSED_FP32_MAX_MACS` forward multiply-adds.

    Example:
        >>> import torch, epochlab as el
        >>> fused_or_one_by_one(el.models.mlp(20), torch.zeros(2, 20), 32)
        (True, 'auto: only small linear layers')
    """
    prec, why, _ = choose_precision(model, precision)
    if prec in ("fp32", "fp64"):  # the engine computes in the model's own float dtype
        return True, why
    if check_precision(precision) == "bf16":
        return False, "precision='bf16' was asked for; fused training computes in float32"
    macs = macs_per_step(model, x_rows, batch_size) / 1e6
    limit = FUSED_FP32_MAX_MACS // 10**6
    if macs <= limit:
        return True, (f"auto: fused in float32 ({macs:.1f} M multiply-adds a step per member; "
                      f"bf16 one by one pays from {limit} M)")
    return False, (f"{macs:.1f} M multiply-adds a step per member: bf16 one by one is faster "
                   f"than fused float32 from {limit} M")


def resolve(
    model: nn.Module,
    x_rows: torch.Tensor,
    batch_size: int,
    *,
    threads: object = None,
    precision: object = "auto",
    ceiling: int | None = None,
) -> RuntimeChoice:
    """Threads and precision for training ``model`` on batches of ``batch_size`` rows like ``x_rows``.

    ``ceiling`` caps the threads (default: the caller's ``torch.get_num_threads()``).

    Example:
        >>> import torch, epochlab as el
        >>> resolve(el.models.mlp(20), torch.zeros(2, 20), 32, threads=2).threads
        2
    """
    pinned = check_threads(threads)
    prec, prec_why, channels_last = choose_precision(model, precision)
    ceiling = torch.get_num_threads() if ceiling is None else ceiling
    sized = pinned is None and ceiling > 1  # else the count is known already
    macs = macs_per_step(model, x_rows[:2], batch_size) if sized else 0
    n, why = choose_threads(macs, threads, ceiling=ceiling)
    return RuntimeChoice(n, why, prec, prec_why, channels_last)


@contextmanager
def own_precision() -> Iterator[None]:
    """A block whose precision is epochlab's own choice: an autocast the caller entered (CPU
    or CUDA) is off inside it; epochlab's bf16 runs enter their own.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), own_precision():
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    with contextlib.ExitStack() as stack:
        for device in ("cpu", "cuda"):
            try:
                on = torch.is_autocast_enabled(device)
            except TypeError:  # torch < 2.4: no device argument
                on = (torch.is_autocast_cpu_enabled() if device == "cpu"
                      else torch.is_autocast_enabled())
            if on:
                stack.enter_context(torch.autocast(device, enabled=False))
        yield


def in_own_precision(fn: F) -> F:
    """``fn`` run inside :func:`own_precision` (a caller's autocast off for it)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with own_precision():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]


@contextmanager
def using_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; restore the caller's count after.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with using_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2): blocks up to
# this size come from the heap, where a freed block is reused by the next step.
_KEEP_BELOW = 32 * 1024 * 1024
_KEEP_ALL = 2**31 - 1
_memory_lock = threading.Lock()
_memory_depth = 0


def manual_seed(seed: int) -> None:
    """``torch.manual_seed(seed)``, without its cost where torch has no accelerator.

    torch also queues the seed for CUDA, XPU and MTIA in case they start later,
    recording a formatted stack trace each time: 0.1-0.5 ms a call, several
    calls per sweep (a model built per seed). With no accelerator present the
    CPU generator is all there is to seed, and the result is the same.

    Example:
        >>> manual_seed(0); a = torch.rand(2)
        >>> manual_seed(0); b = torch.rand(2)
        >>> _ = torch.manual_seed(0); bool((a == b).all() and (a == torch.rand(2)).all())
        True
    """
    if _accelerator_present():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(int(seed))


@functools.lru_cache(maxsize=1)
def _accelerator_present() -> bool:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        return True
    for name in ("xpu", "mtia"):
        module = getattr(torch, name, None)
        available = getattr(module, "is_available", None)
        if available is not None and available():
            return True
    # a registered out-of-tree backend (privateuse1) is seeded by torch.manual_seed too
    return torch._C._get_privateuse1_backend_name() != "privateuseone"


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    names = ("gnu_get_libc_version", "mallopt", "malloc_trim")  # glibc's own
    return libc if all(hasattr(libc, name) for name in names) else None


@contextmanager
def reusing_memory() -> Iterator[None]:
    """Run the block with freed memory kept for reuse; give it back to the system after.

    glibc's ``malloc`` serves blocks above 128 KiB with ``mmap`` and unmaps
    them when freed, and trims the heap's free top: a training step that
    frees its activations then page-faults them in anew at the next step
    (the seed CNN spent 30% of its step zero-filling fresh pages). Inside the
    block blocks up to 32 MiB come from the heap and nothing is trimmed; on
    leaving, the heap is trimmed (``malloc_trim``) and the trim threshold
    is left at 64 MiB, the state glibc's own dynamic thresholds reach once
    a 32 MiB block has been freed. Nested blocks and other threads share one
    setting. A no-op where the C library is not glibc.

    Example:
        >>> with reusing_memory():
        ...     _ = [torch.zeros(1_000_000) for _ in range(3)]
    """
    global _memory_depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _memory_lock:
        _memory_depth += 1
        if _memory_depth == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL)
    try:
        yield
    finally:
        with _memory_lock:
            _memory_depth -= 1
            if _memory_depth == 0:
                libc.mallopt(_M_TRIM_THRESHOLD, 2 * _KEEP_BELOW)
                libc.malloc_trim(0)


def _denormals_flushed() -> bool:
    """Whether this thread's CPU flushes subnormal floats to zero now."""
    return (torch.tensor([1e-38], dtype=torch.float32) / 10).item() == 0.0


@contextmanager
def flushing_denormals() -> Iterator[None]:
    """Run the block with subnormal floats flushed to zero; restore the caller's mode after.

    Subnormal numbers (below 1.2e-38 in float32) are computed in microcode on
    x86 CPUs, tens of times slower than normal ones, and Adam's moving average
    of a gradient that is exactly zero (a dead ReLU unit's weights) decays
    into them. Flushing them changes no trained weight: an update of 1e-38
    times a learning rate is far below the rounding of any weight. TensorFlow
    flushes them by default. Applies to the calling thread (where the small
    models' steps run); a no-op where the CPU cannot flush.

    Example:
        >>> with flushing_denormals():
        ...     float(torch.tensor([1e-38]) / 10) in (0.0, 1e-39)
        True
    """
    if _denormals_flushed() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextmanager
def for_training() -> Iterator[None]:
    """:func:`reusing_memory` and :func:`flushing_denormals` together, for a training run.

    Example:
        >>> with for_training():
        ...     _ = torch.ones(3).sum()
    """
    with reusing_memory(), flushing_denormals():
        yield
