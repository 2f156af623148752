"""``epochlab sweep``: train a grid of settings, sharing epoch prefixes, and name the best.

Prints the plan (configurations, training runs, what is read off what, which
runs train fused together and why the others do not),
progress for the whole sweep, a results table and the best parameters. Runs
go to the store (``--store``, default ``$EPOCHLAB_STORE`` or
``./epochlab.db``) under the study ``--study``; the same command run again
after Ctrl-C or a kill trains only what is not done yet.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from epochlab.cli.common import (
    DATA_HELP,
    MODEL_HELP,
    TARGET_HELP,
    call_factory,
    is_data_file,
    load_data,
    model_factory,
    runtime_line,
    runtime_options,
)
from epochlab.cli.output import console, escape, print_table, warn
from epochlab.store import open_store
from epochlab.sweeps.executors import check_executor
from epochlab.sweeps.ranking import EpochsReadOnce, best_run, metric_values
from epochlab.validation import ParameterError

if TYPE_CHECKING:  # these load torch: the functions import them when a sweep runs, so that
    # `epochlab sweep --help` and a mistyped option answer in a tenth of a second
    from epochlab.sweeps.spec import SweepSpec
    from epochlab.sweeps.workload import Sources


def _given(ctx: click.Context, **values: Any) -> dict[str, Any]:
    """Only the options the user typed (so a --spec file's values are not overridden)."""
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":
            out[name] = value
    return out


@click.command("sweep")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False), default=None,
              help="A TOML file with the settings (options given here override it).")
@click.option("--data", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--target", default=None, metavar="COLUMN", help=TARGET_HELP)
@click.option("--model", default="mlp", show_default=True, help=MODEL_HELP)
@click.option("--epochs", default="10", show_default=True, help="Epoch counts, e.g. 5,10,15.")
@click.option("--batch-size", "batch_size", default="32", show_default=True,
              help="Batch sizes, e.g. 32,64,128.")
@click.option("--lr", default="1e-3", show_default=True, help="Learning rates, e.g. 1e-3,1e-2.")
@click.option("--batch-norm", "batch_norm", default="off", show_default=True,
              help="on, off or on,off (mlp only).")
@click.option("--seed", default="0", show_default=True, help="Seeds, e.g. 0,1,2.")
@click.option("--optimizer", default="adam", show_default=True,
              help="Optimizers: adam, adamw, sgd, rmsprop (comma-separated).")
@click.option("--weight-decay", "weight_decay", default="0", show_default=True,
              help="Weight decays, e.g. 0,1e-4.")
@click.option("--schedule", multiple=True,
              help="A learning-rate schedule ('step:factor=0.5,every_epochs=5'); repeat to sweep.")
@click.option("--early-stopping", "early_stopping", default=None,
              help="e.g. 'val_loss:patience=5,restore=true' (turns prefix sharing off).")
@click.option("--validation-split", "validation_split", type=float, default=0.2, show_default=True)
@click.option("--metric", default=None,
              help="The epoch metric that picks the best configuration [default: "
                   "val_accuracy; val_loss for regression targets; without a validation "
                   "split, accuracy or loss].")
@click.option("--mode", type=click.Choice(["max", "min"]), default=None,
              help="Which way --metric is better [default: from its name: min for loss/error/"
                   "mse/mae, max for accuracy/auc/f1/precision/recall; others need --mode].")
@click.option("--select", type=click.Choice(["final", "best"]), default="final", show_default=True,
              help="Rank by the metric at the weights each run ends with (final), or by its "
                   "best epoch (slide 13's max over epochs).")
@click.option("--study", "name", default=None,
              help="Study name [default: made from the settings, so a rerun resumes].")
@click.option("--store", "store_path", default=None, help="SQLite file [default: $EPOCHLAB_STORE or ./epochlab.db].")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="0: train in this process; N: N worker processes (with --executor ray: "
                   "the CPUs of a local Ray).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: every task a Ray task, locally or on --ray-address; the data goes "
                   "through Ray's object store once and only this process writes the store.")
@click.option("--ray-address", "ray_address", default=None,
              help="A running Ray cluster (auto, HOST:6379 or ray://HOST:10001) "
                   "[default: start a local Ray].")
@click.option("--no-share-prefixes", "no_share", is_flag=True,
              help="Train every epoch count separately (for comparisons).")
