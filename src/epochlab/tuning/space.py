"""The search space of a tuning run: parsed from text, checked, and turned into Optuna suggestions.

A space is written ``name=distribution(args)`` parts separated by commas::

    lr=loguniform(1e-4,1e-1),batch_size=choice(16,32,64,128),epochs=int(5,50)

Distributions: ``loguniform(low, high)`` and ``uniform(low, high)`` (floats),
``int(low, high)`` (both ends included), ``logint(low, high)``, and
``choice(a, b, ...)`` (numbers, ``true``/``false`` or words such as
optimizer names). Names: the settings of one training run (see
:data:`SETTINGS`). Every value is checked here, before any training, and a
malformed space raises :class:`~epochlab.validation.ParameterError` quoting the
part that is wrong and where it starts.

Example:
    >>> space = parse_space("lr=loguniform(1e-4,1e-1),batch_size=choice(16,32)")
    >>> space.names
    ('lr', 'batch_size')
    >>> space["batch_size"].values
    (16, 32)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["DISTRIBUTIONS", "SETTINGS", "Param", "SearchSpace", "as_written", "parse_space"]

DISTRIBUTIONS = ("loguniform", "uniform", "int", "logint", "choice")
# The settings a space may search, and what each accepts.
SETTINGS = {
    "lr": "a float > 0",
    "batch_size": "an int >= 1",
    "epochs": "an int >= 1",
    "weight_decay": "a float >= 0",
    "momentum": "a float in [0, 1)",
    "optimizer": "one of adam, adamw, sgd, rmsprop",
    "seed": "an int >= 0",
}
_INT_SETTINGS = ("batch_size", "epochs", "seed")
_OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
_EXAMPLE = "lr=loguniform(1e-4,1e-1),batch_size=choice(16,32,64,128),epochs=int(5,50)"
_PART = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*", re.S)
GRID_MAX_INTS = 1000  # an int(low, high) range a grid may enumerate


@dataclass(frozen=True)
class Param:
    """One searched setting: its name, distribution and arguments, as written.

    Attributes:
        name: the setting (``"lr"``).
        kind: one of :data:`DISTRIBUTIONS`.
        low, high: the range (``None`` for ``choice``).
        values: the choices (empty for ranges).
        text: the part of the space this came from.
    """

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    values: tuple[Any, ...] = ()
    text: str = ""

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for this setting's value."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     log=self.kind == "logint")
        return trial.suggest_float(self.name, float(self.low), float(self.high),
                                   log=self.kind == "loguniform")

    def distribution(self) -> Any:
        """The Optuna distribution :meth:`suggest` samples from."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "choice":
            return CategoricalDistribution(list(self.values))
        if self.kind in ("int", "logint"):
            return IntDistribution(int(self.low), int(self.high), log=self.kind == "logint")
        return FloatDistribution(float(self.low), float(self.high), log=self.kind == "loguniform")

    def grid(self) -> list[Any]:
        """Every value, for a grid search; ParameterError for a continuous range."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind in ("int", "logint") and self.high - self.low < GRID_MAX_INTS:
            return list(range(int(self.low), int(self.high) + 1))
        raise ParameterError(
            f"The value of `sampler` is 'grid', but `{self.text}` is not a finite set of values; "
            "a grid needs choice(...) (or a small int(...) range) for every setting."
        )

    def largest(self) -> Any:
        """The largest value this setting can take."""
        return max(self.values) if self.kind == "choice" else self.high

    def options(self) -> list[Any]:
        """The values of a choice or an int range; for a float range, its two ends."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind in ("int", "logint") and self.high - self.low < GRID_MAX_INTS:
            return list(range(int(self.low), int(self.high) + 1))
        return [self.low, self.high]


