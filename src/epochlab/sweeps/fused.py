"""Fused training: K configurations of one model trained together as one model.

This module owns the epoch loop of fused training and its accounting;
which models fuse and how their layers run stacked live in
:mod:`epochlab.sweeps.fused_layers`, the tensor arithmetic (hand-written
Linear + ReLU/Tanh path, losses, optimizers) in :mod:`epochlab.sweeps.fused_ops`.

Contract: every member ends exactly where training it alone with
``epochlab.fit``'s semantics would (within float rounding): its own
seeded validation split (``fit``'s own ``split_indices``), its own
dropout masks (a generator seeded as ``fit`` seeds torch's), its own shuffle (``torch.randperm`` from
``torch.Generator().manual_seed(seed)`` each epoch), one update per batch
with its own learning rate, optimizer settings and schedule, and the same
per-epoch metrics. Members that diverge (non-finite batch loss: that batch's
update is not applied) or that ``on_epoch_end`` stops leave the stack; the
others go on unchanged.

How it is fast (``shared/notes/fused-prototype.md``): every parameter of
every member sits in one ``(K, P)`` buffer, so the optimizer is a handful
of tensor calls per step whatever the depth; batched matmuls; a
hand-written backward for Linear + ReLU/Tanh stacks (autograd over the
stacked parameters for other layers); one gather per epoch builds every member's batches;
validation runs all members in one pass. Large K is split into chunks that
fit a memory budget and run one after another.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from epochlab.sweeps.fused_layers import HandNet, StackedNet, make_net
from epochlab.sweeps.fused_ops import (
    FusedAdam,
    FusedSGD,
    batch_means,
    correct_rows,
    grad_terms,
    row_losses,
)
from epochlab.train.accounting import iterations_per_epoch
from epochlab.train.data import as_tensor, split_indices
from epochlab.train.history import History
from epochlab.train.runtime import for_training, in_own_precision

Schedule = Callable[[int, int], float]
EpochHook = Callable[[int, dict[str, np.ndarray]], Any]
Status = Literal["completed", "diverged", "stopped"]

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes for one chunk's tensors


class EpochEnd(dict):
    """What ``on_epoch_end`` receives: metric name -> float64 array over all K members.

    A plain dict of the metrics, plus :attr:`active` (the members training
    in this chunk now, whose entries are not NaN) and :meth:`weights`, the
    current weights of one active member (for test read-outs and for early
    stopping that restores the best weights).
    """

    def __init__(self, metrics: dict[str, np.ndarray], chunk: _Chunk) -> None:
        super().__init__(metrics)
        self._chunk = chunk
        self.active: np.ndarray = chunk.members.copy()

    def weights(self, member: int) -> dict[str, Tensor]:
        """A state_dict (a copy) of active ``member`` (its index in ``models``) as it is now."""
        rows = np.flatnonzero(self._chunk.members == member)
        if not len(rows):
            raise ValueError(
                f"The value of `member` is {member}, but must be one of the active members "
                f"{self.active.tolist()}."
            )
        return self._chunk.state_dict(int(rows[0]))


@dataclass
class FusedResult:
    """What one member's training produced, as if it had been trained alone.

    Attributes:
        member: Index of the member in the ``models`` list.
        seed: Its seed (split and shuffle).
        metrics: Per-epoch metrics, one value per completed epoch: ``loss``
            and (classification) ``accuracy``; with validation also
            ``val_loss`` and ``val_accuracy``.
        lr: Learning rate used at every iteration (update) made.
        step_loss: Batch-mean loss at every iteration (before its update).
        grad_norm: Total gradient norm of the member at every iteration.
        batch_sizes: Rows in every iteration's batch.
        updates: Optimizer updates made (``global_step``).
        epochs_done: Epochs completed (a diverged member's partial epoch is
            not counted and has no metrics row).
        samples_seen: Training rows that went into an update.
        status: ``"completed"``, ``"diverged"`` or ``"stopped"`` (by the hook).
        state_dict: Final weights, same keys as the original ``nn.Sequential``.
        n_train, n_val: Rows trained on and validated on.
        iterations_per_epoch: ``ceil(n_train / batch_size)`` (``floor`` with
            ``drop_last``).
    """

    member: int
    seed: int
    metrics: dict[str, list[float]]
    lr: list[float]
    step_loss: list[float]
    grad_norm: list[float]
    batch_sizes: list[int]
    updates: int
    epochs_done: int
    samples_seen: int
    status: Status
    state_dict: dict[str, Tensor]
    n_train: int
    n_val: int
    iterations_per_epoch: int
    info: dict[str, Any] = field(default_factory=dict)
    """``divergence`` (epoch, iteration, step, lr, loss, grad_norm of the
    batch whose update was skipped) for a diverged member; ``epoch_time``
    (seconds per epoch of the chunk the member trained in, shared by all
    its members) and ``epoch_threads`` (torch's thread count in each)."""

    def to_history(self, history: History | None = None) -> History:
        """This member's run as an :class:`epochlab.History`, as ``epochlab.fit`` returns it.

        Written with the History's own recording methods, the ones ``fit``'s
        loop uses: a step per update, an epoch row per completed epoch (the
        metrics, ``lr`` at the epoch's last update, ``updates`` and
        ``samples_seen`` so far and ``time``, the chunk's epoch time shared by
        its members), the divergence record and the end. ``history``: one
        already :meth:`~epochlab.History.start`-ed with the run's settings;
        by default a new one with the accounting known here. ``stop_reason``
        is ``"completed"``, ``"diverged"``, or ``"early_stopping"`` for a
        member the hook stopped.
        """
        ipe = self.iterations_per_epoch
        h = history
        if h is None:
            h = History()
            h.start(n_train=self.n_train, n_val=self.n_val,
                    batch_size=self.batch_sizes[0] if self.batch_sizes else 0,
                    iterations_per_epoch=ipe, epochs_planned=self.epochs_done,
                    validation_split="random" if self.n_val else "none",
                    params={"seed": self.seed, "fused": True})
        n = self.updates
        h.extend_steps(self.step_loss[:n], self.lr[:n], self.grad_norm[:n], self.batch_sizes[:n],
                       ipe)
        sizes = np.cumsum([0, *self.batch_sizes]).tolist()
        times = self.info.get("epoch_time", [])
        train_cols = [(k, v) for k, v in self.metrics.items() if not k.startswith("val_")]
        val_cols = [(k[4:], v) for k, v in self.metrics.items() if k.startswith("val_")]
        for e in range(self.epochs_done):
            last = (e + 1) * ipe
            h.add_epoch(e, {k: v[e] for k, v in train_cols},
                        {k: v[e] for k, v in val_cols} if val_cols else None,
                        lr=self.lr[last - 1], updates=last, samples_seen=sizes[last],
                        seconds=times[e] if e < len(times) else math.nan)
        if "divergence" in self.info:
            h.record_divergence(**self.info["divergence"])
        h.end(total_updates=self.updates, samples_seen=self.samples_seen,
              stop_reason={"stopped": "early_stopping"}.get(self.status, self.status),
              mid_epoch=self.updates != self.epochs_done * ipe)
        return h


# ---------------------------------------------------------------- validation


def _per_member(name: str, value: Any, k: int) -> list[Any]:
    """Broadcast a scalar to K members or check a per-member sequence's length."""
    if isinstance(value, (list, tuple, np.ndarray)) and not (
        name == "betas" and len(value) == 2 and np.isscalar(value[0])
    ):
        if len(value) != k:
            raise ValueError(
                f"The length of `{name}` is {len(value)}, but must be 1 value or one per "
                f"member ({k} members)."
            )
        return list(value)
    return [value] * k


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"The value of `{name}` is {value!r}, but must be `{name} >= 1`.")
    return int(value)


