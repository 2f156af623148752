"""Learning-rate schedules: pure functions of the global iteration (and epoch).

This module owns what the learning rate *should* be at a given point of a run.
It does not own the optimizer, nor any state that changes while training: the
training loop calls ``schedule(step, epoch)`` before every optimizer update and
multiplies the result by its own ``lr_scale`` (which callbacks such as
ReduceLROnPlateau change). Because a schedule keeps no state, a resumed run
gets exactly the learning rates it would have had without the interruption.

Counters, defined once for the whole project:

- ``step`` is the number of optimizer updates already done (0-based), so
  ``schedule(step, epoch)`` is the learning rate used by update ``step + 1``.
- ``epoch`` is the 0-based index of the epoch that update belongs to.

Schedules (factory -> canonical ``name``; the CLI also accepts the alias):

- :func:`constant` -> ``"constant"``
- :func:`exponential_decay` -> ``"exponential"`` (``"exponential_decay"``):
  Keras' ``ExponentialDecay``, exactly.
- :func:`step_decay` -> ``"step"`` (``"step_decay"``): a per-epoch staircase.
- :func:`cosine` -> ``"cosine"``: optional linear warmup, then cosine to
  ``min_lr`` at ``total_steps``.
- :func:`linear_warmup` -> ``"warmup"`` (``"linear_warmup"``): ramp, then
  constant.
- :func:`one_cycle` -> ``"one_cycle"`` (``"onecycle"``): equal to
  ``torch.optim.lr_scheduler.OneCycleLR`` (cosine annealing, two phases).

``cosine`` and ``one_cycle`` depend on the run's total length
(``depends_on_total`` is True); a sweep may only read one long run at several
epoch counts when a schedule does not. A schedule may be built with its
initial learning rate or ``total_steps`` left as None and filled later with
:meth:`Schedule.with_initial` / :meth:`Schedule.with_total_steps` (``fit``
does both); calling it before that raises a ValueError saying how.

Every parameter is validated when the schedule is built; the messages name
the parameter, what is allowed and what was given.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "NAMES",
    "Constant",
    "Cosine",
    "ExponentialDecay",
    "LinearWarmup",
    "OneCycle",
    "Schedule",
    "StepDecay",
    "constant",
    "cosine",
    "exponential_decay",
    "from_config",
    "linear_warmup",
    "one_cycle",
    "parse",
    "step_decay",
]

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")
_NONE = ("none", "null")


@dataclass(frozen=True)
class _Param:
    """One declared parameter of a schedule: its type, range and optionality."""

    name: str
    kind: str  # "float", "int" or "bool"
    low: float | None = None
    low_open: bool = False  # True: value > low; False: value >= low
    high: float | None = None
    high_open: bool = False
    optional: bool = False  # None allowed (filled later by with_initial / with_total_steps)

    def rule(self) -> str:
        """The allowed range as an expression, e.g. ``decay_steps >= 1``."""
        if self.kind == "bool":
            return f"{self.name} in {{true, false}}"
        lo = None if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
        hi = None if self.high is None else f" {'<' if self.high_open else '<='} {self.high:g}"
        if lo and hi:
            text = f"{lo}{self.name}{hi}"
        elif lo:
            text = f"{self.name} {'>' if self.low_open else '>='} {self.low:g}"
        elif hi:
            text = f"{self.name}{hi}"
        else:
            text = f"{self.name} finite"
        return text

    def allowed(self) -> str:
        """Type and range in words, for messages about a value of the wrong type."""
        what = {"bool": "a boolean", "int": "an integer", "float": "a finite number"}[self.kind]
        if self.kind == "bool":
            return f"{what} (true/false/yes/no/1/0)"
        return f"{what} with `{self.rule()}`"

    def _fail(self, value: Any, allowed: str) -> ValueError:
        return ParameterError(f"The value of `{self.name}` is {value!r}, but must be {allowed}.")

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ValueError."""
        if value is None:
            if self.optional:
                return None
            raise self._fail(value, self.allowed())
        if self.kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise self._fail(value, self.allowed())
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise self._fail(value, self.allowed())
        number = float(value)
        if not math.isfinite(number):
            raise self._fail(value, self.allowed())
        if self.kind == "int":
            if not number.is_integer():
                raise self._fail(value, self.allowed())
            number = int(number)
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            raise self._fail(value, f"`{self.rule()}`")
        if self.high is not None and (
            number >= self.high if self.high_open else number > self.high
        ):
            raise self._fail(value, f"`{self.rule()}`")
        return number

    def parse(self, text: str) -> Any:
        """Parse the CLI spelling of a value (``"0.1"``, ``"true"``, ``"none"``)."""
        word = text.strip().lower()
        if self.optional and word in _NONE:
            return None
        if self.kind == "bool":
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise self._fail(text, self.allowed())
        try:
            number: float | int = int(word) if self.kind == "int" else float(word)
        except ValueError:
            try:
                number = float(word)  # "1e3" for an integer parameter
            except ValueError:
                raise self._fail(text, self.allowed()) from None
        return self.check(number)


