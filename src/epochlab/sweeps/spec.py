"""The search space of a sweep: which settings are swept, which are fixed, and their keys.

This module owns *what* a sweep asks for, not how it is trained:

- :class:`SweepSpec` holds the swept settings as tuples (``epochs``,
  ``batch_size``, ``lr``, ``batch_norm``, ``seed``, ``optimizer``,
  ``weight_decay``, ``schedule``) and the fixed ones (``data``, its
  ``data_options``, ``model``, ``validation_split``, ``early_stopping``, the
  ``metric`` and ``mode`` that pick the best run). Every value is checked when
  the spec is built; messages name the setting, what is allowed and what was
  given.
- :meth:`SweepSpec.configs` is the product of the lists, in a stable order;
  each :class:`Config` has a canonical :attr:`Config.key` (sorted JSON of its
  settings) that the store uses as the run's key, so a sweep run again finds
  what it already did.
- :meth:`SweepSpec.from_cli` reads comma-separated CLI lists (``"5,10,15"``);
  :meth:`SweepSpec.from_toml` reads a TOML file with the same names.

Data and models a user brings (arrays, a Dataset, a model factory; see
:func:`epochlab.sweep`) are named by a label and identified by a
*fingerprint* (``data_fingerprint``: shapes, dtypes and a hash of the bytes;
``model_fingerprint``: a hash of the structure and the parameter count),
both part of every run's key: a rerun finds its finished runs, other data or
another model never matches them. Registry names carry no fingerprint (the
name and its options determine the data), so their keys are as before.

Schedules are kept as canonical text (``"step:every_epochs=10,factor=0.5"``),
so two spellings of one schedule give one key.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from epochlab import schedules
from epochlab.callbacks.early_stopping import parse as parse_early_stopping
from epochlab.sweeps.ranking import SWEPT
from epochlab.train.trainer import DEFAULT_LR, OPTIMIZERS
from epochlab.validation import SEED_MAX, ParameterError, closest, resolve_mode

__all__ = ["FIXED", "MODES", "SWEPT", "Config", "SweepSpec", "canonical_schedule", "default_metric"]


FIXED = ("data", "data_options", "model", "validation_split", "early_stopping",
         "data_fingerprint", "model_fingerprint")
"""Settings every configuration of one sweep shares (part of each run's key)."""

MODES = ("max", "min")
_FINGERPRINTS = ("data_fingerprint", "model_fingerprint")
_ON, _OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


@dataclass(frozen=True)
class Config:
    """One configuration of a sweep: every setting a run needs, swept and fixed.

    Example:
        >>> c = SweepSpec(data="synthetic", epochs=(5,)).configs()[0]
        >>> c.epochs, c.batch_size, c.key.startswith('{"batch_norm":false')
        (5, 32, True)
    """

    data: str
    model: str
    epochs: int
    batch_size: int
    lr: float
    batch_norm: bool
    seed: int
    optimizer: str
    weight_decay: float
    schedule: str | None
    validation_split: float
    early_stopping: str | None
    data_options: tuple[tuple[str, Any], ...] = ()
    data_fingerprint: str | None = None  # user data: shapes, dtypes, hash of the bytes
    model_fingerprint: str | None = None  # user model: hash of its structure, parameter count

    @property
    def settings(self) -> dict[str, Any]:
        """Plain, JSON-able settings (``data_options`` as a dict; no fingerprint when None)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["data_options"] = dict(self.data_options)
        for k in _FINGERPRINTS:
            if d[k] is None:
                del d[k]
        return d

    @functools.cached_property
    def key(self) -> str:
        """The canonical run key: sorted, compact JSON of :attr:`settings` (made once: a sweep
        looks a run up by it a dozen times)."""
        return json.dumps(self.settings, sort_keys=True, separators=(",", ":"))

    def with_epochs(self, epochs: int) -> Config:
        """The same configuration trained for ``epochs`` epochs."""
        return replace(self, epochs=epochs)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Config:
        """Rebuild a Config from :attr:`settings` (as stored with a run)."""
        d = dict(settings)
        d["data_options"] = tuple(sorted(dict(d.get("data_options") or {}).items()))
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def label(self, names: Iterable[str]) -> str:
        """``"lr=0.001 batch_size=32"``: the given settings, for legends and tables."""
        return " ".join(f"{n}={_show(getattr(self, n))}" for n in names)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def canonical_schedule(text: str | None) -> str | None:
    """One spelling per schedule: its name and its parameters in declared order.

    ``None``, ``"none"`` and ``""`` mean no schedule (a constant learning rate).

    Example:
        >>> canonical_schedule("step_decay:every_epochs=10,factor=0.5")
        'step:factor=0.5,every_epochs=10'
    """
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none")):
        return None
    sched = schedules.parse(text)
    config = sched.to_config()
    parts = []
    for k, v in config.items():
        if k == "name" or v is None:
            continue
        parts.append(f"{k}={str(v).lower() if isinstance(v, bool) else repr(v)}")
    return config["name"] + (":" + ",".join(parts) if parts else "")


def _fail(name: str, value: Any, rule: str) -> ParameterError:
    hint = ""
    if isinstance(value, str) and "," in value:  # the CLI's spelling of a list
        items = ", ".join(v.strip() for v in value.split(","))
        hint = f"; several values are a Python list here: {name}=[{items}]"
    return ParameterError(f"The value of `{name}` is {value!r}, but must be {rule}{hint}.")


def _int(name: str, v: Any, low: int, high: int | None = None) -> int:
    if (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low
            or (high is not None and v > high)):
        rule = f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}"
        raise _fail(name, v, f"an integer `{rule}`")
    return int(v)


def _float(name: str, v: Any, *, positive: bool) -> float:
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (v <= 0 if positive else v < 0):
        raise _fail(name, v, f"a finite number `{name} {'>' if positive else '>='} 0`")
    return float(v)


def _bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in _ON + _OFF:
        return v.strip().lower() in _ON
    raise _fail(name, v, "on or off (true/false)")


def _optimizer(name: str, v: Any) -> str:
    if not isinstance(v, str) or v.lower() not in OPTIMIZERS:
        raise _fail(name, v, f"one of {', '.join(OPTIMIZERS)}")
    return v.lower()


def _schedule(name: str, v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise _fail(name, v, "schedule text such as 'step:factor=0.5,every_epochs=10' or 'none'")
    return canonical_schedule(v)


_CHECKS = {
    "epochs": lambda n, v: _int(n, v, 1),
    "batch_size": lambda n, v: _int(n, v, 1),
    "seed": lambda n, v: _int(n, v, 0, SEED_MAX),
    "lr": lambda n, v: _float(n, v, positive=True),
    "weight_decay": lambda n, v: _float(n, v, positive=False),
    "batch_norm": _bool,
    "optimizer": _optimizer,
    "schedule": _schedule,
}


def _as_tuple(name: str, values: Any) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        values = (values,)
    checked = tuple(_CHECKS[name](name, v) for v in values)
    if not checked:
        raise ParameterError(f"The value of `{name}` is an empty list, but must hold at least one value.")
    seen: list = []
    for v in checked:
        if v in seen:
            raise ParameterError(f"The value {_show(v)} is given twice in `{name}`; give each once.")
        if name == "schedule" and {v, *seen} >= {None, "constant"}:
            raise ParameterError("`schedule` holds both 'none' and 'constant', which train the "
                                 "same (the run's lr throughout); give one of them.")
        seen.append(v)
    return checked


def default_metric(task: str | None, validation_split: float) -> str:
    """The metric that ranks runs when none is given: accuracy, or the loss for regression
    (which logs no accuracy); a validation metric when there is a validation split.

    Example:
        >>> default_metric("multiclass", 0.2), default_metric("regression", 0.0)
        ('val_accuracy', 'loss')
    """
    name = "loss" if task == "regression" else "accuracy"
    return f"val_{name}" if validation_split > 0 else name


@dataclass(frozen=True)
class SweepSpec:
    """A grid of training settings; the product of the swept lists is the set of configurations.

    Args:
        data: a dataset name (see :mod:`epochlab.data.registry`).
        model: a model name (``mlp``, ``cnn``, ``cnn_small``, ``lstm``).
        epochs, batch_size, lr, batch_norm, seed, optimizer, weight_decay, schedule:
            the swept settings, each a value or a sequence of values.
        validation_split: fraction of the training rows held out (seeded, stratified).
        early_stopping: ``"val_loss:patience=5,restore=true"`` or None.
        metric: the epoch metric that ranks configurations; None: from the data
            (:func:`default_metric`: ``"val_accuracy"``, ``"val_loss"`` for regression
            targets, without the ``val_`` when ``validation_split`` is 0), decided by
            :func:`epochlab.sweeps.driver.preflight`.
        mode: ``"max"`` or ``"min"``: which way ``metric`` is better; None reads it
            from the metric's name (loss/error/mse/mae: min; accuracy/auc/f1/
            precision/recall: max) and refuses any other name.
        data_options: keyword arguments of the dataset's loader (``{"n_samples": 200}``).
        name: the study's name; None makes one from the spec's content.
        data_fingerprint, model_fingerprint: set for data and models a user
            brings (``data`` and ``model`` are then labels); None for registry names.

    Example:
        >>> spec = SweepSpec(data="digits", model="cnn_small", epochs=[5, 10, 15],
        ...                  batch_size=[32, 64, 128])
        >>> len(spec.configs()), spec.swept()
        (9, ['epochs', 'batch_size'])
    """

    data: str = "synthetic"
    model: str = "mlp"
    epochs: tuple[int, ...] = (10,)
    batch_size: tuple[int, ...] = (32,)
    lr: tuple[float, ...] = (1e-3,)
    batch_norm: tuple[bool, ...] = (False,)
    seed: tuple[int, ...] = (0,)
    optimizer: tuple[str, ...] = ("adam",)
    weight_decay: tuple[float, ...] = (0.0,)
    schedule: tuple[str | None, ...] = (None,)
    validation_split: float = 0.2
    early_stopping: str | None = None
    metric: str | None = None
    mode: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    data_fingerprint: str | None = None
    model_fingerprint: str | None = None

    def __post_init__(self) -> None:
        for n in SWEPT:
            object.__setattr__(self, n, _as_tuple(n, getattr(self, n)))
        for n in ("data", "model", "metric"):
            if n == "metric" and self.metric is None:
                continue
            if not isinstance(getattr(self, n), str) or not getattr(self, n):
                raise _fail(n, getattr(self, n), "a non-empty name")
        vs = self.validation_split
        if isinstance(vs, bool) or not isinstance(vs, numbers.Real) or not 0 <= vs < 1:
            raise _fail("validation_split", vs, "a number `0 <= validation_split < 1`")
        object.__setattr__(self, "validation_split", float(vs))
        if self.mode is not None and self.mode not in MODES:
            raise _fail("mode", self.mode, "'max' or 'min' (or None: from the metric's name)")
        # Which way is better comes from the metric's name (val_loss: min); any other
        # name needs an explicit mode, since a guess would rank the worst run first.
        if self.metric is not None:
            object.__setattr__(self, "mode", resolve_mode(self.metric, self.mode))
        self._check_lr_source()
        if isinstance(self.early_stopping, str) and self.early_stopping.strip().lower() in (
                "", "none", "off"):
            object.__setattr__(self, "early_stopping", None)
        if self.early_stopping is not None:
            if not isinstance(self.early_stopping, str):
                raise _fail("early_stopping", self.early_stopping,
                            "text such as 'val_loss:patience=5,restore=true' or None")
            _check_early_stopping(self.early_stopping)
        if not isinstance(self.data_options, Mapping):
            raise _fail("data_options", self.data_options, "a mapping of loader keywords")
        object.__setattr__(self, "data_options", dict(self.data_options))
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise _fail("name", self.name, "a non-empty study name or None")
        for n in _FINGERPRINTS:
            v = getattr(self, n)
            if v is not None and (not isinstance(v, str) or not v):
                raise _fail(n, v, "a non-empty text or None")

    def for_task(self, task: str | None) -> SweepSpec:
        """This spec with its metric decided for data of ``task`` when it was left to the data.

        Example:
            >>> SweepSpec().for_task("regression").metric, SweepSpec().for_task("binary").mode
            ('val_loss', 'max')
        """
        if self.metric is not None:
            return self
        return replace(self, metric=default_metric(task, self.validation_split))

    def _check_lr_source(self) -> None:
        """One learning rate per run: a schedule's own initial rate and other ``lr`` values clash."""
        for text in self.schedule:
            own = None if text is None else schedules.parse(text).initial_lr
            if own is None or self.lr in ((own,), (DEFAULT_LR,)):
                continue
            raise ParameterError(
                f"Both `lr` ({', '.join(f'{v:g}' for v in self.lr)}) and the schedule "
                f"{text!r} with its own initial learning rate ({own:g}) were given; every run "
                "would train at the schedule's rate. Give the rates in one place: drop the "
                "schedule's initial rate to sweep `lr`, or drop `lr`."
            )

    # -- the grid ----------------------------------------------------------------------------
    def configs(self) -> list[Config]:
        """Every configuration: the product of the swept lists, ``epochs`` varying fastest.

        Example:
            >>> [c.epochs for c in SweepSpec(epochs=[1, 2], batch_size=[8, 16]).configs()]
            [1, 2, 1, 2]
        """
        order = [n for n in SWEPT if n != "epochs"] + ["epochs"]
        out = []
        for values in itertools.product(*(getattr(self, n) for n in order)):
            kw = dict(zip(order, values, strict=True))
            if kw["schedule"] is not None:
                # The rate a run trains at is the rate it records.
                own = schedules.parse(kw["schedule"]).initial_lr
                kw["lr"] = kw["lr"] if own is None else own
            out.append(Config(
                data=self.data, model=self.model, validation_split=self.validation_split,
                early_stopping=self.early_stopping,
                data_options=tuple(sorted(self.data_options.items())),
                data_fingerprint=self.data_fingerprint, model_fingerprint=self.model_fingerprint,
                **kw))
        return out

    def swept(self) -> list[str]:
        """The swept settings that take more than one value, in :data:`SWEPT` order."""
        return [n for n in SWEPT if len(getattr(self, n)) > 1]

    def study_name(self) -> str:
        """``name``, or ``"<data>-<model>-<8 hex digits of the spec>"`` (stable across runs)."""
        if self.name:
            return self.name
        d = self.to_dict()
        d.pop("name")
        digest = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.data}-{self.model}-{digest}"

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able data (lists for the swept settings)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for n in SWEPT:
            d[n] = list(d[n])
        d["data_options"] = dict(self.data_options)
        for k in _FINGERPRINTS:
            if d[k] is None:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepSpec:
        """Build a spec from plain data; unknown keys are an error naming the valid ones."""
        valid = [f.name for f in fields(cls)]
        tables = sorted(k for k in SWEPT if isinstance(d.get(k), Mapping))
        if tables:
            raise ParameterError(
                f"The value of `{tables[0]}` is a table ([{tables[0]}] section), but must be a "
                f"value or a list, e.g. `{tables[0]} = [...]` at the top of the file."
            )
        unknown = sorted(set(d) - set(valid))
        if unknown:
            guesses = [f"{close!r} for {u!r}" for u in unknown if (close := closest(u, valid))]
            hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
            raise ParameterError(
                f"Unknown sweep setting(s) {', '.join(map(repr, unknown))}{hint}; "
                f"valid settings: {', '.join(v for v in valid if v not in _FINGERPRINTS)}."
            )
        return cls(**dict(d))

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> SweepSpec:
        """Read a TOML file: top-level keys named as the fields, lists for swept settings.

        ``overrides`` (e.g. from CLI options given explicitly) replace the file's values.

        Example:
            >>> import tempfile, pathlib
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.toml"
            >>> _ = p.write_text('data = "digits"\\nepochs = [5, 10]\\n[data_options]\\nupsample = false\\n')
            >>> SweepSpec.from_toml(p).data_options
            {'upsample': False}
        """
        path = Path(path)
        try:
            d = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ParameterError(
                f"The sweep spec file {str(path)!r} is not UTF-8 text (byte "
                f"{e.object[e.start]:#04x} at position {e.start}); a spec is a TOML text file."
            ) from None
        except FileNotFoundError:
            raise ParameterError(f"The sweep spec file {str(path)!r} does not exist.") from None
        except IsADirectoryError:
            raise ParameterError(f"The sweep spec file {str(path)!r} is a folder.") from None
        except tomllib.TOMLDecodeError as e:
            raise ParameterError(f"The sweep spec file {str(path)!r} is not valid TOML: {e}") from None
        inner = sorted(set(d) & set(_FINGERPRINTS))
        if inner:
            raise ParameterError(
                f"The sweep spec file {str(path)!r} sets {inner[0]!r}, which epochlab computes "
                "from the data or model it names; remove it."
            )
        try:
            return cls.from_dict({**d, **overrides})
        except ParameterError as e:
            raise ParameterError(f"In the sweep spec file {str(path)!r}: {e}") from None

    @classmethod
    def from_cli(cls, **texts: Any) -> SweepSpec:
        """Build a spec from CLI text: swept settings as ``"5,10,15"``, ``schedule`` as a list.

        Example:
            >>> SweepSpec.from_cli(epochs="5,10,15", batch_size="32,64", lr="1e-3").lr
            (0.001,)
        """
        return cls(**parse_cli_lists(texts))


