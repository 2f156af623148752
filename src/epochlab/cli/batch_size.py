"""``epochlab batch-size``: train briefly while measuring the gradient noise scale; advise a batch."""

from __future__ import annotations

import json
import math
import os

import click
import numpy as np
from rich.table import Table

from epochlab.cli.common import (
    DATA_HELP,
    MODEL_HELP,
    TARGET_HELP,
    claimed,
    load_data,
    n_params,
    probe_model,
    runtime_options,
)
from epochlab.cli.output import console, escape, print_table


@click.command("batch-size")
@click.option("--data", "data_name", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--target", default=None, metavar="COLUMN", help=TARGET_HELP)
@click.option("--model", "model_name", default="mlp", show_default=True, help=MODEL_HELP)
@click.option("--epochs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--optimizer", default="adam", show_default=True,
              type=click.Choice(["adam", "adamw", "sgd", "rmsprop"]))
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate.")
@click.option("--parts", type=click.IntRange(2), default=8, show_default=True,
              help="Small batches per measurement: the big batch is parts x the small one.")
@click.option("--small", type=click.IntRange(1), default=None,
              help="Rows per small batch [default: --batch-size].")
@click.option("--every", type=click.IntRange(1), default=None,
              help="Updates between measurements [default: about 8 per epoch].")
@click.option("--validation-split", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", default=None, help="Output folder [default: runs/batch-size-<time>].")
@click.option("--overwrite", is_flag=True,
              help="Let --out be a folder that already holds this command's files (they are "
                   "replaced).")
@runtime_options
def batch_size_command(data_name, target, model_name, epochs, batch_size, optimizer, lr, parts, small,
                       every, validation_split, seed, out, overwrite, threads, precision) -> None:
    """Measure the gradient noise scale B_simple per epoch and turn it into batch-size advice.

    B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018) is estimated from
    gradient norms at two batch sizes at the current weights, with the
    paper's unbiased estimators. Prints it per epoch with an error bar, then
    "batches beyond about B give diminishing returns; with batch b, about N
    epochs ..." and the epochs and updates each batch size would need.
    Writes gns.png, history.json and batch_size.json.

    Example: epochlab batch-size --data digits --model cnn_small --epochs 3
    """
    data = load_data(data_name, target)
    model = probe_model(model_name, data, seed)  # a model that cannot take the data: refused
    with claimed(out, "batch-size", overwrite=overwrite,  # checked before training
                 marker=("history.json", "batch_size.json")) as folder:
        _measure(data, model_name, model, folder, epochs, batch_size, optimizer, lr,
                 validation_split, seed, small, parts, every, threads, precision)


def _measure(data, model_name, model, folder, epochs, batch_size, optimizer, lr,
             validation_split, seed, small, parts, every, threads, precision) -> None:
    from epochlab.diagnose.noise_scale import GradientNoiseScale, batch_size_advice
    from epochlab.train.data import split_indices
    from epochlab.train.loop import fit

    trainable, _ = n_params(model)
    console.print(
        f"[bold]epochlab batch-size[/]: data [cyan]{escape(data.name)}[/] ({len(data.x_train)} train "
        f"rows, {data.task}) · model [cyan]{escape(model_name)}[/] ({trainable:,} trainable parameters) · "
        f"{optimizer} lr {lr:g}, batch {batch_size}, {epochs} epochs"
    )
    stratify = data.y_train if data.task in ("binary", "multiclass") else None
    # The rows fit trains on (same seeded, stratified split), so the noise is the training set's.
    tr, _, _ = split_indices(len(data.x_train), validation_split, seed=seed, stratify=stratify)
    gns = GradientNoiseScale((data.x_train[tr], data.y_train[tr]), small=small, parts=parts,
                             every=every, seed=seed)
    history = fit(model, data.train, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                  lr=lr, validation_split=validation_split, seed=seed, callbacks=[gns], verbose=0,
                  threads=threads, precision=precision)
    runtime = history.extra.get("runtime")
    if runtime:
        from epochlab.train.history import describe_runtime

        console.print(f"runtime: {describe_runtime(runtime)}; the measurements in float32",
                      markup=False, highlight=False, soft_wrap=True)
    print_table(noise_table(history))
    info = history.extra.get("gns", {})
    noise = info.get("last_smoothed", math.nan)
    advice = None
    taken = sum(int(row.get("gns_measurements") or 0) for row in history.epochs)
    if taken == 0:
        why = (f"--every {every} is more than the {history.total_updates} updates the run "
               "made; use a smaller --every (or none: about 8 an epoch) or more --epochs"
               if every else f"the run made only {history.total_updates} updates; use more "
               "--epochs")
        console.print(f"[red]No measurement was taken[/]: {why}.")
    elif not (noise > 0 and math.isfinite(noise)):
        console.print(f"[red]The noise scale could not be measured[/] (estimate {noise:.3g}): the "
                      "gradient signal is too small against its noise at these batch sizes; try "
                      "more epochs, a larger --parts or --small.")
    else:
        reached = _epochs_reached(history)
        advice = batch_size_advice(noise, n_train=history.n_train, batch_size=batch_size,
                                   epochs_reached=reached)
        print_table(advice_table(advice))
        console.print(f"[bold]{escape(advice['text'])}[/]")
        caveat = "" if optimizer == "sgd" else (
            f" (the paper's model is for SGD; with {optimizer} treat it as a rough guide)")
        console.print(f"B_simple measured at the end of training: {noise:.0f} rows{caveat}.")
    from epochlab.report.noise_scale import plot_noise_scale

    plot_noise_scale(history, advice, folder / "gns.png")
    history.save(folder / "history.json")
    (folder / "batch_size.json").write_text(json.dumps(
        {"noise_scale": noise, "advice": advice, "records": gns.records, "settings": info}))
    console.print(f"wrote {folder / 'gns.png'}, {folder / 'history.json'}, "
                  f"{folder / 'batch_size.json'} (load {os.getloadavg()[0]:.1f})", markup=False)
    if history.stop_reason == "interrupted":
        console.print(f"Interrupted (Ctrl-C) after {history.epochs_run} of {epochs} epochs: the "
                      "table, the advice and the files cover those epochs only.", markup=False)
        raise KeyboardInterrupt  # the CLI exits 130, after what was measured was kept


def _epochs_reached(history) -> float:
    """Epochs the run took to its best validation loss (or training loss), 1-based."""
    h = history.history
    col = h.get("val_loss") or h.get("loss")
    vals = np.array(col, dtype=np.float64)
    return float(np.nanargmin(vals) + 1) if np.isfinite(vals).any() else float(len(vals))


def noise_table(history) -> Table:
    """Per epoch: loss, val_loss, B_simple with its error, the running average, measurements."""
    table = Table(show_edge=False, pad_edge=False, title="gradient noise scale per epoch")
    for c in ("epoch", "loss", "val_loss", "B_simple", "+-", "smoothed", "measurements"):
        table.add_column(c, justify="right")
    for row in history.epochs:
        table.add_row(str(int(row["epoch"]) + 1), f"{row['loss']:.4f}",
                      f"{row.get('val_loss', math.nan):.4f}", f"{row['gns']:.1f}",
                      f"{row['gns_err']:.1f}", f"{row['gns_smoothed']:.1f}",
                      str(row["gns_measurements"]))
    return table


def advice_table(advice) -> Table:
    """Epochs and updates each batch size needs for the run's loss (the paper's model)."""
    table = Table(show_edge=False, pad_edge=False,
                  title=f"to the loss this run reached (E_min {advice['e_min_epochs']:.2f} epochs)")
    for c in ("batch size", "epochs", "updates"):
        table.add_column(c, justify="right")
    for r in advice["rows"]:
        table.add_row(f"{r['batch_size']}{' (this run)' if r['current'] else ''}",
                      f"{r['epochs']:.1f}", f"{r['updates']:.0f}")
    return table
