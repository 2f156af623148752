"""The result store's contract: studies, runs, and their per-epoch and per-iteration metrics.

A *study* is a named set of runs (one sweep, or all ``epochlab fit`` runs).
A *run* is one configuration trained once. Runs are identified inside their
study by a ``key``: a canonical string of the run's settings (see
:func:`run_key`), so that a sweep run again finds what it already did
(resumability) and never duplicates a run.

Contract every backend keeps (tested once, in ``tests/store/test_contract.py``,
against every backend):

- ``create_study(name, spec)`` is idempotent: the same name returns the same
  study id (the spec of the first call is kept; ``study(name)`` reads it).
- ``add_run(study_id, key, settings)`` returns the existing run's id when the
  key is already in the study; it never creates a second row for one key
  (also when several processes add the same key at once).
- Status moves ``pending -> running -> {completed, early_stopped, diverged,
  pruned, interrupted, failed}``. ``pruned``: a tuning trial that its pruner
  stopped early; its metrics are the epochs it ran. ``start_run`` sets running and the start time. It
  claims the run: it raises ``ValueError`` when the run is already
  ``running`` (another worker has it) or :data:`DONE`. A run that ended
  ``interrupted`` or ``failed`` may be started again (a resumed sweep reruns
  it); starting it clears its old summary and metrics.
- ``finish_run`` writes the run's final status (one of :data:`FINISHED`),
  summary (accounting, timings, final and best metrics), epoch rows and
  iteration columns in ONE transaction: after a crash at any point a run is
  either finished with all its metrics or not finished with none of them. A
  run may be finished straight from ``pending`` (a run read off another run's
  epoch prefix is never trained itself). Finishing a run that is already
  :data:`DONE` raises ``ValueError``: a stored result is never overwritten.
  ``finish_runs`` finishes several runs (a sweep task's) in one transaction:
  all of them or, when one cannot be, none; ``add_runs`` and ``start_runs``
  likewise add a grid and start a task's runs.
  Values that cannot be stored (not JSON-serializable, iteration columns of
  unequal length, an unknown status) raise before anything is written.
- ``reset_stale(study_id)`` turns runs left ``running`` by a process that
  died into ``interrupted`` and deletes any partial metrics; a resumed sweep
  then reruns exactly the runs that are not :data:`DONE`. Call it where no
  other process is working on the study (the sweep driver, before it starts):
  a live run looks exactly like a stale one.
- Reads return plain data: :class:`RunRecord` and lists of dicts; nothing
  returned aliases the store's internals. Everything goes through JSON, so
  NaN and +-inf round-trip, tuples come back as lists and dict keys as
  strings. An iteration column comes back as ints when every value was an
  int, as floats when every value was a number (an int among floats comes
  back as a float), and as the JSON values otherwise.

Summary keys that readers (``epochlab runs``, reports) rely on, written by
:func:`epochlab.store.record.summarize`: ``final`` (the last epoch's
metrics), ``best`` (``epoch`` and that epoch's metrics, by ``val_loss`` or
``loss``), ``total_updates``, ``samples_seen``, ``epochs_run``,
``iterations_per_epoch``, ``seconds``, ``stop_reason``, ``versions``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epochlab.validation import ParameterError

# Outcomes a resumed sweep or tune keeps, and never overwrites.
DONE = ("completed", "early_stopped", "diverged", "pruned")
FINISHED = (*DONE, "interrupted", "failed")
STATUSES = ("pending", "running", *FINISHED)


class StoreError(Exception):
    """A store file that cannot be used: missing, not an epochlab store, or too new."""


@dataclass
class RunRecord:
    """One stored run: its settings, status and summary (metrics are read separately)."""

    id: int
    study_id: int
    study: str
    key: str
    settings: dict[str, Any]
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    shared_from: int | None = None  # the run this one was read off (epoch-prefix sharing)
    group: str | None = None  # fused group or shared-prefix group label
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class Finished:
    """One run's outcome for :meth:`Store.finish_runs` (the arguments of :meth:`Store.finish_run`)."""

    run_id: int
    status: str
    summary: dict[str, Any]
    epochs: list[dict[str, float]]
    iterations: dict[str, list] | None = None
    shared_from: int | None = None
    group: str | None = None