@click.option("--fuse/--no-fuse", "fuse", default=True, show_default=True,
              help="Train runs that differ only in lr, seed, weight decay or schedule together "
                   "as one vectorized model (any nn.Sequential of Linear, LayerNorm, Dropout, "
                   "Flatten and elementwise activations).")
@click.option("--no-progress", "no_progress", is_flag=True, help="No progress bar.")
@runtime_options
@click.pass_context
def sweep_command(ctx: click.Context, spec_file, data, target, model, epochs, batch_size, lr, batch_norm,
                  seed, optimizer, weight_decay, schedule, early_stopping, validation_split,
                  metric, mode, select, name, store_path, workers, executor, ray_address,
                  no_share, fuse, no_progress, threads, precision) -> None:
    """Train every combination of the given settings and report the best.

    Configurations that differ only in --epochs train once, to the largest
    count, and are read out at the others (exact; not with cosine/one-cycle
    schedules or early stopping). Runs that differ only in learning rate,
    seed, weight decay or schedule train together, fused, where the model
    allows (--no-fuse trains them one by one); the plan says which.

    Example: epochlab sweep --data digits --model cnn_small --epochs 5,10,15
    --batch-size 32,64,128

    Your own data and model: epochlab sweep --data train.csv --target label
    --model mymodels:make_model --lr 1e-3,1e-2 --seed 0,1 (each run is
    torch.manual_seed(seed); make_model() trained with fit; the run keys hold
    fingerprints of the file's contents and of the model).
    """
    from epochlab.sweeps.driver import preflight, sweep
    from epochlab.sweeps.plan import make_plan
    from epochlab.sweeps.spec import SweepSpec, parse_cli_lists
    from epochlab.train.runtime import start_idle_window

    start_idle_window()  # the thread choice's reading runs while the command sets up
    sources, user = _user_inputs(data, target, model, batch_norm)
    if user:
        data, model = user.pop("data"), user.pop("model")
    texts = dict(data=data, model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                 batch_norm=batch_norm, seed=seed, optimizer=optimizer,
                 weight_decay=weight_decay, schedule=schedule, early_stopping=early_stopping,
                 validation_split=validation_split, metric=metric, mode=mode, name=name)
    if spec_file:
        overrides = parse_cli_lists(_given(ctx, **texts))
        if user:
            overrides.update(data=data, model=model, **user)
        spec = SweepSpec.from_toml(spec_file, **overrides)
    else:
        texts["schedule"] = list(schedule) or [None]
        spec = SweepSpec.from_cli(**texts, **user)
    if ctx.get_parameter_source("lr").name != "DEFAULT":
        _check_one_lr(spec, lr)
    # Bad data, model, metric or executor: refused before the store file exists.
    check_executor(workers, executor, ray_address)
    spec = preflight(spec, sources)
    store = open_store(store_path)
    try:
        console.print(f"[bold]epochlab sweep[/]: study [cyan]{escape(spec.study_name())}[/] in "
                      f"{escape(str(store.path))}")
        plan = make_plan(spec.configs(), share_prefixes=not no_share, fuse=fuse,
                         sources=sources, precision=precision)
        console.print(plan.describe(), markup=False, highlight=False)
        console.print(_runtime_line(spec, threads, precision, workers, sources,
                                    fused=any(t.fused for t in plan.tasks)), markup=False,
                      highlight=False)
        try:
            result = sweep(spec, store, sources=sources, workers=workers,
                           progress=not no_progress, share_prefixes=not no_share, fuse=fuse,
                           select=select, console=console, threads=threads,
                           precision=precision, executor=executor, ray_address=ray_address)
        except KeyboardInterrupt:
            console.print("[yellow]Interrupted.[/] Finished runs are stored, runs in flight "
                          "as interrupted; run the same command again to train the rest.")
            raise
        _report(result, store, select)
    finally:
        store.close()


def _check_one_lr(spec: SweepSpec, lr_text: str) -> None:
    """--lr given with a schedule that sets its own initial rate: which one trains?"""
    from epochlab import schedules

    for text in spec.schedule:
        own = None if text is None else schedules.parse(text).initial_lr
        if own is not None:
            raise ParameterError(
                f"Both --lr ({lr_text}) and the schedule's own initial learning rate "
                f"({text!r}) were given; give one of them: drop --lr, or drop the initial "
                "rate from --schedule to sweep --lr."
            )


