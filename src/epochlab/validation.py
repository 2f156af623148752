"""Parameter validation: one exception type for bad parameters, and the checks that raise it.

:class:`ParameterError` is what every check raises when a parameter a user
gave is wrong (a value out of range, an unknown name, a conflict between two
options, a path that cannot be used). It subclasses both ``ValueError`` and
``TypeError`` (as scikit-learn's ``InvalidParameterError`` does), so code
that caught either keeps working. The CLI turns exactly these into a
one-line usage error (exit 2); any other exception is a failure (exit 1),
never reported as the user's mistake.

The checks here are shared by the library and the CLI, so a value is refused
with the same words wherever it is given: numbers and their ranges
(:func:`check_int`, :func:`check_float`, :func:`check_lr`), names
(:func:`check_choice`, :func:`check_name`), a metric's direction
(:func:`resolve_mode`), and paths a command will write (:func:`check_out_dir`,
:func:`check_store_path`). Every message reads "The value of `x` is ...,
but must be ...".
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MODES", "ParameterError", "check_bool", "check_choice", "check_float", "check_int",
    "check_lr", "check_name", "check_out_dir", "check_store_path", "data_warnings",
    "resolve_mode",
]


class ParameterError(ValueError, TypeError):
    """A parameter's value is wrong: the message names it, what is allowed and what was given.

    Example:
        >>> try:
        ...     raise ParameterError("The value of `epochs` is 0, but must be `epochs >= 1`.")
        ... except ValueError as e:
        ...     print(e)
        The value of `epochs` is 0, but must be `epochs >= 1`.
    """


# The largest seed: the validation split draws from NumPy's RandomState (as scikit-learn's
# splits do), which takes seeds below 2**32.
SEED_MAX = 2**32 - 1
# torch.set_num_threads takes a C int; no machine epochlab runs on has more cores.
MAX_THREADS = 1024


def check_int(name: str, value: object, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``value`` as an int within ``[minimum, maximum]``, or raise naming ``name``.

    Example:
        >>> check_int("epochs", 10, 1)
        10
        >>> check_int("epochs", 0, 1)
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: The value of `epochs` is 0, but must be `epochs >= 1`.
    """
    if minimum is not None and maximum is not None:
        rule = f"{minimum} <= {name} <= {maximum}"
    elif minimum is not None:
        rule = f"{name} >= {minimum}"
    elif maximum is not None:
        rule = f"{name} <= {maximum}"
    else:
        rule = ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(
            f"The value of `{name}` is {value!r} ({type(value).__name__}), "
            f"but must be an integer{f' `{rule}`' if rule else ''}."
        )
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ParameterError(f"The value of `{name}` is {value}, but must be `{rule}`.")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool, or raise naming ``name``.

    Example:
        >>> check_bool("save_best_only", True)
        True
    """
    if not isinstance(value, bool):
        raise ParameterError(f"The value of `{name}` is {value!r}, but must be True or False.")
    return value


def check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float within the bounds, or raise naming ``name``.

    NaN and infinities are always refused: no parameter of epochlab means
    anything at those values.

    Example:
        >>> check_float("factor", 0.5, low=0.0, low_open=True, high=1.0, high_open=True)
        0.5
    """
    lo = "" if low is None else f"{low:g} {'<' if low_open else '<='} "
    hi = "" if high is None else f" {'<' if high_open else '<='} {high:g}"
    if lo and not hi:
        rule = f"{name} {'>' if low_open else '>='} {low:g}"
    else:
        rule = f"{lo}{name}{hi}" if (lo or hi) else f"{name} finite"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(
            f"The value of `{name}` is {value!r} ({type(value).__name__}), "
            f"but must be a number `{rule}`."
        )
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        finite = "" if math.isfinite(v) else " (a finite number)"
        raise ParameterError(f"The value of `{name}` is {value!r}, but must be `{rule}`{finite}.")
    return v


