"""Benchmark: fused training vs one-by-one training (the seed's slide 5 workload).

Workload: ``epochlab.data.synthetic()`` (800 rows; ``validation_split=0.2``
leaves 640), the seed's MLP 20-64-32-1 in float32, Adam, batch 32, 50 epochs,
validation every epoch. Slide 5 trains learning rates 0.1 / 0.01 / 0.001 /
0.0001; then K=16 and K=64 (4 learning rates x 4 or 16 seeds).

Fused, two ways: ``train_fused`` (the engine alone) and ``el.sweep`` (what a
user calls: plan, data, store, test metrics and all; ``--no-sweep`` skips it).

Baselines, measured in the same run:
- a plain PyTorch loop (``torch.optim.Adam``), one configuration after another;
- scikit-learn ``MLPClassifier`` (float64, L2 alpha=1e-4, no per-epoch
  validation: it does less work per epoch and a different sum);
- the arithmetic floor: the forward+backward FLOPs of the workload divided by
  the batched-matmul GFLOP/s measured here with the same shapes.

Not a test. Figures on a shared 2-core machine are noisy: run it on a quiet one.

    .venv/bin/python benchmarks/bench_fused.py            # full, 1 and 2 threads (~2 minutes)
    .venv/bin/python benchmarks/bench_fused.py --quick    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from epochlab.data import synthetic
from epochlab.models import mlp
from epochlab.sweeps import sweep, train_fused

HIDDEN = (64, 32)
BATCH = 32
SLIDE5_LRS = [0.1, 0.01, 0.001, 0.0001]


def _model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return mlp(20, hidden=HIDDEN, out_features=1)


def plain_loop(x, y, lr: float, seed: int, epochs: int) -> float:
    """One configuration with fit's semantics, in the plainest PyTorch; returns final val_loss."""
    model = _model(seed)
    tr, va = train_test_split(np.arange(len(x)), test_size=0.2, random_state=seed, stratify=y,
                              shuffle=True)
    xt, yt = torch.as_tensor(x[tr]), torch.as_tensor(y[tr]).float().view(-1, 1)
    xv, yv = torch.as_tensor(x[va]), torch.as_tensor(y[va]).float().view(-1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(seed)
    val = math.nan
    for _ in range(epochs):
        perm = torch.randperm(len(tr), generator=g)
        xe, ye = xt[perm], yt[perm]
        total, correct = 0.0, 0
        for b in range(0, len(tr), BATCH):
            xb, yb = xe[b : b + BATCH], ye[b : b + BATCH]
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
            correct += int(((out > 0).float() == yb).sum())
        with torch.no_grad():
            val = loss_fn(model(xv), yv).item()
    return val


def sklearn_mlp(x, y, lr: float, seed: int, epochs: int) -> None:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    tr, _ = train_test_split(np.arange(len(x)), test_size=0.2, random_state=seed, stratify=y,
                             shuffle=True)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, solver="adam", batch_size=BATCH,
                        max_iter=epochs, learning_rate_init=lr, alpha=1e-4, shuffle=True,
                        random_state=seed, n_iter_no_change=epochs + 1, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[tr], y[tr])


def fused(x, y, lrs: list[float], seeds: list[int], epochs: int) -> None:
    train_fused([_model(s) for s in seeds], x, y, epochs=epochs, batch_size=BATCH, lrs=lrs,
                seeds=seeds, validation_split=0.2)


def via_sweep(x, y, lrs: list[float], seeds: list[int], epochs: int) -> None:
    # lr x seed is the grid: K = len(set(lrs)) * len(set(seeds)) members, as in `fused`.
    sweep(lambda: mlp(20, hidden=HIDDEN, out_features=1), (x, y), epochs=epochs,
          batch_size=BATCH, lr=sorted(set(lrs)), seed=sorted(set(seeds)), progress=False)


def median_time(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def workload_flops(n_train: int, n_val: int, epochs: int) -> float:
    """Forward+backward FLOPs of one configuration (matmuls only; 2 per multiply-add)."""
    dims = [20, *HIDDEN, 1]
    fwd = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:], strict=True))  # per row
    d_weights = fwd
    d_inputs = fwd - 2 * dims[0] * dims[1]  # no gradient for the input rows
    return epochs * (n_train * (fwd + d_weights + d_inputs) + n_val * fwd)


def matmul_gflops(k: int, seconds: float = 0.3) -> float:
    """GFLOP/s of this machine on one training step's batched matmuls for K members."""
    dims = [20, *HIDDEN, 1]
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(k, o, i, generator=gen) for i, o in zip(dims[:-1], dims[1:], strict=True)]
    bs = [torch.randn(k, o, generator=gen) for o in dims[1:]]
    hs = [torch.randn(k, BATCH, i, generator=gen) for i in dims[:-1]]
    dzs = [torch.randn(k, BATCH, o, generator=gen) for o in dims[1:]]
    flops = k * BATCH * 2 * sum(i * o for i, o in zip(dims[:-1], dims[1:], strict=True))
    flops = flops * 3 - k * BATCH * 2 * dims[0] * dims[1]

    def step() -> None:
        for w, b, h in zip(ws, bs, hs, strict=True):
            torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        for li, (w, h, dz) in enumerate(zip(ws, hs, dzs, strict=True)):
            torch.bmm(dz.transpose(1, 2), h)
            if li:
                torch.bmm(dz, w)

    for _ in range(20):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9