def _lr_param(name: str) -> _Param:
    # A learning rate of 0 trains nothing and is always a mistake; inf/NaN never parse.
    return _Param(name, "float", low=0.0, low_open=True, optional=True)


_TOTAL = _Param("total_steps", "int", low=1, optional=True)


class Schedule:
    """Base class: a learning rate as a pure function of ``(step, epoch)``.

    Subclasses declare their parameters in ``_PARAMS`` and implement
    ``__call__``; build them with the factory functions (:func:`cosine`,
    ...), which hold the defaults. Instances are immutable: ``with_initial``
    and ``with_total_steps`` return bound copies.

    Attributes:
        name: canonical name, as in ``to_config()["name"]`` and the CLI.
        depends_on_total: True when the values depend on the run's total
            length (``total_steps``), so a longer run is not an extension of
            a shorter one.
        uses_epoch: True when the values depend on ``epoch`` rather than
            ``step`` (``values`` then needs ``iterations_per_epoch``).

    Example:
        >>> s = exponential_decay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True)
        >>> s(999), s(1000)
        (0.1, 0.096)
        >>> from_config(s.to_config()) == s
        True
    """

    name: ClassVar[str]
    factory: ClassVar[str]  # name of the public factory function, used by __repr__
    depends_on_total: ClassVar[bool] = False
    uses_epoch: ClassVar[bool] = False
    _initial_param: ClassVar[str] = "initial"
    _PARAMS: ClassVar[tuple[_Param, ...]]

    def __init__(self, **params: Any) -> None:
        names = [p.name for p in self._PARAMS]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ParameterError(_unknown_params_message(self.name, unknown[0], names))
        missing = [n for n in names if n not in params]
        if missing:
            raise ParameterError(f"Schedule {self.name!r} is missing parameters {missing}.")
        self._config: dict[str, Any] = {p.name: p.check(params[p.name]) for p in self._PARAMS}
        for key, value in self._config.items():
            setattr(self, key, value)
        self._check_together()
        initial = self._config[self._initial_param]
        total = self._config.get("total_steps", 0)
        # One flag checked on every call: cheaper than re-testing each None.
        self._ready = initial is not None and total is not None
        if self._ready:
            self._prepare()
        self._frozen = True

    def __setattr__(self, key: str, value: Any) -> None:
        # Immutable, so one instance can be shared by runs, configs and sweep plans.
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"Schedules are immutable: cannot set `{key}`; build a new one or use "
                f"with_initial / with_total_steps."
            )
        object.__setattr__(self, key, value)

    # -- subclass hooks ---------------------------------------------------------------------

    def _check_together(self) -> None:
        """Validate constraints that involve several parameters."""

    def _prepare(self) -> None:
        """Precompute constants for ``__call__`` (only called once bound)."""

    def __call__(self, step: int, epoch: int = 0) -> float:
        """The learning rate for update ``step + 1`` (``step`` updates done), in ``epoch``."""
        raise NotImplementedError  # pragma: no cover

    # -- binding ----------------------------------------------------------------------------

    def _unbound_error(self) -> ValueError:
        missing = []
        if self._config[self._initial_param] is None:
            p = self._initial_param
            missing.append(
                f"its initial learning rate `{p}` is None: pass {self.factory}({p}=...) or "
                f"bind it with schedule.with_initial(lr) (fit fills it from its `lr` argument)"
            )
        if self._config.get("total_steps", 0) is None:
            missing.append(
                f"`total_steps` is None: pass {self.factory}(total_steps=...) or bind it with "
                f"schedule.with_total_steps(n) (fit binds total_steps = epochs * "
                f"iterations_per_epoch automatically)"
            )
        return ParameterError(
            f"The {self.name!r} schedule cannot be evaluated yet: " + "; ".join(missing) + "."
        )

    def _replace(self, **changes: Any) -> Schedule:
        return type(self)(**{**self._config, **changes})

    def with_total_steps(self, total_steps: int) -> Schedule:
        """Return a copy bound to ``total_steps`` if this schedule needs it and lacks it.

        Schedules that do not depend on the total, or already have one, return
        ``self`` (an explicit ``total_steps`` wins over the run's length).

        Example:
            >>> cosine(0.1).with_total_steps(100).total_steps
            100
            >>> constant(0.1).with_total_steps(100) == constant(0.1)
            True
        """
        _TOTAL.check(total_steps)
        if self.depends_on_total and self._config["total_steps"] is None:
            return self._replace(total_steps=total_steps)
        return self

    @property
    def initial_lr(self) -> float | None:
        """The schedule's own initial (or max) learning rate; None when it takes fit's ``lr``.

        Example:
            >>> exponential_decay(0.01).initial_lr, cosine().initial_lr
            (0.01, None)
        """
        return self._config[self._initial_param]

    @property
    def initial_param(self) -> str:
        """The name of the initial-rate parameter (``initial``, ``lr`` or ``max_lr``)."""
        return self._initial_param

    def with_initial(self, lr: float) -> Schedule:
        """Return a copy whose initial (or max) learning rate is ``lr`` if it was None.

        Example:
            >>> one_cycle(total_steps=10).with_initial(0.5).max_lr
            0.5
            >>> constant(0.1).with_initial(0.5)(0)
            0.1
        """
        _Param("lr", "float", low=0.0, low_open=True).check(lr)
        if self._config[self._initial_param] is None:
            return self._replace(**{self._initial_param: lr})
        return self

    # -- serialisation ----------------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        """A JSON-able ``{"name": ..., **params}``; :func:`from_config` is its inverse.

        Example:
            >>> step_decay(0.1, factor=0.5, every_epochs=10).to_config()
            {'name': 'step', 'initial': 0.1, 'factor': 0.5, 'every_epochs': 10}
        """
        return {"name": self.name, **self._config}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{self.factory}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(tuple(self.to_config().items()))

    # -- inspection -------------------------------------------------------------------------

    def values(self, steps: int, iterations_per_epoch: int | None = None) -> np.ndarray:
        """The learning rates at steps ``0 .. steps-1`` as a float64 array.

        Args:
            steps: how many updates to evaluate (``>= 0``).
            iterations_per_epoch: updates per epoch, so that step ``s`` is in
                epoch ``s // iterations_per_epoch``. Required by schedules that
                use the epoch (``step_decay``); others ignore the epoch.

        Example:
            >>> step_decay(1.0, factor=0.5, every_epochs=1).values(6, iterations_per_epoch=2)
            array([1.  , 1.  , 0.5 , 0.5 , 0.25, 0.25])
        """
        _Param("steps", "int", low=0).check(steps)
        if iterations_per_epoch is None:
            if self.uses_epoch:
                raise ParameterError(
                    f"The value of `iterations_per_epoch` is None, but the {self.name!r} schedule "
                    f"changes per epoch, so it must be an integer with "
                    f"`iterations_per_epoch >= 1`."
                )
            ipe = steps + 1  # every step in epoch 0; the epoch is unused
        else:
            ipe = _Param("iterations_per_epoch", "int", low=1).check(iterations_per_epoch)
        return np.fromiter((self(s, s // ipe) for s in range(steps)), dtype=np.float64, count=steps)

    def plot(
        self, steps: int, iterations_per_epoch: int | None = None, ax: Axes | None = None
    ) -> Figure:
        """Plot the learning rate over ``steps`` iterations; return the matplotlib Figure.

        Draws on ``ax`` if given, else on a new Figure (no pyplot, so no global
        state and no display needed). With ``iterations_per_epoch`` a second
        x-axis on top shows epochs.

        Example:
            >>> fig = cosine(0.1, total_steps=100, warmup_steps=10).plot(100)
            >>> fig.savefig("lr.png")  # doctest: +SKIP
        """
        lrs = self.values(steps, iterations_per_epoch)
        if ax is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6.0, 3.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.plot(np.arange(steps), lrs, label=self.name)
        ax.set_xlabel("iteration (optimizer updates done)")
        ax.set_ylabel("learning rate")
        ax.set_title(repr(self), fontsize="small")
        if iterations_per_epoch is not None:
            ipe = float(iterations_per_epoch)
            top = ax.secondary_xaxis("top", functions=(lambda x: x / ipe, lambda e: e * ipe))
            top.set_xlabel("epoch")
        return fig


def _unknown_params_message(name: str, given: str, valid: list[str]) -> str:
    return (
        f"Unknown parameter {given!r} for schedule {name!r}. Valid parameters: {', '.join(valid)}."
    )


# -- the schedules ---------------------------------------------------------------------------


class Constant(Schedule):
    """A constant learning rate; see :func:`constant`."""

    name = "constant"
    factory = "constant"
    _initial_param = "lr"
    _PARAMS = (_lr_param("lr"),)
    lr: float | None

    def __call__(self, step: int, epoch: int = 0) -> float:
        if not self._ready:
            raise self._unbound_error()
        return self.lr  # type: ignore[return-value]


class ExponentialDecay(Schedule):
    """Keras' ``ExponentialDecay``; see :func:`exponential_decay`."""

    name = "exponential"
    factory = "exponential_decay"
    _PARAMS = (
        _lr_param("initial"),
        _Param("decay_steps", "int", low=1),
        _Param("decay_rate", "float", low=0.0, low_open=True),
        _Param("staircase", "bool"),
    )
    initial: float | None
    decay_steps: int
    decay_rate: float
    staircase: bool

    def __call__(self, step: int, epoch: int = 0) -> float:
        if not self._ready:
            raise self._unbound_error()
        if self.staircase:
            return self.initial * self.decay_rate ** (step // self.decay_steps)  # type: ignore[operator]
        return self.initial * self.decay_rate ** (step / self.decay_steps)  # type: ignore[operator]


class StepDecay(Schedule):
    """A per-epoch staircase; see :func:`step_decay`."""

    name = "step"
    factory = "step_decay"
    uses_epoch = True
    _PARAMS = (
        _lr_param("initial"),
        _Param("factor", "float", low=0.0, low_open=True),
        _Param("every_epochs", "int", low=1),
    )
    initial: float | None
    factor: float
    every_epochs: int

    def __call__(self, step: int, epoch: int = 0) -> float:
        if not self._ready:
            raise self._unbound_error()
        return self.initial * self.factor ** (epoch // self.every_epochs)  # type: ignore[operator]


def _check_warmup_within_total(warmup_steps: int, total_steps: int | None) -> None:
    if total_steps is not None and warmup_steps > total_steps:
        raise ParameterError(
            f"The value of `warmup_steps` is {warmup_steps!r}, but must be "
            f"`warmup_steps <= total_steps` (total_steps is {total_steps!r})."
        )


class Cosine(Schedule):
    """Linear warmup then cosine annealing; see :func:`cosine`."""

    name = "cosine"
    factory = "cosine"
    depends_on_total = True
    _PARAMS = (
        _lr_param("initial"),
        _TOTAL,
        _Param("warmup_steps", "int", low=0),
        _Param("min_lr", "float", low=0.0),
    )
    initial: float | None
    total_steps: int | None
    warmup_steps: int
    min_lr: float

    def _check_together(self) -> None:
        _check_warmup_within_total(self.warmup_steps, self.total_steps)
        if self.initial is not None and self.min_lr > self.initial:
            raise ParameterError(
                f"The value of `min_lr` is {self.min_lr!r}, but must be `min_lr <= initial` "
                f"(initial is {self.initial!r})."
            )

    def _prepare(self) -> None:
        self._span = self.initial - self.min_lr  # type: ignore[operator]
        self._ramp = self._span / (self.warmup_steps + 1)
        self._angle = math.pi / max(self.total_steps - self.warmup_steps, 1)  # type: ignore[operator]

    def __call__(self, step: int, epoch: int = 0) -> float:
        if not self._ready:
            raise self._unbound_error()
        if step < self.warmup_steps:
            return self.min_lr + self._ramp * (step + 1)
        if step >= self.total_steps:  # type: ignore[operator]
            return self.min_lr
        return self.min_lr + self._span * 0.5 * (
            1.0 + math.cos(self._angle * (step - self.warmup_steps))
        )


class LinearWarmup(Schedule):
    """A linear ramp to ``initial``, then constant; see :func:`linear_warmup`."""

    name = "warmup"
    factory = "linear_warmup"
    _PARAMS = (_lr_param("initial"), _Param("warmup_steps", "int", low=0))
    initial: float | None
    warmup_steps: int

    def __call__(self, step: int, epoch: int = 0) -> float:
        if not self._ready:
            raise self._unbound_error()
        if step < self.warmup_steps:
            return self.initial * (step + 1) / (self.warmup_steps + 1)  # type: ignore[operator]
        return self.initial  # type: ignore[return-value]


class OneCycle(Schedule):
    """The one-cycle policy, equal to torch's ``OneCycleLR``; see :func:`one_cycle`."""

    name = "one_cycle"
    factory = "one_cycle"
    depends_on_total = True
    _initial_param = "max_lr"
    _PARAMS = (
        _lr_param("max_lr"),
        _TOTAL,
        _Param("pct_start", "float", low=0.0, high=1.0),
        _Param("div_factor", "float", low=0.0, low_open=True),
        _Param("final_div_factor", "float", low=0.0, low_open=True),
    )
    max_lr: float | None
    total_steps: int | None
    pct_start: float
    div_factor: float
    final_div_factor: float

    def _prepare(self) -> None:
        # The same expressions, in the same order, as OneCycleLR (three_phase=False),
        # so the floats agree exactly rather than approximately.
        self._start_lr = self.max_lr / self.div_factor  # type: ignore[operator]
        self._min_lr = self._start_lr / self.final_div_factor
        self._end_up = float(self.pct_start * self.total_steps) - 1  # type: ignore[operator]
        self._last = self.total_steps - 1  # type: ignore[operator]
        self._down = self._last - self._end_up

    def __call__(self, step: int, epoch: int = 0) -> float:
        if not self._ready:
            raise self._unbound_error()
        if step > self._last:  # after the cycle: hold its final value
            step = self._last
        end_up = self._end_up
        # torch divides 0 by 0 when the rise ends at step 0 (pct_start * total_steps == 1):
        # the rise is then empty and step 0 is the peak, where the fall begins.
        if step <= end_up and end_up > 0:
            pct = step / end_up
            start, end = self._start_lr, self.max_lr
        else:
            down = self._down
            pct = (step - end_up) / down if down else 0.0
            start, end = self.max_lr, self._min_lr
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)  # type: ignore[operator]


# -- public factories ------------------------------------------------------------------------


def constant(lr: float | None = None) -> Schedule:
    """A constant learning rate.

    Args:
        lr: the learning rate (``>= 0``); None to take fit's ``lr``.

    Example:
        >>> constant(0.01)(12345)
        0.01
    """
    return Constant(lr=lr)


def exponential_decay(
    initial: float | None = None,
    decay_steps: int = 1000,
    decay_rate: float = 0.96,
    staircase: bool = False,
) -> Schedule:
    """Keras' ``ExponentialDecay``: ``initial * decay_rate ** (step / decay_steps)``.

    With ``staircase=True`` the exponent is floored, so the rate drops every
    ``decay_steps`` updates (the seed's slide 8).

    Args:
        initial: the learning rate at step 0 (``>= 0``); None to take fit's ``lr``.
        decay_steps: updates per decay period (``>= 1``).
        decay_rate: factor per period (``> 0``).
        staircase: floor the exponent.

    Example:
        >>> s = exponential_decay(0.1, decay_steps=1000, decay_rate=0.96, staircase=True)
        >>> [s(0), s(999), s(1000)]
        [0.1, 0.1, 0.096]
    """
    return ExponentialDecay(
        initial=initial, decay_steps=decay_steps, decay_rate=decay_rate, staircase=staircase
    )


def step_decay(
    initial: float | None = None, factor: float = 0.5, every_epochs: int = 10
) -> Schedule:
    """A per-epoch staircase: ``initial * factor ** (epoch // every_epochs)``.

    Args:
        initial: the learning rate in the first epochs (``>= 0``); None to take fit's ``lr``.
        factor: multiplier per drop (``> 0``).
        every_epochs: epochs between drops (``>= 1``).

    Example:
        >>> s = step_decay(0.1, factor=0.5, every_epochs=10)
        >>> s(0, epoch=9), s(0, epoch=10)
        (0.1, 0.05)
    """
    return StepDecay(initial=initial, factor=factor, every_epochs=every_epochs)


def cosine(
    initial: float | None = None,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
) -> Schedule:
    """Linear warmup from ``min_lr`` to ``initial``, then cosine annealing to ``min_lr``.

    With ``W = warmup_steps`` and ``T = total_steps``:

    - ``step < W``: ``min_lr + (initial - min_lr) * (step + 1) / (W + 1)``. The
      ramp starts at ``min_lr`` (one step before step 0) rather than at 0, so
      ``min_lr`` is a floor of the whole schedule; it is shifted by one so that
      no update is wasted at a learning rate of exactly ``min_lr`` (often 0).
    - ``W <= step < T``: ``min_lr + (initial - min_lr) * (1 + cos(pi * (step - W) / (T - W))) / 2``;
      with ``W = 0`` this is torch's ``CosineAnnealingLR(T_max=T, eta_min=min_lr)``.
    - ``step >= T``: ``min_lr`` (clamped, not periodic).

    Args:
        initial: the peak learning rate (``>= min_lr``); None to take fit's ``lr``.
        total_steps: the step at which ``min_lr`` is reached (``>= 1``); None to
            let fit bind ``epochs * iterations_per_epoch``.
        warmup_steps: length of the ramp (``0 <= warmup_steps <= total_steps``).
        min_lr: the floor (``>= 0``).

    Example:
        >>> s = cosine(0.1, total_steps=100, warmup_steps=10)
        >>> s(10), s(55), s(100)
        (0.1, 0.05, 0.0)
    """
    return Cosine(
        initial=initial, total_steps=total_steps, warmup_steps=warmup_steps, min_lr=min_lr
    )


def linear_warmup(initial: float | None = None, warmup_steps: int = 100) -> Schedule:
    """A linear ramp to ``initial`` over ``warmup_steps`` updates, then constant.

    Step ``s < warmup_steps`` uses ``initial * (s + 1) / (warmup_steps + 1)``
    (no update at a learning rate of 0, the same ramp as :func:`cosine`).

    Args:
        initial: the learning rate after the ramp (``>= 0``); None to take fit's ``lr``.
        warmup_steps: length of the ramp (``>= 0``; 0 means constant).

    Example:
        >>> s = linear_warmup(0.1, warmup_steps=4)
        >>> [round(s(i), 3) for i in range(6)]
        [0.02, 0.04, 0.06, 0.08, 0.1, 0.1]
    """
    return LinearWarmup(initial=initial, warmup_steps=warmup_steps)


def one_cycle(
    max_lr: float | None = None,
    total_steps: int | None = None,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The one-cycle policy, equal to ``torch.optim.lr_scheduler.OneCycleLR`` at every step.

    Cosine from ``max_lr / div_factor`` up to ``max_lr`` over the first
    ``pct_start`` of the run, then cosine down to
    ``max_lr / div_factor / final_div_factor`` at step ``total_steps - 1``
    (torch's ``anneal_strategy="cos"``, ``three_phase=False``; momentum is
    not cycled here). Steps past the end hold the final value.

    Args:
        max_lr: the peak learning rate (``>= 0``); None to take fit's ``lr``.
        total_steps: updates in the cycle (``>= 1``); None to let fit bind it.
        pct_start: fraction of the cycle spent rising (``0 <= pct_start <= 1``).
        div_factor: ``max_lr / div_factor`` is the starting rate (``> 0``).
        final_div_factor: the final rate is the starting rate divided by this (``> 0``).

    Example:
        >>> s = one_cycle(1.0, total_steps=10, pct_start=0.5, div_factor=10)
        >>> round(s(0), 12), s(4), s(9) == 0.1 / 1e4
        (0.1, 1.0, True)
    """
    return OneCycle(
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )


# -- lookup by name: configs and the CLI -----------------------------------------------------

_FACTORIES: dict[str, Any] = {
    "constant": constant,
    "exponential": exponential_decay,
    "step": step_decay,
    "cosine": cosine,
    "warmup": linear_warmup,
    "one_cycle": one_cycle,
}
_CLASSES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (Constant, ExponentialDecay, StepDecay, Cosine, LinearWarmup, OneCycle)
}
_ALIASES = {
    "exponential_decay": "exponential",
    "step_decay": "step",
    "linear_warmup": "warmup",
    "onecycle": "one_cycle",
}
NAMES: tuple[str, ...] = tuple(_FACTORIES) + tuple(_ALIASES)
"""Every schedule name :func:`parse` and :func:`from_config` accept (canonical names first)."""


def _resolve(name: Any) -> type[Schedule]:
    key = name.strip().lower() if isinstance(name, str) else repr(name)
    key = _ALIASES.get(key, key)
    if key not in _CLASSES:
        spelled = ", ".join(
            n + "".join(f" (or {a})" for a, c in _ALIASES.items() if c == n) for n in _FACTORIES
        )
        raise ParameterError(f"Unknown schedule {name!r}. Valid names: {spelled}.")
    return _CLASSES[key]


def _build(cls: type[Schedule], params: dict[str, Any]) -> Schedule:
    valid = [p.name for p in cls._PARAMS]
    for key in params:
        if key not in valid:
            raise ParameterError(_unknown_params_message(cls.name, key, valid))
    return _FACTORIES[cls.name](**params)


def from_config(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.to_config` output.

    Missing parameters take the factory's defaults; unknown ones raise.

    Example:
        >>> from_config({"name": "cosine", "initial": 0.1, "total_steps": 50})
        cosine(initial=0.1, total_steps=50, warmup_steps=0, min_lr=0.0)
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ParameterError(
            f"The value of `config` is {config!r}, but must be a dict with a 'name' key "
            f"(one of {', '.join(NAMES)})."
        )
    params = dict(config)
    cls = _resolve(params.pop("name"))
    return _build(cls, params)


def parse(text: str, default_lr: float | None = None) -> Schedule:
    """Parse the CLI syntax ``name`` or ``name:key=value,key=value``.

    Values are read as the parameter's type: numbers (``0.1``, ``1e-3``,
    ``1000``), booleans (``true/false/yes/no/1/0``) and ``none`` for a
    parameter that may be filled later. ``default_lr`` fills a missing
    initial (or max) learning rate.

    Args:
        text: e.g. ``"exponential:initial=0.1,decay_steps=1000,decay_rate=0.96,staircase=true"``.
        default_lr: the learning rate to use when the text gives none.

    Raises:
        ValueError: for an unknown name (lists the valid names), an unknown
            parameter (lists that schedule's parameters), or a value that does
            not parse or is out of range (names the parameter, range and value).

    Example:
        >>> parse("step:factor=0.1,every_epochs=30", default_lr=0.1)
        step_decay(initial=0.1, factor=0.1, every_epochs=30)
    """
    if not isinstance(text, str) or not text.strip():
        raise ParameterError(
            f"The value of `schedule` is {text!r}, but must be 'name' or "
            f"'name:key=value,...' with a name in: {', '.join(NAMES)}."
        )
    head, _, tail = text.partition(":")
    cls = _resolve(head.strip())
    specs = {p.name: p for p in cls._PARAMS}
    params: dict[str, Any] = {}
    for item in tail.split(","):
        if not item.strip():
            continue
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise ParameterError(
                f"Cannot parse {item.strip()!r} in schedule {text!r}: expected key=value. "
                f"Valid parameters of {cls.name!r}: {', '.join(specs)}."
            )
        if key not in specs:
            raise ParameterError(_unknown_params_message(cls.name, key, list(specs)))
        if key in params:
            raise ParameterError(f"Parameter {key!r} is given twice in schedule {text!r}.")
        params[key] = specs[key].parse(raw)
    schedule = _build(cls, params)
    if default_lr is not None:
        schedule = schedule.with_initial(default_lr)
    return schedule
