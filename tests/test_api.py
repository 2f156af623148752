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


def test_atomically_written_files_get_the_usual_mode_not_a_private_one(tmp_path):
    import os

    from epochlab._atomic import atomic_write

    p = atomic_write(tmp_path / "h.json", lambda f: f.write("{}"), binary=False)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert os.stat(p).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_an_atomic_rewrite_keeps_the_replaced_files_mode(tmp_path):
    import os

    from epochlab._atomic import atomic_write

    p = tmp_path / "private.json"
    p.write_text("{}")
    os.chmod(p, 0o600)
    atomic_write(p, lambda f: f.write("[]"), binary=False)
    assert os.stat(p).st_mode & 0o777 == 0o600 and p.read_text() == "[]"