def _infer_task(y: Tensor, out_features: int, task: str | None) -> str:
    if task is not None:
        if task not in ("binary", "multiclass", "regression"):
            raise ValueError(
                f"The value of `task` is {task!r}, but must be one of 'binary', "
                "'multiclass', 'regression' or None (inferred)."
            )
        return task
    if y.dtype.is_floating_point:
        return "regression"
    return "binary" if out_features == 1 else "multiclass"


def _as_tensor(name: str, a: Any, dtype: torch.dtype | None = None) -> Tensor:
    t = as_tensor(name, a)  # fit's conversion: strings and odd objects get fit's errors
    return t.to(dtype) if dtype is not None else t


# ---------------------------------------------------------------- memory plan


def estimate_member_bytes(
    n_params: int,
    width: int,
    n_train: int,
    n_val: int,
    n_features: int,
    batch_size: int,
    itemsize: int = 4,
) -> int:
    """Bytes one member adds to a chunk: weights, optimizer state, its epoch data, activations.

    A deliberate over-estimate: the parameter buffer, its gradient, two Adam
    moments, about three parameter-sized temporaries and the copies of the
    parameters and moments saved at each epoch's start; the member's
    gathered epoch rows (features, labels, indices); its validation rows and
    their activations; the activations and gradients of one batch.
    ``width`` is the activation values one row produces across the layers.

    Example:
        >>> estimate_member_bytes(3457, 97, 640, 160, 20, 32) > 0
        True
    """
    widths = width
    return (
        10 * n_params * itemsize
        + n_train * (n_features * itemsize + 8 + 8)
        + n_val * (n_features * itemsize + 8 + 2 * widths * itemsize)
        + 4 * batch_size * (widths + n_features) * itemsize
    )


