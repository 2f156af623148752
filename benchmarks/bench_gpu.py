"""fit on a CUDA device against a bare PyTorch loop on the same device, in one run.

Two workloads, each with the data already on the GPU for both sides:

- the seed's slide-1 MLP (20-64-32-1, Adam, batch 32, 640 rows, validation every
  epoch): a step is a few microseconds of GPU work, so this measures what fit adds
  per step (records, metrics, divergence checks) and whether it waits on the GPU
  (a ``.item()`` a step would);
- the seed's slide-11 CNN on MNIST-sized random images (batch 64): bfloat16 autocast
  with channels-last tensors, which ``precision="auto"`` picks on a GPU with bf16, and
  float32.

The bare loop is what a careful user writes (randperm, slices, the loss, fused Adam,
autocast where bf16). Ratios are fit / bare loop; the design target is <= 1.2.
Without a CUDA device it says so and exits.

    python benchmarks/bench_gpu.py [--repeats 3] [--images 12000]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

import epochlab as el


def _sync_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: kernels chosen, memory pooled
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bare_loop(make, loss_fn, x, y, xv, yv, epochs: int, batch_size: int,
              bf16: bool = False) -> None:
    torch.manual_seed(0)
    model = make()
    if bf16:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        xv = xv.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    n = x.shape[0]
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16
           else contextlib.nullcontext())
    for _ in range(epochs):
        perm = torch.randperm(n, device=x.device)
        xp, yp = x[perm], y[perm]
        for s in range(0, n, batch_size):
            with amp:
                out = model(xp[s : s + batch_size])
            loss = loss_fn(out.float(), yp[s : s + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad(), amp:
            model.eval()
            loss_fn(model(xv).float(), yv).item()
            model.train()


def with_fit(make, x, y, xv, yv, epochs: int, batch_size: int, precision: str) -> el.History:
    torch.manual_seed(0)
    return el.fit(make(), (x, y), validation_data=(xv, yv), epochs=epochs,
                  batch_size=batch_size, verbose=0, precision=precision)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=12000, help="CNN training images")
    ap.add_argument("--mlp-epochs", type=int, default=20)
    ap.add_argument("--cnn-epochs", type=int, default=2)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (this benchmark is for a GPU machine)")
        return
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; median of "
          f"{args.repeats} after a warm-up; data on the GPU for both sides")
    print(f"{'workload':<34}{'bare s':>9}{'fit s':>9}{'fit/bare':>10}  fit's runtime line")
    rows = []

    d = el.data.synthetic()
    tr, va, _ = el.train.data.split_indices(len(d.x_train), 0.2, seed=0, stratify=d.y_train)
    x = torch.as_tensor(d.x_train[tr], device=dev)
    y = torch.as_tensor(d.y_train[tr], device=dev).float().reshape(-1, 1)
    xv = torch.as_tensor(d.x_train[va], device=dev)
    yv = torch.as_tensor(d.y_train[va], device=dev).float().reshape(-1, 1)

    def make_mlp() -> torch.nn.Module:
        return el.models.mlp(20).to(dev)

    e = args.mlp_epochs
    bare = _sync_time(lambda: bare_loop(make_mlp, F.binary_cross_entropy_with_logits,
                                        x, y, xv, yv, e, 32), args.repeats)
    hist: list[el.History] = []
    fitted = _sync_time(lambda: hist.append(with_fit(make_mlp, x, y, xv, yv, e, 32, "auto")),
                        args.repeats)
    steps = e * el.iterations_per_epoch(len(x), 32)
    rows.append((f"seed MLP, {e} epochs ({steps} steps)", bare, fitted, hist[-1]))

    g = torch.Generator(device=dev).manual_seed(0)
    n, nv = args.images, args.images // 4
    xi = torch.randn(n, 1, 28, 28, device=dev, generator=g)
    yi = torch.randint(0, 10, (n,), device=dev, generator=g)
    xiv = torch.randn(nv, 1, 28, 28, device=dev, generator=g)
    yiv = torch.randint(0, 10, (nv,), device=dev, generator=g)

    def make_cnn() -> torch.nn.Module:
        return el.models.cnn("seed").to(dev)

    e = args.cnn_epochs
    for precision, bf16 in (("auto", True), ("fp32", False)):
        bare = _sync_time(lambda b=bf16: bare_loop(make_cnn, F.cross_entropy, xi, yi, xiv, yiv,
                                                   e, 64, bf16=b), args.repeats)
        hist = []
        fitted = _sync_time(lambda p=precision, h=hist: h.append(
            with_fit(make_cnn, xi, yi, xiv, yiv, e, 64, p)), args.repeats)
        label = "bf16, channels-last" if bf16 else "float32"
        rows.append((f"seed CNN {label}, {n} images x {e}", bare, fitted, hist[-1]))

    for name, bare, fitted, h in rows:
        rt = h.extra["runtime"]
        print(f"{name:<34}{bare:>9.3f}{fitted:>9.3f}{fitted / bare:>9.2f}x  "
              f"{rt['precision']} ({rt['precision_reason']}), {rt['threads']} CPU thread(s)")
    print("fit also records loss, lr, grad norm and accuracy per step and checks for divergence.")


if __name__ == "__main__":
    main()