def parse_cli_lists(texts: Mapping[str, Any]) -> dict[str, Any]:
    """Turn CLI strings into typed values: ``"5,10"`` -> ``[5, 10]`` for swept settings.

    ``schedule`` is a sequence of texts (schedule texts hold commas themselves);
    every other value passes through unchanged.

    Example:
        >>> parse_cli_lists({"epochs": "5, 10", "batch_norm": "on,off"})
        {'epochs': [5, 10], 'batch_norm': [True, False]}
    """
    out: dict[str, Any] = {}
    for name, text in texts.items():
        if name not in SWEPT or name == "schedule" or not isinstance(text, str):
            out[name] = list(text) if name == "schedule" and not isinstance(text, str) else text
            continue
        items = [t.strip() for t in text.split(",")]
        out[name] = [_word(name, t, text) for t in items]
    return out


def _word(name: str, word: str, text: str) -> Any:
    kind = {"epochs": int, "batch_size": int, "seed": int, "lr": float, "weight_decay": float}
    if name in kind:
        try:
            return kind[name](word)
        except ValueError:
            what = "an integer" if kind[name] is int else "a number"
            raise ParameterError(
                f"The value of `{name}` is {text!r}: {word!r} is not {what}. "
                f"Give a comma-separated list such as "
                f"{'5,10,15' if kind[name] is int else '1e-3,1e-2'}."
            ) from None
    if name == "batch_norm":
        return _bool(name, word)
    return word


def _check_early_stopping(text: str) -> None:
    """Parse the text now, so a bad setting fails before any training."""
    parse_early_stopping(text)
