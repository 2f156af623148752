"""fit's overhead against a bare PyTorch loop on the seed's slide-1 workload.

Both train the seed MLP (20-64-32-1) with Adam, batch 32, on the 640
training rows left by validation_split=0.2, validating every epoch. The bare
loop is what a careful user writes by hand (randperm, slices, BCE, Adam). fit
uses torch's fused Adam kernel, so the loop is also timed with it: fit /
(bare loop with fused Adam) is fit's own overhead (per-step records, metrics,
divergence checks); the design target is <= 1.2.

    python benchmarks/bench_fit_overhead.py [--epochs 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

import epochlab as el


def bare_loop(x, y, xv, yv, epochs: int, batch_size: int, seed: int, fused: bool = False) -> None:
    torch.manual_seed(seed)
    model = el.models.mlp(x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        xp, yp = x[perm], y[perm]
        for s in range(0, n, batch_size):
            out = model(xp[s : s + batch_size])
            loss = F.binary_cross_entropy_with_logits(out, yp[s : s + batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            model.eval()
            F.binary_cross_entropy_with_logits(model(xv), yv).item()
            model.train()


def with_fit(x, y, xv, yv, epochs: int, batch_size: int, seed: int) -> el.History:
    torch.manual_seed(seed)
    model = el.models.mlp(x.shape[1])
    return el.fit(model, (x, y), validation_data=(xv, yv), epochs=epochs,
                  batch_size=batch_size, seed=seed, verbose=0)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d = el.data.synthetic()
    tr, va, _ = el.train.data.split_indices(len(d.x_train), 0.2, seed=0, stratify=d.y_train)
    x = torch.as_tensor(d.x_train[tr])
    y = torch.as_tensor(d.y_train[tr]).float().reshape(-1, 1)
    xv = torch.as_tensor(d.x_train[va])
    yv = torch.as_tensor(d.y_train[va]).float().reshape(-1, 1)
    steps = args.epochs * el.iterations_per_epoch(len(x), args.batch_size)
    bare = median_time(lambda: bare_loop(x, y, xv, yv, args.epochs, args.batch_size, 0), args.repeats)
    bare_fused = median_time(
        lambda: bare_loop(x, y, xv, yv, args.epochs, args.batch_size, 0, fused=True), args.repeats
    )
    fitted = median_time(lambda: with_fit(x, y, xv, yv, args.epochs, args.batch_size, 0), args.repeats)
    print(f"workload: seed MLP, Adam, batch {args.batch_size}, {len(x)} rows, {args.epochs} epochs "
          f"({steps} updates), torch threads {torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'method':<28}{'seconds':>10}{'us/step':>10}{'ratio':>8}")
    print(f"{'bare PyTorch loop':<28}{bare:>10.3f}{bare / steps * 1e6:>10.0f}{1.0:>8.2f}")
    print(f"{'bare loop, Adam(fused=True)':<28}{bare_fused:>10.3f}"
          f"{bare_fused / steps * 1e6:>10.0f}{bare_fused / bare:>8.2f}")
    print(f"{'epochlab.fit':<28}{fitted:>10.3f}{fitted / steps * 1e6:>10.0f}{fitted / bare:>8.2f}")
    print(f"fit / bare loop: {fitted / bare:.2f}; fit / bare loop with the same fused Adam: "
          f"{fitted / bare_fused:.2f} (fit also records loss, lr, grad norm and accuracy per step)")


if __name__ == "__main__":
    main()
