"""Benchmark: the seed's whole MLP study end to end through ``epochlab sweep``, fused vs not.

The study is the seed's slides 1, 4, 5, 6, 8 and 9 on ``synthetic`` data
(800 rows, ``validation_split=0.2``), each setting over 3 seeds, as six
``epochlab sweep`` invocations (the real CLI command, in this process, each
into a fresh SQLite store):

- slide 1 + 4: batch sizes 16 / 32 / 64 / 128, 10 epochs (slide 1 is batch 32);
- slide 5: learning rates 0.1 / 0.01 / 0.001 / 0.0001, 50 epochs;
- slide 6: early stopping on val_loss, patience 5, best weights restored, up to 100 epochs;
- slide 8: Keras' ExponentialDecay(0.1, 1000, 0.96, staircase) vs a constant 0.1 (its initial rate), 20 epochs;
- slide 9: batch norm on / off, 20 epochs (two fused tasks: with and without batch norm).

Every invocation runs with ``--fuse`` (the default) and ``--no-fuse``; the
table gives the median seconds of each (after a warm-up) and the ratio,
for 1 and 2 torch threads. The fused and unfused stores are then compared:
same statuses, same accounting, validation metrics within float tolerance
(float32; runs at lr 0.1 are chaotic over 20-50 epochs, so slides 5 and 8
are compared after their first epoch only -- see
``shared/notes/fused-prototype.md``; batch norm amplifies float32 rounding too:
its validation accuracy may differ by one row of 160 after 20 epochs, while in
float64 fused and one-by-one agree within 3e-13 over the same 20 epochs).

Not a test. Timings on a shared 2-core machine are noisy.

    .venv/bin/python benchmarks/bench_sweep_study.py             # full (a few minutes), without OMP_NUM_THREADS
    .venv/bin/python benchmarks/bench_sweep_study.py --quick     # smoke run: 1 seed, few epochs
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time

import torch
from click.testing import CliRunner

from epochlab.cli import main as cli
from epochlab.store import SQLiteStore
from epochlab.train.data import _SPLITS

STUDY = {
    "slide 1+4 batch sizes": ["--epochs", "10", "--batch-size", "16,32,64,128"],
    "slide 5 learning rates": ["--epochs", "50", "--lr", "0.1,0.01,0.001,0.0001"],
    "slide 6 early stopping": ["--epochs", "100",
                               "--early-stopping", "val_loss:patience=5,restore=true"],
    "slide 8 lr schedule": ["--epochs", "20", "--lr", "0.1",
                            "--schedule", "exponential:decay_steps=1000,decay_rate=0.96,"
                                          "staircase=true", "--schedule", "none"],
    "slide 9 batch norm": ["--epochs", "20", "--batch-norm", "on,off"],
}


def _quick(args: list[str]) -> list[str]:
    out = list(args)
    if "--epochs" in out:
        i = out.index("--epochs") + 1
        out[i] = ",".join(str(min(int(e), 3)) for e in out[i].split(","))
    return out


def invoke(args: list[str], seeds: str, fuse: bool, store: str) -> tuple[float, str]:
    """Run ``epochlab sweep`` once; seconds of the whole command and its output."""
    full = ["sweep", "--data", "synthetic", *args, "--seed", seeds, "--study", "bench",
            "--store", store, "--no-progress", "--fuse" if fuse else "--no-fuse"]
    _SPLITS.clear()  # as in a fresh `epochlab sweep` process: no splits made yet
    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, full)
    seconds = time.perf_counter() - t0
    if res.exit_code != 0:
        raise RuntimeError(f"epochlab {' '.join(full)} failed:\n{res.output}")
    return seconds, res.output


def compare(fused_db: str, plain_db: str, first_epochs_only: bool) -> float:
    """Largest difference of validation metrics between the fused and unfused stores."""
    a, b = SQLiteStore(fused_db), SQLiteStore(plain_db)
    try:
        ra = {r.key: r for r in a.runs("bench")}
        rb = {r.key: r for r in b.runs("bench")}
        assert set(ra) == set(rb)
        worst = 0.0
        for key, x in ra.items():
            y = rb[key]
            assert x.status == y.status, (key, x.status, y.status)
            for k in ("total_updates", "samples_seen", "epochs_run"):
                assert x.summary[k] == y.summary[k], (key, k)
            ea, eb = a.epochs(x.id), b.epochs(y.id)
            for row_a, row_b in list(zip(ea, eb, strict=True))[: 1 if first_epochs_only else None]:
                for m in ("val_loss", "val_accuracy", "loss"):
                    va, vb = row_a.get(m, math.nan), row_b.get(m, math.nan)
                    if math.isfinite(va) and math.isfinite(vb):
                        worst = max(worst, abs(va - vb))
        return worst
    finally:
        a.close()
        b.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, at most 3 epochs, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="torch thread counts to time, e.g. 1,2")
    args = ap.parse_args()
    seeds = "0" if args.quick else "0,1,2"
    repeats = 1 if args.quick else max(args.repeats, 3)
    load = os.getloadavg()
    print(f"seed MLP study through `epochlab sweep`, seeds {seeds}; torch {torch.__version__}; "
          f"median of {repeats} after a warm-up; load average at start "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} CPUs")
    print("PRELIMINARY when the load average is above 0.5: other jobs share the machine.")
    if os.environ.get("OMP_NUM_THREADS"):
        print(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} is set: the rows of more threads "
              "than that are slow (slide 5 on 2 threads took 0.32 s under OMP_NUM_THREADS=1, "
              "0.22 s without it); run without it.")
    print()
    tmp = tempfile.mkdtemp(prefix="bench_study_")
    rows = []
    n = 0
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        totals = {True: 0.0, False: 0.0}
        for name, sweep_args in STUDY.items():
            sweep_args = _quick(sweep_args) if args.quick else sweep_args
            times: dict[bool, list[float]] = {True: [], False: []}
            dbs = {}
            for rep in range(repeats + 1):  # the first round is the warm-up
                for fuse in (True, False):
                    n += 1
                    db = os.path.join(tmp, f"{n}.db")
                    seconds, output = invoke(sweep_args, seeds, fuse, db)
                    dbs[fuse] = db
                    if rep:
                        times[fuse].append(seconds)
                    if rep == 0 and fuse and threads == 1:
                        print(f"# {name}: epochlab sweep {' '.join(sweep_args)} --seed {seeds}")
                        print("\n".join("#   " + line for line in output.splitlines()[1:3]))
            chaotic = "slide 5" in name or "slide 8" in name  # lr 0.1 for 20-50 epochs
            diff = compare(dbs[True], dbs[False], first_epochs_only=chaotic)
            t_on, t_off = statistics.median(times[True]), statistics.median(times[False])
            totals[True] += t_on
            totals[False] += t_off
            rows.append((threads, name, t_on, t_off, diff))
        rows.append((threads, "whole study", totals[True], totals[False], math.nan))
    print(f"\n{'threads':>7}  {'sweep':<24} {'fused s':>8} {'no-fuse s':>10} {'ratio':>6} "
          f"{'max |diff| val metrics':>23}")
    for threads, name, t_on, t_off, diff in rows:
        d = "" if math.isnan(diff) else f"{diff:.1e}"
        print(f"{threads:7d}  {name:<24} {t_on:8.2f} {t_off:10.2f} {t_off / t_on:5.1f}x {d:>23}")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. "
          "Seconds are the whole `epochlab sweep` command (plan, training, store, table).")
    print("diff: fused vs --no-fuse, every epoch (slides 5 and 8: first epoch only, as lr 0.1 "
          "is chaotic in float32 over 20-50 epochs); statuses and accounting asserted equal.")


if __name__ == "__main__":
    main()
