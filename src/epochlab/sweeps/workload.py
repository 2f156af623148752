"""What a configuration names, made real: its data loaded, its model built.

The plan (which looks at a model's structure to decide fusion) and the
workers (which train) both need a configuration's data and model; this
module is the one place that turns names into objects, below both of them:
``spec -> workload -> plan -> worker -> driver``.

- :class:`Sources`: the data and model factories a user brought, by
  fingerprint (sent along with every task, so it must pickle for worker
  processes).
- :func:`load_data`: the configuration's data: the user's, or a registry
  dataset loaded once per process.
- :func:`build_model`: ``torch.manual_seed(seed)``, then the model (the
  user's ``make_model()`` or a registry model): same seed, same initial
  weights, in any process.
- :func:`data_fingerprint`, :func:`model_fingerprint`: what identifies user
  data and models in run keys.
- :func:`user_inputs`: a user's ``make_model`` and data as labels,
  fingerprints and :class:`Sources` (what a spec and its workers need).
- :func:`test_metrics`: the test-set metrics of a model, as a sweep stores them
  (:func:`has_test_split`: whether there are any).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from epochlab.data.base import DataBundle
from epochlab.data.files import from_arrays
from epochlab.data.registry import load
from epochlab.models.registry import build
from epochlab.sweeps.spec import Config
from epochlab.train.loop import evaluate
from epochlab.train.runtime import manual_seed
from epochlab.validation import ParameterError, refuse_model_instance

__all__ = [
    "Sources", "UserInputs", "build_model", "user_inputs", "data_fingerprint", "load_data", "model_fingerprint",
    "has_test_split", "test_metrics", "train_data",
]

UserData = DataBundle | Dataset


@dataclass(frozen=True)
class Sources:
    """Data and model factories a user brought, keyed by their fingerprints.

    A configuration whose ``data_fingerprint`` (``model_fingerprint``) is set
    finds its data (factory) here; one without takes its registry name.
    """

    data: Mapping[str, UserData] = field(default_factory=dict)
    models: Mapping[str, Callable[[], nn.Module]] = field(default_factory=dict)
    # Registry datasets the driver already loaded, by (name, options): sent with the work
    # to Ray workers, so no worker loads or downloads them itself.
    loaded: Mapping[tuple[str, tuple[tuple[str, Any], ...]], DataBundle] = field(
        default_factory=dict)


NO_SOURCES = Sources()


@functools.lru_cache(maxsize=4)
def _load(name: str, options: tuple[tuple[str, Any], ...]) -> DataBundle:
    return load(name, **dict(options))


def load_data(config: Config, sources: Sources = NO_SOURCES) -> UserData:
    """The configuration's data: the user's (by fingerprint) or a registry dataset.

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> c = SweepSpec(data_options={"n_samples": 100}).configs()[0]
        >>> len(load_data(c).x_train)
        80
    """
    if config.data_fingerprint is not None:
        try:
            return sources.data[config.data_fingerprint]
        except KeyError:
            raise ValueError(
                f"The data {config.data!r} ({config.data_fingerprint}) was not given to this "
                "sweep; pass the same data again to resume its study."
            ) from None
    loaded = sources.loaded.get((config.data, config.data_options))
    return loaded if loaded is not None else _load(config.data, config.data_options)


def build_model(config: Config, data: UserData, sources: Sources = NO_SOURCES) -> nn.Module:
    """``torch.manual_seed(config.seed)``, then the model: same seed, same initial weights.

    A user's factory is called with no arguments (``make_model()``); a
    registry model is sized for ``data``.

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> c = SweepSpec(data_options={"n_samples": 100}).configs()[0]
        >>> a, b = build_model(c, load_data(c)), build_model(c, load_data(c))
        >>> torch.equal(a[0].weight, b[0].weight)
        True
    """
    if config.model_fingerprint is not None:
        try:
            make_model = sources.models[config.model_fingerprint]
        except KeyError:
            raise ValueError(
                f"The model {config.model!r} ({config.model_fingerprint}) was not given to this "
                "sweep; pass the same make_model again to resume its study."
            ) from None
        manual_seed(config.seed)
        return make_model()
    if not isinstance(data, DataBundle):
        raise ValueError(
            f"Registry model {config.model!r} is sized from a dataset's description; with a "
            f"{type(data).__name__} pass your own make_model instead."
        )
    manual_seed(config.seed)
    return build(config.model, data, **({"batch_norm": True} if config.batch_norm else {}))


def train_data(data: UserData) -> Any:
    """What ``fit`` trains on: a bundle's ``(x_train, y_train)``, or the Dataset itself."""
    return data.train if isinstance(data, DataBundle) else data