def _report(result: Any, store: Any, select: str) -> None:
    store = EpochsReadOnce(store, result.recorded)
    read_off = sum(1 for r in result.runs if r.shared_from is not None and r.id in result.recorded)
    console.print(f"trained {result.trained} run(s) in {result.seconds:.1f}s"
                  + (f" ({read_off} more read off their epochs)" if read_off else "")
                  + f"; {result.skipped} already done; runs: " +
                  ", ".join(f"{n} {s}" for s, n in sorted(result.statuses().items())))
    from epochlab.diagnose.advice import best_configuration_over_seeds

    config = best_configuration_over_seeds(store, result.runs, result.spec.metric,
                                           result.spec.mode, select)
    print_table(results_table(result, store,
                              marked={r.id for r in config["runs"]} if config else None))
    _print_best(result, store, select, config)
    _print_advice(result, store, select)
    _failures(result)


def _failures(result: Any) -> None:
    """Say why runs failed; a sweep in which no run finished is a failure (exit 1)."""
    failed = [r for r in result.runs if r.status == "failed"]
    if not failed:
        return
    reasons: dict[str, list[int]] = {}
    for r in failed:
        reasons.setdefault(str(r.summary.get("error", "no message")), []).append(r.id)
    if len(failed) == len(result.runs):
        reason, ids = next(iter(reasons.items()))
        raise click.ClickException(
            f"All {len(failed)} runs failed: {reason} (runs {_ids(ids)}; "
            f"`epochlab runs show {ids[0]} --json` has the traceback). Fix the cause and run "
            "the same command again: failed runs are retried."
        )
    for reason, ids in reasons.items():
        warn(f"{len(ids)} run(s) failed ({_ids(ids)}): {reason}")


def _ids(ids: list[int]) -> str:
    return ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")


def _user_inputs(data: str, target: str | None, model: str,
                 batch_norm: str) -> tuple[Sources, dict[str, Any]]:
    """A data file or a ``module:function`` model as a spec names them: labels and fingerprints
    (``{}`` for registry names alone) and the :class:`Sources` workers load them from."""
    from epochlab.sweeps.workload import NO_SOURCES, user_inputs

    factory = model_factory(model)
    if not is_data_file(data) and factory is None:
        if target is not None:
            load_data(data, target)  # raises: --target is for a CSV file
        return NO_SOURCES, {}
    if factory is not None:
        call_factory(model, factory)  # says what is wrong with it before anything starts
        if batch_norm.strip().lower() not in ("off", "false", "no", "0"):
            raise click.BadParameter("--batch-norm applies to the registry mlp, not to "
                                     f"{model}.", param_hint="--batch-norm")
    bundle = load_data(data, target) if is_data_file(data) else data
    try:
        user = user_inputs(factory or model, bundle)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    return user.sources, {"data": user.data, "model": model if factory else user.model,
                          "data_fingerprint": user.data_fingerprint,
                          "model_fingerprint": user.model_fingerprint}


def _runtime_line(spec: SweepSpec, threads: Any, precision: str, workers: int,
                  sources: Sources | None = None, fused: bool = False) -> str:
    """The header's runtime line: the precision the model gets here, and the threads policy."""
    from epochlab.sweeps.workload import NO_SOURCES, build_model
    from epochlab.sweeps.workload import load_data as load_config_data
    from epochlab.train.runtime import FUSED_FP32_MAX_MACS

    sources = NO_SOURCES if sources is None else sources
    config = spec.configs()[0]
    try:
        model = build_model(config, load_config_data(config, sources), sources)
    except (ValueError, TypeError):  # the sweep's own checks say what is wrong, next
        model = None
    line, prec = runtime_line(model, threads, precision, "task", workers)
    if fused and prec == "bf16":  # the plan fused them: small enough to win in float32
        line += (f"; fused tasks (members of at most {FUSED_FP32_MAX_MACS // 10**6} M "
                 "multiply-adds a step) train together in float32")
    return line


