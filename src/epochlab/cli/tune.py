"""``epochlab tune``: an Optuna search over training settings, each trial pruned epoch by epoch.

Prints the space, the axis trials are compared on (and why), one line per
trial as it ends, a table of trials, the best parameters, and how much
training pruning saved (updates made / updates of the same trials at full
length). Writes ``history.png`` (optimization history), ``budget.png``
(epochs and updates per trial), ``trials.csv`` and ``tune.json`` (the study's name: a
folder holding another study's figures is not overwritten) to ``--out``. Runs go to
the store (``--store``), Optuna's study to the same SQLite file unless
``--storage`` names another; the same command run again resumes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from epochlab.cli.common import (
    DATA_HELP,
    MODEL_HELP,
    TARGET_HELP,
    out_dir,
    runtime_line,
    runtime_options,
)
from epochlab.cli.output import console, escape, print_table

DEFAULT_SPACE = "lr=loguniform(1e-4,1e-1),batch_size=choice(16,32,64,128),epochs=int(5,50)"


@click.command("tune")
@click.option("--data", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--target", default=None, metavar="COLUMN", help=TARGET_HELP)
@click.option("--model", default="mlp", show_default=True, help=MODEL_HELP)
@click.option("--trials", type=int, default=20, show_default=True,
              help="Trials the study holds when done (a rerun counts the finished ones).")
@click.option("--space", default=DEFAULT_SPACE, show_default=True,
              help="name=distribution(args),...: loguniform, uniform, int, logint, choice; names "
                   "lr, batch_size, epochs, weight_decay, momentum, optimizer, seed.")
@click.option("--pruner", type=click.Choice(["hyperband", "median", "successive-halving", "none"]),
              default="hyperband", show_default=True)
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe",
              show_default=True)
@click.option("--prune-by", "prune_by", type=click.Choice(["auto", "epochs", "updates"]),
              default="auto", show_default=True,
              help="Compare trials at equal epochs or equal optimizer updates; auto: updates "
                   "when the batch size is searched.")
@click.option("--metric", default=None,
              help="The validation metric to optimize [default: val_accuracy; val_loss for "
                   "regression targets].")
@click.option("--mode", type=click.Choice(["max", "min"]), default=None,
              help="[default: from the metric: max for accuracy, min for loss]")
@click.option("--epochs", type=int, default=20, show_default=True, help="When not in --space.")
@click.option("--batch-size", "batch_size", type=int, default=32, show_default=True,
              help="When not in --space.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="When not in --space.")
@click.option("--optimizer", default="adam", show_default=True, help="When not in --space.")
@click.option("--validation-split", "validation_split", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Weights seed of every trial, and the sampler's seed.")
@click.option("--study", "name", default=None,
              help="Study name [default: made from the settings, so a rerun resumes].")
@click.option("--store", "store_path", default=None, help="SQLite file [default: $EPOCHLAB_STORE or ./epochlab.db].")
@click.option("--storage", default=None,
              help="Optuna storage URL [default: the store's file, sqlite:///epochlab.db]; "
                   "postgresql://... for several machines on one study.")
@click.option("--out", "out", default=None, help="Folder for figures [default: runs/tune-<time>].")
@click.option("--overwrite", is_flag=True,
              help="Let --out be a folder that holds another command's run (its history.json). "
                   "The same tune command run again rewrites its own figures without it.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: trials as Ray tasks, as many at once as the cluster has CPUs; they "
                   "report to Optuna through --storage, and only this process writes the store.")
@click.option("--ray-address", "ray_address", default=None,
              help="A running Ray cluster (auto, HOST:6379 or ray://HOST:10001) "
                   "[default: start a local Ray].")
@runtime_options
def tune_command(data, target, model, trials, space, pruner, sampler, prune_by, metric, mode,
                 epochs, batch_size, lr, optimizer, validation_split, seed, name, store_path,
                 storage, out, overwrite, executor, ray_address, threads, precision) -> None:
    """Search settings with Optuna; the pruner decides how many epochs each trial deserves.

    Example: epochlab tune --data synthetic --trials 30 --pruner hyperband
    """
    from epochlab.cli.common import (
        call_factory,
        check_model_name,
        is_data_file,
        load_data,
        model_factory,
        probe_model,
    )
    from epochlab.store import SQLiteStore, default_store_path
    from epochlab.sweeps.spec import default_metric
    from epochlab.tuning import parse_space, tune
    from epochlab.validation import check_int, check_out_dir

    parse_space(space)  # a ParameterError is the CLI's one-line usage error, before any work
    check_int("trials", trials, 1)
    if not 0 < validation_split < 1:
        raise click.BadParameter(f"{validation_split} is not in (0, 1): the pruner compares "
                                 "trials by their validation metric.",
                                 param_hint="--validation-split")
    if out:  # checked before any trial trains, not after all of them
        check_out_dir(out, overwrite=overwrite)
    bundle = load_data(data, target)
    factory = model_factory(model)
    if factory is None:
        check_model_name(model)
        built = probe_model(model, bundle, seed)
    else:
        built = call_factory(model, factory)  # says what is wrong with it before anything starts
    if metric is None:  # regression targets log no accuracy
        metric = default_metric(bundle.task, validation_split)
    store = SQLiteStore(store_path or default_store_path())  # created only once the rest is known good
    console.print(f"[bold]epochlab tune[/]: data {escape(data)} · model {escape(model)} · {trials} "
                  f"trials · pruner {escape(pruner)} · sampler {escape(sampler)}")
    console.print(f"space: {space}", markup=False, highlight=False, soft_wrap=True)
    # Ray's workers run one thread each unless --threads says otherwise, as a sweep's do.
    console.print(runtime_line(built, threads, precision, "trial",
                               workers=int(executor == "ray"))[0],
                  markup=False, highlight=False, soft_wrap=True)
    def on_trial(t: Any) -> None:
        console.print(_trial_line(t, metric), markup=False, highlight=False, soft_wrap=True)

    try:
        # A registry dataset by name (its study keeps the name earlier versions gave it); a
        # file as its arrays, fingerprinted by content.
        result = tune(factory or model, bundle if is_data_file(data) else data, space=space, trials=trials, pruner=pruner, sampler=sampler,
                      prune_by=prune_by, metric=metric, mode=mode, epochs=epochs,
                      batch_size=batch_size, lr=lr, optimizer=optimizer,
                      validation_split=validation_split, seed=seed, study=name, store=store,
                      storage=storage, on_trial=on_trial, executor=executor,
                      ray_address=ray_address, threads=threads, precision=precision)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/] Finished trials are stored; run the same command "
                      "again to continue.")
        sys.exit(130)
    finally:
        store.close()
    _print_result(result, store.path)
    folder = _figures_folder(out, overwrite, result.study)
    from epochlab.report.tune import plot_budget, plot_optimization_history, write_trials_csv

    plot_optimization_history(result, folder / "history.png")
    plot_budget(result, folder / "budget.png")
    write_trials_csv(result, folder / "trials.csv")
    (folder / "tune.json").write_text(json.dumps({"study": result.study}))
    console.print(f"wrote {folder / 'history.png'}, {folder / 'budget.png'}, {folder / 'trials.csv'}, "
                  f"{folder / 'tune.json'}", soft_wrap=True, markup=False)


_FIGURES = ("history.png", "budget.png", "trials.csv")


def _figures_folder(out: str | None, overwrite: bool, study: str) -> Path:
    """``--out``, unless it holds another study's figures (or files of those names that no
    tune wrote) and --overwrite was not given: then a new folder, said, so nothing is lost
    after the trials trained. The same study's figures are rewritten (a rerun resumes)."""
    if out and not overwrite:
        folder = Path(out)
        marker = folder / "tune.json"
        try:
            owner = json.loads(marker.read_text()).get("study") if marker.is_file() else None
        except (OSError, ValueError, AttributeError):
            owner = None
        taken = [f for f in _FIGURES if (folder / f).exists()]
        if taken and owner != study:
            fresh = out_dir(None, "tune")
            whose = (f"the figures of study {owner!r}" if owner else
                     f"files named {', '.join(taken)}")
            console.print(f"--out {out} holds {whose}; this study's go to {fresh} instead "
                          "(--overwrite replaces them).", markup=False)
            return fresh
    return out_dir(out, "tune", overwrite=overwrite)


