"""``epochlab fit``: train one model on one dataset and say exactly what happened."""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

# Only modules that load neither torch nor matplotlib at the top: `epochlab fit --help` and a
# mistyped option answer in a tenth of a second; the functions import the rest when they run.
from epochlab import schedules
from epochlab.callbacks import early_stopping
from epochlab.callbacks.early_stopping import EarlyStopping
from epochlab.cli.common import (
    DATA_HELP,
    MODEL_HELP,
    TARGET_HELP,
    build_model,
    check_model_name,
    epoch_table,
    load_data,
    n_params,
    out_dir,
    probe_model,
    runtime_options,
)
from epochlab.cli.output import console, err_console, escape, print_table, warn
from epochlab.data.base import DataBundle
from epochlab.diagnose.advice import advise_history, format_advice
from epochlab.store import check_study, open_store, record_history, run_key
from epochlab.train.accounting import validation_count
from epochlab.train.history import History
from epochlab.validation import (
    SEED_MAX,
    ParameterError,
    check_float,
    check_int,
    check_lr,
    check_name,
    check_out_dir,
    data_warnings,
)

if TYPE_CHECKING:
    import torch


@click.command("fit")
@click.option("--data", "data_name", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--target", default=None, metavar="COLUMN", help=TARGET_HELP)
@click.option("--model", "model_name", default="mlp", show_default=True, help=MODEL_HELP)
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
@click.option("--out", "out", default=None,
              help="Output folder: new, or one that holds no run (its other files are kept) "
                   "[default: runs/fit-<time>-<unique suffix>].")
@click.option("--overwrite", is_flag=True,
              help="Let --out be a folder that already holds a run (its files are replaced).")
@click.option("--store", "store_path", default=None, metavar="PATH",
              help="Record the run in this store [default: $EPOCHLAB_STORE or ./epochlab.db].")
@click.option("--study", default="fit", show_default=True, help="Study the run is stored under.")
@click.option("--no-store", is_flag=True, help="Do not record the run in a store.")
@click.option("--verbose", type=click.IntRange(0, 2), default=1, show_default=True,
              help="0 silent, 1 progress bar, 2 a line per epoch.")
@click.option("--nproc", type=click.IntRange(1), default=1, show_default=True,
              help="Train data-parallel in N processes on this machine (torchrun; gloo on the "
                   "CPU, NCCL on GPUs). --batch-size is per process.")
@click.option("--lr-scaling", type=click.Choice(["none", "linear"]), default="none",
              show_default=True, help="'linear': multiply --lr by the number of processes, "
                                      "reached by a linear warmup (Goyal et al. 2017).")
@click.option("--lr-warmup-epochs", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Warmup length for --lr-scaling linear.")
@click.option("--checkpoint-dir", default=None, metavar="DIR",
              help="Save the whole training state here (atomically; the two newest kept), "
                   "so --resume can continue a killed run exactly.")
@click.option("--checkpoint-every", default="epoch", show_default=True, metavar="epoch|N",
              help="Save at every epoch's end, after every N updates (mid-epoch too), or "
                   "at an epoch's end once Ns seconds passed (e.g. 60s).")
@click.option("--resume", is_flag=True,
              help="Continue from the newest good checkpoint in --checkpoint-dir (same settings "
                   "required); start from the beginning if there is none.")
@runtime_options
@click.pass_context
def fit_command(ctx, data_name, target, model_name, batch_norm, epochs, batch_size, validation_split,
                validation_split_mode, optimizer, lr, schedule_text, early_stopping_text,
                drop_last, seed, out, overwrite, store_path, study, no_store, verbose, threads,
                precision, nproc, lr_scaling, lr_warmup_epochs, checkpoint_dir,
                checkpoint_every, resume) -> None:
    """Train one model and print the accounting, a per-epoch table, advice and test metrics.

    The advice names the epoch with the best validation loss, where
    overfitting starts and whether training had converged, with the numbers.

    Everything is checked before the first iteration. The run is then
    stored first (also when it diverged or was interrupted), then
    history.json and model.pt are written, then the figures: loss.png
    (training and validation loss per epoch), accuracy.png for
    classification and lr.png. An --out folder that holds a run is refused
    unless --overwrite is given; the default folder is new for every run.

    Example: epochlab fit --data synthetic --model mlp --epochs 10 --batch-size 32
    --schedule exponential:decay_steps=100,decay_rate=0.9 --early-stopping val_loss:patience=5

    With --nproc N it runs itself in N processes under torchrun; only
    process 0 prints, writes and stores. Across machines, start it with
    torchrun: torchrun --nnodes 2 --nproc_per_node 4 --rdzv-endpoint HOST:29500
    -m epochlab.cli fit ...
    """
    from epochlab.train.distributed import end_processes

    rank0 = _as_rank(nproc)
    given = _given(ctx)
    check_int("epochs", epochs, 1)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0, SEED_MAX)
    check_float("validation_split", validation_split, low=0.0, high=1.0, high_open=True)
    check_lr("lr", lr)
    schedule, lr = _parse_schedule(schedule_text, lr, "lr" in given)
    stopper = _parse_early_stopping(early_stopping_text)
    checkpoint = _checkpoint_options(checkpoint_dir, checkpoint_every, resume)
    if not no_store:
        check_name("study", study)
    folder = check_out_dir(out, overwrite=overwrite) if out else None
    _warn_no_effect(given, model_name, validation_split, no_store, overwrite, out)
    data = load_data(data_name, target)  # a bad --data or --model leaves no store file behind
    check_model_name(model_name)
    _check_before_store(data, stopper, validation_split, batch_size, drop_last, nproc)
    # A model that cannot take the data is refused before the store or a folder exists.
    probe = probe_model(model_name, data, **({"batch_norm": True} if batch_norm else {}))
    if len(data.x_test):
        # The test split, checked as evaluate checks it: before training, not after it.
        from epochlab.train.loop import evaluation_data

        try:
            evaluation_data(probe, (data.x_test, data.y_test), where="test split")
        except (ParameterError, ValueError) as e:
            raise ParameterError(f"The test split of {data.name!r} cannot be evaluated by the "
                                 f"model {model_name!r}: {e}") from None
    store = None if no_store or not rank0 else open_store(store_path)
    try:
        _fit(data, model_name, batch_norm, epochs, batch_size, validation_split,
             validation_split_mode, optimizer, lr, schedule, stopper, drop_last, seed, folder,
             store, study, verbose, threads, precision, nproc, lr_scaling, lr_warmup_epochs,
             rank0, checkpoint)
        end_processes()  # the others wait for process 0's files, then all end together
    finally:
        if store is not None:
            store.close()


def _fit(data, model_name, batch_norm, epochs, batch_size, validation_split,
         validation_split_mode, optimizer, lr, schedule, stopper, drop_last, seed, folder,
         store, study, verbose, threads, precision, nproc, lr_scaling, lr_warmup_epochs,
         rank0, checkpoint) -> None:
    from epochlab.callbacks.progress import ProgressBar
    from epochlab.train.distributed import gpu_per_process, launched_by_torchrun
    from epochlab.train.loop import fit
    from epochlab.train.resume import CheckpointWarning, checkpoint_paths

    # The default study holds every fit; a named one keeps the data and model it began with.
    study_spec = {} if study == "fit" else {"kind": "fit", "data": data.name, "model": model_name}
    if store is not None:
        check_study(store, study, study_spec)
    if nproc > 1 and not launched_by_torchrun():
        if store is not None:
            store.close()  # process 0 opens it again to store the run
        _launch(data, nproc, validation_split, batch_size, drop_last, folder)
    for line in data_warnings(data, batch_size, validation_split):
        warn(line)
    kwargs = {"batch_norm": True} if batch_norm else {}
    model = build_model(model_name, data, seed, **kwargs)
    if launched_by_torchrun() and gpu_per_process():  # one GPU per process: NCCL
        model = model.to(f"cuda:{os.environ.get('LOCAL_RANK', 0)}")
    trainable, frozen = n_params(model)
    # Claim the output folder before training: a unique new one, so that two
    # runs started at the same second never share it. Only process 0 writes.
    created = folder is None or not folder.exists()
    parent_created = folder is None and not Path("runs").exists()
    if rank0:
        folder = folder if folder is not None else out_dir(None, "fit")
        folder.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]epochlab fit[/]: data [cyan]{escape(data.name)}[/] ({len(data.x_train)} train / "
        f"{len(data.x_test)} test rows, {data.task}) · model [cyan]{escape(model_name)}[/] "
        f"({trainable:,} trainable parameters{f', {frozen:,} frozen' if frozen else ''})"
    )
    if rank0 and checkpoint["resume"] and not checkpoint_paths(checkpoint["checkpoint_dir"]):
        # A mistyped folder would otherwise restart a long run without a word.
        console.print(f"--resume: no checkpoint in {checkpoint['checkpoint_dir']} yet, so training "
                      "starts from the beginning", markup=False)
    try:
        with warnings.catch_warnings():
            # Skipped checkpoints are printed as one line each below, not as Python warnings.
            warnings.simplefilter("ignore", CheckpointWarning)
            history = fit(
                model, data.train, epochs=epochs, batch_size=batch_size,
                validation_split=validation_split, validation_split_mode=validation_split_mode,
                optimizer=optimizer, lr=lr, schedule=schedule, drop_last=drop_last, seed=seed,
                callbacks=([stopper] if stopper else []) + ([ProgressBar(lines=verbose == 2)]
                                                            if verbose else []),
                verbose=0, threads=threads, precision=precision, lr_scaling=lr_scaling,
                lr_warmup_epochs=lr_warmup_epochs, **checkpoint,
            )
    except BaseException:
        if rank0 and created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # nothing trained: leave no empty folder behind
            if parent_created and not any(folder.parent.iterdir()):
                folder.parent.rmdir()
        raise
    if not rank0:  # process 0 reports, writes the files and stores the run
        return
    if checkpoint["resume"] and history.extra.get("resume"):
        _resume_lines(history.extra["resume"][-1])
    _keep(history, model, data, model_name, batch_norm, stopper, folder, store, study, study_spec)


