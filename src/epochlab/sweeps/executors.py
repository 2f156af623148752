"""Where a sweep's tasks run: in this process, or in a pool of worker processes.

An :class:`Executor` takes a picklable function and a list of work items and
yields ``(index, outcome)`` pairs *as items finish*, so the driver can write
each result to the store at once. The driver is the only writer: a worker
that dies takes no store transaction with it. ``outcome`` is the function's
return value, or an :class:`ExecutorError` when the item could not be run
(the worker died, the item did not pickle).

- :class:`InProcessExecutor` runs items one after another, here (the
  default; Ctrl-C reaches the training loop, which stops cleanly).
- :class:`ProcessPoolExecutor` runs them in ``workers`` spawned processes
  with one torch thread each, keeping at most ``workers`` items in flight so
  a run is marked running only when it is.

- :class:`~epochlab.sweeps.ray_executor.RayExecutor` runs them as Ray
  tasks, locally or on a cluster (``make_executor(kind="ray")``).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from epochlab.validation import ParameterError

__all__ = [
    "EXECUTORS", "Executor", "ExecutorError", "InProcessExecutor", "ProcessPoolExecutor",
    "check_executor", "make_executor",
]


@dataclass(frozen=True)
class ExecutorError:
    """An item that could not be run by the executor (not an error inside the function)."""

    message: str


class Executor(ABC):
    """Runs ``fn(item)`` for every item and yields ``(index, result)`` as each finishes.

    ``on_start(index)`` is called just before an item is handed to a worker.
    ``slots`` is how many items run at once.
    """

    slots: int = 1

    @abstractmethod
    def run(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_start: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(items[index]) or ExecutorError)`` in completion order."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Items one after another in this process.

    Example:
        >>> list(InProcessExecutor().run(abs, [-1, 2]))
        [(0, 1), (1, 2)]
    """

    def run(self, fn, items, on_start=None):
        from epochlab.train.runtime import reusing_memory

        # One block for all the items: freed memory is reused from one task to the next and
        # the heap is trimmed once, at the end (a trim a task cost the seed's study ~1 ms a
        # run, mostly in the page faults that followed it).
        with reusing_memory():
            for i, item in enumerate(items):
                if on_start is not None:
                    on_start(i)
                yield i, fn(item)


def _init_worker(threads: int, parent: int) -> None:
    import torch

    # Workers share the cores: one thread each avoids oversubscription, which on a
    # small machine costs more than it gains.
    torch.set_num_threads(threads)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Exit as soon as the driver is gone, even when it was SIGKILLed.

    A killed driver cannot tell its workers anything; without this they would
    train on (and then wait forever for work) as orphans. Linux can have the
    kernel send SIGKILL when the parent dies; everywhere, a daemon thread
    notices that the parent process changed.
    """
    import os
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the thread below
            pass
    if os.getppid() != parent:  # the driver died before this worker started
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="epochlab-parent-watch", daemon=True).start()


@contextlib.contextmanager
def _spawning() -> Iterator[None]:
    """Start worker processes with Ctrl-C held back, here and in them.

    A spawned worker reads its start-up data from a pipe the driver writes; a
    Ctrl-C that interrupted that write left the worker printing an
    ``EOFError`` traceback. Inside this block the driver's SIGINT handler only
    records the signal (it is raised once the workers have started) and SIGINT
    is blocked in the main thread, a mask the workers inherit: they never see
    a terminal's Ctrl-C, and the driver stops them and records their runs.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


class ProcessPoolExecutor(Executor):
    """Items in ``workers`` spawned processes (``spawn``: no forked torch state).

    Args:
        workers: number of processes, ``>= 1``.
        threads_per_worker: torch intra-op threads in each worker.

    Example:
        >>> with ProcessPoolExecutor(1) as ex:
        ...     sorted(ex.run(abs, [-1, 2]))
        [(0, 1), (1, 2)]
    """

    def __init__(self, workers: int, threads_per_worker: int = 1) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ParameterError(f"The value of `workers` is {workers!r}, but must be `workers >= 1`.")
        self.workers = self.slots = workers
        self._pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(threads_per_worker, os.getpid()),
        )

    def run(self, fn, items, on_start=None):
        pending = list(range(len(items)))[::-1]
        running: dict[cf.Future, int] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    i = pending.pop()
                    if on_start is not None:
                        on_start(i)
                    try:
                        with _spawning():  # submit starts a worker when one is missing
                            running[self._pool.submit(fn, items[i])] = i
                    except Exception as e:  # a broken pool refuses new work
                        yield i, ExecutorError(f"{type(e).__name__}: {e}")
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    i = running.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        yield i, fut.result()
                    else:
                        yield i, ExecutorError(f"{type(exc).__name__}: {exc}")
        finally:
            for fut in running:
                fut.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            # Ctrl-C or an error in the driver: stop the workers now rather than wait
            # for their runs to end (the driver records those runs as interrupted).
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                if proc.is_alive():
                    proc.terminate()
        self.close()


EXECUTORS = ("local", "ray")


def check_executor(workers: int = 0, kind: str = "local", address: str | None = None) -> None:
    """Refuse executor settings that cannot run, before anything is created or started.

    Checks the values :func:`make_executor` takes, and that something answers
    at a Ray ``address`` (``HOST:PORT``) without importing Ray.

    Example:
        >>> check_executor(2, "local")
        >>> check_executor(0, "local", "127.0.0.1:6379")
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: `ray_address` was given without `executor='ray'`; ...
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ParameterError(f"The value of `workers` is {workers!r}, but must be `workers >= 0`.")
    if kind not in EXECUTORS:
        raise ParameterError(f"The value of `executor` is {kind!r}, but must be one of {EXECUTORS}.")
    if address and kind != "ray":
        raise ParameterError("`ray_address` was given without `executor='ray'`; it has no effect.")
    if address and kind == "ray":
        from epochlab.sweeps.ray_executor import check_reachable

        check_reachable(address)


def make_executor(workers: int = 0, kind: str = "local", address: str | None = None) -> Executor:
    """``workers=0``: in this process; ``workers=N``: a pool of N processes; ``kind="ray"``:
    Ray tasks on the cluster at ``address`` (None: a local Ray with ``workers`` CPUs, or all).

    Every executor has ``slots``: how many items it runs at once.

    Example:
        >>> type(make_executor(0)).__name__
        'InProcessExecutor'
    """
    check_executor(workers, kind, address)
    if kind == "ray":
        # Here, not at the top: ray_executor builds on this module's Executor.
        from epochlab.sweeps.ray_executor import RayExecutor

        return RayExecutor(address, num_cpus=workers or None)
    return InProcessExecutor() if workers == 0 else ProcessPoolExecutor(workers)