def run_threads(threads: int, x, y, epochs: int, repeats: int, quick: bool,
                use_sweep: bool = True) -> list[tuple]:
    """Every K at one torch thread count: fused, plain loop, MLPClassifier (K=4), floor."""
    torch.set_num_threads(threads)
    flops = workload_flops(640, 160, epochs)
    rows = []
    plan = [(4, SLIDE5_LRS, [0] * 4)]
    plan.append((16, SLIDE5_LRS * 4, [s for s in range(4) for _ in range(4)]))
    if not quick:
        plan.append((64, SLIDE5_LRS * 16, [s for s in range(16) for _ in range(4)]))
    for k, lrs, seeds in plan:
        t_fused = median_time(lambda lrs=lrs, seeds=seeds: fused(x, y, lrs, seeds, epochs), repeats)
        t_sweep = math.nan
        if use_sweep:
            t_sweep = median_time(
                lambda lrs=lrs, seeds=seeds: via_sweep(x, y, lrs, seeds, epochs), repeats)
        # One-by-one costs K x one configuration: at K > 4 time it once (it takes long).
        reps_plain = repeats if k == 4 else 1
        t_plain = median_time(
            lambda lrs=lrs, seeds=seeds: [plain_loop(x, y, lr, s, epochs)
                                          for lr, s in zip(lrs, seeds, strict=True)],
            reps_plain, warmup=(k == 4),
        )
        t_sk = math.nan
        if k == 4:
            t_sk = median_time(
                lambda: [sklearn_mlp(x, y, lr, 0, epochs) for lr in SLIDE5_LRS], repeats
            )
        gfs = matmul_gflops(k)
        floor = k * flops / (gfs * 1e9)
        rows.append((threads, k, t_fused, t_sweep, t_plain, reps_plain, t_sk, gfs, floor,
                     os.getloadavg()[0]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 epochs, 1 repeat, no K=64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="torch thread counts, e.g. 1,2")
    ap.add_argument("--no-sweep", action="store_true", help="skip the el.sweep timings")
    args = ap.parse_args()
    epochs = 5 if args.quick else 50
    repeats = 1 if args.quick else max(args.repeats, 3)
    d = synthetic()
    x, y = d.x_train, d.y_train
    n_train, n_val = 640, 160
    flops = workload_flops(n_train, n_val, epochs)
    load = os.getloadavg()
    print(f"workload: synthetic 800 rows -> {n_train} train / {n_val} val, MLP 20-64-32-1 "
          f"float32, Adam, batch {BATCH}, {epochs} epochs; torch {torch.__version__}; "
          f"median of {repeats} after a warm-up; load average at start "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"arithmetic: {flops / 1e9:.3f} GFLOP per configuration (forward+backward matmuls)")
    print("PRELIMINARY when the load average is above 0.5: other jobs share the machine.\n")
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        rows += run_threads(threads, x, y, epochs, repeats, args.quick, not args.no_sweep)

    print(f"{'thr':>3} {'K':>3} {'fused s':>8} {'sweep s':>8} {'plain loop s':>13} "
          f"{'x plain':>16} {'MLPClf s':>9} {'x MLPClf':>16} {'matmul GF/s':>12} {'floor s':>8} "
          f"{'floor/fused':>11} {'load':>5}")
    print(f"{'':>3} {'':>3} {'':>8} {'':>8} {'':>13} {'fused / sweep':>16} {'':>9} "
          f"{'fused / sweep':>16}")
    for thr, k, tf, tw, tp, rp, ts, gfs, floor, load in rows:
        def x(base: float, tf: float = tf, tw: float = tw) -> str:
            sw = f"{base / tw:6.1f}x" if not math.isnan(tw) else f"{'-':>7}"
            return f"{base / tf:7.1f}x {sw}"
        sk = f"{ts:9.3f} {x(ts)}" if not math.isnan(ts) else f"{'-':>9} {'-':>16}"
        tws = f"{tw:8.3f}" if not math.isnan(tw) else f"{'-':>8}"
        note = "" if rp > 1 else " (1 run)"
        print(f"{thr:3d} {k:3d} {tf:8.3f} {tws} {tp:13.3f} {x(tp)} {sk} {gfs:12.1f} "
              f"{floor:8.3f} {floor / tf:10.0%} {load:5.2f}{note}")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.")
    print("MLPClf = scikit-learn MLPClassifier, one lr after another: float64, L2 alpha=1e-4,"
          " no per-epoch validation (less work than the others).")
    print("floor = K x workload FLOPs / batched-matmul GFLOP/s measured now with the same shapes;"
          " floor/fused = how close the fused run gets to it.")
    print("targets (issue 14, through el.sweep): slide 5 (K=4) >= 12x the plain loop and >= 6x "
          "MLPClassifier; K=64 >= 25x one by one.")


if __name__ == "__main__":
    main()
