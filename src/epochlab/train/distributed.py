"""Data-parallel training on ``torch.distributed``, with the global accounting kept exact.

This module owns everything ``fit`` needs to train one model in several
processes (launched by ``torchrun``; gloo on the CPU, NCCL on GPUs), behind a
few narrow hooks the loop and the trainer call:

- :func:`setup` joins (or starts) the process group and returns a
  :class:`DistContext`; :meth:`DistContext.wrap` puts the model in
  ``DistributedDataParallel``.
- :class:`ShardedSource` gives each rank its share of the epoch's permutation,
  exactly as ``torch.utils.data.DistributedSampler`` does: every rank draws the
  same permutation, pads it by repeating its first rows to a multiple of the
  world size (or drops the tail with ``drop_last``) and takes every
  ``world_size``-th row from its rank on. Global batch ``k`` is then rows
  ``k*G .. k*G + G - 1`` of the padded permutation (``G`` = world size x
  per-rank batch), the very batch one process with batch ``G`` would train on.
- :meth:`DistContext.rows_of_batch` turns a rank's batch into the global
  counts (real rows and padded duplicates); :meth:`DistContext.all_sum` and
  :meth:`DistContext.start_mean` reduce metrics and the loss across ranks.

Loss semantics: every rank's loss is the mean over its rank batch and DDP
averages the gradients over ranks. The padding makes every rank's batch the
same size at every step, so this is the mean over the global batch, and the
update equals one process's on the same global batch (up to float rounding).
The padded duplicates are trained on (as with DistributedSampler) and counted
in ``samples_repeated``, not in ``samples_seen``.

:func:`launch` re-runs a command under ``torchrun`` on this machine; it is what
``epochlab fit --nproc N`` uses.
"""

from __future__ import annotations

import atexit
import gc
import math
import multiprocessing
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from epochlab.validation import ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from epochlab.train.data import PreparedData
    from epochlab.train.trainer import Trainer