class Store(ABC):
    """Abstract result store; see the module docstring for the contract.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> store = MemoryStore()
        >>> sid = store.create_study("demo")
        >>> rid = store.add_run(sid, run_key({"lr": 0.1}), {"lr": 0.1})
        >>> store.start_run(rid)
        >>> store.finish_run(rid, "completed", {"final": {"loss": 0.5}},
        ...                  [{"epoch": 0, "loss": 0.5}], {"step": [0, 1]})
        >>> store.run(rid).status, store.epochs(rid), store.iterations(rid)
        ('completed', [{'epoch': 0, 'loss': 0.5}], {'step': [0, 1]})
    """

    @abstractmethod
    def create_study(self, name: str, spec: dict[str, Any] | None = None) -> int:
        """Create (or find) the study called ``name``; return its id."""

    @abstractmethod
    def study(self, name: str) -> dict[str, Any] | None:
        """``{"id", "name", "spec", "created_at"}`` or None if there is no such study."""

    @abstractmethod
    def studies(self) -> list[dict[str, Any]]:
        """All studies, oldest first, each with ``runs``: a count per status present."""

    @abstractmethod
    def add_run(self, study_id: int, key: str, settings: dict[str, Any]) -> int:
        """Add a pending run (or find the one with this key); return its id."""

    @abstractmethod
    def start_run(self, run_id: int) -> None:
        """Mark the run running, with its start time; ValueError if running or done."""

    def add_runs(self, study_id: int, runs: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        """:meth:`add_run` for each ``(key, settings)``, in one transaction where the backend
        has them (a sweep adds its whole grid at once); the runs' ids, in order.

        Example:
            >>> from epochlab.store import MemoryStore
            >>> store = MemoryStore()
            >>> sid = store.create_study("demo")
            >>> store.add_runs(sid, [("a", {}), ("b", {}), ("a", {})])
            [1, 2, 1]
        """
        return [self.add_run(study_id, key, settings) for key, settings in runs]

    def start_runs(self, run_ids: Sequence[int]) -> None:
        """:meth:`start_run` for each id, all of them or (when one cannot start) none, in one
        transaction where the backend has them (a sweep starts a task's runs together)."""
        for run_id in run_ids:
            self.start_run(run_id)

    @abstractmethod
    def finish_run(
        self,
        run_id: int,
        status: str,
        summary: dict[str, Any],
        epochs: list[dict[str, float]],
        iterations: dict[str, list] | None = None,
        *,
        shared_from: int | None = None,
        group: str | None = None,
    ) -> None:
        """Record the outcome, summary and metrics of a run in one transaction."""

    def finish_runs(self, finished: Sequence[Finished]) -> None:
        """:meth:`finish_run` for each item, in order, in one transaction where the backend
        has them (one commit for a task's runs instead of one a run).

        Example:
            >>> from epochlab.store import MemoryStore
            >>> store = MemoryStore()
            >>> sid = store.create_study("demo")
            >>> a, b = store.add_run(sid, "a", {}), store.add_run(sid, "b", {})
            >>> store.finish_runs([Finished(a, "completed", {}, []),
            ...                    Finished(b, "completed", {}, [], shared_from=a)])
            >>> store.run(b).shared_from
            1
        """
        for f in finished:
            self.finish_run(f.run_id, f.status, f.summary, f.epochs, f.iterations,
                            shared_from=f.shared_from, group=f.group)

    @abstractmethod
    def reset_stale(self, study_id: int) -> int:
        """Runs left ``running`` become ``interrupted`` with no metrics; return how many."""

    @abstractmethod
    def run(self, run_id: int) -> RunRecord:
        """One run; KeyError naming the id if there is none."""

    @abstractmethod
    def runs(self, study: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Runs, optionally of one study and one status, in creation order."""

    @abstractmethod
    def epochs(self, run_id: int) -> list[dict[str, float]]:
        """The run's per-epoch rows, in order."""

    @abstractmethod
    def iterations(self, run_id: int) -> dict[str, list]:
        """The run's per-iteration columns (an empty dict if none were stored)."""

    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Release resources (connections, files)."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Helpers every backend shares, so that they behave the same byte for byte.


def run_key(settings: dict[str, Any]) -> str:
    """The canonical key of a run's settings: sorted, compact JSON.

    Example:
        >>> run_key({"lr": 0.01, "batch_size": 32})
        '{"batch_size":32,"lr":0.01}'
    """
    return dumps(settings, sort_keys=True)


def dumps(value: Any, sort_keys: bool = False) -> str:
    """Compact JSON with NaN/Infinity allowed; TypeError for what JSON cannot hold.

    Key order is kept (epoch rows keep their column order) unless ``sort_keys``.
    """
    return (_SORTED if sort_keys else _COMPACT).encode(value)


# Made once: json.dumps with options builds an encoder a call (a sweep writes thousands of rows).
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=True)
_SORTED = json.JSONEncoder(separators=(",", ":"), allow_nan=True, sort_keys=True)


def loads(text: str | None) -> Any:
    """Inverse of :func:`dumps` (``None`` stays ``None``)."""
    return None if text is None else json.loads(text)


def check_status(status: str, allowed: tuple[str, ...] = FINISHED) -> None:
    """ValueError unless ``status`` is one of ``allowed``."""
    if status not in allowed:
        raise ParameterError(f"The value of `status` is {status!r}, but must be one of {allowed}.")


def check_starting(run_ids: Sequence[int], status_of: Callable[[int], str]) -> None:
    """What :meth:`Store.start_runs` checks before it starts any: ValueError for a run that
    is running or done (a run named twice is running by the second); ``status_of`` raises
    KeyError for an unknown one."""
    started: set[int] = set()
    for run_id in run_ids:
        status = "running" if run_id in started else status_of(run_id)
        if status == "running" or status in DONE:
            raise ValueError(f"Run {run_id} is {status}; only a pending, interrupted or failed "
                             "run can be started.")
        started.add(run_id)


def check_finishing(finished: Sequence[Finished], status_of: Callable[[int], str]) -> None:
    """What :meth:`Store.finish_runs` checks before it writes any: ValueError for a run already
    done (a run named twice has the first one's status by the second); ``status_of`` raises
    KeyError for an unknown run or ``shared_from``."""
    finishing: dict[int, str] = {}
    for f in finished:
        status = finishing.get(f.run_id) or status_of(f.run_id)
        if status in DONE:
            raise ValueError(f"Run {f.run_id} is already {status}; it is not overwritten.")
        if f.shared_from is not None:
            status_of(f.shared_from)
        finishing[f.run_id] = f.status


def check_text(value: Any, param: str) -> None:
    """ValueError unless ``value`` is a non-empty string (study names, run keys)."""
    if not isinstance(value, str) or not value:
        raise ParameterError(f"The value of `{param}` is {value!r}, but must be a non-empty string.")


def pack_columns(columns: dict[str, list] | None) -> list[tuple[str, str, bytes]]:
    """Iteration columns as ``(name, kind, data)``: little-endian numeric arrays, or JSON.

    ``kind`` is the numpy type of ``data`` (``"<" + kind``): the narrowest of int8 to int64
    that holds an int column; float32 for a float column whose every value is a float32
    (the losses and gradient norms of float32 training, stored exactly in half the bytes),
    else float64; ``"json"`` for anything else.

    Raises ValueError when the columns differ in length, TypeError when a
    value cannot be stored.

    Example:
        >>> packed = pack_columns({"step": [0, 1], "loss": [0.5, float("nan")], "lr": [0.1, 0.1]})
        >>> [(n, k) for n, k, _ in packed]
        [('step', 'i1'), ('loss', 'f4'), ('lr', 'f8')]
        >>> unpack_columns(packed)["loss"]
        [0.5, nan]
    """
    if not columns:
        return []
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"The iteration columns must all have the same length, but have lengths {lengths}."
        )
    packed = []
    for name, col in columns.items():
        if not isinstance(name, str):
            raise TypeError(f"Iteration column names must be str, but got {name!r}.")
        values = list(col)
        arr = _column_array(values)
        if arr is None:
            packed.append((name, "json", dumps(values).encode()))
            continue
        kind, arr = _narrowest(arr)
        packed.append((name, kind, arr.astype("<" + kind, copy=False).tobytes()))
    return packed