def _trial_line(t: Any, metric: str) -> str:
    params = " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    value = "" if t.value is None else f"{metric} {t.value:.4f}"
    if t.state == "PRUNED":
        what = (f"pruned after {t.epochs_run}/{t.epochs_planned} epochs "
                f"({t.updates} of {t.full_updates} updates)")
    elif t.state == "COMPLETE":
        what = f"complete: {t.epochs_run} epochs ({t.updates} updates)"
    else:
        what = f"{(t.status or 'failed')}"
    return f"trial {t.number:>3} {what:<48} {value:<22} {params}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _print_result(result: Any, path: Any) -> None:
    b = result.budget
    console.print(f"pruning compared trials at equal [bold]{b.by}[/] ({b.reason}); first rung "
                  f"at {b.min_resource} {b.by}, longest trial {b.max_resource} {b.by}")
    print_table(trials_table(result))
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts().items()))
    console.print(f"study [cyan]{escape(result.study)}[/]: {len(result.trials)} trials ({counts}); "
                  f"{result.resumed} were already done; {result.seconds:.1f}s")
    if result.best is None:
        console.print(f"[red]No trial completed with a finite {escape(result.metric)}.[/]")
    else:
        console.print(f"[bold]Best parameters[/]: {escape(str(result.best_params))}  (trial "
                      f"{result.best.number}, run {result.best.run_id}; {escape(result.metric)} "
                      f"{result.best_value:.4f})")
    r = result.update_ratio
    if math.isfinite(r):
        console.print(f"training: {result.total_updates} updates made, of {result.full_updates} "
                      f"for the same trials at full length: ratio {r:.3f} (pruning saved {1 - r:.0%})")
    if result.storage.startswith("sqlite:///"):
        console.print(f"optuna storage: {result.storage}  (optuna-dashboard {result.storage})",
                      markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(f"optuna storage: {result.storage}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"runs: epochlab runs --study {result.study} --store {path}", markup=False,
                  highlight=False)


def trials_table(result: Any) -> Table:
    """One row per trial: settings, state, metric, epochs and updates run vs planned."""
    names = list(dict.fromkeys(k for t in result.trials for k in t.params))
    table = Table(show_edge=False, pad_edge=False)
    for n in ["trial", "run", *names, "state", result.metric, "epochs run", "updates run/full"]:
        table.add_column(n, justify="right")
    for t in result.trials:
        mark = " *" if result.best is not None and t.number == result.best.number else ""
        table.add_row(
            f"{t.number}{mark}", "" if t.run_id is None else str(t.run_id),
            *(_fmt(t.params.get(n, "")) for n in names), t.state.lower(),
            "" if t.value is None else f"{t.value:.4f}",
            f"{t.epochs_run}/{t.epochs_planned}", f"{t.updates}/{t.full_updates}",
        )
    return table