def check_lr(name: str, value: object) -> float:
    """A learning rate: a finite number ``> 0`` (0, negative, inf and NaN are refused).

    Example:
        >>> check_lr("lr", 1e-3)
        0.001
        >>> check_lr("lr", float("inf"))
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: The value of `lr` is inf, but must be `lr > 0` (a finite number).
    """
    return check_float(name, value, low=0.0, low_open=True)


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, or raise listing them.

    Example:
        >>> check_choice("mode", "min", ("min", "max"))
        'min'
    """
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(
            f"The value of `{name}` is {value!r}, but must be one of: {', '.join(choices)}."
        )
    return value


def check_name(name: str, value: object) -> str:
    """A non-empty name without surrounding spaces (study names, run keys).

    Example:
        >>> check_name("study", "lr-sweep")
        'lr-sweep'
    """
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ParameterError(
            f"The value of `{name}` is {value!r}, but must be a non-empty name without "
            "leading or trailing spaces."
        )
    return value


MODES = ("auto", "min", "max")
# Words that say which way a metric is better; read from the metric's name.
_MIN_WORDS = ("loss", "error", "mse", "mae", "perplexity")
_MAX_WORDS = ("accuracy", "acc", "auc", "f1", "precision", "recall")


def resolve_mode(metric: str, mode: str | None = "auto") -> str:
    """``"min"`` or ``"max"`` for ``metric``; ``"auto"`` (or None) decides from the name or raises.

    Losses and errors (``loss``, ``error``, ``mse``, ``mae``, ``perplexity``)
    go down; ``accuracy``, ``auc``, ``f1``, ``precision``, ``recall`` go up.
    Any other name needs an explicit mode: a guess ranks the worst run first
    half of the time.

    Example:
        >>> resolve_mode("val_loss"), resolve_mode("val_accuracy", None)
        ('min', 'max')
        >>> resolve_mode("val_score", "max")
        'max'
    """
    if mode is None:
        mode = "auto"
    if mode not in MODES:
        raise ParameterError(f"The value of `mode` is {mode!r}, but must be one of {MODES}.")
    name = str(metric).lower()
    inferred = ("min" if any(w in name for w in _MIN_WORDS) else
                "max" if any(w in name for w in _MAX_WORDS) else None)
    if mode != "auto":
        if inferred is not None and inferred != mode:
            import warnings

            warnings.warn(
                f"mode={mode!r} for {metric!r} ranks the {'lowest' if mode == 'min' else 'highest'} "
                f"value best, but {metric!r} is better {'lower' if inferred == 'min' else 'higher'}: "
                f"the worst run would be called the best. Use mode={inferred!r} (or 'auto').",
                UserWarning, stacklevel=2)
        return mode
    if inferred is not None:
        return inferred
    known = [f"{p}{m}" for p in ("", "val_") for m in ("loss", "accuracy", "mae", "mse")]
    close = closest(str(metric), known, cutoff=0.8)
    typo = f"; if you meant {close!r}, correct the name. Otherwise set" if close else "; set"
    raise ParameterError(
        f"`mode='auto'` cannot tell whether {metric!r} should go down or up (it names no "
        f"loss/error nor accuracy-like metric){typo} `mode='min'` or `mode='max'` (on the "
        f"command line: `--mode min` with --metric, `{metric}:mode=min` in --early-stopping)."
    )


def closest(name: str, choices: Sequence[str], cutoff: float = 0.75) -> str | None:
    """The choice ``name`` most likely misspells, for a "did you mean" (None: none is close).

    Example:
        >>> closest("val_los", ["val_loss", "val_accuracy"]), closest("seed", ["lr"])
        ('val_loss', None)
    """
    import difflib

    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return found[0] if found else None


def refuse_model_instance(make_model: Any) -> None:
    """Refuse a model where a function that builds one is wanted (``sweep``, ``tune``): a
    module is callable, so calling it would run its forward pass and fail obscurely.

    Example:
        >>> import torch
        >>> refuse_model_instance(lambda: torch.nn.Linear(4, 1))  # a factory: fine
        >>> refuse_model_instance(torch.nn.Linear(4, 1))
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: The value of `make_model` is a model (Linear), ...
    """
    import torch  # here, not at the top: this module stays light for the CLI's --help

    if isinstance(make_model, torch.nn.Module):
        raise ParameterError(
            f"The value of `make_model` is a model ({type(make_model).__name__}), but must be a "
            "zero-argument function that builds one, e.g. `lambda: nn.Linear(4, 1)`: every run "
            "starts from its own seed's initial weights, so each needs a model of its own."
        )


def data_warnings(data: Any, batch_size: int, validation_split: float = 0.0) -> list[str]:
    """What looks wrong with a dataset for this run, each as one sentence (nothing stops it).

    ``data`` is a DataBundle. Flagged (one class only is fit's own warning):
    a class with fewer rows than 1% of the largest, a batch at least as big
    as the training rows (every epoch is then one update), fewer training
    rows than 10, and constant feature columns.

    Example:
        >>> import numpy as np
        >>> from epochlab.data.base import DataBundle
        >>> d = DataBundle("x", np.zeros((20, 2)), np.zeros(20, dtype=int), np.zeros((0, 2)),
        ...                np.zeros(0, dtype=int), "binary", ("0", "1"), (2,))
        >>> [w.split(":")[0] for w in data_warnings(d, 32)]
        ['batch size 32 >= 20 training rows', 'all 2 feature columns are constant']
    """
    out: list[str] = []
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    n = len(y)
    n_train = n - (math.ceil(validation_split * n) if validation_split > 0 else 0)
    if data.task in ("binary", "multiclass") and n and y.ndim == 1:
        values, counts = np.unique(y, return_counts=True)
        # One class only: fit itself warns (for the API too).
        if values.dtype.kind in "iu" and (missing := sorted(set(range(int(values.max()) + 1))
                                                           - set(values.tolist()))):
            out.append(f"class ids {', '.join(map(str, missing[:5]))}"
                       f"{', ...' if len(missing) > 5 else ''} never occur (labels "
                       f"{values.min()}..{values.max()}): the model gets an output for every "
                       f"id 0..{values.max()}; if the classes are numbered from 1, subtract 1.")
        if len(values) > 1 and counts.min() * 100 < counts.max():
            out.append(f"the training labels are very imbalanced (class {values[counts.argmin()]}"
                       f" has {counts.min()} rows, class {values[counts.argmax()]} has "
                       f"{counts.max()}): accuracy will mostly reflect the largest class.")
    if n_train and batch_size >= n_train:
        out.append(f"batch size {batch_size} >= {n_train} training rows: every epoch is one "
                   "update on the whole training set.")
    elif 0 < n_train < 10:
        out.append(f"only {n_train} training rows: the results will be noise.")
    if x.ndim == 2 and n > 1 and np.issubdtype(x.dtype, np.floating):
        constant = int((x.max(axis=0) == x.min(axis=0)).sum())
        if constant == x.shape[1]:
            out.append(f"all {constant} feature columns are constant: there is nothing to learn.")
        elif constant:
            out.append(f"{constant} of {x.shape[1]} feature columns are constant (they carry "
                       "no information).")
    return out


def check_out_dir(path: str | os.PathLike, *, overwrite: bool = False,
                  param: str = "out", marker: str | tuple[str, ...] = "history.json") -> Path:
    """Check (without creating it) that ``path`` can take a new run's files.

    Refused: a path that is a file, a folder that already holds a run (a
    ``marker`` file, ``history.json`` by default, or any of several) unless
    ``overwrite``, and a folder (or its nearest existing parent) this process
    cannot write to.

    Example:
        >>> import tempfile
        >>> check_out_dir(tempfile.mkdtemp() + "/new").name
        'new'
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ParameterError(
            f"The value of `{param}` is {str(p)!r}, a file; it must be a folder (new or empty)."
        )
    found = [m for m in ((marker,) if isinstance(marker, str) else marker) if (p / m).exists()]
    if p.is_dir() and found and not overwrite:
        raise ParameterError(
            f"The value of `{param}` is {str(p)!r}, a folder that already holds a run "
            f"({found[0]}); choose another folder, or pass --overwrite to replace its files."
        )
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ParameterError(
            f"The value of `{param}` is {str(p)!r}, but {str(parent)!r} is a file, not a folder."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError(
            f"The value of `{param}` is {str(p)!r}, but {str(parent)!r} is not writable; "
            "choose a folder you can write to."
        )
    return p


def check_store_path(path: str | os.PathLike, *, param: str = "store",
                     create: bool = True) -> Path:
    """Check that ``path`` can be a store file before any work is done.

    Refused: a directory, a missing parent folder, a file or folder that is
    not writable (when ``create``: a store is written to), and (with
    ``create=False``) a file that does not exist. Whether an existing file
    is an epochlab store of a format this version reads is checked by
    opening it (:class:`~epochlab.store.SQLiteStore`).

    Example:
        >>> import tempfile
        >>> check_store_path(tempfile.mkdtemp() + "/runs.db").name
        'runs.db'
    """
    p = Path(path).expanduser()
    if not str(path).strip():
        raise ParameterError(f"The value of `{param}` is {str(path)!r}, but must be a file path.")
    if p.is_dir():
        raise ParameterError(
            f"The value of `{param}` is {str(p)!r}, a folder; it must be a store file, "
            f"e.g. {str(p / 'epochlab.db')!r}."
        )
    if not p.exists():
        if not create:
            raise ParameterError(
                f"No runs stored yet at {p}: the file does not exist (the value of "
                f"`{param}` is {str(p)!r}; set it with --store or $EPOCHLAB_STORE)."
            )
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise ParameterError(
                f"The value of `{param}` is {str(p)!r}, but its folder {str(parent)!r} "
                "does not exist; create it first or choose another path."
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ParameterError(
                f"The value of `{param}` is {str(p)!r}, but its folder {str(parent)!r} is "
                "not writable."
            )
        return p
    if create and not os.access(p, os.W_OK):
        raise ParameterError(
            f"The value of `{param}` is {str(p)!r}, a read-only file; runs cannot be "
            "stored there. Make it writable or choose another store."
        )
    if create and not os.access(p.parent if str(p.parent) else Path("."), os.W_OK | os.X_OK):
        # SQLite writes its journal next to the file.
        raise ParameterError(
            f"The value of `{param}` is {str(p)!r}, but its folder is not writable "
            "(SQLite needs to write its journal there)."
        )
    return p
