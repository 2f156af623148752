"""``epochlab fit``: train one model on one dataset and say exactly what happened."""

from __future__ import annotations

import click
import torch

from epochlab.callbacks.progress import ProgressBar
from epochlab.cli.common import build_model, console, epoch_table, load_data, n_params, out_dir
from epochlab.report.curves import plot_curves, plot_lr
from epochlab.train.loop import evaluate, fit


@click.command("fit")
@click.option("--data", "data_name", default="synthetic", show_default=True,
              help="Dataset: synthetic, digits, sequences, mnist, imdb.")
@click.option("--model", "model_name", default="mlp", show_default=True,
              help="Model: mlp, cnn, cnn_small, lstm.")
@click.option("--batch-norm/--no-batch-norm", default=False, help="mlp only: Linear-BatchNorm-ReLU blocks.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--validation-split", type=float, default=0.2, show_default=True,
              help="Fraction of the training rows held out (seeded random, stratified).")
@click.option("--validation-split-mode", type=click.Choice(["random", "tail"]), default="random",
              show_default=True, help="'tail' holds out the last rows, as Keras does.")
@click.option("--optimizer", default="adam", show_default=True,
              type=click.Choice(["adam", "adamw", "sgd", "rmsprop"]))
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate.")
@click.option("--drop-last", is_flag=True, help="Drop the last partial batch of every epoch.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the initial weights, the split and the shuffling.")
@click.option("--out", "out", default=None, help="Output folder [default: runs/fit-<time>].")
@click.option("--verbose", type=click.IntRange(0, 2), default=1, show_default=True,
              help="0 silent, 1 progress bar, 2 a line per epoch.")
def fit_command(data_name, model_name, batch_norm, epochs, batch_size, validation_split,
                validation_split_mode, optimizer, lr, drop_last, seed, out, verbose) -> None:
    """Train one model and print the accounting, a per-epoch table and test metrics.

    Writes history.json, loss.png (training and validation loss per epoch),
    accuracy.png for classification, lr.png and model.pt to the output folder.

    Example: epochlab fit --data synthetic --model mlp --epochs 10 --batch-size 32
    """
    data = load_data(data_name)
    kwargs = {"batch_norm": True} if batch_norm else {}
    model = build_model(model_name, data, seed, **kwargs)
    trainable, frozen = n_params(model)
    console.print(
        f"[bold]epochlab fit[/]: data [cyan]{data.name}[/] ({len(data.x_train)} train / "
        f"{len(data.x_test)} test rows, {data.task}) · model [cyan]{model_name}[/] "
        f"({trainable:,} trainable parameters{f', {frozen:,} frozen' if frozen else ''})"
    )
    try:
        history = fit(
            model, data.train, epochs=epochs, batch_size=batch_size,
            validation_split=validation_split, validation_split_mode=validation_split_mode,
            optimizer=optimizer, lr=lr, drop_last=drop_last, seed=seed,
            callbacks=[ProgressBar(lines=verbose == 2)] if verbose else [], verbose=0,
        )
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    console.print(history.summary())
    console.print(epoch_table(history))
    if len(data.x_test):
        test = evaluate(model, data)
        history.extra["test"] = test
        console.print("test: " + " · ".join(f"{k} {v:.4f}" for k, v in test.items()))
    folder = out_dir(out, "fit")
    history.params.update(data=data.name, model=model_name, batch_norm=batch_norm)
    written = [history.save(folder / "history.json"),
               plot_curves(history, "loss", folder / "loss.png") and folder / "loss.png"]
    if "accuracy" in history.history:
        plot_curves(history, "accuracy", folder / "accuracy.png")
        written.append(folder / "accuracy.png")
    plot_lr(history, folder / "lr.png")
    torch.save(model.state_dict(), folder / "model.pt")
    written += [folder / "lr.png", folder / "model.pt"]
    console.print("wrote " + ", ".join(str(p) for p in written))