_INT_KINDS = [(kind, np.iinfo("<" + kind)) for kind in ("i1", "i2", "i4")]


def _narrowest(arr: np.ndarray) -> tuple[str, np.ndarray]:
    """The narrowest kind that holds every value of an int64 or float64 array exactly."""
    if arr.dtype == np.float64:
        with np.errstate(over="ignore"):  # beyond float32's range: inf, unequal, float64
            narrow = arr.astype(np.float32)
        if np.array_equal(narrow, arr, equal_nan=True):  # compares as float64: exact
            return "f4", narrow
        return "f8", arr
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        for kind, info in _INT_KINDS:
            if info.min <= lo and hi <= info.max:
                return kind, arr
    return "i8", arr


def unpack_columns(packed: list[tuple[str, str, bytes]]) -> dict[str, list]:
    """Inverse of :func:`pack_columns`: plain Python lists."""
    out: dict[str, list] = {}
    for name, kind, data in packed:
        if kind == "json":
            out[name] = json.loads(bytes(data).decode())
        else:
            out[name] = np.frombuffer(data, dtype="<" + kind).tolist()
    return out


def _column_array(values: list) -> np.ndarray | None:
    """``values`` as an int64 or float64 array that holds each exactly; None: store as JSON."""
    types = set(map(type, values))
    if types == {float}:  # losses, rates, norms: no per-value check needed
        return np.asarray(values, dtype=np.float64)
    if types <= {int}:  # steps, epochs, batch sizes: numpy checks the range
        try:
            return np.asarray(values, dtype=np.int64)
        except OverflowError:
            return None
    if types <= {int, float}:
        # Ints up to 2**53 are exact in float64, so a mixed column loses nothing but its type.
        if all(abs(v) <= 2**53 for v in values if type(v) is int):
            return np.asarray(values, dtype=np.float64)
        return None

    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    if all(is_int(v) and -(2**63) <= v < 2**63 for v in values):
        return np.asarray(values, dtype=np.int64)
    if all(isinstance(v, (float, np.floating)) or (is_int(v) and abs(v) <= 2**53) for v in values):
        return np.asarray(values, dtype=np.float64)
    return None
