"""The top-level API a user types first: `import epochlab as el`."""

from __future__ import annotations

import epochlab as el
from epochlab.store import MemoryStore


def test_el_sweep_runs_a_spec_and_stays_a_package():
    import epochlab.sweep.fused as fused  # submodules still import through the package

    store = MemoryStore()
    result = el.sweep(el.SweepSpec(data="synthetic", epochs=(1, 2), lr=(1e-3, 1e-2)), store,
                      progress=False)
    runs = store.runs()
    assert len(runs) == 4 and {r.status for r in runs} == {"completed"}
    assert result is not None and fused.train_fused is el.sweep.train_fused
