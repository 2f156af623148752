"""Pieces the CLI commands share: loading data and models by name, output folders, tables."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import click
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from epochlab.data.base import DataBundle
from epochlab.train.history import History
from epochlab.validation import check_out_dir

# Piped or captured output (CI logs, files) gets 120 columns rather than
# rich's 80, so the result tables are not squeezed into ellipses.
_probe = Console()
console = Console(highlight=False, width=None if _probe.is_terminal else max(_probe.width, 120))
err_console = Console(stderr=True, highlight=False)


class ThreadsType(click.ParamType):
    """``auto`` or a positive int, for ``--threads``."""

    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int) or value == "auto":
            if isinstance(value, int) and value < 1:
                self.fail(f"{value!r} is not 'auto' or an int >= 1.", param, ctx)
            return value
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is not 'auto' or an int >= 1.", param, ctx)
        if n < 1:
            self.fail(f"{value!r} is not 'auto' or an int >= 1.", param, ctx)
        return n


def runtime_options(f: Any) -> Any:
    """``--threads`` and ``--precision``, shared by the training commands."""
    f = click.option(
        "--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
        help="bf16: bfloat16 mixed precision (autocast; loss, metrics and optimizer state stay "
             "float32). auto: bf16 where the CPU/GPU has it natively and the model has "
             "convolutions, recurrent or large linear layers; else fp32.")(f)
    f = click.option(
        "--threads", type=ThreadsType(), default="auto", show_default=True,
        help="torch intra-op threads for training. auto: one for small models, more where the "
             "work pays and cores are idle (never more than OMP_NUM_THREADS).")(f)
    return f


def load_data(name: str) -> DataBundle:
    """A dataset by name, with CLI-style errors."""
    from epochlab.data import load

    try:
        return load(name)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--data") from None


def build_model(name: str, data: DataBundle, seed: int, **kwargs: Any) -> torch.nn.Module:
    """Seed torch, then build ``name`` sized for ``data`` (same seed, same initial weights)."""
    from epochlab.models.registry import build

    torch.manual_seed(seed)
    try:
        return build(name, data, **kwargs)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--model") from None


def out_dir(path: str | None, prefix: str, *, overwrite: bool = False) -> Path:
    """The output folder, created: ``--out`` (checked), or a new ``runs/<prefix>-<time>-<suffix>``.

    The default folder is claimed with an exclusive ``mkdir``, so two runs
    started in the same second never share one. An explicit ``--out`` that
    already holds a run is refused unless ``overwrite``.
    """
    if path:
        p = check_out_dir(path, overwrite=overwrite)
        p.mkdir(parents=True, exist_ok=True)
        return p
    root = Path("runs")
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        p = root / f"{prefix}-{stamp}-{secrets.token_hex(3)}"
        try:
            p.mkdir()
        except FileExistsError:  # another run took this name: draw again
            continue
        return p


def warn(message: str) -> None:
    """One warning line on stderr (yellow on a terminal): the command goes on."""
    err_console.print(f"[yellow]Warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def n_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total - trainable


def epoch_table(history: History) -> Table:
    """One row per epoch (1-based): losses, metrics, lr, updates so far, seconds."""
    cols = [k for k in history.history if k not in ("samples_seen",)]
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("epoch", justify="right")
    for c in cols:
        table.add_column(c, justify="right")
    for row in history.epochs:
        cells = [str(int(row["epoch"]) + 1)]
        for c in cols:
            v = row.get(c, float("nan"))
            if c == "updates":
                cells.append(str(int(v)))
            elif c == "lr":
                cells.append(f"{v:.3g}")
            elif c == "time":
                cells.append(f"{v:.2f}s")
            else:
                cells.append(f"{v:.4f}")
        if history.weights_epoch == row["epoch"] and history.weights_epoch < len(history.epochs) - 1:
            cells[0] += "*"
        table.add_row(*cells)
    return table