def _keep(history: History, model: torch.nn.Module, data: DataBundle, model_name: str,
          batch_norm: bool, stopper: EarlyStopping | None, folder: Path, store: Any,
          study: str, study_spec: dict[str, Any]) -> None:
    """A run that trained is kept: stored first, then its files, then its figures."""
    import torch

    from epochlab.train.loop import evaluate

    console.print(history.summary(), markup=False)
    if history.epochs:
        print_table(epoch_table(history))
    if stopper is not None:
        console.print(_early_stopping_line(stopper, history), markup=False)
    try:  # advice is a reading of the run: if it fails, the run is still kept
        advice = advise_history(history)
        history.extra["advice"] = [a.to_dict() for a in advice]
        if advice:
            console.print("[bold]Advice[/]")
            console.print(format_advice(advice), markup=False, highlight=False)
    except Exception as e:  # noqa: BLE001
        warn(f"no advice for this run ({type(e).__name__}: {e}).")
    interrupted = history.stop_reason == "interrupted"
    if len(data.x_test) and not interrupted:
        try:
            test = evaluate(model, data)
            history.extra["test"] = test
            console.print("test: " + " · ".join(f"{k} {v:.4f}" for k, v in test.items()))
        except Exception as e:  # noqa: BLE001 - the trained run is kept whatever happens here
            warn(f"the test set could not be evaluated ({type(e).__name__}: {e}).")
    history.params.update(data=data.name, model=model_name, batch_norm=batch_norm,
                          precision=history.extra.get("runtime", {}).get("precision"))
    stored = None
    if store is not None:
        stored = _record(store, study, study_spec, history, folder)
    written = [history.save(folder / "history.json")]
    torch.save(model.state_dict(), folder / "model.pt")
    written.append(folder / "model.pt")
    written += _figures(history, folder)
    console.print("wrote " + ", ".join(str(p) for p in written), markup=False)
    if stored is not None:
        console.print(f"stored as run {stored} in {store.path} (study {study!r}; "
                      "see `epochlab runs`)", markup=False)
    if interrupted:
        raise KeyboardInterrupt  # the CLI exits 130, after the run was kept


