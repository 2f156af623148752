"""Pieces the CLI commands share: loading data and models by name, output folders, tables."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from epochlab.data.base import DataBundle
from epochlab.train.history import History
from epochlab.validation import MAX_THREADS, check_out_dir

if TYPE_CHECKING:  # torch loads when a command runs, not for its --help or a bad option
    import torch


class ThreadsType(click.ParamType):
    """``auto`` or a positive int, for ``--threads``."""

    name = "auto|N"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if value == "auto":
            return value
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_THREADS:
            self.fail(f"{value!r} is not 'auto' or an int from 1 to {MAX_THREADS}.", param, ctx)
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


def runtime_line(model: torch.nn.Module | None, threads: Any, precision: str, unit: str,
                 workers: int = 0) -> tuple[str, str]:
    """A header's ``runtime: ...`` line for a command that trains many runs (each ``unit``:
    a sweep's task, a tune's trial), and the precision ``model`` gets here (``precision``
    when there is no model to ask)."""
    from epochlab.train.history import precision_name, threads_text
    from epochlab.train.runtime import choose_precision

    if model is None:
        prec, why = precision, "the model could not be built"
    else:
        prec, why, _ = choose_precision(model, precision)
    if threads != "auto":
        per = " in each worker process" if workers else ""
        t = f"{threads_text(threads)}{per} (set by --threads)"
    elif workers:
        t = "1 thread per worker process"
    else:
        t = f"threads auto (per {unit} from its work: one for small models; history says which)"
    return f"runtime: {t} · {precision_name(prec)} ({why})", prec


def is_data_file(name: str) -> bool:
    """True when ``--data`` names a file (``.npz``/``.csv``, or any path that exists)."""
    return Path(name).suffix.lower() in (".npz", ".csv") or Path(name).is_file()


# The --data, --target and --model help every training command shares.
DATA_HELP = ("Dataset: synthetic, digits, sequences, mnist, imdb; or a file: PATH.npz (X/y, or "
             "x_train/y_train with optional x_test/y_test) or PATH.csv with --target.")
TARGET_HELP = "The label column of a --data CSV file (the other columns are features)."
MODEL_HELP = ("Model: mlp, cnn, cnn_small, lstm; or package.module:function, a function "
              "returning an nn.Module (the current folder is importable).")


def load_data(name: str, target: str | None = None) -> DataBundle:
    """A dataset by name, or a ``.npz`` / ``.csv`` file (``target``: the CSV's label column).

    A ``.npz`` holds ``X``/``y``, or ``x_train``/``y_train`` with optional
    ``x_test``/``y_test``; a CSV's other columns are the features and must be
    numeric (a non-numeric one is an error naming it).
    """
    from epochlab.data import load
    from epochlab.data.files import load_file

    if is_data_file(name):
        if target is not None and not name.lower().endswith(".csv"):
            from epochlab.cli.output import warn

            warn(f"--target has no effect with {name} (an .npz holds its labels as y).")
        try:
            return load_file(name, target)
        except (ValueError, OSError) as e:
            raise click.BadParameter(str(e), param_hint="--data") from None
    if target is not None:
        raise click.BadParameter(
            f"--target names the label column of a CSV file, but --data {name!r} is a dataset "
            "name.", param_hint="--target")
    try:
        return load(name)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--data") from None


def model_factory(name: str) -> Any:
    """The user's ``package.module:function`` for ``--model``, or None for a registry name.

    The current folder is importable (as ``python -m`` makes it), so
    ``--model mymodels:make_model`` finds ``./mymodels.py``; a file's path works
    too (``--model models/mymodels.py:make_model``: its folder becomes importable).
    Errors say what failed: the module or file not found (or failing to import),
    the attribute missing, or not callable.
    """
    import importlib
    import os
    import sys
    from pathlib import Path

    if ":" not in name:
        return None
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{name!r} must be package.module:function.", param_hint="--model")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if module_name.endswith(".py"):  # a file: import it by name from its folder
        path = Path(module_name)
        if not path.is_file():
            raise click.BadParameter(f"file {module_name!r} not found (looked from the current "
                                     f"folder {os.getcwd()}).", param_hint="--model")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module_name = path.stem
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise click.BadParameter(
                f"module {module_name!r} not found (looked in the current folder "
                f"{os.getcwd()} and the installed packages).", param_hint="--model") from None
        raise click.BadParameter(f"importing module {module_name!r} failed: "
                                 f"{type(e).__name__}: {e}", param_hint="--model") from None
    except Exception as e:  # noqa: BLE001 - any error inside the user's module is reported
        raise click.BadParameter(f"importing module {module_name!r} failed: "
                                 f"{type(e).__name__}: {e}", param_hint="--model") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise click.BadParameter(f"module {module_name!r} has no attribute {attr!r}.",
                                     param_hint="--model")
        obj = getattr(obj, part)
    if not callable(obj):
        raise click.BadParameter(f"{name} is a {type(obj).__name__}, not callable; it must be a "
                                 "function returning a torch.nn.Module.", param_hint="--model")
    return obj


def check_model_name(name: str) -> None:
    """Refuse an unknown ``--model`` before anything is created (a store file, a folder)."""
    from epochlab.models.registry import NAMES, unknown_model

    if model_factory(name) is None and name not in NAMES:
        raise click.BadParameter(unknown_model(name), param_hint="--model")


def call_factory(name: str, factory: Any) -> torch.nn.Module:
    """``factory()``, checked to return an ``nn.Module``."""
    import torch

    try:
        model = factory()
    except Exception as e:  # noqa: BLE001 - the user's code: say what failed, no traceback
        raise click.BadParameter(f"calling {name}() failed: {type(e).__name__}: {e}",
                                 param_hint="--model") from None
    if not isinstance(model, torch.nn.Module):
        raise click.BadParameter(f"{name}() does not return a torch.nn.Module (it returned a "
                                 f"{type(model).__name__}).", param_hint="--model")
    return model


def build_model(name: str, data: DataBundle, seed: int, **kwargs: Any) -> torch.nn.Module:
    """Seed torch, then build ``name`` sized for ``data`` (same seed, same initial weights).

    ``name`` is a registry model, or ``package.module:function`` (called with
    no arguments, see :func:`model_factory`).
    """
    from epochlab.models.registry import build
    from epochlab.train.runtime import manual_seed

    factory = model_factory(name)
    manual_seed(seed)
    if factory is not None:
        return call_factory(name, factory)
    try:
        return build(name, data, **kwargs)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--model") from None


def probe_model(name: str, data: DataBundle, seed: int = 0, **kwargs: Any) -> torch.nn.Module:
    """:func:`build_model`, then two rows through the model (in eval mode, without
    gradients), before anything is created: a model that cannot take the data is a usage
    error (exit 2), not a traceback."""
    from epochlab.train.data import check_forward

    model = build_model(name, data, seed, **kwargs)
    check_forward(model, data, name, data.name)
    return model


@contextlib.contextmanager
def claimed(path: str | None, prefix: str, *, overwrite: bool = False,
            marker: str | tuple[str, ...] = "history.json") -> Iterator[Path]:
    """:func:`out_dir`, removed again (with an emptied ``runs/``) when the block ends in an
    error or Ctrl-C before anything was written to it: a refusal leaves no empty folder."""
    existed = bool(path) and Path(path).exists()
    root_existed = Path("runs").exists()
    folder = out_dir(path, prefix, overwrite=overwrite, marker=marker)
    try:
        yield folder
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            if not path and not root_existed and not any(folder.parent.iterdir()):
                folder.parent.rmdir()
        raise


def out_dir(path: str | None, prefix: str, *, overwrite: bool = False,
            marker: str | tuple[str, ...] = "history.json") -> Path:
    """The output folder, created: ``--out`` (checked), or a new ``runs/<prefix>-<time>-<suffix>``.

    The default folder is claimed with an exclusive ``mkdir``, so two runs
    started in the same second never share one. An explicit ``--out`` that
    already holds a run is refused unless ``overwrite``.
    """
    if path:
        p = check_out_dir(path, overwrite=overwrite, marker=marker)
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