# What torchrun (and any launcher following its contract) sets for every process.
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` started this very process (its environment is set).

    A process that a torchrun worker starts itself (a sweep's process pool)
    inherits the environment but is no rank: it trains on its own.

    Example:
        >>> import os
        >>> launched_by_torchrun() == all(k in os.environ for k in _TORCHRUN_ENV)
        True
    """
    return (all(k in os.environ for k in _TORCHRUN_ENV)
            and multiprocessing.parent_process() is None)


def gpu_per_process(nproc: int | None = None) -> bool:
    """Whether each of ``nproc`` local processes (torchrun's count by default) can have a GPU.

    Example:
        >>> import torch
        >>> gpu_per_process(2) == (torch.cuda.is_available() and torch.cuda.device_count() >= 2)
        True
    """
    n = nproc if nproc is not None else int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return torch.cuda.is_available() and torch.cuda.device_count() >= n


def wanted(distributed: bool | None) -> bool:
    """Whether ``fit(distributed=...)`` trains data-parallel: ``None`` means "if launched so".

    Example:
        >>> wanted(False)
        False
    """
    if distributed is None:
        return launched_by_torchrun() or (dist.is_available() and dist.is_initialized())
    if not isinstance(distributed, bool):
        raise ParameterError(
            f"The value of `distributed` is {distributed!r}, but must be True, False or None "
            "(None: data-parallel when launched by torchrun)."
        )
    if distributed and not (launched_by_torchrun() or dist.is_initialized()):
        raise ParameterError(
            "`distributed=True` needs a torch.distributed environment, and this process has "
            "none: launch it with `torchrun --nproc_per_node N your_script.py` (or "
            "`epochlab fit ... --nproc N`), or initialize the process group yourself."
        )
    return distributed


def check_split(n_train: int, n_val: int, world_size: int, batch_size: int,
                drop_last: bool) -> None:
    """Refuse a split that cannot be shared by ``world_size`` processes, naming the numbers.

    Every rank needs at least one training row, and (when there is a
    validation set) one validation row; with ``drop_last`` every rank needs
    one full batch.

    Example:
        >>> check_split(640, 160, 2, 16, False)
        >>> check_split(640, 1, 2, 16, False)
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: The validation set has 1 rows, fewer than the 2 processes (world size): every process evaluates a share of it. Use a larger validation split or fewer processes.
    """
    if n_train < world_size:
        raise ParameterError(
            f"The training set has {n_train} rows, fewer than the {world_size} processes "
            "(world size): every process needs at least one row. Use more data or fewer processes."
        )
    if 0 < n_val < world_size:
        raise ParameterError(
            f"The validation set has {n_val} rows, fewer than the {world_size} processes "
            "(world size): every process evaluates a share of it. Use a larger validation "
            "split or fewer processes."
        )
    per_rank = n_train // world_size
    if drop_last and per_rank < batch_size:
        raise ParameterError(
            f"`drop_last=True` with {world_size} processes gives each process "
            f"{n_train} // {world_size} = {per_rank} training rows, less than one batch of "
            f"{batch_size}: no update would be made. Use a smaller batch, fewer processes or "
            "drop_last=False."
        )


def rows_per_rank(n_train: int, world_size: int, drop_last: bool) -> int:
    """Rows each rank trains on per epoch: ``ceil(n / W)`` (padded) or ``floor`` (drop_last).

    Example:
        >>> rows_per_rank(101, 2, False), rows_per_rank(101, 2, True)
        (51, 50)
    """
    return n_train // world_size if drop_last else math.ceil(n_train / world_size)


@dataclass
class DistContext:
    """This process's place in the group, and the arithmetic of sharing an epoch.

    ``rank`` 0 is the one that writes (History, checkpoints, store rows).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    owns_group: bool = False  # fit started the process group, so fit ends it
    n_train: int = 0
    batch_size: int = 0  # per rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    # -- sharding ------------------------------------------------------------------------
    def shard(self, order: torch.Tensor, drop_last: bool) -> torch.Tensor:
        """This rank's rows of the epoch's permutation (DistributedSampler's rule)."""
        n, w = order.shape[0], self.world_size
        total = rows_per_rank(n, w, drop_last) * w
        if total > n:  # pad by repeating the first rows (more than once if n < pad)
            order = order.repeat(math.ceil(total / n))[:total]
        else:
            order = order[:total]
        return order[self.rank : total : w]

    def rows_of_batch(self, batch_index: int, n_local: int) -> tuple[int, int]:
        """(real rows, padded duplicates) of global batch ``batch_index`` (0-based in the epoch).

        Rank ``r``'s ``j``-th row is row ``r + W*j`` of the padded permutation,
        so the global batch covers rows ``[k*G, k*G + W*n_local)``; those at or
        past ``n_train`` are the padding.
        """
        start = batch_index * self.world_size * self.batch_size
        rows = self.world_size * n_local
        real = max(0, min(start + rows, self.n_train) - start)
        return real, rows - real

    # -- reductions ----------------------------------------------------------------------
    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Sum each value over all ranks (one collective for the lot), in float64."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return t.tolist()

    def start_mean(self, loss: torch.Tensor) -> Callable[[], float]:
        """Start averaging a scalar loss over ranks; the returned call waits and gives it.

        Started before ``backward`` so that it overlaps with the gradients' own
        all-reduce; every rank gets the same value, so a divergence is seen
        (and training stopped) by all ranks at the same step.
        """
        t = loss.detach().to(torch.float64).reshape(1)
        work = dist.all_reduce(t, async_op=True)

        def wait() -> float:
            work.wait()
            return t.item() / self.world_size

        return wait

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere); pickled."""
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (what the others pass is ignored); pickled."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else (
            torch.device("cpu"))

    # -- the model -----------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)``; rank 0's initial weights are broadcast to all."""
        from torch.nn.parallel import DistributedDataParallel

        p = next(model.parameters(), None)
        if p is not None and p.device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[p.device.index])
        return DistributedDataParallel(model)

    def close(self) -> None:
        """End the process group if :func:`setup` started it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(model: nn.Module) -> DistContext:
    """Join the process group (start it from torchrun's environment if needed).

    The backend is NCCL when the model is on a GPU, gloo otherwise.
    """
    owns = False
    if not dist.is_initialized():
        p = next(model.parameters(), None)
        backend = "nccl" if p is not None and p.device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(p.device)
        dist.init_process_group(backend=backend)
        owns = True
        # Left open so later fits in this process reuse it; closed when the process ends.
        atexit.register(_destroy)
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        backend=str(dist.get_backend()),
        owns_group=owns,
    )


def _destroy() -> None:
    if dist.is_initialized():
        gc.collect()  # DDP wrappers first: their reducers hold on to the group
        dist.destroy_process_group()


def end_processes() -> None:
    """Wait for every process, then end the process group in all of them together.

    A process that ends the group (or exits) while another still uses it can
    abort; a command's last step, so that rank 0 writes its files first.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        _destroy()


def distribute(trainer: Trainer, prepared: PreparedData, ctx: DistContext, batch_size: int,
               drop_last: bool) -> int:
    """Shard the data over the ranks and wrap the model; return the rows each rank trains on."""
    check_split(prepared.n_train, prepared.n_val, ctx.world_size, batch_size, drop_last)
    ctx.n_train, ctx.batch_size = prepared.n_train, batch_size
    prepared.train = ShardedSource(prepared.train, ctx, prepared.n_train)  # type: ignore[assignment]
    # The validation rows stay whole (a checkpoint's data fingerprint covers them all);
    # Trainer.evaluate takes this rank's share of them.
    trainer.dist, trainer.net = ctx, ctx.wrap(trainer.model)
    return rows_per_rank(prepared.n_train, ctx.world_size, drop_last)


def record(trainer: Trainer, ctx: DistContext | None, batch_size: int, lr_scaling: str | None,
           warmup_epochs: float) -> None:
    """Write the world size, backend and global batch into the History; arm lr scaling."""
    h = trainer.state.history
    if ctx is not None:
        h.world_size, h.backend = ctx.world_size, ctx.backend
    h.global_batch_size = batch_size * h.world_size
    if lr_scaling == "linear":
        k, warmup = float(h.world_size), round(warmup_epochs * h.iterations_per_epoch)
        trainer.lr_factor = linear_scaling(k, warmup)
        h.params["lr_scaling"] = {
            "rule": "linear (Goyal et al. 2017)", "factor": k, "reference_batch": batch_size,
            "global_batch": h.global_batch_size, "lr": trainer.state.base_lr,
            "scaled_lr": k * trainer.state.base_lr, "warmup_epochs": warmup_epochs,
            "warmup_steps": warmup,
        }


def check_lr_scaling(lr_scaling: str | None, warmup_epochs: float) -> None:
    """Validate ``fit``'s ``lr_scaling`` and ``lr_warmup_epochs``.

    Example:
        >>> check_lr_scaling("linear", 5)
    """
    if lr_scaling not in (None, "none", "linear"):
        raise ParameterError(
            f"The value of `lr_scaling` is {lr_scaling!r}, but must be None, 'none' or 'linear'."
        )
    if (isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float))
            or not 0 <= warmup_epochs < math.inf):
        raise ParameterError(
            f"The value of `lr_warmup_epochs` is {warmup_epochs!r}, but must be a number >= 0."
        )


class ShardedSource:
    """A training source seen through this rank's shard of each epoch's permutation."""

    def __init__(self, inner: Any, ctx: DistContext, n_train: int) -> None:
        self.inner, self.ctx, self.n_train = inner, ctx, n_train

    def __len__(self) -> int:
        return rows_per_rank(self.n_train, self.ctx.world_size, False)

    def batches(
        self, order: torch.Tensor | None, batch_size: int, drop_last: bool, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if order is None:  # shuffle=False: the rows in their order, still sharded
            order = torch.arange(self.n_train)
        local = self.ctx.shard(order, drop_last)
        yield from self.inner.batches(local, batch_size, drop_last, start)


# -- the linear scaling rule ---------------------------------------------------------------

def linear_scaling(k: float, warmup_steps: int) -> Callable[[int], float]:
    """Goyal et al. (2017): multiply the learning rate by ``k``, reached gradually.

    The factor rises linearly from 1 at step 0 to ``k`` at ``warmup_steps``
    and stays there, so training starts at the rate tuned for the small batch.

    Example:
        >>> f = linear_scaling(4.0, 10)
        >>> f(0), f(5), f(10), f(1000)
        (1.0, 2.5, 4.0, 4.0)
    """
    if warmup_steps <= 0:
        return lambda step: k
    return lambda step: 1.0 + (k - 1.0) * min(step, warmup_steps) / warmup_steps


# -- launching ------------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(nproc: int, program: Sequence[str], port: int) -> list[str]:
    """The torchrun command line that runs ``python PROGRAM`` in ``nproc`` processes.

    ``program`` is what follows ``python``: ``["-m", "epochlab.cli", "fit", ...]``
    or ``["script.py", ...]``. The rendezvous is on 127.0.0.1 only. A ``--``
    ends torchrun's own options, so that the program's (``--nproc``) are not
    taken for abbreviations of torchrun's (``--nproc-per-node``).

    Example:
        >>> launch_command(2, ["-m", "epochlab.cli", "fit"], 29500)[-6:]
        ['--master_port', '29500', '-m', '--', 'epochlab.cli', 'fit']
    """
    head = ["-m", "--", *program[1:]] if program[0] == "-m" else ["--", *program]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
            "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
            "--master_port", str(port), *head]


def launch(nproc: int, program: Sequence[str]) -> int:
    """Run ``python PROGRAM`` under torchrun in ``nproc`` local processes; the exit code.

    torchrun runs through :func:`run_torchrun`, so a process that fails (a
    usage error included) ends the command with that process's exit code and
    its own message, not with torchrun's error report and traceback.

    Each process gets ``OMP_NUM_THREADS`` = cores / nproc unless it is set:
    ranks that each take every core slow each other down. The processes
    import the same epochlab as this one (its folder leads ``PYTHONPATH``).
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    cmd = launch_command(nproc, program, free_port())
    cmd[1:3] = ["-m", "epochlab.train._torchrun"]  # run_torchrun: torchrun, quietly
    return subprocess.call(cmd, env=env)


def run_torchrun(argv: Sequence[str]) -> int:
    """torchrun's own ``run`` on ``argv``; a failed process's exit code instead of its report.

    torchrun reports a failed process with a traceback of its own and log
    lines; the process has already said what went wrong (rank 0 prints), so
    only its exit code is passed on, and a process killed by a signal gets
    one line.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(list(argv)))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode > 0:
            return failure.exitcode
        print(f"Error: training process {rank} was killed by signal {-failure.exitcode}.",
              file=sys.stderr)
        return 1
    return 0

