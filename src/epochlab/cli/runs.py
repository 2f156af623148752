"""``epochlab runs``: list stored runs, show one, list studies; as tables or JSON.

Reads the store only: a missing store file is an error, never an empty
database created behind the user's back. The store is ``--store``, else
``$EPOCHLAB_STORE``, else ``./epochlab.db``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

import click
from rich.table import Table

from epochlab.cli.output import console, escape, print_table
from epochlab.store import STATUSES, RunRecord, SQLiteStore, open_store
from epochlab.store.record import summary_runtime
from epochlab.train.history import describe_runtime
from epochlab.validation import ParameterError

# Settings shown first when runs have them; others appear when they vary between runs.
_PREFERRED = ("data", "model", "optimizer", "schedule", "epochs", "batch_size", "lr",
              "weight_decay", "seed")
_MAX_SETTINGS = 9
_ACCOUNTING = ("n_train", "n_val", "batch_size", "iterations_per_epoch", "epochs_planned",
               "epochs_run", "total_updates", "samples_seen", "stop_reason", "seconds")

_store_option = click.option(
    "--store", "store_path", default=None, metavar="PATH",
    help="The store file [default: $EPOCHLAB_STORE or ./epochlab.db].")
_json_option = click.option("--json", "as_json", is_flag=True,
                            help="Print JSON (NaN and infinities as null).")


@click.group("runs", invoke_without_command=True)
@_store_option
@click.option("--study", default=None, help="Only runs of this study.")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), default=None,
              help="Only runs in this status.")
@_json_option
@click.pass_context
def runs_command(ctx: click.Context, store_path: str | None, study: str | None,
                 status: str | None, as_json: bool) -> None:
    """List stored runs: settings, final validation metrics, updates, seconds.

    Example: epochlab runs --study lr-sweep --status completed
    """
    ctx.ensure_object(dict)
    ctx.obj["store_path"] = store_path
    if ctx.invoked_subcommand is not None:
        if study is not None or status is not None:  # they filter the list, not a subcommand
            raise click.UsageError(
                f"--study and --status filter the list of runs; they have no effect on "
                f"`runs {ctx.invoked_subcommand}`. Drop them, or run `epochlab runs --study "
                "NAME` for a study's runs.")
        return
    with _open(store_path) as store:
        if study is not None and store.study(study) is None:
            names = ", ".join(s["name"] for s in store.studies()) or "none"
            raise click.BadParameter(f"There is no study {study!r} in {store.path} "
                                     f"(studies: {names}).", param_hint="--study")
        records = store.runs(study, status.lower() if status else None)
    if as_json:
        _echo_json([dataclasses.asdict(r) for r in records])
        return
    if not records:
        console.print("No runs match." if study or status else "No runs stored yet.")
        return
    _print_table(_runs_table(records))


@runs_command.command("show")
@click.argument("run_id", type=int)
@_store_option
@_json_option
@click.option("--iterations", "with_iterations", is_flag=True,
              help="With --json: include the per-iteration columns.")
@click.pass_context
def show_command(ctx: click.Context, run_id: int, store_path: str | None, as_json: bool,
                 with_iterations: bool) -> None:
    """One run: settings, summary, accounting and its per-epoch table.

    Example: epochlab runs show 3
    """
    with _open(store_path or ctx.obj.get("store_path")) as store:
        try:
            record = store.run(run_id)
        except KeyError as e:
            raise ParameterError(f"{e.args[0]} See `epochlab runs` for the run ids.") from None
        epochs = store.epochs(run_id)
        iterations = store.iterations(run_id)
    n_iter = len(next(iter(iterations.values()), []))
    if as_json:
        out: dict[str, Any] = {"run": dataclasses.asdict(record), "epochs": epochs,
                               "n_iterations": n_iter}
        if with_iterations:
            out["iterations"] = iterations
        _echo_json(out)
        return
    s = record.summary
    console.print(f"[bold]run {record.id}[/] · study [cyan]{escape(record.study)}[/] · "
                  f"[bold]{record.status}[/]"
                  + (f" · read off run {record.shared_from}" if record.shared_from else "")
                  + (f" · group {escape(record.group)}" if record.group else ""))
    # What runs recorded is shown as it is: no markup in a setting or a message.
    console.print("settings: " + _pairs(record.settings), markup=False)
    accounting = {k: s[k] for k in _ACCOUNTING if k in s}
    if isinstance(accounting.get("seconds"), float):
        accounting["seconds"] = round(accounting["seconds"], 2)
    if accounting:
        console.print("accounting: " + _pairs(accounting), markup=False)
    runtime = summary_runtime(s)
    if isinstance(runtime, dict) and runtime:
        threads = runtime.get("threads")
        if isinstance(threads, int) and not isinstance(threads, bool) and all(
                k in runtime for k in ("threads_reason", "precision", "precision_reason")):
            console.print(f"runtime: {describe_runtime(runtime)}", markup=False)
        else:  # a record from another version: shown as it is
            console.print("runtime: " + _pairs(runtime), markup=False)
    for name in ("final", "best"):
        if s.get(name):
            row = dict(s[name])
            if isinstance(row.get("epoch"), int):  # stored 0-based; every table counts from 1
                row["epoch"] += 1
            console.print(f"{name}: " + _pairs(row), markup=False)
    if s.get("stop_message"):
        console.print(s["stop_message"], markup=False)
    if s.get("versions"):
        console.print("versions: " + _pairs(s["versions"]), markup=False)
    console.print(f"iterations stored: {n_iter}")
    if epochs:
        _print_table(_epoch_table(epochs, s.get("weights_epoch")))


@runs_command.command("studies")
@_store_option
@_json_option
@click.pass_context
def studies_command(ctx: click.Context, store_path: str | None, as_json: bool) -> None:
    """List studies with their run counts per status.

    Example: epochlab runs studies
    """
    with _open(store_path or ctx.obj.get("store_path")) as store:
        studies = store.studies()
    if as_json:
        _echo_json(studies)
        return
    if not studies:
        console.print("No studies stored yet.")
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("id", "study", "created", "runs", "by status"):
        table.add_column(col, justify="right" if col in ("id", "runs") else "left")
    for st in studies:
        table.add_row(str(st["id"]), st["name"], _when(st["created_at"]),
                      str(sum(st["runs"].values())), _pairs(st["runs"]))
    _print_table(table)


def _print_table(table: Table) -> None:
    # A terminal shrinks a wide table to fit; a pipe or file gets every cell in full.
    print_table(table, full_width=not console.is_terminal)


def _open(store_path: str | None) -> SQLiteStore:
    return open_store(store_path, create=False)


def _runs_table(records: list[RunRecord]) -> Table:
    keys = [k for k in _PREFERRED if any(k in r.settings for r in records)]
    for r in records:
        for k, v in r.settings.items():
            varies = any(o.settings.get(k) != v for o in records)
            if k not in keys and varies and not isinstance(v, (dict, list)):
                keys.append(k)
    keys = keys[:_MAX_SETTINGS]
    finals = [r.summary.get("final", {}) for r in records]
    metrics = [m for m in ("val_loss", "val_accuracy") if any(m in f for f in finals)]
    metrics = metrics or [m for m in ("loss",) if any(m in f for f in finals)]
    table = Table(show_edge=False, pad_edge=False)
    several_studies = len({r.study_id for r in records}) > 1
    table.add_column("id", justify="right")
    if several_studies:
        table.add_column("study")
    table.add_column("status")
    for k in keys:
        table.add_column(k, justify="right")
    for m in metrics:
        table.add_column(m, justify="right")
    for col in ("updates", "seconds", "from"):
        table.add_column(col, justify="right")
    for r, final in zip(records, finals, strict=True):
        cells = [str(r.id), *([r.study] if several_studies else []), r.status]
        cells += [_fmt(r.settings.get(k, "")) for k in keys]
        cells += [_fmt(final.get(m, ""), metric=True) for m in metrics]
        seconds = r.summary.get("seconds")
        cells += [_fmt(r.summary.get("total_updates", "")),
                  f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "",
                  str(r.shared_from) if r.shared_from is not None else ""]
        table.add_row(*cells)
    return table


def _epoch_table(epochs: list[dict[str, Any]], weights_epoch: int | None) -> Table:
    cols: list[str] = []
    for row in epochs:
        cols += [k for k in row if k not in cols and k != "epoch"]
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("epoch", justify="right")
    for c in cols:
        table.add_column(c, justify="right")
    for i, row in enumerate(epochs):
        e = int(row.get("epoch", i))
        mark = "*" if weights_epoch == e and e < len(epochs) - 1 else ""
        cells = [f"{e + 1}{mark}"]  # 1-based, as every message
        for c in cols:
            v = row.get(c, "")
            cells.append(f"{v:.3g}" if c == "lr" and isinstance(v, float)
                         else f"{v:.2f}s" if c == "time" and isinstance(v, float)
                         else _fmt(v, metric=True))
        table.add_row(*cells)
    if weights_epoch is not None and weights_epoch < len(epochs) - 1:
        table.caption = f"* the model holds epoch {weights_epoch + 1}'s weights"
    return table


def _fmt(v: Any, metric: bool = False) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4f}" if metric else f"{v:g}"
    return str(v)


def _pairs(d: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_fmt(v)}" for k, v in d.items())


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _echo_json(value: Any) -> None:
    # Strict JSON (no NaN tokens), so jq and every other parser can read it.
    click.echo(json.dumps(_finite(value), indent=2, allow_nan=False))