def has_test_split(data: UserData) -> bool:
    """Whether ``data`` has test rows (a bundle's ``x_test``; a Dataset has none)."""
    return isinstance(data, DataBundle) and len(data.x_test) > 0


def test_metrics(model: nn.Module, data: UserData) -> dict[str, float]:
    """Loss and metrics of ``model`` on the test split; empty when there is none."""
    return evaluate(model, data) if has_test_split(data) else {}


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:16]


def _array_parts(a: Any) -> tuple[str, list[bytes]]:
    t = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    t = np.ascontiguousarray(t)
    desc = f"{'x'.join(map(str, t.shape))}:{t.dtype}"
    return desc, [desc.encode(), t.tobytes()]


def data_fingerprint(data: UserData) -> str:
    """Shapes, dtypes and a hash of the bytes: ``"X 100x5:float32, y 100:int64, sha256 ..."``.

    A DataBundle covers its train and test arrays; a Dataset its length and
    every item (read once).

    Example:
        >>> import numpy as np
        >>> from epochlab.data.base import DataBundle
        >>> x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int64)
        >>> e = np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
        >>> data_fingerprint(DataBundle("a", x, y, *e, task="binary"))[:40]
        'train 4x2:float32/4:int64, test 0x2:floa'
    """
    parts: list[bytes] = []
    if isinstance(data, DataBundle):
        descs = []
        for name, (x, y) in (("train", data.train), ("test", data.test)):
            dx, px = _array_parts(x)
            dy, py = _array_parts(y)
            descs.append(f"{name} {dx}/{dy}")
            parts += px + py
        return f"{', '.join(descs)}, sha256 {_digest(parts)}"
    n = len(data)
    first = ""
    for i in range(n):
        item = data[i]
        for j, v in enumerate(item if isinstance(item, (tuple, list)) else (item,)):
            d, p = _array_parts(v)
            if i == 0:
                first += ("/" if j else "") + d
            parts += p
    return f"dataset {n} items of {first}, sha256 {_digest(parts)}"


def model_fingerprint(model: nn.Module, make_model: Any = None) -> str:
    """A hash of the model's structure (its printed form), its parameter count, and its
    code: what ``make_model`` and the module classes not from torch compute (their functions'
    compiled code, the plain values they read: partial arguments, closure values, class
    attributes, module constants, and the same module's helper functions), so an edited
    ``forward`` or initialization is a new model, while the same code finds its stored runs
    again (a lambda's call site, comments and blank lines do not count).

    Example:
        >>> model_fingerprint(nn.Sequential(nn.Linear(3, 2)))
        'Sequential 8 params, structure ..., code ...'
    """
    # A lazy module's parameters have no size until its first forward: counted as 0.
    n = sum(p.numel() for p in model.parameters()
            if not isinstance(p, nn.parameter.UninitializedParameter))
    structure = hashlib.sha256(repr(model).encode()).hexdigest()[:12]
    code = hashlib.sha256()
    seen: set[int] = set()
    classes = {type(m) for m in model.modules() if not type(m).__module__.startswith("torch.")}
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        code.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        for name, attr in sorted(vars(cls).items()):
            code.update(name.encode())
            _value_digest(attr, code, seen)
    if make_model is not None:
        _value_digest(make_model, code, seen)
    return (f"{type(model).__name__} {n} params, structure {structure}, "
            f"code {code.hexdigest()[:12]}")


_PLAIN = (int, float, complex, str, bytes, bool, type(None))


def _value_digest(value: Any, into: Any, seen: set[int]) -> None:
    """What a value contributes to a model's code hash: a function's compiled code and the
    plain values and same-module functions it reads; a partial's function and arguments; a
    property's functions; a plain value's repr; anything else (an object, a tensor), its
    type only."""
    if isinstance(value, _PLAIN) or (isinstance(value, (tuple, frozenset))
                                     and all(isinstance(v, _PLAIN) for v in value)):
        into.update(_stable_repr(value).encode())
        return
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, functools.partial):
        _value_digest(value.func, into, seen)
        for v in (*value.args, *sorted(value.keywords.items())):
            _value_digest(v, into, seen)
        return
    if isinstance(value, property):
        for fn in (value.fget, value.fset):
            if fn is not None:
                _value_digest(fn, into, seen)
        return
    fn = getattr(value, "__func__", value)  # staticmethod / classmethod / bound method
    if isinstance(fn, types.FunctionType):
        _code_digest(fn.__code__, into)
        for cell in fn.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell
                _value_digest(cell.cell_contents, into, seen)
        for name in _global_names(fn.__code__):
            if name in fn.__globals__:
                g = fn.__globals__[name]
                if isinstance(g, _PLAIN) or (isinstance(g, types.FunctionType)
                                             and g.__module__ == fn.__module__):
                    into.update(name.encode())
                    _value_digest(g, into, seen)
        return
    into.update(f"{type(value).__module__}.{type(value).__qualname__}".encode())


