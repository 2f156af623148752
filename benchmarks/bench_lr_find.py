"""Which suggestion rule of the learning-rate range test is right? Measured against sweeps.

For each task: ``epochlab.lr_find`` (5 seeds; 200 updates from 1e-7 to 10)
gives every rule's suggestion per seed; ``lr_sweep`` trains runs of about
``--budget`` updates (300: whole epochs, rounded up) at learning rates 1e-4
... 1 (half-decade steps, 2 seeds) and calls a rate good when its best-epoch
validation loss is within 10% of the best improvement on the untrained
model's. A fixed budget of updates, not of epochs, so that a task with few
iterations per epoch does not punish the smaller rates for lack of time. A rule *hits* a task when its suggestion (median over
seeds) lies in the good range, with a quarter-decade of slack on each side
(half the sweep's step). Printed per rule: hits, and the spread of its
suggestions over seeds (decades between the lowest and highest seed).

Tasks: the seed's MLP on ``synthetic`` with Adam and with SGD (fused), an MLP
on ``digits`` (flattened: trained one seed at a time), slide 13's small CNN
and slide 11's CNN on ``digits``.

Not a test; it takes a few minutes on 2 cores.

    .venv/bin/python benchmarks/bench_lr_find.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

import epochlab as el
from epochlab.diagnose.lr_find import RULES, lr_find, lr_sweep
from epochlab.models.registry import build

TASKS = [  # (name, data, model, optimizer, batch size)
    ("synthetic mlp adam", "synthetic", "mlp", "adam", 32),
    ("synthetic mlp sgd", "synthetic", "mlp", "sgd", 32),
    ("digits mlp adam", "digits", "mlp", "adam", 32),
    ("digits cnn_small adam", "digits", "cnn_small", "adam", 32),
    ("digits cnn adam", "digits", "cnn", "adam", 64),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the first three tasks only")
    ap.add_argument("--budget", type=int, default=300, help="updates per sweep run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    grid = [10.0 ** e for e in np.arange(-4, 0.01, 0.5)]
    hits = {r: 0 for r in RULES}
    spreads: dict[str, list[float]] = {r: [] for r in RULES}
    tasks = TASKS[:3] if args.quick else TASKS
    print(f"load {os.getloadavg()[0]:.1f}; sweep grid {grid[0]:g} .. {grid[-1]:g}, half decades")
    for name, data_name, model_name, opt, bs in tasks:
        data = el.data.load(data_name)
        n_train = len(data.x_train) - math.ceil(0.2 * len(data.x_train))
        epochs = math.ceil(args.budget / math.ceil(n_train / bs))

        def make(data=data, model_name=model_name):
            return build(model_name, data)

        t0 = time.perf_counter()
        res = lr_find(make, data, batch_size=bs, optimizer=opt, validation_split=0.2)
        t_find = time.perf_counter() - t0
        t0 = time.perf_counter()
        sw = lr_sweep(make, data, grid, epochs=epochs, batch_size=bs, seeds=(0, 1), optimizer=opt)
        t_sweep = time.perf_counter() - t0
        print(f"\n{name}: {epochs} epochs per sweep run; good {sw.low:.1e} .. {sw.high:.1e} (best-epoch val loss "
              f"{np.nanmin(sw.val_loss):.3f}, untrained {sw.initial:.3f}); lr_find "
              f"{t_find:.1f}s ({'fused' if res.fused else 'seed by seed'}), sweep {t_sweep:.1f}s, "
              f"load {os.getloadavg()[0]:.1f}")
        print("  sweep: " + "  ".join(f"{lr:.0e}:{v:.3f}{'*' if g else ''}"
                                     for lr, v, g in zip(sw.lrs, sw.val_loss, sw.good, strict=True)))
        for row in res.table():
            r = row["rule"]
            hit = row["seeds"] > 0 and sw.contains(row["suggestion"], slack=0.25)
            hits[r] += hit
            if row["seeds"] > 1:
                spreads[r].append(row["spread_decades"])
            print(f"  {r:<9} {row['suggestion']:.1e} ({row['low']:.1e} .. {row['high']:.1e}, "
                  f"{row['seeds']} seeds)  {'hit' if hit else 'MISS'}")
    print(f"\nrule       hits of {len(tasks)}   mean spread over seeds (decades)")
    for r in RULES:
        sp = float(np.mean(spreads[r])) if spreads[r] else math.nan
        print(f"{r:<10} {hits[r]:>4}         {sp:.2f}")


if __name__ == "__main__":
    main()
