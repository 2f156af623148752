"""The one training loop: ``fit``, and ``evaluate``.

``fit`` validates its arguments, turns the data into tensors once, makes the
validation split, infers the loss, then loops epochs over ``Trainer.step``
and tells the callbacks what happens (see :mod:`epochlab.callbacks.base` for
the order). It knows nothing of sweeps, stores or plots.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from epochlab.callbacks.base import Callback
from epochlab.train import distributed as _dist
from epochlab.train.accounting import check_int, iterations_per_epoch
from epochlab.train.data import (
    ArraySource,
    DatasetSource,
    PreparedData,
    as_tensor,
    check_finite,
    check_pair,
    split_indices,
)
from epochlab.train.history import History
from epochlab.train.losses import (
    LossSpec,
    out_features_of,
    prepare_targets,
    resolve_loss,
    resolve_metrics,
)
from epochlab.train.runtime import (
    EVAL_ROWS,
    check_precision,
    check_threads,
    eval_rows,
    for_training,
    own_precision,
    resolve,
    start_idle_window,
    using_threads,
)
from epochlab.train.trainer import (
    OptimizerLike,
    Trainer,
    callback_list,
    evaluate_tensors,
    writes_inplace,
)
from epochlab.validation import ParameterError, check_bool


class TrainingError(RuntimeError):
    """A failure inside the training loop (not a bad parameter: those are refused before)."""


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _split_xy(data: Any, where: str) -> tuple[Any, Any]:
    if hasattr(data, "x_train") and hasattr(data, "y_train"):  # a DataBundle
        return data.x_train, data.y_train
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    hint = ""
    if isinstance(data, torch.utils.data.DataLoader):
        hint = (" Pass its dataset and batch size instead (`loader.dataset`, "
                "`batch_size=loader.batch_size`): fit makes and shuffles the batches itself, "
                "which is how it counts epochs and iterations exactly.")
    raise ParameterError(
        f"`{where}` must be (X, y) arrays or tensors, a DataBundle, or a torch Dataset; "
        f"got {type(data).__name__}.{hint}"
    )


def float_dtype(model: nn.Module) -> torch.dtype:
    """The model's floating dtype (float32 unless the model was made double)."""
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    return p.dtype if p is not None else torch.float32


