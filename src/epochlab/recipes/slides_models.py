"""Slides 10-12: transfer learning, the CNN on digits, the LSTM on sequences.

The data ships with the install (scikit-learn's digits upsampled to 1x28x28,
epochlab's seeded token sequences). MNIST and IMDB are used instead when
they are already in epochlab's data folder (``$EPOCHLAB_DATA``); the tour
never downloads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from epochlab.data.base import DataBundle
from epochlab.data.digits import digits
from epochlab.data.sequences import bag_of_words, sequences
from epochlab.models.mlp import mlp
from epochlab.models.registry import build
from epochlab.recipes.tour import Tour
from epochlab.recipes.transfer import transfer_study
from epochlab.report.curves import metric_label, plot_curves
from epochlab.report.figures import integer_ticks, new_figure
from epochlab.report.html import Section, Table
from epochlab.schedules import one_cycle
from epochlab.train.loop import evaluate, fit
from epochlab.train.runtime import manual_seed

__all__ = ["slide_10", "slide_11", "slide_12"]


def _subset(d: DataBundle, n: int | None) -> DataBundle:
    if n is None or n >= len(d.x_train):
        return d
    return DataBundle(d.name, d.x_train[:n], d.y_train[:n], d.x_test, d.y_test, d.task,
                      d.classes, d.input_shape, d.info)


def _local(name: str) -> DataBundle | None:
    """MNIST or IMDB when the files are already in the data folder; never downloads."""
    try:
        if name == "mnist":
            from epochlab.data.mnist import mnist

            return mnist(download=False)
        from epochlab.data.imdb import imdb

        return imdb(download=False, maxlen=200)
    except (FileNotFoundError, OSError, ValueError):
        return None


def slide_10(t: Tour) -> Section:
    z = t.sizes
    r = transfer_study(epochs=z.transfer_epochs, pretrain_epochs=z.transfer_epochs,
                       target_accuracy=z.transfer_target, max_train=z.transfer_max_train, seed=0)
    study = t.study(10, "transfer")
    for phase in ("pretrain", "transfer", "scratch"):
        for i, h in enumerate(r[phase]["histories"]):
            t.record(study, f"{phase} {i}", h, {
                "data": "digits", "model": "cnn", "phase": phase, "epochs": len(h.epochs),
                "batch_size": h.batch_size, "lr": h.params.get("lr"), "seed": 0,
                "labels": list(h.params.get("labels", ()))})
    tr, sc, pre = r["transfer"], r["scratch"], r["pretrain"]
    t.results["slide10"] = r
    target = r["target_accuracy"]
    fig, (ax,) = new_figure(7.5, 4)
    for label, res in ((f"frozen pretrained backbone + new head ({tr['trainable']:,} trainable)", tr),
                       (f"same CNN from scratch ({sc['trainable']:,} trainable)", sc)):
        acc = res["test_accuracy"]
        ax.plot(range(1, len(acc) + 1), acc, marker="o", ms=3, label=label)
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set(title="Digits 5-9: test accuracy per epoch, transferred from 0-4 vs from scratch",
           xlabel="epoch (on digits 5-9)", ylabel=metric_label("accuracy").replace(
               "accuracy", "test accuracy"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    integer_ticks(ax)

    def reach(res: dict[str, Any]) -> str:
        e = res["epochs_to_target"]
        return f"epoch {e}" if e else f"not within {len(res['test_accuracy'])} epochs"

    def reaches(res: dict[str, Any]) -> str:
        e = res["epochs_to_target"]
        return f"reaches {target:.0%} at epoch {e}" if e else f"does not reach {target:.0%} " \
            f"within {len(res['test_accuracy'])} epochs"

    return Section(
        "", f"The seed's CNN is pretrained on digits 0-4 ({len(pre['test_accuracy'])} epochs, "
        f"test accuracy {pre['test_accuracy'][-1]:.4f}); its backbone, frozen, gets a new head "
        "for digits 5-9, against the same architecture trained from scratch on the same rows. "
        f"The figure counts the epochs each needs to reach {target:.0%} test accuracy.",
        claim=("MobileNetV2 with frozen ImageNet weights, trained 5 epochs on "
               "np.random.rand images with np.random.randint labels, shows that transfer learning "
               "needs fewer epochs."),
        truth=("Random images with random labels have nothing to learn: any model stays at "
               "chance (50%) on validation, so the slide's curves cannot show an epoch saved. "
               f"On a real task the transferred model {reaches(tr)}, the model trained from "
               f"scratch {reaches(sc)}; after one epoch "
               f"{tr['test_accuracy'][0]:.4f} vs {sc['test_accuracy'][0]:.4f}."),
        facts=[("epochs to target, transfer", reach(tr)), ("epochs to target, scratch", reach(sc)),
               ("parameters trained / frozen (transfer)", f"{tr['trainable']:,} / {tr['frozen']:,}"),
               ("study", study)],
        figures=[(fig, "test accuracy per epoch, transfer vs scratch")],
        code="from epochlab.recipes import transfer_study\n"
             "r = transfer_study(epochs=10, target_accuracy=0.95)",
    )


def slide_11(t: Tour) -> Section:
    z = t.sizes
    found = _local("mnist")
    if found is not None:
        data, source = _subset(found, z.mnist_max_train), (
            f"MNIST from the data folder (first {z.mnist_max_train:,} training rows)")
    else:
        data = _subset(digits(), z.cnn_max_train)
        source = ("scikit-learn's 8x8 digits upsampled to 1x28x28 (MNIST is not in the data "
                  "folder; nothing is downloaded)")
    study = t.study(11, "cnn")
    runs = [("the slide: 5 epochs, batch 64, constant lr 0.001", z.cnn_epochs, 64, None)]
    if z.cnn_one_cycle_epochs:
        runs.append((f"{z.cnn_one_cycle_epochs} epochs, batch 32, one-cycle to lr 0.003",
                     z.cnn_one_cycle_epochs, 32, one_cycle()))  # max_lr: fit's lr, 3e-3
    results = []
    for label, epochs, bs, sched in runs:
        manual_seed(0)
        model = build("cnn", data)
        h = fit(model, data.train, epochs=epochs, batch_size=bs, lr=1e-3 if sched is None else 3e-3,
                schedule=sched, validation_split=0.2, seed=0, verbose=0)
        test = evaluate(model, data)
        h.extra["test"] = test
        t.record(study, label, h, {"data": data.name, "model": "cnn", "epochs": epochs,
                                   "batch_size": bs, "schedule": "one_cycle" if sched else None,
                                   "validation_split": 0.2, "seed": 0})
        results.append((label, h, test))
    t.results["slide11"] = results
    fig = plot_curves(results[0][1], "accuracy",
                      title=f"CNN on {data.name}: accuracy per epoch (the slide's settings)")
    figures = [(fig, "training and validation accuracy per epoch")]
    if len(results) > 1:
        fig2, (ax,) = new_figure(7, 4)
        for label, h, test in results:
            va = h.history["val_accuracy"]
            ax.plot(range(1, len(va) + 1), va, marker="o", ms=3,
                    label=f"{label} (test {test['accuracy']:.4f})")
        ax.set(title="Validation accuracy per epoch: constant rate vs one-cycle", xlabel="epoch",
               ylabel=metric_label("val_accuracy"))
        integer_ticks(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figures.append((fig2, "validation accuracy, constant vs one-cycle"))
    h0, test0 = results[0][1], results[0][2]
    return Section(
        "", f"The slide's CNN (3 convolutions, 93,322 parameters) on {source}: training and "
        "validation accuracy per epoch, and the test accuracy of the final weights.",
        claim="5 epochs of Adam at its default rate on MNIST, evaluated once on the test set.",
        truth=("The slide's code is right. What it does not show: its validation_split takes "
               "the last 20% of the training rows (Keras' tail split, harmless on shuffled MNIST, "
               "a trap on sorted data; epochlab's split is seeded, random and stratified), and "
               f"the result moves with the recipe: here {test0['accuracy']:.4f} test accuracy "
               f"after {len(h0.epochs)} epochs at a constant rate"
               + (f", {results[1][2]['accuracy']:.4f} after {len(results[1][1].epochs)} with a "
                  "one-cycle schedule." if len(results) > 1 else ".")),
        facts=[("training rows", h0.n_train), ("validation rows", h0.n_val),
               ("test rows", len(data.x_test)), ("iterations per epoch", h0.iterations_per_epoch)]
        + [(f"test accuracy: {label}", f"{test['accuracy']:.4f}") for label, _, test in results]
        + [("study", study)],
        figures=figures,
        code="epochlab fit --data digits --model cnn --epochs 5 --batch-size 64 "
             "--validation-split 0.2",
    )


def slide_12(t: Tour) -> Section:
    z = t.sizes
    found = _local("imdb")
    if found is not None:
        data = _subset(found, z.imdb_max_train)
        source = f"IMDB from the data folder (first {z.imdb_max_train:,} training reviews)"
    else:
        data = sequences(n_samples=z.lstm_samples, maxlen=z.lstm_maxlen, seed=0)
        source = (f"epochlab's sequence task ({len(data.x_train):,} training rows, "
                  f"{data.input_shape[0]} tokens, a label that depends on word order; IMDB is "
                  "not in the data folder)")
    study = t.study(12, "lstm")
    vocab = data.info["vocab_size"]
    manual_seed(0)
    lstm = build("lstm", data)
    h = fit(lstm, data.train, epochs=z.lstm_epochs, batch_size=32, validation_split=0.2,
            seed=0, verbose=0)
    h.extra["test"] = evaluate(lstm, data)
    t.record(study, "lstm", h, {"data": data.name, "model": "lstm", "epochs": z.lstm_epochs,
                                "batch_size": 32, "validation_split": 0.2, "seed": 0})
    counts_tr = bag_of_words(data.x_train, vocab).astype(np.float32)
    counts_te = bag_of_words(data.x_test, vocab).astype(np.float32)
    from sklearn.linear_model import LogisticRegression

    logreg = float(LogisticRegression(max_iter=2000).fit(counts_tr, data.y_train)
                   .score(counts_te, data.y_test))
    bow = DataBundle("word counts", counts_tr, data.y_train, counts_te, data.y_test, "binary",
                     data.classes, (vocab,))
    manual_seed(0)
    bow_mlp = mlp(vocab)
    hb = fit(bow_mlp, bow.train, epochs=z.lstm_epochs, batch_size=32, validation_split=0.2,
             seed=0, verbose=0)
    hb.extra["test"] = evaluate(bow_mlp, bow)
    t.record(study, "bag-of-words mlp", hb, {"data": f"{data.name} word counts", "model": "mlp",
                                             "epochs": z.lstm_epochs, "batch_size": 32,
                                             "validation_split": 0.2, "seed": 0})
    lstm_test, bow_test = h.extra["test"]["accuracy"], hb.extra["test"]["accuracy"]
    va = h.history["val_accuracy"]
    at5 = (f" After the slide's 5 epochs the LSTM's validation accuracy is {va[4]:.4f}; after "
           f"{len(va)}, {va[-1]:.4f}: it needs more epochs than the slide gives it before it "
           "learns to use word order." if len(va) > 5 else "")
    t.results["slide12"] = {"lstm": lstm_test, "bow_mlp": bow_test, "logreg": logreg}
    fig, (ax,) = new_figure(7.5, 4)
    for label, hist in (("LSTM on the token sequence", h), ("MLP on word counts", hb)):
        va = hist.history["val_accuracy"]
        ax.plot(range(1, len(va) + 1), va, marker="o", ms=3, label=label)
    ax.axhline(logreg, color="grey", ls="--", lw=1,
               label=f"logistic regression on word counts (test {logreg:.4f})")
    ax.set(title="Validation accuracy per epoch: sequence model vs bag of words", xlabel="epoch",
           ylabel=metric_label("val_accuracy"))
    integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Section(
        "", f"The slide's Embedding-LSTM-Dense model on {source}, next to two bag-of-words "
        "baselines that see which words occur but not their order.",
        claim="An LSTM classifies the reviews; its accuracy curve shows the model works.",
        truth=("Without a baseline the curve cannot say whether the LSTM uses word order at all: "
               "on IMDB, models that only count words are a strong baseline (Maas et al., 2011, "
               "report about 88%). Measured here: LSTM test accuracy "
               f"{lstm_test:.4f}, MLP on word counts {bow_test:.4f}, logistic regression on word "
               f"counts {logreg:.4f}.{at5} (On a GPU, the slide's recurrent_dropout=0.2 also "
               "makes Keras give up its fast cuDNN LSTM kernel.)"),
        facts=[("LSTM test accuracy", f"{lstm_test:.4f}"),
               ("MLP on word counts, test accuracy", f"{bow_test:.4f}"),
               ("logistic regression on word counts, test accuracy", f"{logreg:.4f}"),
               ("epochs", z.lstm_epochs), ("study", study)],
        tables=[Table(["model", "input", "test accuracy"], [
            ["LSTM", "token ids, in order", lstm_test],
            ["MLP", "word counts", bow_test], ["logistic regression", "word counts", logreg]])],
        figures=[(fig, "validation accuracy per epoch, LSTM vs bag of words"),
                 (plot_curves(h, "loss", title="LSTM: training and validation loss per epoch"),
                  "LSTM loss per epoch")],
        code=f"epochlab fit --data sequences --model lstm --epochs {z.lstm_epochs} --batch-size 32 "
             "--validation-split 0.2",
    )
