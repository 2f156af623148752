"""The seed's models at full size: the issue's acceptance figures, measured.

Workloads (all offline, seeded with ``torch.manual_seed(seed)`` before each
model is built; ``epochlab.fit`` with Adam):

- slide 11's CNN (and slide 13's small one) on scikit-learn's digits upsampled
  to 1x28x28: 1,437 training rows, 360 test rows, 10 epochs; Adam at a constant
  lr 1e-3 (batch 64) and with a one-cycle schedule (max lr 3e-3, batch 32),
  weight seeds 0-2. Target: >= 97% test accuracy within 10 epochs.
- slide 12's LSTM (masked) on ``epochlab.data.sequences()``: 3,200 training
  rows, 800 test rows, maxlen 50, 10 epochs, batch 32, lr 1e-3. Target: >= 90%
  test accuracy, and clearly above bag-of-words baselines (logistic
  regression, and an MLP trained the same way, on word counts).
- slide 10 done right: ``transfer_study`` (digits 0-4 -> 5-9), epochs to 95%
  test accuracy for a frozen pretrained backbone + new head vs from scratch.

Not a test; timings on a shared 2-core machine are noisy.

    .venv/bin/python benchmarks/bench_models.py [--seed 0] [--epochs 10]
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.linear_model import LogisticRegression

import epochlab as el
from epochlab.data.sequences import bag_of_words, sequences
from epochlab.models import cnn, lstm_classifier, mlp
from epochlab.recipes.transfer import transfer_study


def _train(model, data, epochs: int, batch_size: int, seed: int,
           schedule=None) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    # A schedule that names its own rate (one-cycle's max_lr) takes no separate lr.
    lr = {} if schedule is not None else {"lr": 1e-3}
    h = el.fit(model, data.train, epochs=epochs, batch_size=batch_size, **lr,
               schedule=schedule, validation_data=data.test, seed=seed, verbose=0)
    return [float(a) for a in h.history["val_accuracy"]], time.perf_counter() - t0


def _row(name: str, accs: list[float], seconds: float, target: float | None) -> str:
    best = max(accs)
    first = next((i + 1 for i, a in enumerate(accs) if target and a >= target), None)
    reached = "-" if target is None else (f"epoch {first}" if first else "never")
    return f"{name:<44} {accs[-1]:>7.2%} {best:>7.2%} {reached:>10} {seconds:>7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    seed, epochs = args.seed, args.epochs
    torch.set_num_threads(2)
    rows, checks = [], []

    digits = el.data.digits(seed=seed)
    # Three weight seeds for the seed CNN: 360 test rows make one seed's figure noisy
    # (1 row = 0.28%). With a constant lr of 1e-3 it plateaus around 94-96%; with a
    # one-cycle schedule (fastai's default recipe for a short budget: max lr 3e-3,
    # batch 32) it passes 97% within 10 epochs. Both are printed.
    recipes = (("constant lr 1e-3, batch 64", 64, None),
               ("one-cycle max 3e-3, batch 32", 32, el.schedules.one_cycle(3e-3)))
    for label, batch, schedule in recipes:
        for init_seed in (seed, seed + 1, seed + 2):
            torch.manual_seed(init_seed)
            accs, secs = _train(cnn("seed"), digits, epochs, batch, init_seed, schedule)
            rows.append(_row(f"cnn seed {init_seed}, {label}", accs, secs, 0.97))
            checks.append((f"seed CNN (seed {init_seed}, {label}) >= 97% within {epochs} epochs",
                           max(accs) >= 0.97, f"best {max(accs):.2%}, final {accs[-1]:.2%}"))
    torch.manual_seed(seed)
    accs, secs = _train(cnn("small"), digits, epochs, 64, seed)
    rows.append(_row(f"cnn small (seed {seed}) / digits 28x28", accs, secs, None))

    seqs = sequences(seed=seed)
    vocab = seqs.info["vocab_size"]
    torch.manual_seed(seed)
    lstm_accs, secs = _train(lstm_classifier(vocab), seqs, epochs, 32, seed)
    rows.append(_row("lstm / sequences", lstm_accs, secs, 0.90))

    counts_train, counts_test = bag_of_words(seqs.x_train, vocab), bag_of_words(seqs.x_test, vocab)
    t0 = time.perf_counter()
    clf = LogisticRegression(max_iter=2000).fit(counts_train, seqs.y_train)
    lr_acc = float(clf.score(counts_test, seqs.y_test))
    rows.append(_row("logistic regression / word counts", [lr_acc], time.perf_counter() - t0, None))
    bow = el.data.DataBundle("bow", counts_train, seqs.y_train, counts_test, seqs.y_test, "binary",
                             seqs.classes, (vocab,))
    torch.manual_seed(seed)
    mlp_accs, secs = _train(mlp(vocab), bow, epochs, 32, seed)
    rows.append(_row("mlp / word counts", mlp_accs, secs, None))
    best_bow = max(lr_acc, max(mlp_accs))
    checks.append(("LSTM >= 90% test accuracy", lstm_accs[-1] >= 0.90, f"{lstm_accs[-1]:.2%}"))
    checks.append(("bag of words clearly lower (>= 10 points)",
                   lstm_accs[-1] - best_bow >= 0.10, f"best bag of words {best_bow:.2%}"))

    print(f"{'model / data':<44} {'final':>7} {'best':>7} {'target':>10} {'seconds':>7}")
    print("\n".join(rows))

    t0 = time.perf_counter()
    study = transfer_study(epochs=epochs, target_accuracy=0.95, seed=seed)
    tuned = transfer_study(epochs=3, pretrain_epochs=epochs, fine_tune_epochs=epochs - 3,
                           target_accuracy=0.95, seed=seed)
    print(f"\ntransfer study, digits 0-4 -> 5-9, target 95% test accuracy "
          f"({time.perf_counter() - t0:.1f} s for both studies)")
    print(f"{'model':<40} {'trainable':>9} {'frozen':>7} {'to 95%':>7}  test accuracy per epoch")
    lines = [
        ("pretrained on 0-4 (source task)", study["pretrain"]),
        ("frozen backbone + new head", study["transfer"]),
        (f"head 3 epochs, fine-tune {epochs - 3} at lr/10", tuned["transfer"]),
        ("same CNN from scratch", study["scratch"]),
    ]
    for name, r in lines:
        curve = " ".join(f"{a:.2f}" for a in r["test_accuracy"])
        print(f"{name:<44} {r['trainable']:>9} {r['frozen']:>7} "
              f"{str(r['epochs_to_target']):>7}  {curve}")
    t_ep, s_ep = study["transfer"]["epochs_to_target"], study["scratch"]["epochs_to_target"]
    checks.append(("transfer reaches 95% in fewer epochs than scratch",
                   t_ep is not None and (s_ep is None or t_ep < s_ep),
                   f"transfer {t_ep}, scratch {s_ep}"))

    print()
    for name, ok, detail in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}")


if __name__ == "__main__":
    main()