def chunk_sizes(
    k: int, member_bytes: int, memory_budget: int | None, max_members_per_chunk: int | None
) -> list[int]:
    """Split K members into near-equal chunks of at most the budget's worth of members.

    Example:
        >>> chunk_sizes(10, member_bytes=100, memory_budget=400, max_members_per_chunk=None)
        [4, 3, 3]
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    per_chunk = max(1, budget // max(member_bytes, 1))
    if max_members_per_chunk is not None:
        per_chunk = min(per_chunk, _positive_int("max_members_per_chunk", max_members_per_chunk))
    n_chunks = math.ceil(k / per_chunk)
    base, extra = divmod(k, n_chunks)
    return [base + (1 if i < extra else 0) for i in range(n_chunks)]


# ---------------------------------------------------------------- public API


@in_own_precision  # float32 whatever autocast the caller is in
def train_fused(
    models: Sequence[nn.Module] | Sequence[dict[str, Tensor]],
    X: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int,
    lrs: float | Schedule | Sequence[float | Schedule],
    seeds: int | Sequence[int],
    optimizer: Literal["adam", "adamw", "sgd"] = "adam",
    weight_decay: float | Sequence[float] = 0.0,
    momentum: float | Sequence[float] = 0.0,
    nesterov: bool = False,
    betas: tuple[float, float] | Sequence[tuple[float, float]] = (0.9, 0.999),
    eps: float | Sequence[float] = 1e-8,
    validation_split: float = 0.0,
    validation_data: tuple[Any, Any] | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    task: str | None = None,
    on_epoch_end: EpochHook | None = None,
    max_members_per_chunk: int | None = None,
    memory_budget: int | None = None,
    template: nn.Module | None = None,
    between_epochs: Callable[[], bool] | None = None,
) -> list[FusedResult]:
    """Train K copies of one architecture together, each as if trained alone.

    Args:
        models: K fusable ``nn.Sequential`` models of one architecture and
            dtype (see :func:`is_fusable`), or K of their state_dicts (then
            pass ``template``). They are not modified.
        X: Features ``(n, in_features)``; cast to the models' dtype.
        y: Labels: int64 classes (binary with 1 output: BCE-with-logits;
            multiclass: cross-entropy) or floats (regression: MSE).
        epochs: Epochs to train (members may stop earlier).
        batch_size: Rows per update; the last partial batch is kept unless
            ``drop_last``.
        lrs: One learning rate or schedule ``lr(step, epoch) -> float`` for
            all members, or one per member (``step`` = updates done, 0-based).
        seeds: One seed per member (its validation split and shuffle).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``, as ``torch.optim``.
        weight_decay, momentum, betas, eps: One value or one per member
            (``momentum`` for SGD, ``betas``/``eps`` for Adam/AdamW).
        nesterov: Nesterov momentum for SGD (all members).
        validation_split: Fraction of rows held out per member with its
            seed (stratified for classification); 0 for none.
        validation_data: ``(X_val, y_val)`` shared by all members instead.
        shuffle: Reshuffle every epoch; ``False`` visits rows in order.
        drop_last: Drop each epoch's last partial batch.
        task: ``"binary"``, ``"multiclass"``, ``"regression"``; inferred
            from ``y`` and the output width when ``None``.
        on_epoch_end: ``hook(epoch, metrics)`` after each epoch's validation.
            ``metrics`` (an :class:`EpochEnd`) maps each metric name to a
            float64 array over all K members (NaN for members not training in
            this chunk or no longer training); ``metrics.weights(i)`` gives an
            active member's current weights. Members with constant learning
            rates are put into chunks in ascending order of their rate
            (equal rates side by side, so the optimizer updates them in one
            call), then members with schedules in the given order. Return ``None`` or a boolean array of length K:
            True stops that member now (status ``"stopped"``). With several
            chunks the hook is called for every epoch of every chunk, chunk
            after chunk, so keep its state per member.
        max_members_per_chunk: Cap on members trained at once.
        memory_budget: Bytes one chunk may use (default 1 GiB); see
            :func:`estimate_member_bytes`.
        template: The architecture when ``models`` are state_dicts.
        between_epochs: Called before each epoch until it returns True (the sweep's
            worker uses it to take more threads once its reading of idle cores is in).

    Returns:
        One :class:`FusedResult` per member, in the order of ``models``.

    Example:
        >>> import torch
        >>> from epochlab.data import synthetic
        >>> from epochlab.models import mlp
        >>> d = synthetic(n_samples=200)
        >>> models = []
        >>> for s in (0, 1):
        ...     _ = torch.manual_seed(s)
        ...     models.append(mlp(20))
        >>> res = train_fused(models, d.x_train, d.y_train, epochs=2, batch_size=32,
        ...                   lrs=[1e-2, 1e-3], seeds=[0, 1], validation_split=0.2)
        >>> res[0].n_train, res[0].iterations_per_epoch, res[0].updates, res[0].status
        (128, 4, 8, 'completed')
    """
    k = len(models)
    if k == 0:
        raise ValueError("The length of `models` is 0, but must be `len(models) >= 1`.")
    if isinstance(models[0], dict):
        if template is None:
            raise ValueError("`models` are state_dicts, so `template` (an nn.Sequential) is needed.")
        arch, state_dicts = template, [dict(m) for m in models]  # type: ignore[arg-type]
    else:
        arch = models[0]  # type: ignore[assignment]
        state_dicts = [m.state_dict() for m in models]  # type: ignore[union-attr]
    try:
        net = make_net(arch)
    except ValueError as e:
        raise ValueError(f"The model in `models` cannot be fused: {e}.") from None
    layout = net.layout
    dtype = next(arch.parameters()).dtype
    want = {key: shape for key, _, shape in layout.entries}
    want.update({key: tuple(v.shape) for key, v in arch.state_dict().items()
                 if key in net.buffer_keys})
    for i, sd in enumerate(state_dicts):
        shapes = {key: tuple(v.shape) for key, v in sd.items()}
        if shapes != want:
            raise ValueError(
                f"`models[{i}]` has parameters {shapes}, but members must share the "
                f"architecture of `models[0]`: {want}."
            )
        if any(v.dtype != dtype for v in sd.values() if v.is_floating_point()):
            raise ValueError(f"`models[{i}]` is not {dtype} like `models[0]`.")
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    if optimizer not in ("adam", "adamw", "sgd"):
        raise ValueError(
            f"The value of `optimizer` is {optimizer!r}, but must be 'adam', 'adamw' or 'sgd'."
        )
    seeds_k = [int(s) for s in _per_member("seeds", seeds, k)]
    lrs_k = _per_member("lrs", lrs, k)
    for i, lr in enumerate(lrs_k):
        if not callable(lr) and not (isinstance(lr, (int, float)) and lr >= 0):
            raise ValueError(
                f"The value of `lrs[{i}]` is {lr!r}, but must be a float >= 0 or a "
                "schedule lr(step, epoch)."
            )
    wd_k = np.array(_per_member("weight_decay", weight_decay, k), dtype=np.float64)
    mom_k = np.array(_per_member("momentum", momentum, k), dtype=np.float64)
    betas_k = np.array(_per_member("betas", betas, k), dtype=np.float64).reshape(k, 2)
    eps_k = np.array(_per_member("eps", eps, k), dtype=np.float64)
    for name, vals in (("weight_decay", wd_k), ("momentum", mom_k), ("eps", eps_k)):
        if not np.all(vals >= 0):
            raise ValueError(f"The value of `{name}` is {vals.tolist()}, but must be >= 0.")
    if not np.all((betas_k >= 0) & (betas_k < 1)):
        raise ValueError(f"The value of `betas` is {betas_k.tolist()}, but each must be in [0, 1).")
    if optimizer == "sgd" and nesterov and not np.all(mom_k > 0):
        raise ValueError(
            f"The value of `momentum` is {mom_k.tolist()}, but `nesterov=True` needs "
            "`momentum > 0` for every member (as torch.optim.SGD)."
        )
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(
            f"The value of `validation_split` is {validation_split}, but must be in [0, 1)."
        )
    if validation_split > 0 and validation_data is not None:
        raise ValueError("Pass `validation_split` or `validation_data`, not both.")

    x_all = _as_tensor("X", X, dtype)
    y_raw = _as_tensor("y", y)
    if y_raw.shape[0] != x_all.shape[0]:
        raise ValueError(f"`X` has {x_all.shape[0]} rows but `y` has {y_raw.shape[0]}.")
    if net.flatten_input:  # leading nn.Flatten layers: one reshape of the data
        x_all = x_all.reshape(x_all.shape[0], -1)
    out = _out_features(net, arch, x_all)
    task = _infer_task(y_raw, out, task)
    y_all = _targets(y_raw, task, out, dtype)

    n = x_all.shape[0]
    # The split fit makes for each seed (the same function: stratified by class labels).
    labels = None
    if task != "regression":
        labels = y_raw.numpy().reshape(n, -1)[:, 0]
    splits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for s in set(seeds_k):
        tr, va, _ = split_indices(n, validation_split, seed=s, stratify=labels)
        splits[s] = (tr, va)
    n_train = len(splits[seeds_k[0]][0])
    shared_val: tuple[Tensor, Tensor] | None = None
    if validation_data is not None:
        xv = _as_tensor("validation X", validation_data[0], dtype)
        yv = _targets(_as_tensor("validation y", validation_data[1]), task, out, dtype)
        shared_val = (xv, yv)
        n_val = xv.shape[0]
    else:
        n_val = len(splits[seeds_k[0]][1])
    ipe = iterations_per_epoch(n_train, batch_size, drop_last)
    if ipe < 1:
        raise ValueError(
            f"The value of `batch_size` is {batch_size}, but with drop_last=True it must be "
            f"<= n_train ({n_train}) for at least one update per epoch."
        )

    member_bytes = estimate_member_bytes(
        layout.n_params, net.width(x_all[0]), n_train, n_val, x_all[0].numel(), batch_size,
        x_all.element_size(),
    )
    results: list[FusedResult | None] = [None] * k
    # Members with equal constant learning rates side by side: the optimizer then updates
    # each run of equal rates in one call (results come back in the caller's order).
    order = sorted(range(k), key=lambda i: (1, 0.0, i) if callable(lrs_k[i]) else (0, lrs_k[i], i))
    start = 0
    for size in chunk_sizes(k, member_bytes, memory_budget, max_members_per_chunk):
        members = order[start : start + size]
        start += size
        run = _Chunk(
            members=members, k_total=k, net=net, task=task, dtype=dtype,
            state_dicts=[state_dicts[i] for i in members],
            seeds=[seeds_k[i] for i in members], lrs=[lrs_k[i] for i in members],
            x=x_all, y=y_all, splits=splits, shared_val=shared_val,
            batch_size=batch_size, ipe=ipe, n_train=n_train, n_val=n_val,
            shuffle=shuffle, on_epoch_end=on_epoch_end, out_features=out,
        )
        run.between = between_epochs
        if optimizer == "sgd":
            run.opt = FusedSGD(run.flat, mom_k[members], wd_k[members], nesterov)
        else:
            run.opt = FusedAdam(
                run.flat, betas_k[members], eps_k[members], wd_k[members], optimizer == "adamw"
            )
        with for_training():  # freed memory reused, subnormals flushed, as in fit
            for res in run.train(epochs):
                results[res.member] = res
        between_epochs = run.between
    return [r for r in results if r is not None]


def _out_features(net: Any, arch: nn.Module, x: Tensor) -> int:
    """The model's logits per row, checking that ``x`` fits it (a 2-D output)."""
    if isinstance(net, HandNet) and not net.blocks:
        if x.ndim != 2 or x.shape[1] != net.specs[0].in_features:
            raise ValueError(f"The shape of `X` is {tuple(x.shape)}, but must be "
                             f"(n, {net.specs[0].in_features}).")
        return net.specs[-1].out_features
    was = arch.training
    try:
        with torch.no_grad():
            z = arch.eval()(x[:2].clone())
    except RuntimeError as e:
        raise ValueError(f"The shape of `X` is {tuple(x.shape)}, which the model does not take "
                         f"({e}).") from None
    finally:
        arch.train(was)
    if z.ndim != 2:
        raise ValueError(f"The model returns outputs of shape {tuple(z.shape[1:])} per row, but "
                         "fused training needs logits (one vector per row).")
    return int(z.shape[1])


