"""Datasets by name: what ``--data NAME`` on the command line resolves through.

This module owns the mapping from a dataset's name to its loader and the
checking of the keyword arguments passed on. Loaders are imported when first
asked for, so a dataset whose module is missing or heavy costs nothing until
it is used.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from epochlab.data.base import DataBundle
from epochlab.validation import ParameterError, closest

__all__ = ["NAMES", "load", "parameters"]

# name -> (module, function); imported on first use.
_LOADERS: dict[str, tuple[str, str]] = {
    "synthetic": ("epochlab.data.synthetic", "synthetic"),
    "digits": ("epochlab.data.digits", "digits"),
    "sequences": ("epochlab.data.sequences", "sequences"),
    "mnist": ("epochlab.data.mnist", "mnist"),
    "imdb": ("epochlab.data.imdb", "imdb"),
}

NAMES: tuple[str, ...] = tuple(_LOADERS)
"""Every dataset name :func:`load` accepts."""


def load(name: str, **kwargs: object) -> DataBundle:
    """Load the dataset called ``name``, passing ``kwargs`` to its loader.

    Args:
        name: One of :data:`NAMES`.
        **kwargs: Keyword arguments of that loader (see :func:`parameters`).

    Raises:
        ValueError: ``name`` is unknown, or a keyword is not a parameter of
            the loader (the message lists the accepted ones).

    Example:
        >>> load("digits", upsample=False).input_shape
        (64,)
        >>> load("synthetic", n_samples=100).x_train.shape
        (80, 20)
    """
    loader = _loader(name)
    accepted = parameters(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ParameterError(
            f"Dataset {name!r} got unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted) or '(none)'}."
        )
    return loader(**kwargs)


def parameters(name: str) -> tuple[str, ...]:
    """Names of the keyword arguments the loader of ``name`` accepts.

    Example:
        >>> parameters("digits")
        ('upsample', 'test_size', 'seed', 'labels')
    """
    signature = inspect.signature(_loader(name))
    return tuple(
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def _loader(name: str) -> Callable[..., DataBundle]:
    if name not in _LOADERS:
        from pathlib import Path

        as_file = ""
        if Path(name).exists() or Path(name).suffix:
            as_file = (f" A data file is read when its name ends in .npz or .csv"
                       f"{'' if Path(name).exists() else ' and it exists'}.")
        near = closest(str(name), list(NAMES))
        raise ParameterError(
            f"Unknown dataset {name!r}: the datasets are {', '.join(NAMES)}"
            f"{f' (did you mean {near!r}?)' if near else ''}.{as_file}"
        )
    module_name, attr = _LOADERS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # a dependency of the loader is missing: show the real error
        raise RuntimeError(
            f"Dataset {name!r} is not available in this installation ({module_name} "
            "is missing)."
        ) from exc
    return getattr(module, attr)