def results_table(result: Any, store: Any, marked: set[int] | None = None) -> Table:
    """One row per configuration: swept settings, status, metric (final / best), test, updates;
    ``*`` on the ``marked`` runs (default: the best run)."""
    if marked is None:
        marked = {result.best.id} if result.best is not None else set()
    spec = result.spec
    swept = spec.swept() or ["epochs"]
    table = Table(show_edge=False, pad_edge=False,
                  title=f"{spec.metric}: final = at the weights kept; best = best epoch (n)")
    # Test accuracy; the test loss where the runs have no accuracy (regression).
    tests = [r.summary.get("test", {}) for r in result.runs]
    test_key = "accuracy" if any("accuracy" in t for t in tests) else "loss"
    test_head = "test acc" if test_key == "accuracy" else "test loss"
    has_test = any(tests)  # data without a test split: no column of blanks
    for n in ["run", *swept, "status", "final", "best (n)", *([test_head] if has_test else []),
              "updates", "from"]:
        table.add_column(n, justify="right")
    for r in result.runs:
        v = metric_values(store.epochs(r.id), spec.metric, spec.mode, r.summary.get("weights_epoch"))
        best = "" if math.isnan(v["best"]) else f"{v['best']:.4f} ({v['best_epoch']})"
        test = r.summary.get("test", {}).get(test_key)
        mark = " *" if r.id in marked else ""
        table.add_row(
            f"{r.id}{mark}", *(_cell(r.settings[n]) for n in swept), r.status,
            "" if math.isnan(v["final"]) else f"{v['final']:.4f}", best,
            *([("" if test is None else f"{test:.4f}")] if has_test else []),
            str(r.summary.get("total_updates", "")),
            "" if r.shared_from is None else f"run {r.shared_from}",
        )
    return table


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _print_advice(result: Any, store: Any, select: str) -> None:
    """The best value of each swept setting, with every value's score (and seed spread)."""
    from epochlab.diagnose.advice import advise_runs, format_advice, runs_from_store

    spec = result.spec
    advice = advise_runs(runs_from_store(store, result.runs), metric=spec.metric, mode=spec.mode,
                         select=select)
    if advice:
        console.print("[bold]Advice[/]")
        console.print(format_advice(advice), markup=False, highlight=False)


def _print_best_configuration(result: Any, config: dict[str, Any], how: str) -> None:
    spec = result.spec
    names = [n for n in spec.swept() if n != "seed"] or ["epochs", "batch_size"]
    params = {n: config["settings"][n] for n in names if n in config["settings"]}
    top = config["runs"][0]
    spread = f", sd {config['std']:.4f}" if config["std"] is not None else ""
    console.print(f"[bold]Best parameters[/]: {escape(str(params))}  ({escape(spec.metric)} "
                  f"{config['mean']:.4f}, mean of {config['seeds']} seeds{spread}, {how}; "
                  f"ties -> fewer updates; its best seed: run {top.id}, seed "
                  f"{top.settings.get('seed')})")


def _print_best(result: Any, store: Any, select: str, config: dict[str, Any] | None = None,
                ) -> None:
    spec, best = result.spec, result.best
    if best is None:
        statuses = result.statuses()
        if statuses and set(statuses) == {"diverged"}:
            console.print("[red]Every run diverged[/] (a non-finite loss): try smaller "
                          "learning rates than the ones swept.")
        else:
            console.print(f"[red]No finished run has a finite {escape(spec.metric)}.[/]")
        return
    how = "at the weights each run ends with" if select == "final" else "best epoch of each run"
    if config is not None:
        _print_best_configuration(result, config, how)
        return
    v = metric_values(store.epochs(best.id), spec.metric, spec.mode, best.summary.get("weights_epoch"))
    params = {n: best.settings[n] for n in (spec.swept() or ["epochs", "batch_size"])}
    console.print(f"[bold]Best parameters[/]: {escape(str(params))}  (run {best.id}; {escape(spec.metric)} "
                  f"{v[select]:.4f}, {how}; ties -> fewer updates)")
    other = "best" if select == "final" else "final"
    alt = best_run(store, result.runs, spec.metric, spec.mode, other)
    if alt is not None and alt.id != best.id:
        alt_params = {n: alt.settings[n] for n in params}
        console.print(f"  ranking by {'max over epochs (slide 13)' if other == 'best' else 'final'}"
                      f" would pick {alt_params} (run {alt.id})", markup=False)
