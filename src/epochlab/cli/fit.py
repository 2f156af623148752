"""``epochlab fit``: train one model on one dataset and say exactly what happened."""

from __future__ import annotations

import click
import torch

from epochlab import schedules
from epochlab.callbacks import early_stopping
from epochlab.callbacks.early_stopping import EarlyStopping
from epochlab.callbacks.progress import ProgressBar
from epochlab.cli.common import build_model, console, epoch_table, load_data, n_params, out_dir
from epochlab.data.base import DataBundle
from epochlab.diagnose.advice import advise_history, format_advice
from epochlab.report.curves import plot_curves, plot_lr
from epochlab.train.history import History
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
@click.option("--schedule", "schedule_text", default=None, metavar="TEXT",
              help="Learning-rate schedule, 'name' or 'name:key=value,...', e.g. "
                   "'exponential:initial=0.1,decay_steps=1000,decay_rate=0.96,staircase=true'. "
                   f"Names: {', '.join(schedules.NAMES)}. A missing initial rate is --lr.")
@click.option("--early-stopping", "early_stopping_text", default=None, metavar="TEXT",
              help="Stop when a metric stops improving, e.g. 'val_loss:patience=5,restore=true'. "
                   f"Parameters: {', '.join(early_stopping.PARAMS)}. restore=true keeps the "
                   "best epoch's weights however training ends.")
@click.option("--drop-last", is_flag=True, help="Drop the last partial batch of every epoch.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the initial weights, the split and the shuffling.")
@click.option("--out", "out", default=None, help="Output folder [default: runs/fit-<time>].")
@click.option("--store", "store_path", default=None, metavar="PATH",
              help="Record the run in this store [default: $EPOCHLAB_STORE or ./epochlab.db].")
@click.option("--study", default="fit", show_default=True, help="Study the run is stored under.")
@click.option("--no-store", is_flag=True, help="Do not record the run in a store.")
@click.option("--verbose", type=click.IntRange(0, 2), default=1, show_default=True,
              help="0 silent, 1 progress bar, 2 a line per epoch.")
def fit_command(data_name, model_name, batch_norm, epochs, batch_size, validation_split,
                validation_split_mode, optimizer, lr, schedule_text, early_stopping_text,
                drop_last, seed, out, store_path, study, no_store, verbose) -> None:
    """Train one model and print the accounting, a per-epoch table, advice and test metrics.

    The advice names the epoch with the best validation loss, where
    overfitting starts and whether training had converged, with the numbers.

    Writes history.json, loss.png (training and validation loss per epoch),
    accuracy.png for classification, lr.png and model.pt to the output folder.

    Example: epochlab fit --data synthetic --model mlp --epochs 10 --batch-size 32
    --schedule exponential:decay_steps=100,decay_rate=0.9 --early-stopping val_loss:patience=5
    """
    schedule = _parse_schedule(schedule_text, lr)
    stopper = _parse_early_stopping(early_stopping_text)
    data = load_data(data_name)
    if stopper is not None:
        _check_monitor(stopper.monitor, data, validation_split)
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
            optimizer=optimizer, lr=lr, schedule=schedule, drop_last=drop_last, seed=seed,
            callbacks=([stopper] if stopper else []) + ([ProgressBar(lines=verbose == 2)]
                                                        if verbose else []),
            verbose=0,
        )
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    console.print(history.summary())
    console.print(epoch_table(history))
    if stopper is not None:
        console.print(_early_stopping_line(stopper, history))
    advice = advise_history(history)
    history.extra["advice"] = [a.to_dict() for a in advice]
    if advice:
        console.print("[bold]Advice[/]")
        console.print(format_advice(advice), markup=False, highlight=False)
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
    if not no_store:
        _record(store_path, study, history, folder)


def _record(store_path: str | None, study: str, history: History, folder) -> None:
    """Store the run; the key carries the output folder, so each invocation is its own run."""
    from epochlab.store import SQLiteStore, default_store_path, record_history, run_key

    path = store_path or default_store_path()
    settings = {k: v for k, v in history.params.items()}
    with SQLiteStore(path) as store:
        run_id = record_history(store, study, f"{run_key(settings)}@{folder}", settings, history)
    console.print(f"stored as run {run_id} in {path} (study {study!r}; see `epochlab runs`)")


def _parse_schedule(text: str | None, lr: float) -> schedules.Schedule | None:
    if text is None:
        return None
    try:
        return schedules.parse(text, default_lr=lr)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--schedule") from None


def _parse_early_stopping(text: str | None) -> EarlyStopping | None:
    if text is None:
        return None
    try:
        return early_stopping.parse(text)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--early-stopping") from None


def _check_monitor(monitor: str, data: DataBundle, validation_split: float) -> None:
    """Fail before training when the monitored metric will not exist in this run."""
    metrics = ["loss"] + (["accuracy"] if data.task in ("binary", "multiclass") else [])
    valid = metrics + ([f"val_{m}" for m in metrics] if validation_split > 0 else [])
    if monitor not in valid:
        hint = "" if validation_split > 0 or not monitor.startswith("val_") else (
            " (validation metrics need --validation-split > 0)")
        raise click.BadParameter(
            f"The monitored metric {monitor!r} is not logged in this run{hint}. "
            f"Valid metrics: {', '.join(valid)}.",
            param_hint="--early-stopping",
        )


def _early_stopping_line(es: EarlyStopping, history: History) -> str:
    """Best and stopped epoch (1-based), and which weights the model holds."""
    if es.best_epoch is None:
        return f"early stopping: no finite {es.monitor} was recorded."
    line = f"early stopping: best {es.monitor} {es.best_value:.4f} at epoch {es.best_epoch + 1}; "
    if es.stopped_epoch is not None:
        line += f"stopped at epoch {es.stopped_epoch + 1} (patience {es.patience})"
    else:
        line += f"did not stop early (training ended: {history.stop_reason})"
    if es.restored:
        line += f"; the model holds the weights of epoch {es.best_epoch + 1}"
    return line + "."