def _figures(history: History, folder: Path) -> list[Path]:
    """Draw what the run has; a figure that fails is a warning, never a lost run."""
    from epochlab.report.curves import plot_curves, plot_lr

    wanted = []
    if history.epochs:
        wanted.append(("loss.png", lambda p: plot_curves(history, "loss", p)))
        if "accuracy" in history.history:
            wanted.append(("accuracy.png", lambda p: plot_curves(history, "accuracy", p)))
    else:
        warn("no epoch finished, so there are no loss or accuracy curves to draw.")
    if history.iterations.get("step"):
        wanted.append(("lr.png", lambda p: plot_lr(history, p)))
    written = []
    for name, draw in wanted:
        try:
            draw(folder / name)
            written.append(folder / name)
        except Exception as e:  # noqa: BLE001
            warn(f"{name} was not drawn ({type(e).__name__}: {e}); the run and its other "
                 "files are kept.")
    return written


def _launch(data: DataBundle, nproc: int, validation_split: float, batch_size: int,
            drop_last: bool, folder: Path | None) -> None:
    """Check that the rows can be shared, then run this command under torchrun; exit with it."""
    from epochlab.train.distributed import check_split, gpu_per_process, launch

    n = len(data.x_train)
    n_val = validation_count(n, validation_split)
    try:
        check_split(n - n_val, n_val, nproc, batch_size, drop_last)
    except ParameterError as e:
        raise click.BadParameter(str(e), param_hint="--nproc") from None
    ctx = click.get_current_context()
    # Every process must write to the same folder: fix it here, not from each one's clock.
    folder = folder if folder is not None else out_dir(None, "fit")
    folder.mkdir(parents=True, exist_ok=True)
    # Pass on what the user gave, as given: a default passed explicitly could change its
    # meaning (--lr beside a schedule's own initial rate is an error).
    params = {k: ctx.params[k] for k in _given(ctx)} | {"out": str(folder)}
    args = ["fit"]
    for p in ctx.command.params:
        value = params.get(p.name)
        if not isinstance(p, click.Option) or value is None or p.name == "help":
            continue
        if p.is_flag and p.secondary_opts:
            args.append(p.opts[0] if value else p.secondary_opts[0])
        elif p.is_flag:
            args += [p.opts[0]] if value else []
        else:
            args += [p.opts[0], str(value)]
    backend = "nccl" if gpu_per_process(nproc) else "gloo"
    console.print(f"epochlab fit: launching {nproc} processes with torchrun on 127.0.0.1 "
                  f"({backend}); process 0 reports")
    ctx.exit(launch(nproc, ["-m", "epochlab.cli", *args]))


