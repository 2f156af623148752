"""Benchmark: epoch-prefix sharing on the seed's slide-13 grid.

Workload: ``digits`` (1437 training rows upsampled to 28x28, ``validation_split=0.2``
leaves 1149), the slide-13 CNN (``cnn_small``), Adam lr 1e-3, seed 0; the grid
epochs {5, 10, 15} x batch size {32, 64, 128}. With sharing, the plan trains
3 runs (15 epochs each, read out at 5, 10 and 15); without, 9 runs (90 epochs).
Both go through :func:`epochlab.sweeps.driver.sweep` into fresh in-memory stores,
and the results are checked to be equal (everything but wall time).

``--quick``: epochs {1, 2, 3} x batch size {64, 128}.

Not a test. The machine the project is built on has 2 shared cores; treat
figures from it as preliminary and run it on a quiet machine for real ones.

    .venv/bin/python benchmarks/bench_prefix_sharing.py --quick   # ~20 s
    .venv/bin/python benchmarks/bench_prefix_sharing.py           # several minutes
"""

from __future__ import annotations

import argparse
import time

import torch

from epochlab.store import MemoryStore
from epochlab.sweeps.driver import sweep
from epochlab.sweeps.spec import SweepSpec


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller grid (seconds)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    epochs, batches = ([1, 2, 3], [64, 128]) if args.quick else ([5, 10, 15], [32, 64, 128])
    spec = SweepSpec(data="digits", model="cnn_small", epochs=epochs, batch_size=batches,
                     name="bench")
    # Warm-up, untimed: loads and upsamples the data once (cached per process), first calls.
    sweep(SweepSpec(data="digits", model="cnn_small", epochs=[1], batch_size=[128]),
          MemoryStore(), progress=False)
    times, stores, results = {}, {}, {}
    for share in (True, False):
        stores[share] = MemoryStore()
        t0 = time.perf_counter()
        results[share] = sweep(spec, stores[share], progress=False, share_prefixes=share)
        times[share] = time.perf_counter() - t0
    a, b = results[True], results[False]
    same = all(
        _strip(stores[True].epochs(x.id)) == _strip(stores[False].epochs(y.id))
        and x.summary["test"] == y.summary["test"]
        and x.summary["total_updates"] == y.summary["total_updates"]
        for x, y in zip(a.runs, b.runs, strict=True)
    )
    print(f"grid: epochs {epochs} x batch_size {batches} on digits, cnn_small, "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"shared:   {a.trained} trainings, {a.plan.trained_epochs} epochs, {times[True]:.1f} s")
    print(f"separate: {b.trained} trainings, {b.plan.trained_epochs} epochs, {times[False]:.1f} s")
    print(f"speed-up: {times[False] / times[True]:.2f}x "
          f"(epoch ratio {b.plan.trained_epochs / a.plan.trained_epochs:.2f}x); "
          f"results identical: {same}")


if __name__ == "__main__":
    main()
