"""One iteration as a first-class, inspectable step (the seed's slide 3).

:class:`Trainer` owns the model, the optimizer, the loss and the
:class:`~epochlab.train.state.TrainState`. ``step(batch)`` does forward,
loss, backward and update, and returns a :class:`StepRecord`: the loss
*before* the update, the gradient norm, the learning rate used. ``fit`` is a
loop over ``step``; the slide's hand-computed cross-entropy on a random batch
is ``Trainer(model).step((xb, yb)).loss``, with the update done for real.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from epochlab.callbacks.base import Callback, CallbackList
from epochlab.schedules import Schedule
from epochlab.train.data import as_tensor
from epochlab.train.history import History
from epochlab.train.losses import (
    LossSpec,
    out_features_of,
    prepare_targets,
    resolve_loss,
    resolve_metrics,
)
from epochlab.train.runtime import own_precision
from epochlab.train.state import TrainState
from epochlab.validation import (
    SEED_MAX,
    ParameterError,
    check_float,
    check_int,
    check_lr,
)

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
OptimizerLike = str | torch.optim.Optimizer | Callable[..., torch.optim.Optimizer]


def make_optimizer(
    optimizer: OptimizerLike,
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
) -> torch.optim.Optimizer:
    """Build an optimizer from a name, a factory ``f(params, lr=...)``, or pass one through.

    Example:
        >>> import epochlab as el
        >>> make_optimizer("sgd", el.models.mlp(4), lr=0.1, momentum=0.9).defaults["momentum"]
        0.9
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        check_optimizer_instance(optimizer, model, weight_decay, momentum)
        return optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ParameterError("The model has no trainable parameters (all frozen?); nothing to train.")
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params, lr=lr)
    name = str(optimizer).lower()
    # The fused kernels (one call per step instead of one per tensor) are a
    # third faster than the default for-loop on the seed's tiny models.
    fused = {"fused": True} if _fused_ok(params) else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **fused)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ParameterError(
        f"Unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}, "
        "or pass a torch.optim.Optimizer or a factory."
    )