def _global_names(co: types.CodeType) -> list[str]:
    names = list(co.co_names)
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return names


def _code_digest(co: types.CodeType, into: Any) -> None:
    """What a function computes, into a hash: its bytecode, constants and names, nested
    functions included (not its line numbers or file)."""
    into.update(co.co_code)
    into.update(repr(co.co_names).encode())
    for const in co.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, into)
        else:
            into.update(_stable_repr(const).encode())


def _stable_repr(value: Any) -> str:
    """``repr``, with sets in sorted order: a set's order follows string hashing, which
    changes from one process to the next."""
    if isinstance(value, (frozenset, set)):
        return "{" + ", ".join(sorted(_stable_repr(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_stable_repr(v) for v in value) + ")"
    return repr(value)


@dataclass(frozen=True)
class UserInputs:
    """A user's model and data as a spec names them, and the :class:`Sources` behind them."""

    data: str
    data_fingerprint: str | None
    model: str
    model_fingerprint: str | None
    sources: Sources
    task: str  # "binary", "multiclass", "regression" or "" (unknown: a Dataset)


def _label(make_model: Any) -> str:
    if isinstance(make_model, functools.partial):
        return _label(make_model.func)
    module = getattr(make_model, "__module__", None) or ""
    name = getattr(make_model, "__qualname__", None) or type(make_model).__name__
    return f"{module}:{name}" if module else name


def user_inputs(make_model: Callable[[], nn.Module] | str, data: Any) -> UserInputs:
    """Labels, fingerprints and :class:`Sources` for a user's ``make_model`` and ``data``.

    ``make_model`` is a zero-argument callable returning an ``nn.Module`` (or
    a registry model name); ``data`` is ``(X, y)``, a DataBundle, a map-style
    Dataset, or a registry dataset name. The model is built once here (seed
    0) to check it and to fingerprint it.

    Example:
        >>> import numpy as np
        >>> x, y = np.zeros((8, 3), np.float32), np.array([0, 1] * 4)
        >>> u = user_inputs(lambda: nn.Sequential(nn.Linear(3, 1)), (x, y))
        >>> u.data, u.model_fingerprint.startswith("Sequential 4 params"), u.task
        ('arrays', True, 'binary')
    """
    data_fp = None
    if isinstance(data, str):
        label, resolved = data, None
    elif isinstance(data, DataBundle):
        label, resolved = data.name, data
    elif isinstance(data, Dataset) and not isinstance(data, (tuple, list)):
        label, resolved = type(data).__name__, data
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        label, resolved = "arrays", from_arrays(*data)
    else:
        raise ParameterError(
            f"The value of `data` is a {type(data).__name__}, but must be (X, y) arrays, a "
            "DataBundle, a map-style torch Dataset or a dataset name."
        )
    models: dict[str, Callable[[], nn.Module]] = {}
    sources_data: dict[str, UserData] = {}
    if resolved is not None:
        data_fp = data_fingerprint(resolved)
        sources_data[data_fp] = resolved
    task = resolved.task if isinstance(resolved, DataBundle) else ""
    if isinstance(data, str):
        task = _load(data, ()).task
    if isinstance(make_model, str):
        return UserInputs(label, data_fp, make_model, None, Sources(sources_data, models), task)
    refuse_model_instance(make_model)
    if not callable(make_model):
        raise ParameterError(
            f"The value of `make_model` is a {type(make_model).__name__}, but must be a "
            "zero-argument function returning a torch.nn.Module (or a SweepSpec)."
        )
    with torch.random.fork_rng(devices=[]):
        manual_seed(0)
        try:
            model = make_model()
        except TypeError as e:
            raise ParameterError(
                f"`make_model()` failed ({e}); it must take no arguments and return a "
                "torch.nn.Module (wrap settings in functools.partial or a def)."
            ) from None
    if not isinstance(model, nn.Module):
        raise ParameterError(
            f"`make_model()` returned a {type(model).__name__}, but must return a torch.nn.Module."
        )
    model_fp = model_fingerprint(model, make_model)
    models[model_fp] = make_model
    return UserInputs(label, data_fp, _label(make_model), model_fp,
                      Sources(sources_data, models), task)
