"""Which runs of a study are best, and the settings a sweep varies: read from a store only.

No torch here: ``epochlab report`` and ``epochlab runs`` rank stored runs without loading the
training stack (:mod:`epochlab.sweeps.driver` re-exports these names).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from epochlab.store.base import DONE, RunRecord, Store
from epochlab.validation import ParameterError

SWEPT = ("epochs", "batch_size", "lr", "batch_norm", "seed", "optimizer", "weight_decay",
         "schedule")
"""Settings a sweep takes as lists; the product of the lists is the set of configurations."""

SELECT = ("final", "best")


def metric_values(
    rows: Sequence[dict[str, float]], metric: str, mode: str, weights_epoch: int | None = None,
) -> dict[str, Any]:
    """``final`` (at the weights the run ends with), ``best`` (over epochs) and ``best_epoch``.

    ``final`` is the value at ``weights_epoch`` (the best epoch after early
    stopping with restore) or else at the last epoch; ``best`` is slide 13's
    max (or min) over all epochs. NaN when the metric is missing.

    Example:
        >>> metric_values([{"val_accuracy": 0.8}, {"val_accuracy": 0.7}], "val_accuracy", "max")
        {'final': 0.7, 'best': 0.8, 'best_epoch': 1}
    """
    values = [float(r.get(metric, math.nan)) for r in rows]
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return {"final": math.nan, "best": math.nan, "best_epoch": None}
    at = weights_epoch if weights_epoch is not None and weights_epoch < len(values) else -1
    pick = max if mode == "max" else min
    best, idx = pick(finite, key=lambda t: (t[0], -t[1]) if mode == "max" else (t[0], t[1]))
    return {"final": values[at], "best": best, "best_epoch": idx + 1}


def best_run(
    store: Store, runs: Sequence[RunRecord], metric: str, mode: str = "max", select: str = "final",
) -> RunRecord | None:
    """The best done run by ``metric``; ties go to fewer total updates, then grid order.

    ``select="final"`` ranks by the value at the weights each run ends with;
    ``"best"`` by the best value over its epochs (slide 13's
    ``max(history['val_accuracy'])``, which favours longer runs because a
    longer run's epochs include a shorter one's).
    """
    if select not in SELECT:
        raise ParameterError(f"The value of `select` is {select!r}, but must be one of {SELECT}.")
    scored = []
    for order, r in enumerate(runs):
        if r.status not in DONE:
            continue
        v = metric_values(store.epochs(r.id), metric, mode, r.summary.get("weights_epoch"))[select]
        if math.isfinite(v):
            scored.append(((-v if mode == "max" else v), r.summary.get("total_updates", 0), order, r))
    return min(scored, key=lambda t: t[:3])[3] if scored else None


class EpochsReadOnce:
    """``store`` as a ranking or a report reads it: each run's epoch rows read (and decoded)
    once, and not at all for runs whose rows are given in ``recorded`` (a sweep's, just
    written). Everything else is the store's.

    Example:
        >>> from epochlab.store import MemoryStore
        >>> store = MemoryStore()
        >>> rid = store.add_run(store.create_study("demo"), "a", {})
        >>> EpochsReadOnce(store, {rid: [{"loss": 0.5}]}).epochs(rid)
        [{'loss': 0.5}]
    """

    def __init__(self, store: Any, recorded: dict[int, list[dict[str, float]]] | None = None) -> None:
        self._store = store
        self._epochs: dict[int, list[dict[str, float]]] = dict(recorded or {})

    def epochs(self, run_id: int) -> list[dict[str, float]]:
        if run_id not in self._epochs:
            self._epochs[run_id] = self._store.epochs(run_id)
        return self._epochs[run_id]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