def check_optimizer_instance(
    optimizer: torch.optim.Optimizer, model: nn.Module, weight_decay: float = 0.0,
    momentum: float = 0.0,
) -> None:
    """Refuse an optimizer that does not update ``model`` or that settings were given beside.

    An optimizer built on another model's parameters would train nothing here
    (the run would "complete" with the weights unchanged); ``weight_decay`` and
    ``momentum`` belong to the optimizer built, where fit cannot change them.

    Example:
        >>> import torch, epochlab as el
        >>> m = el.models.mlp(4)
        >>> check_optimizer_instance(torch.optim.SGD(m.parameters(), lr=0.1), m)  # fine
    """
    mine = {id(p) for p in model.parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if not any(id(p) in mine for p in held):
        raise ParameterError(
            f"The {type(optimizer).__name__} passed as `optimizer` holds none of the model's "
            "parameters (was it built on another model, or on a copy?), so training would "
            "change nothing. Build it on this model: "
            f"`torch.optim.{type(optimizer).__name__}(model.parameters(), ...)`."
        )
    foreign = sum(id(p) not in mine for p in held)
    if foreign:
        raise ParameterError(
            f"The {type(optimizer).__name__} passed as `optimizer` holds {foreign} "
            "parameter(s) that are not the model's; build it on this model's parameters only."
        )
    for name, value in (("weight_decay", weight_decay), ("momentum", momentum)):
        if value:
            raise ParameterError(
                f"`{name}={value!r}` was given with an optimizer instance, whose own "
                f"settings are used; set {name} on the optimizer you build instead."
            )


# What epochlab itself last wrote into a parameter group's "lr", and the rate the group had
# before epochlab's first run (kept in the group, so they travel with the optimizer).
_SET, _OWN = "epochlab_set_lr", "epochlab_own_lr"


def optimizer_lr(optimizer: torch.optim.Optimizer) -> float:
    """An optimizer instance's own learning rate: its first group's, or its largest group's
    when the first is frozen at 0; each group's rate as the user left it (set by hand or by
    a torch scheduler), not as a previous epochlab run's schedule left it."""
    rates = [_own_lr(g) for g in optimizer.param_groups]
    return rates[0] if rates[0] > 0 else max(rates)


def _own_lr(group: dict[str, Any]) -> float:
    """A group's own rate: what epochlab's last run found there if ``lr`` is still what
    that run wrote, else ``lr`` (the user changed it since)."""
    lr = float(group["lr"])
    return float(group.get(_OWN, lr)) if _SET in group and lr == group[_SET] else lr


DEFAULT_LR = 1e-3


def resolve_lr(lr: Any, schedule: Any) -> tuple[float, Schedule | None]:
    """The one learning rate of a run, and its schedule bound to it.

    The initial rate has one source of truth: ``lr``, or the schedule's own
    initial (or max) rate, or 1e-3 when neither is given. Both given and
    different is a :class:`ParameterError` naming both; 0, negative, inf and
    NaN are refused. A Schedule passed as ``lr`` (Keras style) is the schedule.

    Example:
        >>> from epochlab import schedules
        >>> resolve_lr(None, schedules.exponential_decay(0.01))[0]
        0.01
        >>> resolve_lr(0.5, schedules.exponential_decay(0.01))
        Traceback (most recent call last):
        ...
        epochlab.validation.ParameterError: Both `lr` (0.5) and the schedule's own initial learning rate `initial` (0.01) were given; give one of them ...
    """
    if isinstance(lr, Schedule):  # Keras style: the schedule given as the learning rate
        if schedule is not None:
            raise ParameterError("A Schedule was given as `lr` and another as `schedule`; give one.")
        schedule, lr = lr, None
    if lr is not None:
        lr = check_lr("lr", lr)
    if schedule is None:
        return (DEFAULT_LR if lr is None else lr), None
    if not isinstance(schedule, Schedule):
        raise ParameterError(
            f"The value of `schedule` is a {type(schedule).__name__}, but must be an "
            "epochlab.schedules.Schedule (e.g. el.schedules.exponential_decay(...))."
        )
    own = schedule.initial_lr
    if own is not None and lr is not None and own != lr:
        raise ParameterError(
            f"Both `lr` ({lr:g}) and the schedule's own initial learning rate "
            f"`{schedule.initial_param}` ({own:g}) were given; give one of them (the "
            f"schedule's {schedule.initial_param} is the rate it starts from), so that the "
            "rate recorded is the rate trained with."
        )
    if own is None:
        schedule = schedule.with_initial(DEFAULT_LR if lr is None else lr)
    return float(schedule.initial_lr), schedule


def metric_names(metrics: Any) -> tuple[str, ...]:
    """``metrics`` as a tuple of names: ``None`` is none, one string is one metric.

    Example:
        >>> metric_names("accuracy"), metric_names(None)
        (('accuracy',), ())
    """
    if metrics is None:
        return ()
    if isinstance(metrics, str):
        return (metrics,)
    try:
        names = tuple(metrics)
    except TypeError:
        raise ParameterError(
            f"The value of `metrics` is a {type(metrics).__name__}, but must be a list of "
            "metric names, e.g. ['accuracy']."
        ) from None
    bad = [m for m in names if not isinstance(m, str)]
    if bad:
        raise ParameterError(
            f"The value of `metrics` holds {bad[0]!r} ({type(bad[0]).__name__}), but must hold "
            "metric names (strings), e.g. ['accuracy']."
        )
    return names


def callback_list(callbacks: Any) -> list[Callback]:
    """``callbacks`` as a list of Callback instances: ``None`` is none, one callback is a
    list of one, a generator is read once; anything else is refused by name.

    Example:
        >>> import epochlab as el
        >>> len(callback_list(el.EarlyStopping())), callback_list(None)
        (1, [])
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or (isinstance(callbacks, type)
                                           and issubclass(callbacks, Callback)):
        callbacks = [callbacks]  # one callback (a class is refused below, as in a list)
    try:
        out = list(callbacks)
    except TypeError:
        raise ParameterError(
            f"The value of `callbacks` is a {type(callbacks).__name__}, but must be a list of "
            "epochlab.callbacks.Callback instances."
        ) from None
    for cb in out:
        if isinstance(cb, type) and issubclass(cb, Callback):
            raise ParameterError(
                f"The value of `callbacks` holds the class {cb.__name__}, but must hold "
                f"instances: `{cb.__name__}(...)`."
            )
        if not isinstance(cb, Callback):
            raise ParameterError(
                f"The value of `callbacks` holds a {type(cb).__name__}, but must hold "
                "epochlab.callbacks.Callback instances."
            )
    return out


def _instance_lr(optimizer: torch.optim.Optimizer, lr: Any, schedule: Any) -> Any:
    """``lr`` for :func:`resolve_lr` when ``optimizer`` is an instance: its own rate unless a
    schedule brings one; ``lr`` given too and different is refused (one source of truth)."""
    own = optimizer_lr(optimizer)
    if own <= 0:
        raise ParameterError(
            f"Every parameter group of the {type(optimizer).__name__} passed as `optimizer` has "
            "learning rate 0: nothing would train. Give at least one group a rate > 0."
        )
    if lr is None:
        if isinstance(schedule, Schedule) and schedule.initial_lr is not None:
            return None  # the schedule's own initial rate drives the run
        return own
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and float(lr) != own:
        raise ParameterError(
            f"Both `lr` ({lr:g}) and the {type(optimizer).__name__} passed as `optimizer` "
            f"(lr={own:g}) give a learning rate; give one of them (build the optimizer with "
            "the rate you want, or pass its name, e.g. optimizer='adam', with `lr`)."
        )
    return lr


def _grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm in two calls (``get_total_norm`` costs twice as much on tiny models)."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def writes_inplace(model: nn.Module) -> bool:
    """Whether a module of ``model`` has ``inplace=True`` (it may write into its input)."""
    return any(getattr(m, "inplace", False) is True for m in model.modules())


def _with_strides(t: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor:
    """A copy of ``t`` laid out with ``strides`` (dense ones)."""
    return torch.empty_strided(t.shape, strides, dtype=t.dtype, device=t.device).copy_(t)


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Fused optimizers need floating tensors on CPU/CUDA and torch >= 2.4 for the CPU."""
    try:
        major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 4) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )


