"""Slides 1-3, 6 and 7: the seed's MLP on its ``make_classification`` data, one run at a time.

Each function takes the :class:`~epochlab.recipes.tour.Tour` and returns the
slide's :class:`~epochlab.report.html.Section`: what it shows, the slide's
claim where it is wrong and what is true, the numbers, the figures.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from epochlab.callbacks.early_stopping import EarlyStopping
from epochlab.models.mlp import mlp
from epochlab.recipes.tour import Tour
from epochlab.reference import mini_batch_gradient_descent
from epochlab.report.curves import metric_label, plot_curves
from epochlab.report.figures import integer_ticks, new_figure
from epochlab.report.html import Section, Table
from epochlab.train.history import History
from epochlab.train.loop import evaluate, fit
from epochlab.train.runtime import manual_seed
from epochlab.train.trainer import Trainer

__all__ = ["reference_agreement", "slide_01", "slide_02", "slide_03", "slide_06", "slide_07"]


def _accounting_run(t: Tour) -> History:
    """Slide 1's model and fit call: 10 epochs, batch 32, validation_split=0.2 (run once)."""
    if "slide1" in t.results:
        return t.results["slide1"]
    d = t.synthetic
    epochs = t.sizes.accounting_epochs
    manual_seed(0)
    model = mlp(20)
    h = fit(model, d.train, epochs=epochs, batch_size=32, validation_split=0.2, seed=0, verbose=0)
    h.extra["test"] = evaluate(model, d)
    settings = {"data": "synthetic", "model": "mlp", "epochs": epochs, "batch_size": 32,
                "lr": 1e-3, "validation_split": 0.2, "seed": 0}
    t.record(t.study(1, "accounting"), "slide1", h, settings)
    t.results["slide1"] = h
    t.results["slide1_model"] = model
    return h


def slide_01(t: Tour) -> Section:
    h = _accounting_run(t)
    n_rows = len(t.synthetic.x_train)
    slide_ipe = n_rows // 32
    epochs = range(1, len(h.epochs) + 1)
    fig, (ax,) = new_figure(7, 3.8)
    ax.plot(epochs, [r["updates"] for r in h.epochs], marker="o", label=(
        f"run: {h.iterations_per_epoch} per epoch = ceil({h.n_train} / 32)"))
    ax.plot(epochs, [slide_ipe * e for e in epochs], ls="--", marker="x", label=(
        f"the slide's arithmetic: {slide_ipe} per epoch = {n_rows} // 32"))
    ax.set(title="Optimizer updates done by the end of each epoch", xlabel="epoch",
           ylabel="optimizer updates (cumulative)")
    integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Section(
        "", f"The seed's model (20-64-32-1, Adam) trained as slide 1 trains it: "
        f"{h.epochs_planned} epochs, batch 32, validation_split=0.2. The figure counts the "
        "optimizer updates actually made, epoch by epoch, next to the slide's arithmetic.",
        claim=f"print(len(X_train) // 32) gives the iterations per epoch: {slide_ipe}.",
        truth=(f"validation_split=0.2 holds out {h.n_val} of the {n_rows} rows before training, "
               f"so {h.n_train} rows train and each epoch makes ceil({h.n_train} / 32) = "
               f"{h.iterations_per_epoch} updates (a last partial batch, if any, is trained on, "
               "as in Keras; // would drop it)."),
        facts=[("training rows after the split", h.n_train), ("validation rows", h.n_val),
               ("iterations per epoch", f"{h.iterations_per_epoch} (slide: {slide_ipe})"),
               ("epochs run", h.epochs_run), ("total updates", h.total_updates),
               ("samples seen", h.samples_seen),
               ("test accuracy", f"{h.extra['test']['accuracy']:.4f}")],
        figures=[(fig, "cumulative optimizer updates per epoch, real vs the slide's arithmetic")],
        code="h = el.fit(el.models.mlp(20), d.train, epochs=10, batch_size=32, "
             "validation_split=0.2)\nh.iterations_per_epoch, h.total_updates   # (20, 200)",
    )


