"""The top-level API a user types first: `import epochlab as el`."""

from __future__ import annotations

import types

import epochlab as el
from epochlab.store import MemoryStore


def test_el_sweep_is_a_plain_function_that_runs_a_spec():
    store = MemoryStore()
    result = el.sweep(el.SweepSpec(data="synthetic", epochs=(1, 2), lr=(1e-3, 1e-2)), store,
                      progress=False)
    runs = store.runs()
    assert len(runs) == 4 and {r.status for r in runs} == {"completed"}
    assert isinstance(result, el.SweepResult)
    assert isinstance(el.sweep, types.FunctionType)
    assert isinstance(el.sweeps, types.ModuleType) and el.sweeps.sweep is el.sweep
