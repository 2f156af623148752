"""An in-memory :class:`~epochlab.store.base.Store`: the contract with nothing on disk.

Used by tests and by code that wants a store without a file. It keeps every
value encoded exactly as the SQLite backend does (JSON text, packed
iteration columns), so both backends accept, reject and return the same
things, and nothing read out aliases what is held inside.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from epochlab.store.base import (
    STATUSES,
    Finished,
    RunRecord,
    Store,
    check_finishing,
    check_starting,
    check_status,
    check_text,
    dumps,
    loads,
    pack_columns,
    unpack_columns,
)


class MemoryStore(Store):
    """Studies and runs held in dicts, safe to share between threads of one process.

    Example:
        >>> store = MemoryStore()
        >>> sid = store.create_study("demo", {"lr": [0.1, 0.01]})
        >>> store.create_study("demo") == sid
        True
        >>> rid = store.add_run(sid, "lr=0.1", {"lr": 0.1})
        >>> store.add_run(sid, "lr=0.1", {"lr": 0.1}) == rid
        True
        >>> store.run(rid).status
        'pending'
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._studies: dict[int, dict[str, Any]] = {}
        self._study_ids: dict[str, int] = {}
        self._runs: dict[int, dict[str, Any]] = {}
        self._keys: dict[tuple[int, str], int] = {}
        self._epochs: dict[int, str] = {}  # a run's epoch rows, one JSON array
        self._iterations: dict[int, list[tuple[str, str, bytes]]] = {}

    def create_study(self, name: str, spec: dict[str, Any] | None = None) -> int:
        check_text(name, "name")
        spec_json = dumps(spec or {})
        with self._lock:
            if name not in self._study_ids:
                sid = len(self._studies) + 1
                self._studies[sid] = {"name": name, "spec": spec_json, "created_at": time.time()}
                self._study_ids[name] = sid
            return self._study_ids[name]

    def study(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            sid = self._study_ids.get(name)
            if sid is None:
                return None
            s = self._studies[sid]
            return {"id": sid, "name": s["name"], "spec": loads(s["spec"]),
                    "created_at": s["created_at"]}

    def studies(self) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for sid in sorted(self._studies):
                counts: dict[str, int] = {}
                for r in self._runs.values():
                    if r["study_id"] == sid:
                        counts[r["status"]] = counts.get(r["status"], 0) + 1
                s = self._studies[sid]
                out.append({"id": sid, "name": s["name"], "spec": loads(s["spec"]),
                            "created_at": s["created_at"],
                            "runs": {k: counts[k] for k in STATUSES if k in counts}})
            return out

    def add_run(self, study_id: int, key: str, settings: dict[str, Any]) -> int:
        return self.add_runs(study_id, [(key, settings)])[0]

    def add_runs(self, study_id: int, runs: Sequence[tuple[str, dict[str, Any]]]) -> list[int]:
        rows = []
        for key, settings in runs:  # checked and encoded first: a bad one adds nothing
            check_text(key, "key")
            rows.append((key, dumps(settings)))
        with self._lock:
            if study_id not in self._studies:
                raise KeyError(f"There is no study with id {study_id}.")
            ids = []
            for key, settings_json in rows:
                rid = self._keys.get((study_id, key))
                if rid is None:
                    rid = len(self._runs) + 1
                    self._runs[rid] = {
                        "study_id": study_id, "key": key, "settings": settings_json,
                        "status": "pending", "summary": "{}", "shared_from": None, "group": None,
                        "created_at": time.time(), "started_at": None, "finished_at": None,
                    }
                    self._keys[(study_id, key)] = rid
                ids.append(rid)
            return ids

    def start_run(self, run_id: int) -> None:
        self.start_runs([run_id])

    def start_runs(self, run_ids: Sequence[int]) -> None:
        with self._lock:
            check_starting(run_ids, self._status)  # all checked before any starts
            now = time.time()
            for run_id in run_ids:
                self._epochs.pop(run_id, None)
                self._iterations.pop(run_id, None)
                self._runs[run_id].update(status="running", summary="{}", started_at=now,
                                          finished_at=None)

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
        self.finish_runs([Finished(run_id, status, summary, epochs, iterations, shared_from, group)])

    def finish_runs(self, finished: Sequence[Finished]) -> None:
        # Encode everything first: a value that cannot be stored changes nothing.
        encoded = []
        for f in finished:
            check_status(f.status)
            # one dumps for all epoch rows (half the time of one per row)
            encoded.append((f, dumps(f.summary), dumps(list(f.epochs)), pack_columns(f.iterations)))
        with self._lock:
            # Check them all before writing any: all of them or none, as one transaction.
            check_finishing(finished, self._status)
            now = time.time()
            for f, summary_json, rows, packed in encoded:
                self._runs[f.run_id].update(status=f.status, summary=summary_json,
                                            shared_from=f.shared_from, group=f.group,
                                            finished_at=now)
                self._epochs[f.run_id] = rows
                self._iterations[f.run_id] = packed

    def reset_stale(self, study_id: int) -> int:
        with self._lock:
            stale = [rid for rid, r in self._runs.items()
                     if r["study_id"] == study_id and r["status"] == "running"]
            for rid in stale:
                self._epochs.pop(rid, None)
                self._iterations.pop(rid, None)
                self._runs[rid].update(status="interrupted", finished_at=None,
                                       summary=dumps({"reset_stale_at": time.time()}))
            return len(stale)

    def run(self, run_id: int) -> RunRecord:
        with self._lock:
            return self._record(run_id, self._get(run_id))

    def runs(self, study: str | None = None, status: str | None = None) -> list[RunRecord]:
        if status is not None:
            check_status(status, STATUSES)
        with self._lock:
            sid = self._study_ids.get(study) if study is not None else None
            if study is not None and sid is None:
                return []
            return [self._record(rid, r) for rid, r in sorted(self._runs.items())
                    if (sid is None or r["study_id"] == sid)
                    and (status is None or r["status"] == status)]

    def epochs(self, run_id: int) -> list[dict[str, float]]:
        with self._lock:
            self._get(run_id)
            return loads(self._epochs.get(run_id, "[]"))

    def iterations(self, run_id: int) -> dict[str, list]:
        with self._lock:
            self._get(run_id)
            return unpack_columns(self._iterations.get(run_id, []))

    def _status(self, run_id: int) -> str:
        return self._get(run_id)["status"]

    def _get(self, run_id: int) -> dict[str, Any]:
        try:
            return self._runs[run_id]
        except KeyError:
            raise KeyError(f"There is no run with id {run_id}.") from None

    def _record(self, rid: int, r: dict[str, Any]) -> RunRecord:
        return RunRecord(
            id=rid, study_id=r["study_id"], study=self._studies[r["study_id"]]["name"],
            key=r["key"], settings=loads(r["settings"]), status=r["status"],
            summary=loads(r["summary"]), shared_from=r["shared_from"], group=r["group"],
            created_at=r["created_at"], started_at=r["started_at"],
            finished_at=r["finished_at"],
        )