def _cast_x(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Float inputs take the model's dtype (float32 usually); integer token ids stay."""
    p = next(model.parameters(), None)
    if x.is_floating_point() and p is not None and x.dtype != p.dtype:
        return x.to(p.dtype)
    return x


def prepare_data(
    model: nn.Module,
    data: Any,
    *,
    validation_split: float,
    validation_data: Any,
    validation_split_mode: str,
    loss: Any,
    seed: int,
) -> tuple[PreparedData, LossSpec]:
    """Tensors on the model's device, the split, and the loss fitted to the targets."""
    device, dt = _device_of(model), float_dtype(model)
    if validation_data is not None and validation_split:
        raise ParameterError(
            "Both `validation_split` and `validation_data` were given; pass one of them."
        )
    check_param_dtype(model)
    data = _tensors_of(data)
    if isinstance(data, Dataset) and not isinstance(data, (tuple, list)):
        return _prepare_dataset(model, data, validation_split, validation_data,
                                validation_split_mode, loss, seed)

    x, y = _split_xy(data, "data")
    x, y = as_tensor("X", x, device), as_tensor("y", y, device)
    check_pair(x, y, "training data")
    x = _cast_x(x, model)
    out_shape = out_features_of(model, x[:2])
    spec = resolve_loss(loss, y, out_shape[1] if len(out_shape) == 2 else 1)
    y = prepare_targets(spec, y, out_shape, "training data", dt)
    stratify = y.cpu().numpy() if spec.task in ("binary", "multiclass") else None
    if stratify is not None and stratify.ndim > 1:
        stratify = stratify.reshape(len(stratify), -1)[:, 0]
    tr, va, how = split_indices(
        x.shape[0], validation_split, mode=validation_split_mode, seed=seed, stratify=stratify
    )
    val = None
    if validation_data is not None:
        val, how = _validation(model, spec, validation_data, device, dt), "given"
    elif len(va):
        va_t = torch.as_tensor(va, device=device)
        val = (x[va_t], y[va_t])
    if len(va) or validation_data is None:
        tr_t = torch.as_tensor(tr, device=device)
        if len(tr) != x.shape[0]:
            x, y = x[tr_t], y[tr_t]
    n_val = 0 if val is None else val[0].shape[0]
    return PreparedData(ArraySource(x, y), val, x.shape[0], n_val, how), spec


# Rows of a Dataset whose labels decide the loss and are checked before training (all of
# them up to this many, else this many spread evenly); the rest are checked batch by batch.
# Each is one __getitem__ (an image decoded from disk, say) and only its label is kept.
DATASET_CHECK_ROWS = 256


def check_param_dtype(model: nn.Module) -> None:
    """Refuse a model with half-precision parameters: trained as they are, without float32
    master weights or loss scaling, they diverge or stall; ``precision="bf16"`` is the way.

    Example:
        >>> check_param_dtype(nn.Linear(2, 1))  # float32: fine
    """
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    if p is not None and p.dtype in (torch.float16, torch.bfloat16):
        name = str(p.dtype).removeprefix("torch.")
        raise ParameterError(
            f"The model's parameters are {name}. fit trains float32 (or float64) weights and "
            "runs the forward pass in bfloat16 itself with precision='bf16' (autocast, float32 "
            "weights and optimizer state): convert the model back with `model.float()`."
        )


def _tensors_of(data: Any) -> Any:
    """A TensorDataset of (X, y) as the two tensors: the checks, casts and stratified split
    of arrays, instead of a Dataset's row-by-row path."""
    if type(data) is torch.utils.data.TensorDataset and len(data.tensors) == 2:
        return tuple(data.tensors)
    return data


def _item(data: Dataset, i: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ``i`` of a Dataset as ``(x, y)`` tensors."""
    x, y = _pair(data[int(i)], int(i))
    return as_tensor(f"{where} x", x), as_tensor(f"{where} y", y)


def _pair(item: Any, index: int) -> tuple[Any, Any]:
    """A Dataset item as ``(x, y)``, or a ParameterError saying what it is instead."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    if isinstance(item, dict):
        got = f"a dict with keys {sorted(map(str, item))[:6]}"
        fix = " Return a pair from __getitem__, e.g. `return item['x'], item['y']`."
    elif isinstance(item, (tuple, list)):
        got, fix = f"a {type(item).__name__} of {len(item)} values", ""
    else:
        got, fix = f"a {type(item).__name__}", ""
    raise ParameterError(
        f"Each item of the Dataset must be an (x, y) pair; item {index} is {got}.{fix}"
    )


def dataset_arrays(data: Dataset, rows: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``rows`` of a map-style Dataset stacked as ``(X, y)`` tensors, checked as
    arrays are.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.zeros(4, 3), torch.arange(4))
        >>> [tuple(t.shape) for t in dataset_arrays(ds, range(4), "data")]
        [(4, 3), (4,)]
    """
    xs, ys = [], []
    for i in rows:
        xt, yt = _item(data, i, where)
        xs.append(xt)
        ys.append(yt)
    try:
        x, y = torch.stack(xs), torch.stack(ys)
    except RuntimeError as e:
        raise ParameterError(
            f"{where}: the Dataset's items differ in shape ({e}); every x must have one "
            "shape, and every y."
        ) from None
    check_pair(x, y, where)
    return x, y


def _sampled_rows(data: Dataset, rows: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two inputs and every label of items ``rows``, each input checked (finite,
    one shape) as it is read and not kept: a sample's labels without holding its images."""
    probe: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    shape = None
    for i in rows:
        xt, yt = _item(data, i, where)
        if shape is None:
            shape = tuple(xt.shape)
        elif tuple(xt.shape) != shape:
            raise ParameterError(f"{where}: item {int(i)}'s x has shape {tuple(xt.shape)}, the "
                                 f"first item's {shape}; every x must have one shape.")
        if xt.is_floating_point() and not bool(torch.isfinite(xt).all()):
            raise ParameterError(f"{where}: item {int(i)}'s x holds non-finite values (NaN or "
                                 "inf). Remove or impute them before training.")
        if len(probe) < 2:
            probe.append(xt)
        ys.append(yt)
    try:
        y = torch.stack(ys)
    except RuntimeError as e:
        raise ParameterError(f"{where}: the Dataset's labels differ in shape ({e}).") from None
    check_finite(f"{where} y", y)
    return torch.stack(probe), y


def _prepare_dataset(
    model: nn.Module, data: Dataset, validation_split: float, validation_data: Any,
    validation_split_mode: str, loss: Any, seed: int,
) -> tuple[PreparedData, LossSpec]:
    """prepare_data for a map-style Dataset: rows read batch by batch as training goes, the
    loss chosen from (and the checks run on) the labels of up to DATASET_CHECK_ROWS rows."""
    device, dt = _device_of(model), float_dtype(model)
    n = len(data)
    if n == 0:
        raise ParameterError("The dataset has 0 rows; training needs at least one row.")
    tr, va, how = split_indices(n, validation_split, mode=validation_split_mode, seed=seed)
    step = max(1, len(tr) // DATASET_CHECK_ROWS)
    xs, ys = _sampled_rows(data, tr[::step][:DATASET_CHECK_ROWS], "training data")
    xs = _cast_x(xs.to(device), model)
    out_shape = out_features_of(model, xs)
    spec = resolve_loss(loss, ys, out_shape[1] if len(out_shape) == 2 else 1)
    prepare_targets(spec, ys.to(device), out_shape, "training data", dt)
    val = None
    if validation_data is not None:
        val, how = _validation(model, spec, validation_data, device, dt), "given"
    elif len(va):
        vx, vy = dataset_arrays(data, va, "validation data")
        vx = _cast_x(vx.to(device), model)
        val = (vx, prepare_targets(spec, vy.to(device), out_features_of(model, vx[:2]),
                                   "validation data", dt))
    tail = out_shape[1:]

    def targets(y: torch.Tensor) -> torch.Tensor:
        # Checked as the sampled rows were: a label out of range says so, not an IndexError.
        return prepare_targets(spec, y, (len(y), *tail), "training data", dt)

    source = DatasetSource(data, tr, device, target_fn=targets,
                           x_fn=lambda x: _cast_x(x, model))
    n_val = 0 if val is None else val[0].shape[0]
    return PreparedData(source, val, len(tr), n_val, how), spec


def _validation(
    model: nn.Module, spec: LossSpec, validation_data: Any, device: torch.device,
    dt: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``validation_data`` as checked tensors: (X, y) or a Dataset of (x, y) items."""
    if hasattr(validation_data, "x_train"):
        raise ParameterError(
            "`validation_data` is a DataBundle, which holds a training and a test split; pass "
            "the split to validate on, e.g. `(d.x_test, d.y_test)`, or use `validation_split` "
            "to hold out part of the training rows."
        )
    vx, vy = _xy_tensors(validation_data, "validation_data", "validation data", device,
                         prefix="validation ")
    vx = _cast_x(vx, model)
    return vx, prepare_targets(spec, vy, out_features_of(model, vx[:2]), "validation data", dt)


def _xy_tensors(data: Any, name: str, where: str, device: torch.device,
                prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` arrays or a Dataset of ``(x, y)`` items (``name`` the argument, ``where``
    the data and ``prefix`` its arrays in messages) as checked tensors on ``device``."""
    data = _tensors_of(data)
    if isinstance(data, Dataset) and not isinstance(data, (tuple, list)):
        x, y = dataset_arrays(data, range(len(data)), where)
        x, y = x.to(device), y.to(device)
    else:
        x, y = _split_xy(data, name)
        x, y = as_tensor(f"{prefix}X", x, device), as_tensor(f"{prefix}y", y, device)
    check_pair(x, y, where)
    return x, y


def fit(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    batch_size: int,
    validation_split: float = 0.0,
    validation_data: Any = None,
    validation_split_mode: str = "random",
    shuffle: bool = True,
    drop_last: bool = False,
    optimizer: OptimizerLike = "adam",
    lr: float | None = None,
    schedule: Any = None,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    loss: str | Callable | None = None,
    metrics: Sequence[str] = ("accuracy",),
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    verbose: int = 1,
    distributed: bool | None = None,
    lr_scaling: str | None = None,
    lr_warmup_epochs: float = 5.0,
    threads: int | str | None = "auto",
    precision: str = "auto",
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: str | int = "epoch",
    resume: bool = False,
) -> History:
    """Train ``model`` on ``data`` for ``epochs`` passes and return the History.

    ``data`` is ``(X, y)`` (NumPy arrays or tensors), a DataBundle (its
    training split), or a map-style ``torch.utils.data.Dataset``. Batches
    follow a seeded permutation per epoch; ``iterations_per_epoch`` is
    ``ceil(n_train / batch_size)`` (``floor`` with ``drop_last``), where
    ``n_train`` is what the validation split leaves.

    Data-parallel (``distributed=True``, or ``None`` when launched by
    ``torchrun``): ``batch_size`` is per process, each process trains on its
    shard of every epoch's permutation (padded as DistributedSampler pads,
    or cut with ``drop_last``), and every count in the History is global;
    see :mod:`epochlab.train.distributed`. ``lr_scaling="linear"`` multiplies
    the learning rate by the number of processes (global batch / batch),
    reached by a linear warmup over ``lr_warmup_epochs`` (Goyal et al. 2017).

    The learning rate has one source: ``lr``, or a ``schedule``'s own
    initial rate (giving both, different, is an error), else 1e-3. An
    optimizer *instance* brings its own rate (its first parameter group's;
    other groups keep their ratio to it), momentum and weight decay: ``lr``
    different from it, ``momentum`` or ``weight_decay`` beside it, and one
    built on parameters that are not the model's are refused. Every
    argument is checked before the first iteration and a wrong one raises
    :class:`~epochlab.validation.ParameterError`.

    Training continues from the model's current weights. An optimizer given
    by name starts fresh each call, and the batch order follows ``seed``: a
    second ``fit`` with the same seed sees the epochs in the same order again
    (pass another seed, or ``epochs=`` for more epochs in one call, or
    ``resume``). The model comes back in the memory layout and train/eval
    mode it came in. A Dataset other than a ``TensorDataset`` of ``(X, y)``
    is read row by row: the loss is chosen from, and the labels checked on,
    up to 256 of its rows before training (only their labels are kept; the
    rest are checked as their batches come), and its validation split is
    random, not stratified.

    ``threads`` (``"auto"`` or an int) sets torch's intra-op threads for this
    training only (the caller's count is restored after); ``"auto"`` uses one
    thread for small models and more only where the arithmetic pays and cores
    are idle. ``precision`` is ``"auto"``, ``"fp32"`` or ``"bf16"`` (bfloat16
    autocast for the forward pass; loss, metrics and optimizer state stay
    float32); ``"auto"`` uses bf16 where the hardware has it natively and the
    model has convolutions, recurrent or large linear layers. Both choices and
    their reasons are recorded in ``history.extra["runtime"]`` (see
    :mod:`epochlab.train.runtime`).

    With ``checkpoint_dir`` the whole training state is saved there at every
    epoch's end (``checkpoint_every="epoch"``) or after every N-th update
    (``checkpoint_every=N``), atomically, the two newest kept. ``resume=True``
    continues from the newest readable checkpoint in it (or starts from the
    beginning when there is none) and ends with the same weights and History
    as an uninterrupted run (wall-clock ``time`` aside; see
    :mod:`epochlab.train.resume`).

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic()           # 800 training rows
        >>> h = el.fit(el.models.mlp(20), d.train, epochs=10, batch_size=32,
        ...            validation_split=0.2, verbose=0)
        >>> h.n_train, h.iterations_per_epoch, h.total_updates
        (640, 20, 200)
    """
    # Every parameter is checked here, before the first iteration: a ParameterError
    # means the call was wrong; anything raised once training runs is a failure.
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ParameterError(f"The value of `verbose` is {verbose!r}, but must be 0, 1 or 2.")
    check_bool("shuffle", shuffle)
    check_bool("drop_last", drop_last)
    callbacks = callback_list(callbacks)
    if check_threads(threads) is None:
        start_idle_window()  # the thread choice's reading runs while the data is prepared
    check_precision(precision)
    check_bool("resume", resume)
    if resume and checkpoint_dir is None:
        raise ParameterError("`resume=True` needs `checkpoint_dir`, the folder to resume from.")
    saver = None
    if checkpoint_dir is not None:
        from epochlab.train.resume import make_checkpointer

        saver = make_checkpointer(checkpoint_dir, checkpoint_every)
    _dist.check_lr_scaling(lr_scaling, lr_warmup_epochs)
    ctx = _dist.setup(model) if _dist.wanted(distributed) else None
    if ctx is not None and not ctx.is_main:  # only rank 0 reports and writes files
        callbacks, verbose = [cb for cb in callbacks if not cb.rank_zero_only], 0
    trainer = Trainer(
        model, optimizer=optimizer, lr=lr, schedule=schedule, loss=loss, metrics=metrics,
        weight_decay=weight_decay, momentum=momentum, seed=seed,
        # The saver after the caller's callbacks: their saved state includes the epoch's end.
        callbacks=list(callbacks) + ([saver] if saver else []) + _progress(verbose),
    )
    prepared, spec = prepare_data(
        model, data, validation_split=validation_split, validation_data=validation_data,
        validation_split_mode=validation_split_mode, loss=loss, seed=seed,
    )
    # Processes sharing the machine share its cores: each takes its part at most.
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)) if ctx is not None else 1
    ceiling = max(1, torch.get_num_threads() // local)
    if not shuffle and isinstance(prepared.train, ArraySource) and writes_inplace(model):
        prepared.train.copy_rows = True  # unshuffled batches are views of X: copies instead
    probe = _probe_rows(prepared)
    choice = resolve(model, probe, batch_size, threads=threads, precision=precision,
                     ceiling=ceiling)
    eval_batch = eval_rows(model, probe, batch_size) if prepared.val is not None else None
    was_training = model.training
    trainer.use_precision(choice.autocast_dtype, channels_last=choice.channels_last)
    try:
        if choice.channels_last and not _takes_channels_last(trainer, probe):
            trainer.use_precision(choice.autocast_dtype, channels_last=False)
            choice = dataclasses.replace(
                choice, channels_last=False,
                precision_reason=f"{choice.precision_reason}; channels-last off: the model's "
                                 "forward fails on channels-last tensors (a .view after a "
                                 "convolution does; .reshape or .flatten takes both)")
        if choice.channels_last:
            _to_channels_last(prepared)
        trainer.state.history.extra["runtime"] = choice.as_dict()
        rows = prepared.n_train if ctx is None else _dist.distribute(trainer, prepared, ctx, batch_size, drop_last)
        ipe = iterations_per_epoch(rows, batch_size, drop_last)
        if ipe == 0:
            raise ParameterError(
                f"`drop_last=True` with batch_size={batch_size} and {prepared.n_train} training rows "
                "leaves no full batch; use a smaller batch or drop_last=False."
            )
        check_batch_norm_batches(model, rows, batch_size, drop_last, probe)
        _warn_probability_output(model, spec)
        _warn_one_class(prepared, spec)
        trainer.attach_loss(spec, targets_ready=True)
        _check_monitors(trainer, prepared.val is not None)
        trainer.state.history.start(
            n_train=prepared.n_train, n_val=prepared.n_val, batch_size=batch_size,
            iterations_per_epoch=ipe, epochs_planned=epochs, validation_split=prepared.split,
            params=run_params(
                epochs=epochs, batch_size=batch_size, validation_split=validation_split,
                validation_split_mode=validation_split_mode, shuffle=shuffle, drop_last=drop_last,
                optimizer=optimizer, lr=trainer.state.base_lr,
                # An optimizer instance's own settings are what trains: recorded as such.
                weight_decay=_setting(optimizer, "weight_decay", weight_decay),
                momentum=_setting(optimizer, "momentum", momentum), seed=seed,
                schedule=trainer.state.schedule,
            ),
        )
        _dist.record(trainer, ctx, batch_size, lr_scaling, lr_warmup_epochs)
        if trainer.state.schedule is not None:
            trainer.state.schedule = trainer.state.schedule.with_total_steps(epochs * ipe)
        if saver is not None:
            saver.start(trainer, prepared, resume=resume)
        # A resumed run keeps the thread count it began with (the loaded History records it):
        # results are bit-identical only for one count, and "auto" depends on the idle cores.
        kept = trainer.state.history.extra["runtime"]["threads"]
        if check_threads(threads) not in (None, kept):
            warnings.warn(
                f"threads={threads} is not used: this resumed run keeps the {kept} thread"
                f"{'s' if kept != 1 else ''} it began with (its results are bit-identical for "
                "one count); give it another checkpoint_dir to train from the start on "
                f"{threads}.", stacklevel=2)
        with using_threads(kept), for_training(), own_precision():
            return run(trainer, prepared, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                       drop_last=drop_last, seed=seed, eval_batch=eval_batch)
    finally:
        # The caller's model as it came, but for its weights: its layout (channels-last was
        # this run's choice) and its train/eval mode.
        trainer.restore_layout()
        model.train(was_training)


def _warn_probability_output(model: nn.Module, spec: LossSpec) -> None:
    """Warn when a Sequential ends in Sigmoid/Softmax but the loss takes logits: it trains
    (badly: the gradients vanish as outputs saturate) and accuracy reads probabilities as
    logits, so nothing else would say so."""
    last: nn.Module = model
    while isinstance(last, nn.Sequential) and len(last):
        last = last[-1]
    takes_logits = spec.name in ("bce", "cross_entropy", "BCEWithLogitsLoss",
                                 "CrossEntropyLoss")
    if takes_logits and isinstance(last, (nn.Sigmoid, nn.Softmax, nn.LogSoftmax)):
        warnings.warn(
            f"The model ends in {type(last).__name__}, but fit's loss ({spec.name}) takes "
            "logits, the outputs before it, and so does accuracy: remove the last "
            f"{type(last).__name__} (apply it when you want probabilities, e.g. "
            "`torch.sigmoid(model(x))`).", UserWarning, stacklevel=3)


def _warn_one_class(prepared: PreparedData, spec: LossSpec) -> None:
    """Warn when the training labels of a classifier hold one class only: it trains, to an
    accuracy that means nothing, and nothing else would say so."""
    src = prepared.train
    if spec.task not in ("binary", "multiclass") or not isinstance(src, ArraySource):
        return
    y = src.y
    if y.numel() and y.ndim <= 2 and bool((y == y.reshape(-1)[0]).all()):
        warnings.warn(
            f"The training labels hold one class only ({y.reshape(-1)[0].item():g}): the model "
            "cannot learn to tell classes apart, and its accuracy says nothing.",
            UserWarning, stacklevel=3)


def check_batch_norm_batches(model: nn.Module, rows: int, batch_size: int,
                             drop_last: bool, x_probe: torch.Tensor, *,
                             can_drop_last: bool = True) -> None:
    """Batch norm cannot train on one value per channel (its variance is undefined): refuse
    a split whose batch of one row gives a batch-norm layer just that, before training,
    with the ways out. A layer over images or sequences (``BatchNorm2d``, ``BatchNorm1d``
    on ``(N, C, L)``) has a value per position and trains on one row; which layers see one
    value a row is found by running ``x_probe`` (two rows) through the model.

    Example:
        >>> m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        >>> check_batch_norm_batches(m, rows=64, batch_size=32, drop_last=False,
        ...                          x_probe=torch.zeros(2, 3))
    """
    last = rows % batch_size if not drop_last else 0
    if batch_size != 1 and last != 1:
        return
    norms = _single_value_norms(model, x_probe)
    if not norms:
        return
    if batch_size == 1:
        raise ParameterError(
            f"The model has batch norm ({norms[0]}) on one value per channel a row, which "
            "needs two rows or more a batch; batch_size=1 gives it one. Use a larger batch "
            "size."
        )
    near = sorted((c for c in range(2, max(rows, batch_size) + 2) if rows % c != 1),
                  key=lambda c: (abs(c - batch_size), c))[:2]
    ways = (["drop_last=True"] if can_drop_last and rows >= batch_size else []) + (
        [f"a batch size that does not leave one row over (e.g. {' or '.join(map(str, near))})"]
        if near else [])
    raise ParameterError(
        f"The model has batch norm ({norms[0]}) on one value per channel a row, which needs "
        f"two rows or more a batch, but {rows} training rows in batches of {batch_size} leave "
        f"a last batch of 1 row. Use {', or '.join(ways) or 'more training rows'}."
    )


def _single_value_norms(model: nn.Module, x_probe: torch.Tensor) -> list[str]:
    """The batch-norm layers of ``model`` that see one value per channel a row (no spatial or
    sequence positions), found by a forward pass of ``x_probe`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return []
    seen: dict[int, int] = {}

    def record(mod: nn.Module, args: tuple[Any, ...]) -> None:  # None: the input unchanged
        seen.setdefault(id(mod), math.prod(args[0].shape[2:]))

    hooks = [m.register_forward_pre_hook(record) for m in norms]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x_probe.clone())  # a model writing into its input leaves the data alone
    except Exception:  # the model's own failure is reported where its forward is checked
        return []
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return [type(m).__name__ for m in norms if seen.get(id(m), 1) == 1]


def _setting(optimizer: Any, name: str, given: float) -> float:
    """``name`` as an optimizer instance holds it (its first group's), else as given."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return float(optimizer.param_groups[0].get(name, 0.0) or 0.0)
    return given


def _check_monitors(trainer: Trainer, validating: bool) -> None:
    """A callback monitoring a metric the epoch rows will not hold, refused before training."""
    from epochlab.callbacks.monitor import check_monitors

    names = ["loss", *trainer.metric_fns]
    names += [f"val_{n}" for n in names] if validating else []
    check_monitors(trainer.callbacks.callbacks, [*names, "lr"])


def _probe_rows(prepared: PreparedData) -> torch.Tensor:
    """A row or two of training input, to size the workload."""
    src = prepared.train
    if isinstance(src, ArraySource):
        return src.x[:2]
    x0 = src.dataset[int(src.indices[0])][0]
    return as_tensor("x", x0, src.device).unsqueeze(0)


def _takes_channels_last(trainer: Trainer, probe: torch.Tensor) -> bool:
    """Whether the model's forward runs on channels-last tensors: user code such as
    ``x.view(len(x), -1)`` after a convolution needs contiguous ones. Two rows in eval mode,
    the generators left as they were; any other failure is left for training to report."""
    model = trainer.model
    was = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=_cuda_devices(model)):
            model.eval()
            trainer.forward(probe.clone())  # a model writing into its input leaves X alone
    except RuntimeError:
        return False
    finally:
        model.train(was)
    return True


def _to_channels_last(prepared: PreparedData) -> None:
    # Once for the whole training set: gathers and slices keep the layout, so
    # no batch is converted on the hot path.
    cl = torch.channels_last
    if isinstance(prepared.train, ArraySource) and prepared.train.x.dim() == 4:
        prepared.train.x = prepared.train.x.contiguous(memory_format=cl)
    if prepared.val is not None and prepared.val[0].dim() == 4:
        prepared.val = (prepared.val[0].contiguous(memory_format=cl), prepared.val[1])


def run_params(
    *,
    epochs: int,
    batch_size: int,
    validation_split: float,
    validation_split_mode: str,
    shuffle: bool,
    drop_last: bool,
    optimizer: OptimizerLike,
    lr: float,
    weight_decay: float,
    momentum: float,
    seed: int,
    schedule: Any,
) -> dict[str, Any]:
    """``history.params`` of a run: the settings ``fit`` was called with, as plain data.

    Example:
        >>> p = run_params(epochs=2, batch_size=32, validation_split=0.2,
        ...                validation_split_mode="random", shuffle=True, drop_last=False,
        ...                optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, seed=0,
        ...                schedule=None)
        >>> p["optimizer"], p["lr"], p["schedule"]
        ('adam', 0.001, None)
    """
    return dict(
        epochs=epochs, batch_size=batch_size, validation_split=validation_split,
        validation_split_mode=validation_split_mode, shuffle=shuffle, drop_last=drop_last,
        optimizer=optimizer if isinstance(optimizer, str) else type(optimizer).__name__,
        lr=float(lr), weight_decay=weight_decay, momentum=momentum, seed=seed,
        schedule=schedule.to_config() if schedule is not None else None,
    )


def _progress(verbose: int) -> list[Callback]:
    from epochlab.callbacks.progress import EpochLogger, ProgressBar

    return [ProgressBar()] if verbose == 1 else [EpochLogger()] if verbose == 2 else []


def dropout_seed(seed: int) -> int:
    """The seed of torch's RNG (dropout masks) in a run seeded with ``seed``."""
    # A stream distinct from the shuffling generator's, which uses `seed` itself.
    return (seed * 6364136223846793005 + 1442695040888963407) % 2**63


def run(
    trainer: Trainer,
    data: PreparedData,
    *,
    epochs: int,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = False,
    seed: int = 0,
    eval_batch: int | None = None,
) -> History:
    """The epoch loop over ``trainer.step``; resumes from ``trainer.state``'s position.

    ``eval_batch``: rows per validation forward (default ``max(batch_size, EVAL_ROWS)``;
    :func:`~epochlab.train.runtime.eval_rows` sizes it to the model).
    """
    s, h, cbs = trainer.state, trainer.state.history, trainer.callbacks
    want_begin, want_end = cbs.wants("on_batch_begin"), cbs.wants("on_batch_end")
    n_train = data.n_train
    # Dropout draws from torch's RNGs: seed them, and leave the caller's (CUDA's too) alone.
    with torch.random.fork_rng(devices=_cuda_devices(trainer.model)):
        if s.global_step == 0:  # each rank its own dropout stream
            _seed_rngs(dropout_seed(seed + (trainer.dist.rank if trainer.dist else 0)),
                       trainer.model)
        else:  # resumed: dropout goes on from the checkpoint's RNG state
            s.install_rngs()
        trainer.model.train()
        try:
            cbs.call("on_train_begin", trainer,
                     {"epochs": epochs, "iterations_per_epoch": h.iterations_per_epoch})
            while s.epoch < epochs and not trainer.stop_training:
                t0 = time.perf_counter()
                if s.batch_in_epoch == 0:
                    s.epoch_order = torch.randperm(n_train, generator=s.generator) if shuffle else None
                    trainer.begin_epoch()
                    cbs.call("on_epoch_begin", trainer, {"epoch": s.epoch})
                for batch in data.train.batches(s.epoch_order, batch_size, drop_last, s.batch_in_epoch):
                    if want_begin:
                        cbs.call("on_batch_begin", trainer, {"step": s.global_step, "epoch": s.epoch})
                    rec = trainer.step(batch)
                    if rec.diverged:
                        break
                    s.batch_in_epoch += 1
                    if want_end:
                        cbs.call("on_batch_end", trainer, rec.as_dict())
                    if trainer.stop_training:
                        break
                if s.batch_in_epoch < h.iterations_per_epoch:  # stopped mid-epoch
                    break
                val = None
                if data.val is not None:
                    val = trainer.evaluate(*data.val,
                                           batch_size=eval_batch or max(batch_size, EVAL_ROWS))
                row = h.add_epoch(s.epoch, trainer.epoch_logs(), val, lr=trainer._lr_set,
                                  updates=s.global_step, samples_seen=s.samples_seen,
                                  seconds=time.perf_counter() - t0)
                s.epoch, s.batch_in_epoch, s.epoch_order = s.epoch + 1, 0, None
                cbs.call("on_epoch_end", trainer, row)
        except KeyboardInterrupt:
            where = (f"in epoch {s.epoch + 1}" if s.batch_in_epoch else
                     f"after epoch {s.epoch}" if s.epoch else "before the first update")
            trainer.stop("interrupted",
                         f"Interrupted (Ctrl-C) {where}, after {s.global_step} updates.")
        except BaseException as e:
            # Let callbacks clean up (close files, stop the progress display,
            # restore weights) before the error reaches the caller.
            trainer.stop("error", f"Stopped by an error: {type(e).__name__}: {e}")
            try:
                _finish(trainer)
            except Exception:  # never hide the original error behind a cleanup error
                pass
            if isinstance(e, ParameterError):
                # Parameters were all checked before the first iteration: one raised in
                # here is a failure of the code running (a callback, a model, a bug),
                # never the user's bad input, so it must not read as a usage error.
                raise TrainingError(
                    f"Training failed after {s.global_step} updates ({s.epoch} epochs done): "
                    f"{type(e).__name__}: {e}"
                ) from e
            raise
        _finish(trainer)
    return h


def _seed_rngs(seed: int, model: nn.Module) -> None:
    """Seed the generators the model's dropout draws from: the CPU's, and its CUDA device's
    when it is on one (torch.manual_seed would seed every GPU's, which run() does not
    restore)."""
    torch.default_generator.manual_seed(seed)
    devices = _cuda_devices(model)
    if devices:
        with torch.cuda.device(devices[0]):
            torch.cuda.manual_seed(seed)


def _cuda_devices(model: nn.Module) -> list[int]:
    """The CUDA device whose RNG a run seeds and restores: the model's (none on the CPU, so
    a CPU fit never starts CUDA on the GPUs of its machine)."""
    device = _device_of(model)
    return [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []


def _finish(trainer: Trainer) -> None:
    s, h = trainer.state, trainer.state.history
    h.end(total_updates=s.global_step, samples_seen=s.samples_seen,
          stop_reason=trainer.stop_reason or "completed", mid_epoch=s.batch_in_epoch > 0)
    h.samples_repeated = s.samples_repeated
    trainer.callbacks.call("on_train_end", trainer, {"stop_reason": h.stop_reason})
    return h


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int | None = None,
    loss: str | Callable | None = None,
    metrics: Sequence[str] = ("accuracy",),
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``(X, y)`` (or a DataBundle's test split), in the
    model's own dtype: an autocast the caller is in is off for it (test metrics are float32).

    ``batch_size``: rows per forward pass; by default up to 1,024, fewer for a model
    with large activations (:func:`~epochlab.train.runtime.eval_rows`).

    Example:
        >>> import epochlab as el
        >>> d = el.data.synthetic()
        >>> model = el.models.mlp(20)
        >>> _ = el.fit(model, d.train, epochs=3, batch_size=32, verbose=0)
        >>> sorted(el.evaluate(model, d.test))
        ['accuracy', 'loss']
    """
    spec, x, y = evaluation_data(model, data, loss=loss)
    if batch_size is None:
        batch_size = eval_rows(model, x[:2], 1)
    batch_size = check_int("batch_size", batch_size, 1)
    with own_precision():  # float32, whatever autocast the caller is in
        return evaluate_tensors(model, spec, resolve_metrics(metrics, spec.task), x, y,
                                batch_size)


def evaluation_data(
    model: nn.Module, data: Any, *, loss: str | Callable | None = None,
    where: str = "evaluation data",
) -> tuple[LossSpec, torch.Tensor, torch.Tensor]:
    """The loss, inputs and targets :func:`evaluate` works on, checked as it checks them (a
    :class:`~epochlab.validation.ParameterError` saying what is wrong with the data, which
    it calls ``where``).

    ``data`` is ``(X, y)`` or a bundle (its test split).

    Example:
        >>> import epochlab as el
        >>> spec, x, y = evaluation_data(el.models.mlp(20), el.data.synthetic().test)
        >>> spec.task, tuple(x.shape), tuple(y.shape)
        ('binary', (200, 20), (200, 1))
    """
    if hasattr(data, "x_test"):
        data = (data.x_test, data.y_test)
    x, y = _xy_tensors(data, "data", where, _device_of(model))
    x = _cast_x(x, model)
    out_shape = out_features_of(model, x[:2])
    spec = resolve_loss(loss, y, out_shape[1] if len(out_shape) == 2 else 1)
    return spec, x, prepare_targets(spec, y, out_shape, where, float_dtype(model))