@dataclass(slots=True)
class StepRecord:
    """What one iteration did."""

    step: int  # 0-based index of this update
    epoch: int  # 0-based epoch it belongs to
    loss: float  # batch mean loss before the update
    lr: float  # learning rate used for the update
    grad_norm: float  # global L2 norm of the gradients
    batch_size: int
    diverged: bool = False  # loss or gradient not finite: no update was made

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_optim_module = importlib.import_module("torch.optim.optimizer")  # its global step hooks


class _FusedAdamStep:
    """``step()`` of a ``torch.optim.Adam`` / ``AdamW`` with ``fused=True``, by calling its
    kernel directly: the same call torch makes (``_foreach_add_`` on the step counts, then
    ``_fused_adam(w)_``), without ``Optimizer.step``'s per-call Python (hooks, profiler
    records, grouping by device): 33 us a step against 12 for the seed's MLP.

    Calling it returns False, and does nothing, whenever torch's own step is needed:
    state not made yet (the first step), a parameter without a gradient, hooks, a tensor
    learning rate, or anything but the plain fused configuration.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.kernel = (torch._fused_adamw_ if type(optimizer) is torch.optim.AdamW
                       else torch._fused_adam_)

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> _FusedAdamStep | None:
        """The fast step for ``optimizer``, or None when it is not a plain fused Adam(W)."""
        if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
            return None
        if not hasattr(torch, "_fused_adam_") or not hasattr(torch, "_fused_adamw_"):
            return None  # pragma: no cover - older torch
        for group in optimizer.param_groups:
            if not group.get("fused") or group.get("amsgrad") or group.get("maximize") \
                    or group.get("differentiable") or group.get("capturable"):
                return None
            if bool(group.get("decoupled_weight_decay")) != (type(optimizer) is torch.optim.AdamW):
                return None
            params = group["params"]
            if any(p.is_complex() or p.is_sparse for p in params):
                return None
            if len({(p.device, p.dtype) for p in params}) > 1:
                return None  # torch groups such tensors into several kernel calls
        return cls(optimizer)

    def __call__(self) -> bool:
        opt = self.optimizer
        if (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or getattr(opt, "grad_scale", None) is not None
                or getattr(opt, "found_inf", None) is not None
                or _optim_module._global_optimizer_pre_hooks
                or _optim_module._global_optimizer_post_hooks):
            return False
        calls = []
        state = opt.state
        for group in opt.param_groups:
            params = group["params"]
            grads = [p.grad for p in params]
            if any(g is None for g in grads) or any(p not in state for p in params):
                return False
            lr, (beta1, beta2) = group["lr"], group["betas"]
            if not all(isinstance(v, float) for v in (lr, beta1, beta2)):
                return False
            st = [state[p] for p in params]
            calls.append((params, grads, [s["exp_avg"] for s in st],
                          [s["exp_avg_sq"] for s in st], [s["step"] for s in st], lr, beta1,
                          beta2, group["weight_decay"], group["eps"]))
        with torch.no_grad():
            for params, grads, exp_avgs, exp_avg_sqs, steps, lr, b1, b2, wd, eps in calls:
                torch._foreach_add_(steps, 1)
                self.kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                            lr=lr, beta1=b1, beta2=b2, weight_decay=wd, eps=eps,
                            maximize=False, grad_scale=None, found_inf=None)
        return True


class Trainer:
    """A model, an optimizer, a loss and the training state; ``step`` is one iteration.

    Example:
        >>> import torch, epochlab as el
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> trainer = el.Trainer(el.models.mlp(20), optimizer="adam", lr=1e-3)
        >>> rec = trainer.step((torch.randn(32, 20), torch.randint(0, 2, (32,))))
        >>> rec.step, rec.batch_size, trainer.state.global_step
        (0, 32, 1)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: OptimizerLike = "adam",
        lr: float | None = None,
        schedule: Any = None,
        loss: str | Callable | None = None,
        metrics: Sequence[str] = ("accuracy",),
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        callbacks: Sequence[Callback] = (),
        seed: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ParameterError(
                f"The value of `model` is a {type(model).__name__}, but must be a torch.nn.Module."
            )
        if isinstance(optimizer, torch.optim.Optimizer):
            lr = _instance_lr(optimizer, lr, schedule)
        lr, schedule = resolve_lr(lr, schedule)
        weight_decay = check_float("weight_decay", weight_decay, low=0.0)
        momentum = check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
        seed = check_int("seed", seed, 0, SEED_MAX)
        self.model = model
        # What the forward pass runs: the model, or fit's DistributedDataParallel wrapper of it.
        self.net: nn.Module = model
        self.dist: Any = None  # a train.distributed.DistContext when training data-parallel
        self.lr_factor: Callable[[int], float] | None = None  # the linear scaling rule's warmup
        self._params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(optimizer, model, float(lr), weight_decay, momentum)
        self._fast_step = _FusedAdamStep.of(self.optimizer)
        # Each parameter group's rate relative to the first (an optimizer instance may give
        # groups their own rates, e.g. a smaller one for a pretrained backbone): kept as the
        # run's rate changes.
        for group in self.optimizer.param_groups:  # the rate this run starts from
            group[_OWN] = _own_lr(group)
        top = optimizer_lr(self.optimizer) or 1.0
        self._group_scales = [g[_OWN] / top for g in self.optimizer.param_groups]
        self.callbacks = CallbackList(callback_list(callbacks))
        self.state = TrainState(
            model=model,
            optimizer=self.optimizer,
            schedule=schedule,
            base_lr=float(lr),
            generator=torch.Generator().manual_seed(seed),
        )
        self.seed = seed
        self.stop_training = False
        self.stop_reason: str | None = None
        self._loss_arg = loss
        self._metric_names = metric_names(metrics)
        self.spec: LossSpec | None = None
        self.metric_fns: dict[str, Callable] = {}
        self._targets_ready = False  # fit prepares all targets once; bare step() per batch
        self._lr_set: float | None = None
        self._out_tail: tuple[int, ...] | None = None  # model output shape per row, probed once
        self._target_dtype = torch.float32
        self._amp: torch.dtype | None = None  # autocast dtype of the forward pass (None: as is)
        self._channels_last = False
        self._layouts: list[tuple[torch.Tensor, torch.Size, tuple[int, ...]]] | None = None
        self.begin_epoch()

    # -- shortcuts callbacks use -------------------------------------------------------
    @property
    def history(self) -> History:
        return self.state.history

    @property
    def lr_scale(self) -> float:
        return self.state.lr_scale

    @lr_scale.setter
    def lr_scale(self, value: float) -> None:
        self.state.lr_scale = float(value)

    def stop(self, reason: str, message: str = "") -> None:
        """Ask the loop to stop after the current batch, recording why."""
        self.stop_training = True
        self.stop_reason = reason
        if message:
            self.state.history.stop_message = message

    # -- loss --------------------------------------------------------------------------
    def attach_loss(self, spec: LossSpec, *, targets_ready: bool) -> None:
        """Fix the loss and metrics (``fit`` infers them from the whole training set)."""
        self.spec = spec
        self.metric_fns = resolve_metrics(self._metric_names, spec.task)
        self._targets_ready = targets_ready
        self.begin_epoch()
        h = self.state.history
        h.loss_name, h.task, h.loss_reason = spec.name, spec.task, spec.reason

    def _ensure_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Probe the model once, not on every step: its output shape per row does not change.
        if self._out_tail is None:
            self._out_tail = out_features_of(self.model, x[:2])[1:]
            self._target_dtype = self._params[0].dtype if self._params else torch.float32
        if self.spec is None:
            n_out = self._out_tail[0] if len(self._out_tail) == 1 else 1
            self.attach_loss(resolve_loss(self._loss_arg, y, n_out), targets_ready=False)
        if not self._targets_ready:
            out_shape = (x.shape[0], *self._out_tail)
            y = prepare_targets(self.spec, y, out_shape, "batch", self._target_dtype)
        return y

    def use_precision(self, dtype: torch.dtype | None, *, channels_last: bool = False) -> None:
        """Run forward passes under ``torch.autocast(dtype)`` (``None``: the model's own dtype).

        The loss and metrics are computed from the output cast to float32; the
        parameters, their gradients and the optimizer state stay float32. With
        ``channels_last`` the model (and each 4-d input) takes the channels-last
        layout, which bf16 convolutions on the CPU need to be fast.
        """
        self._amp = dtype
        self._channels_last = bool(channels_last and dtype is not None)
        if self._channels_last and self._layouts is None:
            # Each dense 4-d parameter and buffer (2-d convolutions'), as
            # Module.to(memory_format=) does it: explicit channels-last strides, which also make
            # a 1-channel kernel's convolution channels-last. A Conv3d's 5-d weight has no such
            # layout; an expanded (stride-0) buffer is left as it is. Their own strides are
            # noted for restore_layout. The optimizer's state for a parameter follows it: its
            # fused kernel walks parameter and state in storage order, so their layouts must
            # agree (else the moments of one weight update another).
            cl = torch.channels_last
            self._layouts = []
            for t in (*self.model.parameters(), *self.model.buffers()):
                if t.dim() == 4 and (t.is_contiguous() or t.is_contiguous(memory_format=cl)):
                    self._layouts.append((t, t.shape, t.stride()))
                    t.data = t.data.to(memory_format=cl)
                    self._state_like(t)
        elif not self._channels_last:
            self.restore_layout()

    def restore_layout(self) -> None:
        """The model's 4-d tensors back in the strides they had before :meth:`use_precision`
        made them channels-last (the user's own channels-last stays), and the optimizer's state
        for them alike. Never raises: a tensor a callback reshaped is left as it is."""
        for t, shape, was in self._layouts or ():
            if t.shape == shape:
                if t.stride() != was:
                    t.data = _with_strides(t.data, was)
                self._state_like(t)  # also where a callback gave t its own layout
        self._layouts = None

    @contextlib.contextmanager
    def callers_layout(self) -> Iterator[None]:
        """The model in the layout it came in for the block (then channels-last again): what
        the model is evaluated in after fit returns, so a read-out mid-run gives the same
        numbers to the last bit (float32 convolutions round differently by layout)."""
        was = self._layouts is not None
        if was:
            self.restore_layout()
        try:
            yield
        finally:
            if was:
                self.use_precision(self._amp, channels_last=True)

    def _state_like(self, p: torch.Tensor) -> None:
        """The optimizer's state tensors of parameter ``p`` in ``p``'s strides."""
        for v in self.optimizer.state.get(p, {}).values():
            if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                v.data = _with_strides(v.data, p.stride())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x``, in the trainer's precision (float32 out under bf16)."""
        if self._amp is None:
            return self.model(x)
        if self._channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)  # no copy when it already is
        p = self._params[0] if self._params else None
        with torch.autocast(p.device.type if p is not None else "cpu", dtype=self._amp):
            out = self.net(x) if self.model.training else self.model(x)
        # torch clears the cache of bf16 weight copies only when the outermost autocast exits:
        # inside a caller's autocast every later step would reuse this step's weights.
        torch.clear_autocast_cache()
        return out.float()

    # -- one iteration -----------------------------------------------------------------
    def begin_epoch(self) -> None:
        """Reset the running sums behind the epoch's train loss and metrics."""
        self._loss_sum = 0.0
        self._rows = 0
        # Outputs and targets are kept and the metrics computed once at the
        # epoch's end: one list append per step instead of a few tensor ops.
        self._outs: list[torch.Tensor] = []
        self._ys: list[torch.Tensor] = []

    def step(self, batch: tuple[Any, Any]) -> StepRecord:
        """Forward, loss, backward, update on one batch; return what happened.

        A non-finite loss or gradient makes no update: the record says
        ``diverged=True`` and the trainer stops with ``stop_reason="diverged"``.
        """
        x, y = batch
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            x, y = as_tensor("x", x), as_tensor("y", y)
        if not self._targets_ready or self.spec is None:
            y = self._ensure_loss(x, y)
        s = self.state
        lr = s.lr_at(s.global_step, s.epoch)
        if self.lr_factor is not None:
            lr *= self.lr_factor(s.global_step)
        if lr != self._lr_set:
            for group, scale in zip(self.optimizer.param_groups, self._group_scales,
                                    strict=True):
                group["lr"] = group[_SET] = lr * scale
            self._lr_set = lr

        out = self.net(x) if self._amp is None else self.forward(x)
        loss = self.spec.fn(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        n = x.shape[0]
        if self.dist is None:
            loss.backward()
            loss_v, repeated = loss.item(), 0
        else:  # the global batch's mean loss and counts, the same on every rank
            mean_loss = self.dist.start_mean(loss)
            loss.backward()
            loss_v = mean_loss()
            n, repeated = self.dist.rows_of_batch(s.batch_in_epoch, n)
        gnorm_v = _grad_norm([p.grad for p in self._params if p.grad is not None]).item()
        if not (math.isfinite(loss_v) and math.isfinite(gnorm_v)):
            return self._diverged(loss_v, gnorm_v, lr, n + repeated)
        if self._fast_step is None or not self._fast_step():
            self.optimizer.step()

        if self.metric_fns:
            self._outs.append(out.detach())
            self._ys.append(y)
        self._loss_sum += loss_v * (n + repeated)
        self._rows += n + repeated
        rec = StepRecord(s.global_step, s.epoch, loss_v, lr, gnorm_v, n + repeated)
        s.history.append_step(rec.step, rec.epoch, loss_v, lr, gnorm_v, n + repeated)
        s.global_step += 1
        s.samples_seen += n
        if repeated:
            s.samples_repeated += repeated
        return rec

    def _diverged(self, loss_v: float, gnorm_v: float, lr: float, n: int) -> StepRecord:
        s = self.state
        self.optimizer.zero_grad(set_to_none=True)
        message = s.history.record_divergence(
            epoch=s.epoch, iteration=s.batch_in_epoch + 1, step=s.global_step, lr=lr,
            loss=loss_v, grad_norm=gnorm_v,
        )
        self.stop("diverged", message)
        return StepRecord(s.global_step, s.epoch, loss_v, lr, gnorm_v, n, diverged=True)

    def epoch_logs(self) -> dict[str, float]:
        """Train loss and metrics of the epoch so far (row-weighted means)."""
        rows = max(self._rows, 1)
        logs = {"loss": self._loss_sum / rows}
        if self._outs:
            out, y = torch.cat(self._outs), torch.cat(self._ys)
            sums = [float(fn(out, y)) for fn in self.metric_fns.values()]
            if self.dist is not None:  # each rank holds its own rows' outputs
                sums = self.dist.all_sum(sums)
            for name, v in zip(self.metric_fns, sums, strict=True):
                logs[name] = v / rows
        return logs

    # -- resume ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs: the TrainState's mapping and the epoch in progress.

        Mid-epoch, the epoch's running loss sum and its outputs so far are kept too, so
        the resumed epoch's row (train loss, accuracy) is the uninterrupted run's.
        """
        d = self.state.state_dict(self.callbacks.callbacks)
        mid = self.state.batch_in_epoch > 0
        d["trainer"] = {
            "stop_training": self.stop_training, "stop_reason": self.stop_reason,
            "lr_set": self._lr_set,
            "loss_sum": self._loss_sum if mid else 0.0, "rows": self._rows if mid else 0,
            "outs": list(self._outs) if mid else [], "ys": list(self._ys) if mid else [],
        }
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (callback states matched by key)."""
        self.state.load_state_dict(d, self.callbacks.callbacks)
        self.begin_epoch()
        t = d.get("trainer")
        if t is None:  # a TrainState mapping alone: at an epoch boundary
            return
        self.stop_training, self.stop_reason = t["stop_training"], t["stop_reason"]
        self._lr_set = t["lr_set"]
        self._loss_sum, self._rows = t["loss_sum"], t["rows"]
        # Checkpoints load onto the CPU: the epoch's outputs so far go back to the model's
        # device (a GPU's), where the rest of the epoch's are made.
        p = next(self.model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        self._outs = [o.to(device) for o in t["outs"]]
        self._ys = [y.to(device) for y in t["ys"]]

    # -- evaluation --------------------------------------------------------------------
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> dict[str, float]:
        """Loss and metrics over ``(x, y)`` in eval mode, in chunks (targets prepared), in
        the trainer's own precision (a caller's autocast is off for it).

        Training data-parallel, each rank evaluates rows ``rank, rank + W, ...``
        of ``(x, y)`` and the result is over all of them together.
        """
        if self.dist is not None:
            x, y = x[self.dist.rank :: self.dist.world_size], y[self.dist.rank :: self.dist.world_size]
        with own_precision():
            if self._amp is None:
                out = evaluate_tensors(self.model, self.spec, self.metric_fns, x, y, batch_size)
            else:
                out = evaluate_tensors(self.forward, self.spec, self.metric_fns, x, y,
                                       batch_size, module=self.model)
        if self.dist is None:
            return out
        n = x.shape[0]
        sums = self.dist.all_sum([n] + [v * n for v in out.values()])
        return {k: v / sums[0] for k, v in zip(out, sums[1:], strict=True)}


@torch.no_grad()
def evaluate_tensors(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    spec: LossSpec,
    metric_fns: dict[str, Callable],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
    *,
    module: nn.Module | None = None,
) -> dict[str, float]:
    """Row-weighted mean loss and metrics of ``model`` on prepared ``(x, y)``, in eval mode.

    ``model`` may be any callable (a trainer's mixed-precision forward); then
    ``module`` is the ``nn.Module`` put in eval mode meanwhile.
    """
    module = model if module is None else module
    was_training = module.training
    module.eval()
    try:
        n = x.shape[0]
        loss_sum = 0.0
        sums = dict.fromkeys(metric_fns, 0.0)
        # A module with inplace=True may write into its input: evaluated on copies, so the
        # caller's rows (validation_data is used as given) stay as they are.
        copy = writes_inplace(module)
        for s in range(0, n, batch_size):
            xb, yb = x[s : s + batch_size], y[s : s + batch_size]
            out = model(xb.clone() if copy else xb)
            loss_sum += spec.fn(out, yb).item() * xb.shape[0]
            for name, fn in metric_fns.items():
                sums[name] += float(fn(out, yb))
    finally:
        module.train(was_training)
    return {"loss": loss_sum / n, **{k: v / n for k, v in sums.items()}}
