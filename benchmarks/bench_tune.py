"""Tuning on the seed's MLP: what Hyperband saves, and pruning by epochs vs by updates.

1. The issue's acceptance: a 30-trial Hyperband tune (TPE) on ``synthetic``
   over ``lr=loguniform(1e-4,1e-1),batch_size=choice(16,32,64,128),epochs=int(5,50)``:
   trials pruned, and total updates made against the same 30 trials at full
   length (the ratio).
2. Fairness across batch sizes: the same 30 trials (a seeded random sampler
   draws the same settings whatever the pruner decides) pruned by Hyperband
   comparing at equal epochs, then at equal updates. Printed per batch size:
   trials, pruned, mean epochs run; and the best trial each found.

Run: ``python benchmarks/bench_tune.py`` (``--quick``: 12 trials).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import epochlab as el
from epochlab.store import MemoryStore

SPACE = "lr=loguniform(1e-4,1e-1),batch_size=choice(16,32,64,128),epochs=int(5,50)"


def by_batch(result: el.tuning.TuneResult) -> str:
    lines = []
    for b in (16, 32, 64, 128):
        ts = [t for t in result.trials if t.params["batch_size"] == b]
        if not ts:
            continue
        pruned = sum(t.state == "PRUNED" for t in ts)
        mean_epochs = sum(t.epochs_run for t in ts) / len(ts)
        lines.append(f"    batch {b:>3}: {len(ts):>2} trials, {pruned:>2} pruned, "
                     f"mean epochs run {mean_epochs:5.1f}")
    return "\n".join(lines)


def best(result: el.tuning.TuneResult) -> str:
    b = result.best
    if b is None:
        return "none complete"
    p = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in b.params.items())
    return f"trial {b.number}: {p}; {result.metric} {b.value:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 12 if args.quick else 30
    torch.set_num_threads(1)
    data = el.data.synthetic()
    print(f"load {os.getloadavg()[0]:.2f}; torch threads 1; {n} trials; space {SPACE}")

    t0 = time.perf_counter()
    r = el.tune("mlp", data, space=SPACE, trials=n, pruner="hyperband", sampler="tpe",
                store=MemoryStore())
    c = r.counts()
    print(f"\n1. Hyperband + TPE, compared at equal {r.budget.by}: {c.get('PRUNED', 0)} of "
          f"{len(r.trials)} trials pruned; {r.total_updates} updates made vs {r.full_updates} for "
          f"the same trials at full length: ratio {r.update_ratio:.3f} "
          f"({time.perf_counter() - t0:.1f} s)")
    print(f"   best {best(r)}")

    print("\n2. The same random trials, Hyperband comparing at equal epochs vs equal updates:")
    for by in ("epochs", "updates"):
        t0 = time.perf_counter()
        r = el.tune("mlp", data, space=SPACE, trials=n, pruner="hyperband", sampler="random",
                    prune_by=by, store=MemoryStore())
        print(f"  prune by {by}: {r.counts().get('PRUNED', 0)} pruned, ratio {r.update_ratio:.3f}, "
              f"best {best(r)} ({time.perf_counter() - t0:.1f} s)")
        print(by_batch(r))
    print(f"\nload {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
