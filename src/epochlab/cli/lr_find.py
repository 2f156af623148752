"""``epochlab lr-find``: the learning-rate range test over several seeds, and its suggestion."""

from __future__ import annotations

import json
import os

import click
from rich.table import Table

from epochlab.cli.common import (
    DATA_HELP,
    MODEL_HELP,
    TARGET_HELP,
    claimed,
    load_data,
    model_factory,
    n_params,
    probe_model,
    runtime_options,
)
from epochlab.cli.output import console, escape, print_table
from epochlab.diagnose.lr_rules import RULES  # light: the rest loads when the command runs


@click.command("lr-find")
@click.option("--data", "data_name", default="synthetic", show_default=True, help=DATA_HELP)
@click.option("--target", default=None, metavar="COLUMN", help=TARGET_HELP)
@click.option("--model", "model_name", default="mlp", show_default=True, help=MODEL_HELP)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--optimizer", default="adam", show_default=True,
              type=click.Choice(["adam", "adamw", "sgd", "rmsprop"]))
@click.option("--momentum", type=float, default=0.0, show_default=True, help="sgd / rmsprop.")
@click.option("--start-lr", type=float, default=1e-7, show_default=True)
@click.option("--end-lr", type=float, default=10.0, show_default=True)
@click.option("--num-iter", type=click.IntRange(10), default=200, show_default=True,
              help="Updates in the ramp (one learning rate each).")
@click.option("--seeds", type=click.IntRange(1), default=5, show_default=True,
              help="Seeds 0..N-1: each its own initial weights and batch order.")
@click.option("--rule", type=click.Choice(list(RULES)), default="steepest", show_default=True,
              help="The rule the suggestion line uses (all are printed).")
@click.option("--validation-split", type=float, default=0.2, show_default=True,
              help="Rows held out as `epochlab fit` would, so the test trains on the same rows.")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="Train the seeds together as one vectorized model where the model allows.")
@click.option("--out", "out", default=None, help="Output folder [default: runs/lr-find-<time>].")
@click.option("--overwrite", is_flag=True,
              help="Let --out be a folder that already holds this command's files (they are "
                   "replaced).")
@runtime_options
def lr_find_command(data_name, target, model_name, batch_size, optimizer, momentum, start_lr, end_lr,
                    num_iter, seeds, rule, validation_split, fuse, out, overwrite, threads,
                    precision) -> None:
    """Raise the learning rate exponentially on copies of the model and suggest one.

    Prints every rule's suggestion with its spread over seeds, then
    "suggested learning rate: ...". Writes lr_find.png (the seeds' curves,
    their band and the rules' marks) and lr_find.json (curves and numbers).

    Example: epochlab lr-find --data digits --model cnn_small --seeds 3
    """
    data = load_data(data_name, target)
    probe = probe_model(model_name, data)  # a model that cannot take the data: refused here
    # An earlier range test's lr_find.json is not replaced unless asked: it is stored nowhere else.
    with claimed(out, "lr-find", overwrite=overwrite, marker="lr_find.json") as folder:
        _range_test(data, data_name, model_name, probe, folder, batch_size, start_lr, end_lr,
                    num_iter, seeds, optimizer, momentum, validation_split, rule, fuse,
                    threads, precision)


def _range_test(data, data_name, model_name, probe, folder, batch_size, start_lr, end_lr,
                num_iter, seeds, optimizer, momentum, validation_split, rule, fuse,
                threads="auto", precision="auto") -> None:
    from epochlab.diagnose.lr_find import lr_find
    from epochlab.models.registry import build

    trainable, _ = n_params(probe)
    console.print(
        f"[bold]epochlab lr-find[/]: data [cyan]{escape(data.name)}[/] ({len(data.x_train)} train "
        f"rows, {data.task}) · model [cyan]{escape(model_name)}[/] ({trainable:,} trainable parameters) · "
        f"{optimizer}, batch {batch_size}, {num_iter} updates from {start_lr:g} to {end_lr:g}, "
        f"{seeds} seeds"
    )
    # lr_find seeds torch before each call, so every seed gets its own initial weights.
    factory = model_factory(model_name) or (lambda: build(model_name, data))
    res = lr_find(factory, data, batch_size=batch_size,
                  start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, seeds=seeds,
                  optimizer=optimizer, momentum=momentum, validation_split=validation_split,
                  rule=rule, fuse=fuse, verbose=1, threads=threads, precision=precision)
    kept = (f"curves kept in full ({num_iter} updates)" if min(res.kept) == num_iter else
            f"curves kept {min(res.kept)}-{max(res.kept)} of {num_iter} updates (stopped "
            "where the loss diverged)")
    console.print(f"trained {res.how} in {res.seconds:.1f}s (load {os.getloadavg()[0]:.1f}); "
                  f"{kept}")
    print_table(rules_table(res))
    console.print(f"[bold]{escape(res.line())}[/]")
    res.plot(folder / "lr_find.png")
    (folder / "lr_find.json").write_text(json.dumps(res.to_dict()))
    console.print(f"wrote {folder / 'lr_find.png'}, {folder / 'lr_find.json'}", markup=False)


def rules_table(res) -> Table:
    """One row per rule: the median over seeds, the seeds' range and spread, how it reads."""
    table = Table(show_edge=False, pad_edge=False)
    for c in ("rule", "suggestion", "lowest seed", "highest seed", "spread", "reads the curve at"):
        table.add_column(c, justify="left" if c in ("rule", "reads the curve at") else "right")
    for row in res.table():
        found = row["seeds"] > 0
        table.add_row(
            row["rule"] + (" *" if row["chosen"] else ""),
            f"{row['suggestion']:.1e}" if found else "none",
            f"{row['low']:.1e}" if found else "", f"{row['high']:.1e}" if found else "",
            f"{row['spread_decades']:.2f} dec" if found else "", row["how"])
    return table
