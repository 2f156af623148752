"""Benchmark: epochlab beside a busy process, against its own quiet times.

Users run epochlab next to a browser, an editor or another experiment. This
benchmark starts that other process itself: a child that spins on one core
(pinned to the last CPU where the OS allows it). For each workload it times
epochlab's default (``threads="auto"``) quiet, then with the busy process,
and for contrast the same with torch's default of one thread per core
(``threads=<cores>``), which is what a plain PyTorch loop gets:

- slide 5 through ``el.sweep``: the seed's MLP, four learning rates, 50
  epochs, batch 32, trained fused;
- the seed's slide-11 CNN ``fit`` on MNIST-sized synthetic images (batch 64,
  ``validation_split=0.2``; 12,000 images, 1 epoch; ``--quick``: 3,000).

Target: with the busy process, within 2x of the quiet time. Every figure is
printed with the 1-minute load average when it finished (the machine may be
shared: "quiet" means no busy process of ours). Run it without
OMP_NUM_THREADS set, so that torch starts with its own default.

    python benchmarks/bench_busy.py            # about 2 minutes on 2 cores
    python benchmarks/bench_busy.py --quick
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable

import torch

import epochlab as el
from epochlab.sweeps.executors import _die_with_parent


def _spin(cpu: int | None, parent: int) -> None:
    # Dies with this benchmark, even when it is killed (a spinner left behind had skewed the
    # next benchmarks: the sweep's own workers' guard).
    _die_with_parent(parent)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    while True:
        pass


class Busy:
    """A child process spinning on one core while the block runs."""

    def __enter__(self) -> Busy:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cpu = cpus[-1] if cpus else None
        self.proc = mp.get_context("spawn").Process(target=_spin, args=(cpu, os.getpid()),
                                                   daemon=True)
        self.proc.start()
        time.sleep(0.5)  # let it reach its core before timing starts
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join()


def slide5(threads: object) -> Callable[[], None]:
    d = el.data.synthetic()

    def run() -> None:
        el.sweep(lambda: el.models.mlp(20), d.train, epochs=50, lr=[0.1, 0.01, 0.001, 0.0001],
                 progress=False, threads=threads)
    return run


def cnn(threads: object, n: int) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)

    def run() -> None:
        torch.manual_seed(0)
        el.fit(el.models.cnn("seed"), (x, y), epochs=1, batch_size=64, validation_split=0.2,
               threads=threads, verbose=0)
    return run


def timed(fn: Callable[[], None], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), os.getloadavg()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller CNN data, one repeat")
    args = p.parse_args()
    cores = torch.get_num_threads()
    repeats = 1 if args.quick else 3
    n = 3000 if args.quick else 12000
    print(f"bench_busy: {os.cpu_count()} CPUs, torch default threads {cores}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.2f}")
    slide5("auto")()  # warm-ups: first calls (lazy imports, oneDNN's kernel selection) untimed
    cnn("auto", n)()  # at full size: the first fit of n images also grows the heap (~10% slower)
    cases = [("slide 5 el.sweep", slide5, repeats), (f"seed CNN fit ({n} images)",
                                                     lambda t: cnn(t, n), repeats)]
    print(f"\n{'workload':28s} {'threads':>8s} {'quiet s':>8s} {'load':>5s} {'busy s':>8s} "
          f"{'load':>5s} {'busy/quiet':>10s}")
    for name, make, reps in cases:
        for threads in ("auto", cores):
            fn = make(threads)
            quiet, lq = timed(fn, reps)
            with Busy():
                busy, lb = timed(fn, reps)
            label = "auto" if threads == "auto" else f"{threads} (torch)"
            flag = "" if threads != "auto" else ("  ok (<= 2x)" if busy <= 2 * quiet else "  > 2x")
            print(f"{name:28s} {label:>8s} {quiet:8.2f} {lq:5.2f} {busy:8.2f} {lb:5.2f} "
                  f"{busy / quiet:9.1f}x{flag}", flush=True)


if __name__ == "__main__":
    main()