def slide_02(t: Tour) -> Section:
    h = _accounting_run(t)
    slide_total = len(h.epochs) * (len(t.synthetic.x_train) // 32)
    loss = plot_curves(h, "loss", title=f"Training and validation loss per epoch "
                       f"({h.iterations_per_epoch} updates each, {h.total_updates} in all)")
    acc = plot_curves(h, "accuracy", title="Training and validation accuracy per epoch")
    best = int(np.nanargmin(h.history["val_loss"]))
    return Section(
        "", "The same run's training and validation loss (and accuracy) per epoch; the total "
        "number of weight updates is counted by the loop, not computed afterwards.",
        claim=f"total_updates = epochs * (len(X_train) // 32) = {slide_total}.",
        truth=(f"{h.total_updates} updates were made ({h.epochs_run} epochs x "
               f"{h.iterations_per_epoch}); history.total_updates counts the updates actually "
               "made, which stays right when early stopping or a divergence ends a run early. "
               f"Validation loss was lowest at epoch {best + 1} "
               f"({h.history['val_loss'][best]:.4f})."),
        facts=[("total updates (counted)", h.total_updates), ("slide's formula", slide_total),
               ("final training loss", f"{h.history['loss'][-1]:.4f}"),
               ("final validation loss", f"{h.history['val_loss'][-1]:.4f}")],
        figures=[(loss, "training and validation loss per epoch"),
                 (acc, "training and validation accuracy per epoch")],
    )


def slide_03(t: Tour) -> Section:
    d = t.synthetic
    _accounting_run(t)
    model = copy.deepcopy(t.results["slide1_model"])  # the model slides 1-2 trained, as on the slide
    trainer = Trainer(model, optimizer="adam", lr=1e-3)
    rows = np.random.default_rng(0).choice(len(d.x_train), 32, replace=False)  # the slide's batch
    xb, yb = torch.as_tensor(d.x_train[rows]), torch.as_tensor(d.y_train[rows])

    def per_row() -> np.ndarray:
        with torch.no_grad():
            out = model(xb).squeeze(-1)
            return F.binary_cross_entropy_with_logits(out, yb.float(), reduction="none").numpy()

    with torch.no_grad():
        predictions = torch.sigmoid(model(xb)).numpy()          # (32, 1), as model.predict
    y_np = d.y_train[rows]                                        # (32,)
    slide_loss = float(np.mean(-y_np * np.log(predictions) - (1 - y_np) * np.log(1 - predictions)))
    before = per_row()
    rec = trainer.step((xb, yb))
    after = per_row()
    order = np.argsort(before)
    fig, (ax,) = new_figure(7, 3.8)
    ax.plot(range(1, 33), before[order], marker="o", ms=3, label=f"before (mean {before.mean():.4f})")
    ax.plot(range(1, 33), after[order], marker="x", ms=3, label=f"after one update (mean {after.mean():.4f})")
    ax.set(title="One iteration: the loss of each row of the batch before and after the update",
           xlabel="row of the batch (sorted by its loss before the update)",
           ylabel="loss per row (binary cross-entropy, nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Section(
        "", "A random batch of 32 rows goes once through the model slides 1 and 2 trained: "
        "forward, loss, backward, Adam update (Trainer.step, with a fresh optimizer). The figure "
        "shows each row's loss before and after that single update.",
        claim=("np.mean(-y_batch * np.log(predictions) - (1 - y_batch) * np.log(1 - predictions)) "
               "is the loss of the batch, and the update is left out."),
        truth=(f"model.predict returns shape {predictions.shape} and y_batch has shape "
               f"{y_np.shape}, so NumPy broadcasts them to a {len(y_np)}x{len(y_np)} matrix and "
               f"the mean mixes every prediction with every label: {slide_loss:.4f} instead of "
               f"the batch's loss {rec.loss:.4f}. One real iteration also computes the gradient "
               f"(norm {rec.grad_norm:.4f}) and updates the weights at learning rate {rec.lr:g}; "
               f"the same batch's loss is then {after.mean():.4f}."),
        facts=[("batch", f"{len(rows)} rows x {d.x_train.shape[1]} features"),
               ("loss before the update", f"{rec.loss:.4f}"),
               ("the slide's formula on the same predictions", f"{slide_loss:.4f}"),
               ("gradient norm", f"{rec.grad_norm:.4f}"), ("learning rate used", rec.lr),
               ("loss of the same batch after the update", f"{after.mean():.4f}"),
               ("optimizer updates done", trainer.state.global_step)],
        figures=[(fig, "per-row loss before and after one update")],
        code="rec = el.Trainer(model, lr=1e-3).step((xb, yb))\nrec.loss, rec.grad_norm, rec.lr",
    )


def slide_06(t: Tour) -> Section:
    d = t.synthetic
    epochs, patience = t.sizes.es_max_epochs, 5
    manual_seed(0)
    model = mlp(20)
    es = EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    h = fit(model, d.train, epochs=epochs, batch_size=32, validation_split=0.2, callbacks=[es],
            seed=0, verbose=0)
    test = evaluate(model, d)
    h.extra["test"] = test
    t.record(t.study(6, "early-stopping"), "slide6", h, {
        "data": "synthetic", "model": "mlp", "epochs": epochs, "batch_size": 32, "lr": 1e-3,
        "validation_split": 0.2, "seed": 0,
        "early_stopping": f"val_loss:patience={patience},restore=true"})
    t.results["slide6"] = h
    best = es.best_epoch
    stopped = "did not stop early" if es.stopped_epoch is None else f"stopped after epoch {es.stopped_epoch + 1}"
    vl = h.history["val_loss"]
    return Section(
        "", f"Training for up to {epochs} epochs with EarlyStopping(monitor='val_loss', "
        f"patience={patience}, restore_best_weights=True): the curves, the epoch whose weights "
        "the model keeps (dashed) and the last epoch run.",
        claim=("Early stopping stops training when the validation loss starts to increase; "
               "len(history['loss']) is how long to train."),
        truth=((f"It stops {patience} epochs after the last improvement: {len(h.epochs)} epochs "
                "ran; " if es.stopped_epoch is not None else
                f"Patience never ran out within {len(h.epochs)} epochs; ")
               + f"the best validation loss ({vl[best]:.4f}) was at epoch {best + 1}, and "
               f"with restore_best_weights the model holds epoch {h.weights_epoch + 1}'s weights "
               f"(validation loss at the last epoch: {vl[-1]:.4f}). The number of epochs to "
               f"train is {best + 1}, not {len(h.epochs)}. epochlab restores the best weights "
               "whenever training ends (patience, epoch limit, Ctrl-C, divergence), as Keras 3 "
               "does at the epoch limit; tf.keras 2 restored only when patience ran out."),
        facts=[("epochs run (the slide's print)", len(h.epochs)), ("best epoch", best + 1),
               ("stop", stopped), ("weights kept", f"epoch {h.weights_epoch + 1}"),
               ("total updates", h.total_updates),
               ("test accuracy with the kept weights", f"{test['accuracy']:.4f}")],
        figures=[(plot_curves(h, "loss", title="Loss with early stopping (patience 5, best "
                              "weights restored)"), "loss per epoch with early stopping"),
                 (plot_curves(h, "accuracy", title="Accuracy with early stopping"),
                  "accuracy per epoch with early stopping")],
        code="es = el.EarlyStopping(patience=5, restore_best_weights=True)\n"
             "h = el.fit(model, d.train, epochs=100, batch_size=32, validation_split=0.2, "
             "callbacks=[es])\nes.best_epoch, h.weights_epoch",
    )


def _fit_orders(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    # fit draws one permutation per epoch from a generator seeded with `seed`.
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g).numpy() for _ in range(epochs)]


