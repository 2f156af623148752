"""Benchmark: fusion decided by structure, the autograd path against training one by one.

Workload: ``epochlab.data.synthetic()`` (640 training rows after
``validation_split=0.2``), Adam, batch 32, float32, validation every epoch;
K configurations (4 learning rates x K/4 seeds) of one user model swept with
``el.sweep(make_model, (X, y), ...)``, fused against ``fuse=False`` (each run
through ``epochlab.fit``) in the same process. Models:

- ``relu``: Linear 20-64-32-1 with ReLU (the hand-written backward);
- ``gelu+ln``: the same with LayerNorm after each hidden Linear and GELU;
- ``dropout``: ReLU with Dropout(0.2) after each hidden layer.

The last two run as stacked layers differentiated by autograd
(:mod:`epochlab.sweeps.fused_layers`). Not a test; noisy on a shared
machine, so the load average is printed beside the figures.

    .venv/bin/python benchmarks/bench_fused_layers.py            # 20 epochs, K=4 and 16
    .venv/bin/python benchmarks/bench_fused_layers.py --quick    # 3 epochs, K=4
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import epochlab as el

LRS = [0.1, 0.01, 0.001, 0.0001]


def relu() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 1))


def gelu_ln() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, 32),
                         nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 1))


def dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 32),
                         nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))


def timed(make_model, data, k: int, epochs: int, fuse: bool) -> tuple[float, bool]:
    t0 = time.perf_counter()
    result = el.sweep(make_model, data, epochs=epochs, batch_size=32, lr=LRS,
                      seed=list(range(k // 4)), progress=False, fuse=fuse, threads=1)
    return time.perf_counter() - t0, result.plan.tasks[0].fused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 epochs, K=4 only")
    args = ap.parse_args()
    epochs, ks = (3, [4]) if args.quick else (20, [4, 16])
    torch.set_num_threads(1)
    data = el.data.synthetic().train
    load = os.getloadavg()
    print(f"synthetic 640 train rows, Adam, batch 32, {epochs} epochs, float32, 1 thread; "
          f"torch {torch.__version__}; load average at start {load[0]:.2f} on {os.cpu_count()} "
          "CPUs")
    print(f"{'model':>8} {'K':>3} {'fused s':>8} {'one by one s':>13} {'x':>6}")
    for name, make in (("relu", relu), ("gelu+ln", gelu_ln), ("dropout", dropout)):
        for k in ks:
            timed(make, data, 4, 1, True)  # warm-up
            fused_s, was_fused = timed(make, data, k, epochs, True)
            plain_s, _ = timed(make, data, k, epochs, False)
            assert was_fused, f"{name} did not fuse"
            print(f"{name:>8} {k:>3} {fused_s:>8.2f} {plain_s:>13.2f} {plain_s / fused_s:>5.1f}x")
    print(f"load average at the end {os.getloadavg()[0]:.2f}. Each side is a whole el.sweep "
          "call (plan, store, test metrics).")


if __name__ == "__main__":
    main()