def _as_rank(nproc: int) -> bool:
    """Under torchrun: check --nproc against it and silence all but process 0; True on rank 0."""
    from epochlab.train.distributed import launched_by_torchrun

    if not launched_by_torchrun():
        return True
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if nproc not in (1, local):
        raise click.BadParameter(
            f"--nproc is {nproc}, but torchrun started {local} processes on this machine; "
            "leave --nproc out when launching with torchrun.", param_hint="--nproc")
    rank0 = os.environ["RANK"] == "0"
    console.quiet = err_console.quiet = not rank0
    if not rank0 and not os.environ.get("EPOCHLAB_DEBUG"):
        # Every process meets the same errors; process 0 says them once.
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    return rank0


def _record(store: Any, study: str, study_spec: dict[str, Any], history: History,
            folder: Path) -> int:
    """Store the run under a key no other invocation has (settings, folder, time, process)."""
    settings = dict(history.params)
    key = f"{run_key(settings)}@{folder}@{time.time():.6f}-{os.getpid()}"
    return record_history(store, study, key, settings, history, study_spec=study_spec)


def _given(ctx: click.Context) -> set[str]:
    """The options the user typed (not left at their defaults)."""
    return {name for name in ctx.params
            if (src := ctx.get_parameter_source(name)) is not None and src.name != "DEFAULT"}