def reference_agreement(
    X: np.ndarray, y: np.ndarray, *, batch_size: int, epochs: int, shuffle: bool,
    drop_last: bool, lr: float = 0.01, seed: int = 0, dtype: torch.dtype = torch.float64,
) -> dict[str, Any]:
    """Train logistic regression with the NumPy reference and with ``fit``, same start and
    same batches; return both results and the largest weight difference.

    The epochlab side is ``nn.Linear(d, 1)`` from zero weights, plain SGD at
    ``lr``, binary cross-entropy on the logits; the reference gets fit's
    permutations (``shuffle``) or the rows in order.

    Example:
        >>> X = np.random.default_rng(0).normal(size=(50, 3)); y = (X[:, 0] > 0).astype(int)
        >>> r = reference_agreement(X, y, batch_size=8, epochs=2, shuffle=True, drop_last=False)
        >>> r["max_abs_dw"] < 1e-12, r["updates"]
        (True, 14)
    """
    n, dim = X.shape
    model = nn.Linear(dim, 1).to(dtype)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    h = fit(model, (X, y), epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=lr,
            shuffle=shuffle, drop_last=drop_last, seed=seed, verbose=0)
    orders = _fit_orders(n, epochs, seed) if shuffle else None
    ref = mini_batch_gradient_descent(X, y, batch_size, epochs, lr, drop_last=drop_last,
                                      orders=orders)
    w = model.weight.detach().double().numpy().ravel()
    b = float(model.bias.detach().double())
    if h.total_updates != ref.updates:
        raise AssertionError(f"updates differ: fit {h.total_updates}, reference {ref.updates}")
    return {"history": h, "reference": ref, "w": w, "b": b,
            "max_abs_dw": float(np.max(np.abs(w - ref.w))), "abs_db": abs(b - ref.b),
            "updates": h.total_updates, "iterations_per_epoch": h.iterations_per_epoch}


