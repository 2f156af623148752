"""The result store's contract: studies, runs, and their per-epoch and per-iteration metrics.

A *study* is a named set of runs (one sweep, or all ``epochlab fit`` runs).
A *run* is one configuration trained once. Runs are identified inside their
study by a ``key``: a canonical string of the run's settings, so that a sweep
run again finds what it already did (resumability) and never duplicates a
run.

Contract every backend keeps (tested once, in ``tests/store/test_contract.py``,
against every backend):

- ``create_study(name, spec)`` is idempotent: the same name returns the same
  study id (the spec of the first call is kept; ``study(name)`` reads it).
- ``add_run(study_id, key, settings)`` returns the existing run's id when the
  key is already in the study; it never creates a second row for one key.
- Status moves ``pending -> running -> {completed, early_stopped, diverged,
  interrupted, failed}``. ``start_run`` sets running and the start time.
- ``finish_run`` writes the run's final status, summary (accounting,
  timings, final and best metrics), epoch rows and iteration columns in
  ONE transaction: after a crash at any point a run is either finished with
  all its metrics or not finished with none of them.
- ``reset_stale(study_id)`` turns runs left ``running`` by a process that
  died into ``interrupted`` and deletes any partial metrics; a resumed sweep
  then reruns exactly the runs that are not finished.
- Reads return plain data: :class:`RunRecord` and lists of dicts; nothing
  returned aliases the store's internals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

FINISHED = ("completed", "early_stopped", "diverged", "interrupted", "failed")
STATUSES = ("pending", "running", *FINISHED)


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


class Store(ABC):
    """Abstract result store; see the module docstring for the contract."""

    @abstractmethod
    def create_study(self, name: str, spec: dict[str, Any] | None = None) -> int:
        """Create (or find) the study called ``name``; return its id."""

    @abstractmethod
    def study(self, name: str) -> dict[str, Any] | None:
        """``{"id", "name", "spec", "created_at"}`` or None if there is no such study."""

    @abstractmethod
    def studies(self) -> list[dict[str, Any]]:
        """All studies, oldest first, each with a ``runs`` count per status."""

    @abstractmethod
    def add_run(self, study_id: int, key: str, settings: dict[str, Any]) -> int:
        """Add a pending run (or find the one with this key); return its id."""

    @abstractmethod
    def start_run(self, run_id: int) -> None:
        """Mark the run running, with its start time."""

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
        """The run's per-iteration columns (empty lists if none were stored)."""

    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Release resources (connections, files)."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
