"""Sweep tasks as Ray tasks, on this machine or on a Ray cluster.

:class:`RayExecutor` runs ``fn(item)`` for each item as a Ray task and yields
``(index, result)`` as tasks finish, the same contract as the other
executors (:mod:`epochlab.sweeps.executors`). What is sent where:

- ``fn`` (for a sweep: the worker's ``execute_task`` bound to the sweep's
  datasets) is put in Ray's object store **once**; every task gets a
  reference to it, so the arrays travel to each node once, not once per task.
- Each item (a planned task: its configurations, a few hundred bytes) goes
  with its Ray task. A task trains its configurations with one torch thread
  and returns plain data (epoch rows, iteration columns, summaries).
- Results stream back to the driver as tasks finish (``ray.wait``); the
  driver alone writes the store. Workers never open it, so the store can be
  a file only the driver's machine sees.

A worker process that dies (killed, out of memory, its node lost) has its
task retried by Ray (``max_retries``); the driver records a task only when
its one result arrives, so a retried task is never recorded twice. An error
raised inside the function is not retried: the worker already turns it into
a ``failed`` outcome.

``ray`` is an optional dependency: ``pip install epochlab[ray]``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from epochlab.sweeps.executors import Executor, ExecutorError
from epochlab.validation import ParameterError

__all__ = ["RayExecutor", "ray_init_kwargs"]


def _run_item(fn: Callable[[Any], Any], item: Any) -> Any:
    import torch

    # Ray starts one worker per CPU it schedules on; more intra-op threads than that
    # oversubscribe the cores, which slows small models several-fold.
    torch.set_num_threads(1)
    return fn(item)


def ray_init_kwargs(address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Arguments for ``ray.init``: join ``address``, or start a local Ray without a dashboard.

    Example:
        >>> ray_init_kwargs(num_cpus=2)["include_dashboard"]
        False
        >>> ray_init_kwargs("ray://head:10001")
        {'address': 'ray://head:10001', 'log_to_driver': False}
    """
    if address:
        return {"address": address, "log_to_driver": False}
    return {"num_cpus": num_cpus, "include_dashboard": False, "log_to_driver": False}


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` (or ``ray://HOST:PORT``) nobody answers at, before Ray waits on it.

    Ray retries an unreachable head for minutes before it gives up; a wrong
    address should be one line at once. ``"auto"`` and addresses without a port
    are left to Ray.

    Example:
        >>> check_reachable("auto")
        >>> check_reachable("127.0.0.1:1", timeout=1.0)
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: The value of `ray_address` is '127.0.0.1:1', ...
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ParameterError(
            f"The value of `ray_address` is {address!r}, but nothing answers at {host}:{port} "
            f"({e.strerror or e}). Start the head with `ray start --head` and pass the address "
            "it prints, or leave --ray-address out for a local Ray."
        ) from None


class RayExecutor(Executor):
    """Items as Ray tasks (one CPU each), at most as many in flight as the cluster has CPUs.

    Args:
        address: a running cluster (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``);
            None starts a local Ray, unless this process already started one
            (then that one is used and left running).
        num_cpus: CPUs of a local Ray (None: all of this machine's).
        max_retries: how often a task whose worker died is run again.

    Example:
        >>> import ray  # doctest: +SKIP
        >>> with RayExecutor(num_cpus=2) as ex:  # doctest: +SKIP
        ...     sorted(ex.run(abs, [-1, 2]))
        [(0, 1), (1, 2)]
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 max_retries: int = 3) -> None:
        try:
            import ray
        except ImportError:
            raise ParameterError("The value of `executor` is 'ray', but Ray is not installed: "
                                 "pip install 'epochlab[ray]'.") from None
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            # Ray 2.60 turns token authentication on for new clusters and counts usage;
            # a local Ray started for one sweep needs neither.
            if address:
                check_reachable(address)
            else:
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            try:
                ray.init(**ray_init_kwargs(address, num_cpus))
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ParameterError(f"The value of `ray_address` is {address!r}, but Ray "
                                     f"cannot connect: {e}") from None
            self._owns = True
        self.slots = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        self._remote = ray.remote(num_cpus=1, max_retries=max_retries)(_run_item)

    def run(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_start: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        fn_ref = ray.put(fn)
        pending = list(range(len(items)))[::-1]
        running: dict[Any, int] = {}
        try:
            while pending or running:
                while pending and len(running) < self.slots:
                    i = pending.pop()
                    if on_start is not None:
                        on_start(i)
                    running[self._remote.remote(fn_ref, items[i])] = i
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    i = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as e:  # the task could not run, or its retries ran out
                        yield i, ExecutorError(f"{type(e).__name__}: {e}")
                    else:
                        yield i, result
        finally:
            for ref in running:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