def slide_07(t: Tour) -> Section:
    d = t.synthetic
    X, y = d.x_train.astype(np.float64), d.y_train
    epochs = t.sizes.reference_epochs
    cases = [
        ("the slide: rows in order, last partial batch dropped", 32, False, True, torch.float64),
        ("corrected: reshuffled every epoch, last partial batch kept", 48, True, False,
         torch.float64),
        ("corrected, epochlab in float32", 48, True, False, torch.float32),
    ]
    results, rows = [], []
    study = t.study(7, "reference")
    for label, bs, shuffle, drop_last, dtype in cases:
        r = reference_agreement(X, y, batch_size=bs, epochs=epochs, shuffle=shuffle,
                                drop_last=drop_last, seed=0, dtype=dtype)
        results.append((label, r))
        dropped = len(X) - r["iterations_per_epoch"] * bs if drop_last else 0
        rows.append([label, bs, r["iterations_per_epoch"], r["updates"], max(dropped, 0),
                     f"{r['max_abs_dw']:.2e}", f"{r['abs_db']:.2e}"])
        t.record(study, f"{label} (batch {bs})", r["history"], {
            "data": "synthetic", "model": "logistic regression (nn.Linear, zero init)",
            "epochs": epochs, "batch_size": bs, "optimizer": "sgd", "lr": 0.01,
            "shuffle": shuffle, "drop_last": drop_last, "dtype": str(dtype)})
    t.results["slide7"] = results
    worst64 = max(r["max_abs_dw"] for (lab, r), c in zip(results, cases, strict=True)
                  if c[4] == torch.float64)
    fig1, (ax,) = new_figure(7, 3.8)
    for label, r in results[:2]:
        e = range(1, epochs + 1)
        ax.plot(e, r["reference"].epoch_loss, marker="o", ms=4, label=f"NumPy reference: {label}")
        ax.plot(e, r["history"].history["loss"], ls="--", marker="x", ms=6,
                label=f"epochlab fit: {label}")
    ax.set(title="Logistic regression: training loss per epoch, NumPy vs epochlab",
           xlabel="epoch", ylabel=metric_label("loss", results[0][1]["history"]))
    integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig2, (ax2,) = new_figure(5.5, 4.5)
    r = results[1][1]
    ax2.scatter(r["reference"].w, r["w"], s=18, label="the 20 weights")
    ax2.scatter([r["reference"].b], [r["b"]], marker="s", s=30, label="the bias")
    lim = float(np.max(np.abs(np.r_[r["w"], r["b"]]))) * 1.1
    ax2.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, label="equal")
    ax2.set(title=f"Final weights (corrected case): max difference {r['max_abs_dw']:.1e}",
            xlabel="NumPy reference weight (unitless)", ylabel="epochlab weight (unitless)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    return Section(
        "", "Slide 7's NumPy mini-batch gradient descent (epochlab.reference) and epochlab's "
        "training loop train the same logistic regression from the same zero weights on the "
        "same batches in the same order (the reference is handed fit's permutations). Their "
        "weights agree: the loop is plain mini-batch gradient descent, with nothing hidden.",
        claim=("n_batches = n_samples // batch_size, batches taken in order, each gradient "
               "divided by batch_size."),
        truth=(f"The slide never shuffles (every epoch sees the same batches; data sorted by "
               f"class would give one-class batches) and silently skips the rows after the last "
               f"full batch: with batch 48, {len(X) - (len(X) // 48) * 48} of the {len(X)} rows "
               "would never be trained on. The reference has both as options; with them, it and "
               f"epochlab agree to {worst64:.1e} in float64 (tested to 1e-6)."),
        facts=[("largest weight difference, float64", f"{worst64:.2e}"),
               ("largest weight difference, epochlab float32", f"{results[2][1]['max_abs_dw']:.2e}"),
               ("tolerance asserted in the tests", "1e-6")],
        tables=[Table(["case", "batch", "iterations / epoch", "updates", "rows never seen",
                       "max |Δw|", "|Δb|"], rows,
                      caption=f"{epochs} epochs, plain SGD at lr 0.01, {len(X)} rows")],
        figures=[(fig1, "training loss per epoch, NumPy reference vs epochlab"),
                 (fig2, "final weights, NumPy reference vs epochlab")],
        code="from epochlab.reference import mini_batch_gradient_descent\n"
             "r = mini_batch_gradient_descent(X, y, batch_size=48, epochs=10, lr=0.01, "
             "shuffle=True, drop_last=False)",
    )