def _warn_no_effect(given: set[str], model_name: str, validation_split: float, no_store: bool,
                    overwrite: bool, out: str | None) -> None:
    if "batch_norm" in given and model_name != "mlp":
        warn(f"--batch-norm/--no-batch-norm has no effect with --model {model_name} (mlp only).")
    if "validation_split_mode" in given and validation_split == 0:
        warn("--validation-split-mode has no effect with --validation-split 0.")
    if no_store and given & {"store_path", "study"}:
        named = " and ".join(o for o, k in (("--store", "store_path"), ("--study", "study"))
                             if k in given)
        warn(f"{named} {'have' if ' and ' in named else 'has'} no effect with --no-store.")
    if overwrite and not out:
        warn("--overwrite has no effect without --out (the default folder is always new).")


def _checkpoint_options(folder: str | None, every: str, resume: bool) -> dict[str, Any]:
    """fit's checkpoint_dir, checkpoint_every and resume from the three flags."""
    if (resume or every != "epoch") and folder is None:
        flag = "--resume" if resume else "--checkpoint-every"
        raise ParameterError(f"{flag} needs --checkpoint-dir DIR, the folder of checkpoints.")
    n: str | int = every
    if every != "epoch" and not every.endswith("s"):  # "60s": fit checks the seconds
        try:
            n = int(every)
        except ValueError:
            n = 0
        if n < 1:
            raise ParameterError(f"The value of --checkpoint-every is {every!r}, but must be "
                                 "'epoch', a number of updates >= 1, or seconds such as '60s'.")
    return {"checkpoint_dir": folder, "checkpoint_every": n, "resume": resume}


def _resume_lines(entry: dict[str, Any]) -> None:
    """Say where this invocation resumed and which files it had to skip."""
    for bad in entry["skipped"]:
        warn(f"skipped checkpoint {bad['path']}: {bad['error']} "
             f"(moved to {Path(bad['moved_to']).name})")
    where = (f"at the start of epoch {entry['epoch'] + 1}" if not entry["batch_in_epoch"] else
             f"in epoch {entry['epoch'] + 1}, after its iteration {entry['batch_in_epoch']}")
    console.print(f"resumed from {entry['path']} {where} ({entry['global_step']} updates done)",
                  markup=False)


def _parse_schedule(text: str | None, lr: float,
                    lr_given: bool) -> tuple[schedules.Schedule | None, float]:
    """The schedule and the one learning rate of the run (--lr or the schedule's own)."""
    if text is None:
        return None, lr
    try:
        schedule = schedules.parse(text)
    except ParameterError as e:
        raise click.BadParameter(str(e), param_hint="--schedule") from None
    own = schedule.initial_lr
    if own is None:
        return schedule.with_initial(lr), lr
    if lr_given and own != lr:
        raise ParameterError(
            f"Both --lr ({lr:g}) and the schedule's own initial learning rate "
            f"{schedule.initial_param}={own:g} (--schedule {text!r}) were given; give one "
            f"of them: drop --lr, or drop {schedule.initial_param}= from --schedule."
        )
    return schedule, own


def _parse_early_stopping(text: str | None) -> EarlyStopping | None:
    if text is None:
        return None
    try:
        return early_stopping.parse(text)
    except ParameterError as e:
        raise click.BadParameter(str(e), param_hint="--early-stopping") from None


def _check_before_store(data: DataBundle, stopper: EarlyStopping | None, validation_split: float,
                        batch_size: int, drop_last: bool, nproc: int) -> None:
    """What the data and options already tell: refused before the store file is created."""
    if stopper is not None:
        _check_monitor(stopper.monitor, data, validation_split)
    n = len(data.x_train)
    n_train = n - validation_count(n, validation_split)
    if drop_last and nproc == 1 and 0 < n_train < batch_size:
        raise click.BadParameter(
            f"`drop_last=True` with batch_size={batch_size} and {n_train} training rows leaves "
            "no full batch; use a smaller batch or drop_last=False.", param_hint="--drop-last")


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
