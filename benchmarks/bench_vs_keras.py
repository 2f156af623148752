"""Benchmark: the seed's own Keras code beside epochlab, in one run, with ratios.

The seed (a Keras slide deck) is the baseline: its code is run as printed
(``Sequential``, ``compile``, ``fit(..., verbose=0)``), and the same
training done with epochlab:

- slides 1, 4, 5, 6, 8, 9 on the seed's synthetic data (make_classification,
  1000 rows, 80/20 split, ``validation_split=0.2``): one fit (slide 1), four
  batch sizes (4), four learning rates over 50 epochs (5, epochlab: one
  fused ``el.sweep``), early stopping (6), the exponential-decay schedule (8)
  and batch norm (9). Slides 2, 3 and 7 train nothing in Keras (a plot, one
  batch's loss, NumPy gradient descent).
- slide 11's CNN on MNIST-sized synthetic images (60,000 28x28 images, 5
  epochs, batch 64, ``validation_split=0.2``: 48,000 training rows) for time;
  random pixels train exactly as fast as MNIST's.
- the same CNN on the bundled digits (upsampled to 28x28; 20 epochs, batch
  64, 8 seeds) for accuracy: Keras, epochlab in float32 and epochlab with
  ``precision="auto"`` (bf16 where the CPU has it). One seed's test accuracy
  swings by a point either way (360 test images), so the comparison is paired
  by seed and printed with its standard error: with 3 seeds bf16 came out 0.74
  points behind float32, with 8 level with it (+0.03).

Each side first runs one short fit untimed (first-call costs: lazy imports,
kernel selection). Each framework runs in its own child process (TensorFlow's thread pools
never share a process with torch's), one after the other; every figure is
printed with the 1-minute load average taken when it finished. The Keras
side needs TensorFlow (``pip install 'epochlab[bench]'``); without it only
epochlab's side runs. Not a test: timings on a shared machine are noisy.

The CNN's two sides vary by up to 40% from run to run on a shared VM (Keras
27-38 s for the same fit within one hour), so ``--cnn-pairs N`` times the CNN
N times more on each side, in fresh child processes (the slides at 1 epoch as
their warm-up), alternating which side goes first, and prints every pair's
ratio and their median.

    python benchmarks/bench_vs_keras.py                 # full: about 3-7 minutes on 2 cores
    python benchmarks/bench_vs_keras.py --cnn-pairs 4   # and 4 more CNN pairs (~4 min more)
    python benchmarks/bench_vs_keras.py --quick         # smoke run: fewer images and epochs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SLIDES = ("slide 1 fit", "slide 4 batch sizes", "slide 5 learning rates", "slide 6 early stopping",
          "slide 8 lr schedule", "slide 9 batch norm")
LRS = (0.1, 0.01, 0.001, 0.0001)
BATCH_SIZES = (16, 32, 64, 128)


def _load() -> float:
    return os.getloadavg()[0]


def _timed(fn: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    extra = fn() or {}
    return {"seconds": time.perf_counter() - t0, "load": _load(), **extra}


def _seed_data() -> tuple[Any, Any, Any, Any]:
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=1000, n_features=20, n_classes=2, random_state=42)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=42)
    return x_tr.astype(np.float32), x_te.astype(np.float32), y_tr, y_te


def _images(n: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)


# -- the seed's Keras code -----------------------------------------------------------------
def keras_side(cfg: dict[str, Any]) -> dict[str, Any]:
    import keras
    import numpy as np
    from keras.callbacks import EarlyStopping
    from keras.layers import BatchNormalization, Conv2D, Dense, Flatten, Input, MaxPooling2D
    from keras.models import Sequential
    from keras.optimizers import Adam
    from keras.optimizers.schedules import ExponentialDecay
    from keras.utils import to_categorical

    import epochlab as el

    x_tr, _, y_tr, _ = _seed_data()
    e = cfg["epochs"]

    def mlp() -> Any:  # the seed's model; Input() instead of the deprecated input_shape=
        return Sequential([Input((20,)), Dense(64, activation="relu"), Dense(32, activation="relu"),
                           Dense(1, activation="sigmoid")])

    def fit(model: Any, epochs: int, batch_size: int = 32, **kw: Any) -> Any:
        return model.fit(x_tr, y_tr, epochs=epochs, batch_size=batch_size, validation_split=0.2,
                         verbose=0, **kw)

    def compiled(model: Any, opt: Any = "adam") -> Any:
        model.compile(optimizer=opt, loss="binary_crossentropy", metrics=["accuracy"])
        return model

    fit(compiled(mlp()), 1)  # warm-up: first-call costs (imports, kernels) are not the slides'
    out: dict[str, Any] = {}
    out["slide 1 fit"] = _timed(lambda: {"epochs": len(fit(compiled(mlp()), e[10]).history["loss"])})
    out["slide 4 batch sizes"] = _timed(lambda: [fit(compiled(mlp()), e[10], b) for b in BATCH_SIZES]
                                        and None)
    out["slide 5 learning rates"] = _timed(
        lambda: [fit(compiled(mlp(), Adam(learning_rate=lr)), e[50]) for lr in LRS] and None)
    stop = EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    out["slide 6 early stopping"] = _timed(
        lambda: {"epochs": len(fit(compiled(mlp()), e[100], callbacks=[stop]).history["loss"])})
    sched = ExponentialDecay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True)
    out["slide 8 lr schedule"] = _timed(lambda: fit(compiled(mlp(), Adam(learning_rate=sched)), e[20])
                                        and None)

    def bn() -> Any:
        return Sequential([Input((20,)), Dense(64), BatchNormalization(), Dense(32),
                           BatchNormalization(), Dense(1, activation="sigmoid")])

    out["slide 9 batch norm"] = _timed(lambda: fit(compiled(bn()), e[20]) and None)

    def cnn() -> Any:
        m = Sequential([Input((28, 28, 1)), Conv2D(32, (3, 3), activation="relu"),
                        MaxPooling2D((2, 2)), Conv2D(64, (3, 3), activation="relu"),
                        MaxPooling2D((2, 2)), Conv2D(64, (3, 3), activation="relu"), Flatten(),
                        Dense(64, activation="relu"), Dense(10, activation="softmax")])
        m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        return m

    x, y = _images(cfg["images"])
    out["slide 11 CNN, MNIST-sized"] = _timed(
        lambda: cnn().fit(x, to_categorical(y, 10), epochs=cfg["cnn_epochs"], batch_size=64,
                          validation_split=0.2, verbose=0) and None)
    d = el.data.digits()
    xd, xt = d.x_train.transpose(0, 2, 3, 1), d.x_test.transpose(0, 2, 3, 1)
    accs = []

    def digits() -> dict[str, Any]:
        for seed in range(cfg["seeds"]):
            keras.utils.set_random_seed(seed)
            m = cnn()
            m.fit(xd, to_categorical(d.y_train, 10), epochs=cfg["digits_epochs"], batch_size=64,
                  validation_split=0.2, verbose=0)
            accs.append(float(m.evaluate(xt, to_categorical(d.y_test, 10), verbose=0)[1]))
        return {"accuracy": float(np.mean(accs)), "accuracies": accs}

    out["slide 11 CNN on digits"] = _timed(digits)
    return out


# -- the same with epochlab ----------------------------------------------------------------
def epochlab_side(cfg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    import epochlab as el

    x_tr, _, y_tr, _ = _seed_data()
    e = cfg["epochs"]
    data = (x_tr, y_tr)

    def mlp(**kw: Any) -> torch.nn.Module:
        return el.models.mlp(20, **kw)

    def fit(model: torch.nn.Module, epochs: int, batch_size: int = 32, **kw: Any) -> el.History:
        return el.fit(model, data, epochs=epochs, batch_size=batch_size, validation_split=0.2,
                      verbose=0, **kw)

    fit(mlp(), 1)  # warm-up, as on the Keras side
    el.sweep(mlp, data, epochs=1, lr=[1e-3, 1e-2], progress=False)
    out: dict[str, Any] = {}
    out["slide 1 fit"] = _timed(lambda: {"epochs": fit(mlp(), e[10]).epochs_run})
    out["slide 4 batch sizes"] = _timed(
        lambda: el.sweep(mlp, data, epochs=e[10], batch_size=list(BATCH_SIZES), progress=False)
        and None)
    out["slide 5 learning rates"] = _timed(
        lambda: el.sweep(mlp, data, epochs=e[50], lr=list(LRS), progress=False) and None)
    stop = el.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    out["slide 6 early stopping"] = _timed(
        lambda: {"epochs": fit(mlp(), e[100], callbacks=[stop]).epochs_run})
    sched = el.schedules.parse("exponential:initial=0.1,decay_steps=1000,decay_rate=0.96,"
                               "staircase=true")
    out["slide 8 lr schedule"] = _timed(lambda: fit(mlp(), e[20], schedule=sched) and None)
    out["slide 9 batch norm"] = _timed(lambda: fit(mlp(batch_norm=True), e[20]) and None)

    x, y = _images(cfg["images"])
    xc = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    yc = torch.from_numpy(y)
    runtime: dict[str, Any] = {}

    def cnn_fit() -> dict[str, Any]:
        torch.manual_seed(0)
        h = el.fit(el.models.cnn("seed"), (xc, yc), epochs=cfg["cnn_epochs"], batch_size=64,
                   validation_split=0.2, verbose=0)
        runtime.update(h.extra["runtime"])
        return {"runtime": h.extra["runtime"]}

    out["slide 11 CNN, MNIST-sized"] = _timed(cnn_fit)
    d = el.data.digits()
    for precision in ("fp32", "auto"):
        accs = []

        def digits(precision: str = precision, accs: list = accs) -> dict[str, Any]:
            for seed in range(cfg["seeds"]):
                torch.manual_seed(seed)
                m = el.models.cnn("seed")
                h = el.fit(m, d.train, epochs=cfg["digits_epochs"], batch_size=64,
                           validation_split=0.2, seed=seed, precision=precision, verbose=0)
                accs.append(el.evaluate(m, d)["accuracy"])
            return {"accuracy": float(np.mean(accs)), "accuracies": accs,
                    "precision": h.extra["runtime"]["precision"]}

        out[f"slide 11 CNN on digits ({precision})"] = _timed(digits)
    return out


# -- driver --------------------------------------------------------------------------------
def _child(side: str, cfg: dict[str, Any]) -> dict[str, Any] | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        cmd = [sys.executable, __file__, "--side", side, "--cfg", json.dumps(cfg), "--json", path]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{side} side failed:\n{r.stderr[-3000:]}")
            return None
        with open(path) as f:
            return json.load(f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer images and epochs (a smoke run)")
    p.add_argument("--side", choices=["keras", "epochlab"], help=argparse.SUPPRESS)
    p.add_argument("--cfg", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    p.add_argument("--cnn-pairs", type=int, default=0, metavar="N",
                   help="time the CNN N more times on each side, alternating, for a median ratio")
    args = p.parse_args()
    if args.side:
        cfg = json.loads(args.cfg)
        cfg["epochs"] = {int(k): v for k, v in cfg["epochs"].items()}
        out = (keras_side if args.side == "keras" else epochlab_side)(cfg)
        with open(args.json, "w") as f:
            json.dump(out, f)
        return
    if args.quick:
        cfg = {"epochs": {10: 2, 20: 2, 50: 3, 100: 6}, "images": 6000, "cnn_epochs": 1,
               "seeds": 1, "digits_epochs": 3}
    else:
        cfg = {"epochs": {10: 10, 20: 20, 50: 50, 100: 100}, "images": 60000, "cnn_epochs": 5,
               "seeds": 8, "digits_epochs": 20}
    has_tf = importlib.util.find_spec("tensorflow") is not None
    print(f"bench_vs_keras ({'quick' if args.quick else 'full'}); cores {os.cpu_count()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {_load():.2f}")
    if not has_tf:
        print("TensorFlow is not installed (pip install 'epochlab[bench]'): epochlab's side only.")
    keras = _child("keras", cfg) if has_tf else None
    ours = _child("epochlab", cfg)
    if ours is None:
        sys.exit(1)
    print(f"\n{'workload':34s} {'Keras s':>9s} {'load':>5s} {'epochlab s':>10s} {'load':>5s} "
          f"{'Keras/epochlab':>14s}")
    for name in (*SLIDES, "slide 11 CNN, MNIST-sized"):
        o = ours[name]
        k = keras.get(name) if keras else None
        ks = f"{k['seconds']:9.2f} {k['load']:5.2f}" if k else f"{'-':>9s} {'-':>5s}"
        ratio = f"{k['seconds'] / o['seconds']:13.1f}x" if k else f"{'-':>14s}"
        note = ""
        if "epochs" in o:
            note = f"  (epochs run: Keras {k['epochs'] if k else '-'}, epochlab {o['epochs']})"
        print(f"{name:34s} {ks} {o['seconds']:10.2f} {o['load']:5.2f} {ratio}{note}")
    rt = ours["slide 11 CNN, MNIST-sized"].get("runtime", {})
    if rt:
        print(f"  epochlab's CNN runtime: {rt['threads']} thread(s) ({rt['threads_reason']}), "
              f"{rt['precision']} ({rt['precision_reason']})")
    mlp_k = sum(keras[n]["seconds"] for n in SLIDES) if keras else None
    mlp_o = sum(ours[n]["seconds"] for n in SLIDES)
    if mlp_k:
        print(f"{'slides 1-9 together':34s} {mlp_k:9.2f} {'':5s} {mlp_o:10.2f} {'':5s} "
              f"{mlp_k / mlp_o:13.1f}x")
    print("\nslide 11 CNN on digits (test accuracy, mean over seeds; seconds for all seeds):")
    rows = [("Keras (the seed's code)", keras.get("slide 11 CNN on digits") if keras else None),
            ("epochlab float32", ours["slide 11 CNN on digits (fp32)"]),
            ("epochlab precision=auto", ours["slide 11 CNN on digits (auto)"])]
    for label, r in rows:
        if r is None:
            continue
        prec = f" [{r['precision']}]" if "precision" in r else ""
        accs = ", ".join(f"{a:.4f}" for a in r["accuracies"])
        print(f"  {label + prec:34s} accuracy {r['accuracy']:.4f} ({accs})  "
              f"{r['seconds']:.1f}s  load {r['load']:.2f}")
    fp32, auto = ours["slide 11 CNN on digits (fp32)"], ours["slide 11 CNN on digits (auto)"]
    diffs = [100 * (a - f) for a, f in zip(auto["accuracies"], fp32["accuracies"], strict=True)]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    print(f"  auto vs float32: {statistics.fmean(diffs):+.2f} points "
          f"(paired over {len(diffs)} seeds, standard error {se:.2f})")
    if args.cnn_pairs > 0 and keras:
        _cnn_pairs(cfg, args.cnn_pairs, keras, ours)


def _cnn_pairs(cfg: dict[str, Any], n: int, keras: dict[str, Any], ours: dict[str, Any]) -> None:
    """The CNN timed ``n`` more times on each side (fresh processes, alternating order), with
    the first run's pair: every ratio and their median."""
    name = "slide 11 CNN, MNIST-sized"
    small = {**cfg, "epochs": {10: 1, 20: 1, 50: 1, 100: 1}, "seeds": 1, "digits_epochs": 1}
    pairs = [(keras[name], ours[name])]
    for i in range(n):
        sides = ("keras", "epochlab") if i % 2 else ("epochlab", "keras")
        got = {side: _child(side, small) for side in sides}
        if got["keras"] is None or got["epochlab"] is None:
            return
        pairs.append((got["keras"][name], got["epochlab"][name]))
    print(f"\n{name}, {len(pairs)} pairs (the first from the run above; then alternating "
          "which side runs first):")
    for k, o in pairs:
        print(f"  Keras {k['seconds']:6.2f} s (load {k['load']:.2f})  epochlab "
              f"{o['seconds']:6.2f} s (load {o['load']:.2f})  {k['seconds'] / o['seconds']:.2f}x")
    ratios = [k["seconds"] / o["seconds"] for k, o in pairs]
    print(f"  median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}x); "
          f"median seconds: Keras {statistics.median(k['seconds'] for k, _ in pairs):.2f}, "
          f"epochlab {statistics.median(o['seconds'] for _, o in pairs):.2f}")


if __name__ == "__main__":
    main()