@dataclass(frozen=True)
class SearchSpace:
    """The parsed space: an ordered tuple of :class:`Param`.

    Example:
        >>> s = parse_space("epochs=int(5,50),optimizer=choice(adam,sgd)")
        >>> s["epochs"].largest(), s["optimizer"].values, str(s)
        (50, ('adam', 'sgd'), 'epochs=int(5,50),optimizer=choice(adam,sgd)')
    """

    params: tuple[Param, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def __str__(self) -> str:
        return ",".join(p.text for p in self.params)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's value of every setting, in the space's order."""
        return {p.name: p.suggest(trial) for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        """Every setting's values, for Optuna's GridSampler."""
        return {p.name: p.grid() for p in self.params}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())


def as_written(dist: Any) -> str:
    """An Optuna distribution in this module's syntax, the inverse of
    :meth:`Param.distribution`.

    Example:
        >>> from optuna.distributions import FloatDistribution
        >>> as_written(FloatDistribution(1e-4, 0.1, log=True))
        'loguniform(0.0001,0.1)'
    """
    if hasattr(dist, "choices"):
        return f"choice({','.join(str(c) for c in dist.choices)})"
    if type(dist).__name__ == "IntDistribution":
        return f"{'logint' if dist.log else 'int'}({dist.low},{dist.high})"
    return f"{'loguniform' if dist.log else 'uniform'}({dist.low:g},{dist.high:g})"


def parse_space(space: str | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """Parse ``space`` (text, or a dict of ``name -> "dist(args)"`` or a list of choices).

    Raises:
        ParameterError: naming the part that is wrong, where it starts, and what is allowed.

    Example:
        >>> parse_space({"lr": "loguniform(1e-4,1e-1)", "batch_size": [32, 64]})["batch_size"].kind
        'choice'
        >>> parse_space("lr=loguniform(1e-4,1e-1),batch_size=choise(16,32)")
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: The value of `space` is wrong at `batch_size=choise(16,32)` (character 26): unknown distribution 'choise'; use one of loguniform, uniform, int, logint, choice. A space looks like lr=loguniform(1e-4,1e-1),batch_size=choice(16,32,64,128),epochs=int(5,50).
    """
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        space = ",".join(_mapping_part(k, v) for k, v in space.items())
    if not isinstance(space, str):
        raise ParameterError(
            f"The value of `space` is a {type(space).__name__}, but must be a string such as "
            f"{_EXAMPLE!r} or a dict of name -> 'distribution(args)' or list of choices."
        )
    if not space.strip():
        raise ParameterError(f"The value of `space` is empty; give at least one setting, e.g. {_EXAMPLE}.")
    params: list[Param] = []
    for start, part in _split(space):
        p = _parse_part(start, part)
        if p.name in (q.name for q in params):
            _fail(start, part, f"`{p.name}` is given twice")
        params.append(p)
    return SearchSpace(tuple(params))


def _mapping_part(name: Any, value: Any) -> str:
    if isinstance(value, str):
        return f"{name}={value}"
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return f"{name}=choice({','.join(str(v) for v in value)})"
    raise ParameterError(
        f"The value of `space[{name!r}]` is {value!r}, but must be 'distribution(args)' text "
        "or a list of choices."
    )


def _split(text: str) -> list[tuple[int, str]]:
    """The top-level comma-separated parts and where each starts (commas in parentheses kept)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                _fail(start, text[start:i + 1], "a ')' without its '('")
        elif ch == "," and depth == 0:
            parts.append((start, text[start:i]))
            start = i + 1
    if depth > 0:
        _fail(start, text[start:], "a '(' that is never closed")
    parts.append((start, text[start:]))
    return [(s + len(p) - len(p.lstrip()), p.strip()) for s, p in parts]


def _fail(start: int, part: str, why: str) -> NoReturn:
    raise ParameterError(
        f"The value of `space` is wrong at `{part}` (character {start + 1}): {why}. "
        f"A space looks like {_EXAMPLE}."
    )


def _parse_part(start: int, part: str) -> Param:
    if not part:
        _fail(start, part, "an empty part (two commas in a row, or a trailing comma)")
    m = _PART.fullmatch(part)
    if m is None:
        _fail(start, part, "expected name=distribution(args)")
    name, kind, args_text = m.group(1), m.group(2), m.group(3)
    if name not in SETTINGS:
        _fail(start, part, f"unknown setting `{name}`; use one of {', '.join(SETTINGS)}")
    if kind not in DISTRIBUTIONS:
        _fail(start, part, f"unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}")
    args = [a.strip().strip("'\"") for a in args_text.split(",")]
    if any(not a for a in args):
        _fail(start, part, "an empty argument")
    if kind == "choice":
        values = tuple(_value(a) for a in args)
        if len(set(map(repr, values))) < len(values):
            _fail(start, part, "a choice is listed twice")
        for v in values:
            _check_value(start, part, name, v)
        return Param(name, kind, values=values, text=part)
    if len(args) != 2:
        _fail(start, part, f"{kind}(low, high) takes 2 arguments, got {len(args)}")
    integer = kind in ("int", "logint")
    if name == "optimizer":
        _fail(start, part, "`optimizer` takes choice(...), e.g. optimizer=choice(adam,sgd)")
    if name in _INT_SETTINGS and not integer:
        _fail(start, part, f"`{name}` is an integer setting; use int(low, high) or choice(...)")
    try:
        low, high = (int(a) for a in args) if integer else (float(a) for a in args)
    except ValueError:
        _fail(start, part, f"{kind}(...) needs two {'integers' if integer else 'numbers'}, "
                           f"got {', '.join(args)}")
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        _fail(start, part, f"needs low < high (finite), got low={low}, high={high}")
    if kind in ("loguniform", "logint") and low <= 0:
        _fail(start, part, f"a log range needs low > 0, got low={low}")
    for v in (low, high):
        _check_value(start, part, name, v)
    return Param(name, kind, low, high, text=part)


def _value(arg: str) -> Any:
    low = arg.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(arg)
        except ValueError:
            pass
    return arg


def _check_value(start: int, part: str, name: str, v: Any) -> None:
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if name == "optimizer":
        ok = v in _OPTIMIZERS
    elif name in _INT_SETTINGS:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= (0 if name == "seed" else 1)
    elif name == "lr":
        ok = number and math.isfinite(v) and v > 0
    elif name == "weight_decay":
        ok = number and math.isfinite(v) and v >= 0
    else:  # momentum
        ok = number and 0 <= v < 1
    if not ok:
        _fail(start, part, f"`{name}` must be {SETTINGS[name]}, got {v!r}")