def stacked_evaluator(
    arch: nn.Module, X: Any, y: Any, task: str,
) -> Callable[[Sequence[dict[str, Tensor]]], list[dict[str, float]]]:
    """Loss (and, for classification, accuracy) of many weight sets of one fusable
    architecture on ``(X, y)``, in one stacked forward for all of them.

    A fused task's test metrics: what :func:`epochlab.evaluate` gives each set of weights
    alone, to float rounding (the same formulas, summed in another order), as the fused
    validation metrics are. The data is converted once; each call stacks the weights it
    is given, and runs the rows in chunks whose activations stay under
    :data:`~epochlab.train.runtime.EVAL_ACTIVATION_BYTES`.

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic(n_samples=200)
        >>> models = []
        >>> for s in (0, 1):
        ...     _ = torch.manual_seed(s)
        ...     models.append(el.models.mlp(20))
        >>> test = stacked_evaluator(models[0], d.x_test, d.y_test, "binary")
        >>> got = test([m.state_dict() for m in models])
        >>> want = [el.evaluate(m, d.test) for m in models]
        >>> all(abs(g[k] - w[k]) < 1e-6 for g, w in zip(got, want) for k in w)
        True
    """
    from epochlab.train.loop import evaluation_data
    from epochlab.train.runtime import EVAL_ACTIVATION_BYTES

    net = make_net(arch)
    dtype = next(arch.parameters()).dtype
    # The rows checked and converted as evaluate does (the same errors for bad test data).
    _, x, y_eval = evaluation_data(arch, (X, y))
    if net.flatten_input:
        x = x.reshape(x.shape[0], -1)
    n = x.shape[0]
    out = _out_features(net, arch, x)
    yt = _targets(y_eval, task, out, dtype)
    row_values = max(1, net.width(x[0])) * x.element_size()

    def evaluate(state_dicts: Sequence[dict[str, Tensor]]) -> list[dict[str, float]]:
        k = len(state_dicts)
        if n == 0 or k == 0:
            return [{} for _ in range(k)]
        flat = net.layout.stack(list(state_dicts), dtype)
        net.load_buffers(list(state_dicts), dtype)
        net.bind(flat, flat)  # the gradient's views are never used: no training here
        step = max(1, EVAL_ACTIVATION_BYTES // (k * row_values))
        loss = torch.zeros(k, dtype=torch.float64)
        correct = torch.zeros(k, dtype=torch.int64)
        with torch.no_grad():
            for s in range(0, n, step):
                xb, yb = x[s : s + step], yt[s : s + step]
                z = net.predict(xb.unsqueeze(0).expand(k, *xb.shape))
                yk = yb.unsqueeze(0).expand(k, *yb.shape)
                loss += row_losses(task, z, yk).to(torch.float64).sum(dim=1)
                if task != "regression":
                    correct += correct_rows(task, z, yk).sum(dim=1)
        losses, hits = (loss / n).tolist(), (correct.to(torch.float64) / n).tolist()
        if task == "regression":
            return [{"loss": v} for v in losses]
        return [{"loss": v, "accuracy": a} for v, a in zip(losses, hits, strict=True)]

    return evaluate


def _rows(t: Tensor, idx: Tensor, out: Tensor | None = None) -> Tensor:
    """``t[idx]`` for a 2-D index ``(K, n)`` (one gather; a third of advanced indexing's
    time), into ``out`` when given."""
    flat_idx = idx.reshape(-1)
    if out is not None:
        torch.index_select(t, 0, flat_idx, out=out.view(-1, *t.shape[1:]))
        return out
    return t.index_select(0, flat_idx).view(*idx.shape, *t.shape[1:])


def _targets(y: Tensor, task: str, out: int, dtype: torch.dtype) -> Tensor:
    """Targets in the layout :func:`loss_and_grad` wants, per row."""
    if task == "binary":
        return y.to(dtype).reshape(-1, 1)
    if task == "multiclass":
        if y.dtype.is_floating_point and not bool((y == y.round()).all()):
            raise ValueError(f"For a multiclass task `y` must hold class labels, got {y.dtype} "
                             "values that are not whole numbers.")
        return y.to(torch.int64).reshape(-1)
    return y.to(dtype).reshape(y.shape[0], out)


@dataclass
class _Epoch:
    """One epoch's batches for every active member: inputs, the targets' part of the logits
    gradient (:func:`~epochlab.sweeps.fused_ops.grad_terms`), the targets and ``alpha``."""

    xs: list[Tensor]
    terms: list[Tensor]
    ye: Tensor
    alpha: float


@dataclass
class _Trained:
    """An epoch trained, its metrics not yet computed: the logits of its steps and their
    targets ``(K, rows, ...)``, the validation logits after it, its per-step records
    ``(lr, grad norm, rows)`` and how many of them are already recorded."""

    z: Tensor
    y: Tensor
    zv: Tensor | None
    rec: list[tuple[np.ndarray, Tensor, int]]
    settled: int


# Logits and targets kept for deferred metrics before they are computed (~16 MB of float32).
PENDING_VALUES = 4_000_000


class _Chunk:
    """One group of members trained at once; members leave the stack when they stop.

    Rows of the stacked tensors are the *active* members; ``self.local[row]``
    is that member's position in the chunk, ``self.members[row]`` its index
    in the caller's list.
    """

    opt: FusedAdam | FusedSGD

    def __init__(self, *, members: list[int], k_total: int, net: HandNet | StackedNet, task: str,
                 dtype: torch.dtype, state_dicts: list[dict[str, Tensor]], seeds: list[int],
                 lrs: list[Any], x: Tensor, y: Tensor,
                 splits: dict[int, tuple[np.ndarray, np.ndarray]],
                 shared_val: tuple[Tensor, Tensor] | None, batch_size: int, ipe: int,
                 n_train: int, n_val: int, shuffle: bool, on_epoch_end: EpochHook | None,
                 out_features: int) -> None:
        size = len(members)
        self.members, self.local = np.array(members), np.arange(size)
        self.k_total, self.net, self.layout, self.task = k_total, net, net.layout, task
        self.out = out_features
        self.seeds, self.lrs = seeds, lrs
        self.x, self.y = x, y
        self.bs, self.ipe, self.n_train, self.n_val = batch_size, ipe, n_train, n_val
        self.shuffle, self.hook = shuffle, on_epoch_end
        self.flat = self.layout.stack(state_dicts, dtype)
        self.grad = torch.zeros_like(self.flat)
        net.start(seeds)
        net.load_buffers(state_dicts, dtype)
        net.bind(self.flat, self.grad)
        self.train_idx = torch.as_tensor(np.stack([splits[s][0] for s in seeds]))
        # Members of one seed share their split and shuffles: their rows are gathered once
        # and seen by all (expanded views: the batched matmuls read them as fast).
        self.shared_rows = len(set(seeds)) == 1
        if shared_val is not None:
            self.xv = shared_val[0].unsqueeze(0).expand(size, *shared_val[0].shape)
            self.yv = shared_val[1].unsqueeze(0).expand(size, *shared_val[1].shape)
        elif n_val > 0:
            val_idx = torch.as_tensor(np.stack([splits[s][1] for s in seeds]))
            if self.shared_rows:
                self.xv = x[val_idx[0]].unsqueeze(0).expand(size, -1, *x.shape[1:])
                self.yv = y[val_idx[0]].unsqueeze(0).expand(size, -1, *y.shape[1:])
            else:
                self.xv, self.yv = x[val_idx], y[val_idx]
        by_seed: dict[int, torch.Generator] = {}
        self.gens = [by_seed.setdefault(s, torch.Generator().manual_seed(s)) for s in seeds]
        self.const_lr = None
        if not any(callable(lr) for lr in lrs):
            self.const_lr = np.array(lrs, dtype=np.float64)
        names = ["loss"] + (["accuracy"] if task != "regression" else [])
        if n_val > 0:
            names += ["val_" + m for m in names]
        self.metric_names = names
        self.metrics: list[dict[str, list[float]]] = [{m: [] for m in names} for _ in range(size)]
        self.rec: list[dict[str, list]] = [
            {"lr": [], "loss": [], "grad_norm": [], "batch_size": []} for _ in range(size)
        ]
        self.info: list[dict[str, Any]] = [{"epoch_time": [], "epoch_threads": []}
                                           for _ in range(size)]
        self.updates = 0  # shared: every active member has made the same updates
        self.epochs_done = np.zeros(size, dtype=np.int64)
        self.samples = np.zeros(size, dtype=np.int64)
        self.finished: list[FusedResult] = []
        # Per-step records of the current active set in blocks of steps, (lr, loss, grad norm)
        # each (members, steps), and the steps' batch sizes; moved to self.rec on a change.
        self._seg: list[tuple[np.ndarray, Tensor, Tensor, list[int]]] = []
        # Epochs trained whose metrics and records are not yet computed (:meth:`_summarize`).
        self._pending: list[_Trained] = []
        self._bufs: tuple[Tensor, list[Tensor], Tensor, list[Tensor]] | None = None
        self._pending_values = 0
        # The current epoch: its logits, per-step (lr, grad norm, rows), and how many of its
        # steps are already in self._seg (their losses come from the logits).
        self._ep_z: list[Tensor] = []
        self._ep_rec: list[tuple[np.ndarray, Tensor, int]] = []
        self._settled = 0
        self.between: Callable[[], bool] | None = None  # train_fused's between_epochs
        self._last_lr: tuple[list[float], np.ndarray] | None = None  # see _lr

    # -- bookkeeping -----------------------------------------------------------------

    def state_dict(self, row: int) -> dict[str, Tensor]:
        """The member at active ``row``: its parameters and buffers, as copies."""
        return {**self.layout.unstack(self.flat[row]), **self.net.buffer_state(row)}

    def _flush(self) -> None:
        """Move the per-step records of the current active set into per-member lists."""
        if not self._seg:
            return
        lrs = np.concatenate([s[0] for s in self._seg], axis=1)
        losses = torch.cat([s[1] for s in self._seg], dim=1).to(torch.float64).numpy()
        norms = torch.cat([s[2] for s in self._seg], dim=1).to(torch.float64).numpy()
        sizes = [n for s in self._seg for n in s[3]]
        for row, local in enumerate(self.local):
            r = self.rec[local]
            r["lr"] += lrs[row].tolist()
            r["loss"] += losses[row].tolist()
            r["grad_norm"] += norms[row].tolist()
            r["batch_size"] += sizes
        self._seg = []

    def _finish(self, rows: np.ndarray, status: Status, samples_now: int) -> None:
        """Record the members at active ``rows`` as done and drop them from the stack."""
        self._summarize()
        self._flush()
        for row in rows:
            local = self.local[row]
            r = self.rec[local]
            self.finished.append(FusedResult(
                member=int(self.members[row]), seed=self.seeds[local],
                metrics=self.metrics[local], lr=r["lr"], step_loss=r["loss"],
                grad_norm=r["grad_norm"], batch_sizes=r["batch_size"], updates=self.updates,
                epochs_done=int(self.epochs_done[local]),
                samples_seen=int(self.samples[local]) + samples_now, status=status,
                state_dict=self.state_dict(row), n_train=self.n_train,
                n_val=self.n_val, iterations_per_epoch=self.ipe, info=self.info[local],
            ))
        keep = np.setdiff1d(np.arange(len(self.members)), rows)
        if len(keep):
            self._select(keep)
        else:
            self.members, self.local = self.members[keep], self.local[keep]

    def _select(self, keep: np.ndarray) -> None:
        rows = torch.as_tensor(keep, dtype=torch.int64)
        self.members, self.local = self.members[keep], self.local[keep]
        self.flat, self.grad = self.flat[rows], self.grad[rows]
        self.net.select(keep)
        self.net.bind(self.flat, self.grad)
        self.opt.select(rows, self.flat)
        self.train_idx = self.train_idx[rows]
        self.gens = [self.gens[i] for i in keep]
        if self.n_val > 0:
            self.xv, self.yv = self.xv[rows], self.yv[rows]  # (materialized: few members left)
        if self.const_lr is not None:
            self.const_lr = self.const_lr[keep]

    def _lr(self, epoch: int) -> np.ndarray:
        if self.const_lr is not None:
            return self.const_lr
        values = [lr(self.updates, epoch) if callable(lr) else lr
                  for lr in (self.lrs[local] for local in self.local)]
        last = self._last_lr
        if last is not None and last[0] == values:  # the same rates: the same array, so the
            return last[1]                          # optimizer's per-rate set-up is kept
        out = np.array(values, dtype=np.float64)
        self._last_lr = (values, out)
        return out

    # -- the loop --------------------------------------------------------------------

    def train(self, epochs: int) -> list[FusedResult]:
        bs, task = self.bs, self.task
        for epoch in range(epochs):
            if self.between is not None and self.between():
                self.between = None
            threads = torch.get_num_threads()
            t0 = time.perf_counter()
            if self.shuffle:
                # Members of one seed share a generator: one draw serves them all.
                drawn: dict[int, Tensor] = {}
                draws = [
                    drawn[id(g)] if id(g) in drawn
                    else drawn.setdefault(id(g), torch.randperm(self.n_train, generator=g))
                    for g in self.gens
                ]
                perm = (draws[0].expand(len(draws), -1) if len(drawn) == 1
                        else torch.stack(draws))
                rows_idx = self.train_idx.gather(1, perm)
            else:
                rows_idx = self.train_idx
            # One gather builds every member's batches for the whole epoch, and one call the
            # targets' part of every step's logits gradient, both into buffers kept from
            # epoch to epoch whose batches are views made once; the targets are the epoch's
            # own (its metrics are computed from them later).
            xe, xs, term, terms = self._epoch_buffers()
            if self.shared_rows:  # one member's rows, seen by all
                _rows(self.x, rows_idx[:1], out=xe)
                ye = _rows(self.y, rows_idx[:1]).expand(len(self.members), *rows_idx.shape[1:],
                                                         *self.y.shape[1:])
            else:
                _rows(self.x, rows_idx, out=xe)
                ye = _rows(self.y, rows_idx)
            _, alpha = grad_terms(task, ye, bs, self.out, self.flat.dtype, into=term)
            ep = _Epoch(xs, terms, ye, alpha)
            # Optimistic: the steps run without a finiteness check each, and the epoch's
            # losses and gradient norms are checked once at its end. Should one be
            # non-finite, the epoch runs again from the state saved at its start, checking
            # every step (the same calls in the same order: the same numbers).
            snap = self._snapshot()
            seen = self._steps(epoch, ep, check=False)
            zc = torch.cat(self._ep_z, dim=1)
            replayed = not self._finite_epoch(zc, ep.ye, seen)
            if replayed:
                self._summarize()  # the epochs before first: the records stay in step order
                self._restore(snap)
                seen = self._steps(epoch, ep, check=True)
                if seen < 0:
                    return self.finished
                zc = torch.cat(self._ep_z, dim=1)
            del snap
            zv = self.net.predict(self.xv) if self.n_val > 0 else None
            self._pending.append(_Trained(zc, ep.ye[:, :seen], zv, self._ep_rec, self._settled))
            self._pending_values += sum(t.numel() for t in (self._pending[-1].z, ep.ye, zv)
                                        if t is not None)
            self._end_epoch(epoch, seen, time.perf_counter() - t0, threads,
                            summarize=replayed or self._pending_values > PENDING_VALUES)
            if len(self.members) == 0:
                return self.finished
        self._finish(np.arange(len(self.members)), "completed", 0)
        return self.finished

    def _epoch_buffers(self) -> tuple[Tensor, list[Tensor], Tensor, list[Tensor]]:
        """The buffers an epoch's gathered inputs and logits-gradient terms go to, and their
        batches as views (made once: splitting cost ~40 us an epoch); anew when members
        leave."""
        k = len(self.members)
        if self._bufs is None or self._bufs[2].shape[0] != k:
            rows = 1 if self.shared_rows else k
            xe = torch.empty(rows, self.n_train, *self.x.shape[1:], dtype=self.x.dtype)
            xs = [v.expand(k, *v.shape[1:]) for v in xe.split(self.bs, dim=1)]
            term = torch.empty(k, self.n_train, self.out, dtype=self.flat.dtype)
            self._bufs = (xe, xs, term, list(term.split(self.bs, dim=1)))
        return self._bufs

    def _snapshot(self) -> tuple[Any, ...]:
        """What an epoch changes: the parameters, the optimizer's and the net's state."""
        return self.flat.clone(), self.opt.snapshot(), self.net.snapshot(), self.updates

    def _restore(self, snap: tuple[Any, ...]) -> None:
        flat, opt, net, self.updates = snap
        self.flat.copy_(flat)  # in place: the net's views of the buffer stay bound
        self.opt.restore(opt)
        self.net.restore(net)

    def _finite_epoch(self, zc: Tensor, ye: Tensor, seen: int) -> bool:
        """Whether every step of the epoch had finite losses and gradients, in two dot
        products: the sum of squares of the logits (of the errors, for regression) and of
        the gradient norms. Finite sums bound every logit, hence every batch's loss (a
        row's BCE or cross-entropy is at most twice its largest logit plus log C); an
        overflowing one only sends the epoch to the exact step-by-step check."""
        z = zc - ye[:, :seen] if self.task == "regression" else zc
        z = z.flatten()
        norms = torch.cat([r[1] for r in self._ep_rec])
        return math.isfinite(torch.dot(z, z).add_(torch.dot(norms, norms)).item())

    def _steps(self, epoch: int, ep: _Epoch, check: bool) -> int:
        """The epoch's steps; the rows seen, or -1 when every member diverged.

        With ``check``, each step's losses and gradients are checked before the update: a
        member whose loss or gradient is not finite makes no update from it, keeps the
        weights of its last finite step and leaves the stack (as fit stops a run).
        """
        bs, net, task = self.bs, self.net, self.task
        self._ep_z, self._ep_rec, self._settled = [], [], 0
        seen = 0
        for b in range(self.ipe):
            xb, term_b, alpha_b = ep.xs[b], ep.terms[b], ep.alpha
            nb = xb.shape[1]
            if nb != bs:  # a last, smaller batch
                term_b, alpha_b = grad_terms(task, ep.ye[:, seen:seen + nb], nb, self.out,
                                             self.flat.dtype)
            lr = self.const_lr if self.const_lr is not None else self._lr(epoch)
            z, grad = net.train_step(xb, task, term_b, alpha_b)
            gnorm = torch.linalg.vector_norm(grad, dim=1)
            if check and not self._finite_step(z, gnorm, ep.ye[:, seen:seen + nb]):
                loss = row_losses(task, z, ep.ye[:, seen:seen + nb]).mean(dim=1)
                ok = (torch.isfinite(loss) & torch.isfinite(gnorm)).numpy()
                if not ok.all():
                    keep, bad = np.flatnonzero(ok), np.flatnonzero(~ok)
                    for row in bad:
                        self.info[self.local[row]]["divergence"] = {
                            "epoch": epoch, "iteration": b + 1, "step": self.updates,
                            "lr": float(lr[row]), "loss": float(loss[row]),
                            "grad_norm": float(gnorm[row]),
                        }
                    self._summarize()
                    self._settle(ep.ye, seen)
                    self._finish(bad, "diverged", seen)
                    if len(keep) == 0:
                        return -1
                    k_t = torch.as_tensor(keep)
                    self._ep_z = [t[k_t] for t in self._ep_z]
                    self._ep_rec = [(r_lr[keep], r_gn[k_t], r_n)
                                    for r_lr, r_gn, r_n in self._ep_rec]
                    gnorm, z, grad = gnorm[k_t], z[k_t], grad[k_t]
                    ep.ye, lr = ep.ye[k_t], lr[keep]
                    ep.xs = [t[k_t] for t in ep.xs]
                    ep.terms = [t[k_t] for t in ep.terms]
            self.opt.step(grad, lr)
            self.updates += 1
            seen += nb
            self._ep_z.append(z)
            self._ep_rec.append((lr, gnorm, nb))
        return seen

    def _finite_step(self, z: Tensor, gnorm: Tensor, yb: Tensor) -> bool:
        """One check on a product that is non-finite whenever a loss is (or a gradient);
        False sends the step to the exact member-by-member check on the loss itself.
        BCE and cross-entropy overflow only for logits beyond 1e36, where their norm (sum
        of squares) has overflowed long before; a squared error can overflow with small
        logits (huge targets), so regression checks its loss."""
        if self.task == "regression":
            probe = row_losses(self.task, z, yb).mean(dim=1)
        else:
            probe = torch.linalg.vector_norm(z, dim=(1, 2))
        return math.isfinite(torch.dot(gnorm, probe).item())

    def _settle(self, ye: Tensor, seen: int) -> None:
        """Record this epoch's steps so far (before members leave mid-epoch), their losses
        from their logits; the epoch's end records the rest (:meth:`_summarize`)."""
        if not self._ep_rec:
            return
        zc = torch.cat(self._ep_z, dim=1)
        sizes = [r[2] for r in self._ep_rec]
        self._record_steps(self._ep_rec, batch_means(row_losses(self.task, zc, ye[:, :seen]), sizes))
        self._settled = len(self._ep_rec)

    def _record_steps(self, recs: list[tuple[np.ndarray, Tensor, int]], step_loss: Tensor) -> None:
        """Steps' ``(lr, grad norm, rows)`` records and their losses ``(K, steps)`` into the
        per-step records of the current active set (:meth:`_flush` moves them on)."""
        first = recs[0][0]
        if all(r[0] is first for r in recs):  # constant rates: one array, every step
            lrs = np.repeat(first[:, None], len(recs), axis=1)
        else:
            lrs = np.stack([r[0] for r in recs], axis=1)
        self._seg.append((lrs, step_loss,
                          torch.stack([r[1] for r in recs], dim=1), [r[2] for r in recs]))

    def _summarize(self) -> dict[str, np.ndarray] | None:
        """The metrics and per-step records of the epochs trained since the last call, in a
        few calls for all of them; the last epoch's metrics per active member.

        The steps' losses, the epochs' mean losses and accuracies, and the validation
        losses all come from logits kept as each epoch ended (the validation forward runs
        then, on that epoch's weights): deferring them costs nothing in exactness and
        saves some twenty calls an epoch.
        """
        pend, self._pending, self._pending_values = self._pending, [], 0
        if not pend:
            return None
        task, k, e = self.task, len(self.members), len(pend)
        seen, sizes = pend[0].y.shape[1], [r[2] for r in pend[0].rec]
        if any(p.y.shape[1] != seen or [r[2] for r in p.rec] != sizes for p in pend):
            raise AssertionError("epochs of unequal steps")  # pragma: no cover - by design
        zc = torch.cat([p.z for p in pend], dim=1)
        yc = torch.cat([p.y for p in pend], dim=1)
        step_loss = batch_means(row_losses(task, zc, yc).view(k, e, seen), sizes)  # (K, E, S)
        # As fit: sum of (batch mean loss x batch rows) in float64, over rows seen.
        loss_sum = step_loss.to(torch.float64) @ torch.tensor(sizes, dtype=torch.float64)
        values: dict[str, np.ndarray] = {"loss": (loss_sum / seen).numpy()}
        if task != "regression":
            correct = correct_rows(task, zc, yc).view(k, e, seen).sum(dim=2)
            values["accuracy"] = correct.to(torch.float64).numpy() / seen
        if self.n_val > 0:
            zv = torch.stack([p.zv for p in pend], dim=1).flatten(1, 2)  # (K, E * n_val, C)
            yv = self.yv.unsqueeze(1).expand(k, e, *self.yv.shape[1:]).flatten(1, 2)
            vrows = row_losses(task, zv, yv).view(k, e, self.n_val)
            values["val_loss"] = vrows.mean(dim=2).to(torch.float64).numpy()
            if task != "regression":
                vcorr = correct_rows(task, zv, yv).view(k, e, self.n_val).sum(dim=2)
                values["val_accuracy"] = vcorr.to(torch.float64).numpy() / self.n_val
        # The per-step records, but for the steps recorded before members left mid-epoch.
        done = pend[0].settled
        recs = [r for p in pend for r in p.rec][done:]
        if recs:
            self._record_steps(recs, step_loss.flatten(1)[:, done:])
        for row, local in enumerate(self.local.tolist()):
            metrics = self.metrics[local]
            for name in self.metric_names:
                metrics[name] += values[name][row].tolist()
        return {name: col[:, -1] for name, col in values.items()}

    def _end_epoch(self, epoch: int, seen: int, seconds: float, threads: int,
                   summarize: bool) -> None:
        for local in self.local.tolist():
            self.info[local]["epoch_time"].append(seconds)
            self.info[local]["epoch_threads"].append(threads)
        self.epochs_done[self.local] += 1
        self.samples[self.local] += seen
        if self.hook is None:
            if summarize:
                self._summarize()
            return
        values = self._summarize()
        assert values is not None
        full = {}
        for name in self.metric_names:
            arr = np.full(self.k_total, np.nan)
            arr[self.members] = values[name]
            full[name] = arr
        stop = self.hook(epoch, EpochEnd(full, self))
        if stop is None:
            return
        stop = np.asarray(stop)
        if stop.dtype != bool or stop.shape != (self.k_total,):
            raise ValueError(
                f"`on_epoch_end` returned an array of shape {stop.shape} and dtype {stop.dtype}, "
                f"but must return None or a boolean array of shape ({self.k_total},)."
            )
        rows = np.flatnonzero(stop[self.members])
        if len(rows):
            self._finish(rows, "stopped", 0)
