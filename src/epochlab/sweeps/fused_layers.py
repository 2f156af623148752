"""Which models fuse, and the stacked network that trains K of them at once.

Fusion is decided by structure: any ``nn.Sequential`` (nesting allowed; the
seed's CNNs, :class:`epochlab.models.cnn.CNN`, unroll into their layers)
whose layers all have a *stacked form* in :data:`STACKED_LAYERS`, with no
buffers but batch norm's (each member's running statistics are stacked and
updated as ``fit`` updates them) and no frozen parameters (:func:`is_fusable`
says why not).
:func:`make_net` picks how to run it:

- :class:`HandNet`: Linear + ReLU/Tanh stacks (after optional leading
  ``nn.Flatten``, or after ``Conv2d -> ReLU -> MaxPool2d(2)`` blocks and a
  Flatten, as in cnn_small; a ``BatchNorm1d`` may sit between a Linear and
  its activation, as in the seed's slide 9), with the hand-written forward
  and backward of :mod:`epochlab.sweeps.fused_ops` and
  :mod:`epochlab.sweeps.fused_conv` (the fast path: half autograd's cost;
  slide 9's batch-norm MLP trained 2x faster than by autograd, cnn_small 1.4x);
- :class:`StackedNet`: everything else, each layer's stacked form run
  forward on the ``(K, P)`` parameter buffer and differentiated by autograd.
  Convolutions are HFTA-style grouped convolutions (the K members' channels
  side by side); a ``Conv2d -> ReLU -> MaxPool2d(2)`` run, the block the
  seed's CNNs are made of, is one block with its own backward
  (:mod:`epochlab.sweeps.fused_conv`).

A stacked form takes ``x`` of shape ``(K, B, *features)`` (member first,
then the batch: what one member's layer sees is ``x[k]``), the layer's
parameters as ``(K, *shape)`` views by their own names (``"weight"``,
``"bias"``), and a :class:`Step` (training or not, one dropout generator per
member); it returns ``(K, B, *out_features)`` equal, member by member, to
the layer applied to ``x[k]`` with that member's parameters.

**Adding a layer type** is one entry in :data:`STACKED_LAYERS`: its
``nn.Module`` type mapped to a builder ``builder(module) -> forward``, where
``forward(x, params, step) -> Tensor`` is the stacked form above (for
example a grouped ``conv2d`` with ``groups=K`` for ``nn.Conv2d``). The
parameter layout, the optimizer, the loss, autograd's backward and the
equivalence tests' harness need no change.

Dropout draws each member's masks from its own generator seeded as ``fit``
seeds torch's (``epochlab.train.loop.dropout_seed``), one
``bernoulli_(1 - p)`` per layer per step in forward order, exactly as
``torch.nn.functional.dropout`` draws them for that member alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from epochlab.sweeps.fused_conv import HandBlock, conv_relu_pool, fusable_block
from epochlab.sweeps.fused_ops import (
    NORM_BUFFERS,
    FlatLayout,
    MLPBackward,
    Norms,
    _per_member,
    _side_by_side,
    backward,
    forward_prepared,
    hand_specs,
    logits_grad,
    prepare_forward,
    running_factor,
    sequential_leaves,
)
from epochlab.train.loop import dropout_seed

__all__ = [
    "ELEMENTWISE", "STACKED_LAYERS", "Fusability", "HandNet", "StackedNet", "Step",
    "is_fusable", "make_net",
]


@dataclass
class Step:
    """What a stacked layer needs besides its input and parameters, for one forward pass."""

    training: bool
    generators: list[torch.Generator] = field(default_factory=list)  # one per active member


StackedForward = Callable[[Tensor, Mapping[str, Tensor], Step], Tensor]

BUFFERED: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)
"""Layers whose buffers (running statistics) are stacked per member and updated in training."""


def _stacked_linear(m: nn.Linear) -> StackedForward:
    def run(x: Tensor, p: Mapping[str, Tensor], step: Step) -> Tensor:
        k, lead = x.shape[0], x.shape[1:-1]
        xs = x.reshape(k, -1, x.shape[-1])
        wt = p["weight"].transpose(1, 2)
        b = p.get("bias")
        z = torch.baddbmm(b.unsqueeze(1), xs, wt) if b is not None else torch.bmm(xs, wt)
        return z.reshape(k, *lead, z.shape[-1])

    return run


def _stacked_conv2d(m: nn.Conv2d) -> StackedForward:
    # HFTA's horizontal fusion: the K members' channels side by side, one grouped
    # convolution (groups = K x the layer's own groups) computes every member at once.
    # Channels-last layout: on the CPU a grouped convolution ran 3x and the max-pool
    # after it 20x faster than in (N, C, H, W) for cnn_small at K=8.
    if m.padding_mode != "zeros":
        raise ValueError(f"Conv2d with padding_mode={m.padding_mode!r} has no fused form")
    groups, stride, padding, dilation = m.groups, m.stride, m.padding, m.dilation
    cl = torch.channels_last

    def run(x: Tensor, p: Mapping[str, Tensor], step: Step) -> Tensor:
        k = x.shape[0]
        xs = _side_by_side(x).contiguous(memory_format=cl)
        w = p["weight"]
        bias = p.get("bias")
        z = F.conv2d(xs, w.reshape(k * w.shape[1], *w.shape[2:]).contiguous(memory_format=cl),
                     None if bias is None else bias.reshape(-1), stride, padding, dilation,
                     k * groups)
        # (B, K*O, H, W) seen as (K, B, O, H, W): a view, the layout stays for the next layer
        return _per_member(z, k)

    return run


def _per_image(fn: Callable[[Tensor], Tensor]) -> StackedForward:
    # Pooling has no parameters and works on each channel of each image alone: run it
    # on the (B, K*C, H, W) layout the grouped convolutions produce (a view, no copy).
    def run(x: Tensor, p: Mapping[str, Tensor], step: Step) -> Tensor:
        return _per_member(fn(_side_by_side(x)), x.shape[0])

    return run


def _max_pool2d(m: nn.MaxPool2d) -> StackedForward:
    if m.return_indices:
        raise ValueError("MaxPool2d(return_indices=True) has no fused form")
    return _per_image(lambda x: F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation,
                                             m.ceil_mode))


def _avg_pool2d(m: nn.AvgPool2d) -> StackedForward:
    return _per_image(lambda x: F.avg_pool2d(x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                             m.count_include_pad, m.divisor_override))


def _elementwise(m: nn.Module) -> StackedForward:
    # Elementwise activations do not care about the member axis: apply the module itself,
    # out of place (an inplace=True copy could write into the batches' shared input view).
    if getattr(m, "inplace", False):
        m = copy.copy(m)
        m.inplace = False
    return lambda x, p, step: m(x)


def _flatten(m: nn.Flatten) -> StackedForward:
    if m.start_dim == 0:
        raise ValueError("Flatten(start_dim=0) merges the rows of a batch: it has no fused form")
    # The module's dims count from one member's batch axis; the stacked tensor has K first.
    start = m.start_dim + 1 if m.start_dim >= 0 else m.start_dim
    end = m.end_dim + 1 if m.end_dim >= 0 else m.end_dim
    return lambda x, p, step: x.flatten(start, end)


def _dropout(m: nn.Dropout) -> StackedForward:
    rate = float(m.p)

    def run(x: Tensor, p: Mapping[str, Tensor], step: Step) -> Tensor:
        if not step.training or rate == 0.0:
            return x
        if rate == 1.0:
            return x * torch.zeros_like(x)
        # As F.dropout: a Bernoulli(1 - p) mask divided by 1 - p, one draw per member.
        masks = torch.stack([
            torch.empty(x.shape[1:], dtype=x.dtype).bernoulli_(1.0 - rate, generator=g)
            .div_(1.0 - rate) for g in step.generators
        ])
        return x * masks

    return run


def _batch_norm(m: nn.modules.batchnorm._BatchNorm) -> StackedForward:
    # Each member's channels side by side, (B, K*C, ...): torch's own batch norm then
    # normalizes every member's channels over that member's batch, and updates the
    # stacked running statistics ((K, C) buffers seen as (K*C,)) in place, as fit's would.
    eps, momentum, track = m.eps, m.momentum, m.track_running_stats

    def run(x: Tensor, p: Mapping[str, Tensor], step: Step) -> Tensor:
        mean, var = p.get("running_mean"), p.get("running_var")
        use_batch = step.training or mean is None
        factor = 0.0
        if step.training and track:
            factor = running_factor(p["num_batches_tracked"], momentum)
        w, bias = p.get("weight"), p.get("bias")
        y = F.batch_norm(
            _side_by_side(x), None if mean is None else mean.view(-1), None if var is None else var.view(-1),
            None if w is None else w.reshape(-1), None if bias is None else bias.reshape(-1),
            use_batch, factor, eps,
        )
        return _per_member(y, x.shape[0])

    return run


def _layer_norm(m: nn.LayerNorm) -> StackedForward:
    shape, eps = tuple(m.normalized_shape), m.eps

    def run(x: Tensor, p: Mapping[str, Tensor], step: Step) -> Tensor:
        y = F.layer_norm(x, shape, None, None, eps)
        lead = (x.shape[0],) + (1,) * (x.ndim - 1 - len(shape))
        if "weight" in p:
            y = y * p["weight"].reshape(*lead, *shape)
        if "bias" in p:
            y = y + p["bias"].reshape(*lead, *shape)
        return y

    return run


ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Softplus,
    nn.Identity,
)
"""Activations applied to each value on its own, so the member axis does not matter."""

STACKED_LAYERS: dict[type[nn.Module], Callable[[nn.Module], StackedForward]] = {
    nn.Linear: _stacked_linear,
    nn.Flatten: _flatten,
    nn.Dropout: _dropout,
    nn.LayerNorm: _layer_norm,
    nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm,
    nn.Conv2d: _stacked_conv2d,
    nn.MaxPool2d: _max_pool2d,
    nn.AvgPool2d: _avg_pool2d,
    **{t: _elementwise for t in ELEMENTWISE},
}
"""``nn.Module`` type -> builder of its stacked form (see the module docstring)."""


@dataclass(frozen=True)
class Fusability:
    """Whether a model can be fused, and if not, why. Truthy when it can.

    Example:
        >>> check = is_fusable(nn.Sequential(nn.Linear(3, 2), nn.PReLU()))
        >>> bool(check), "PReLU" in check.reason
        (False, True)
    """

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _names() -> str:
    return ", ".join(sorted(t.__name__ for t in STACKED_LAYERS))


def _check(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers when it can be fused; raises ``ValueError`` saying why not."""
    leaves = sequential_leaves(model)
    for i, (prefix, module) in enumerate(leaves):
        if type(module) not in STACKED_LAYERS:
            where = prefix.rstrip(".")
            raise ValueError(
                f"layer {where if '.' in where else i} is {type(module).__name__}: it has no "
                f"fused form (fused layers: {_names()}); train it one by one (a sweep does, "
                "or epochlab.fit)"
            )
        try:
            STACKED_LAYERS[type(module)](module)  # a builder refuses settings it cannot fuse
        except ValueError as err:
            raise ValueError(f"layer {prefix.rstrip('.')}: {err}") from None
    # What the fused form does not run: a forward of the model's own, and hooks (a user's,
    # or weight_norm's): fused, they would be skipped without a word.
    modules = list(model.modules())
    for m in modules:
        if isinstance(m, nn.Sequential) and type(m).forward is not nn.Sequential.forward:
            raise ValueError(f"the model's {type(m).__name__} has its own forward, which fused "
                             "training would not run")
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
           or getattr(m, "_backward_pre_hooks", None) for m in modules) or any(
            getattr(torch.nn.modules.module, name, None) for name in _GLOBAL_HOOKS):
        raise ValueError("the model has forward or backward hooks (a hook of yours, or "
                         "weight_norm's), which fused training would not run")
    # Each parameter and buffer belongs to one layer, once: tied weights (one layer with
    # weights or statistics used twice; a shared ReLU is fine) and parameters of the
    # containers themselves have no place in the stacked layers.
    owned = [id(p) for _, m in leaves for p in m._parameters.values() if p is not None]
    stateful = [id(m) for _, m in leaves
                if any(p is not None for p in m._parameters.values()) or _own_buffers(m)]
    if len(owned) != len(set(owned)) or len(stateful) != len(set(stateful)):
        raise ValueError("the model uses a layer or parameter in more than one place (tied "
                         "weights), which fused training would train as separate copies")
    if {id(p) for p in model.parameters()} != set(owned):
        raise ValueError("the model has parameters outside its layers; they cannot be fused")
    # Buffers: only batch norm's running statistics are stacked. (Read from each module's
    # own table: Module.buffers() walks the tree through generators, ~10x slower.)
    for _, module in leaves:
        if not isinstance(module, BUFFERED) and _own_buffers(module):
            raise ValueError(f"the model's {type(module).__name__} has buffers; only batch "
                             "norm's running statistics can be fused")
    owned = {id(b) for _, m in leaves for b in _own_buffers(m)}
    if any(id(b) not in owned for m in modules for b in _own_buffers(m)):
        raise ValueError("the model has buffers outside its layers; they cannot be fused")
    params = list(model.parameters())
    if not params:
        raise ValueError("the model has no parameters")
    if params[0].device.type != "cpu":
        raise ValueError(f"the model is on {params[0].device}; fused training runs on the CPU "
                         "(one by one, each run trains where the model is)")
    if any(not p.requires_grad for p in params):
        raise ValueError("the model has frozen parameters, which fused training would train")
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1 or not params[0].is_floating_point():
        raise ValueError(f"the parameters must share one floating dtype, not {sorted(map(str, dtypes))}")
    return leaves


_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


def _own_buffers(module: nn.Module) -> list[Tensor]:
    """The buffers ``module`` registered itself (``module.buffers(recurse=False)``)."""
    return [b for b in module._buffers.values() if b is not None]


def is_fusable(model: nn.Module) -> Fusability:
    """Say whether ``model`` can train fused, and why not.

    Fusable: an ``nn.Sequential`` (nested ones too) of layers that have a
    stacked form (:data:`STACKED_LAYERS`: ``nn.Linear``, ``nn.Conv2d``,
    ``nn.MaxPool2d``, ``nn.AvgPool2d``, ``nn.BatchNorm1d``, ``nn.BatchNorm2d``,
    ``nn.LayerNorm``, ``nn.Flatten``, ``nn.Dropout`` and elementwise
    activations), all parameters trainable and of one floating dtype, no
    buffers but batch norm's running statistics (stacked per member).

    Example:
        >>> from epochlab.models import mlp
        >>> bool(is_fusable(mlp(20))), bool(is_fusable(mlp(20, batch_norm=True)))
        (True, True)
        >>> is_fusable(nn.Sequential(nn.Linear(3, 2), nn.PReLU())).reason[:21]
        'layer 1 is PReLU: it '
    """
    try:
        _check(model)
    except ValueError as err:
        return Fusability(False, str(err))
    return Fusability(True, "")


class _StackedBuffers:
    """Every member's buffers (batch norm's running statistics), stacked ``(K, *shape)``."""

    buffer_keys: list[str]
    buffers: dict[str, Tensor]

    def load_buffers(self, state_dicts: list[dict[str, Tensor]], dtype: torch.dtype) -> None:
        """Stack the members' buffers; floating ones in the training dtype."""
        self.buffers = {
            k: torch.stack([sd[k].detach().to(dtype if sd[k].is_floating_point() else sd[k].dtype)
                            for sd in state_dicts])
            for k in self.buffer_keys
        }

    def buffer_state(self, row: int) -> dict[str, Tensor]:
        """One member's buffers (copies), for its state_dict."""
        return {k: v[row].clone() for k, v in self.buffers.items()}

    def snapshot(self) -> Any:
        """The members' buffers, as copies (:meth:`restore` puts them back in place)."""
        return {k: v.clone() for k, v in self.buffers.items()}

    def restore(self, snap: Any) -> None:
        for k, v in snap.items():
            self.buffers[k].copy_(v)

    def _keep_buffers(self, keep: np.ndarray) -> None:
        rows = torch.as_tensor(keep, dtype=torch.int64)
        self.buffers = {k: v[rows] for k, v in self.buffers.items()}


class HandNet(_StackedBuffers):
    """Linear + ReLU/Tanh stacks, with an optional BatchNorm1d before an activation, with the
    hand-written forward and backward (the fast path).

    Leading ``nn.Flatten`` layers become one reshape of the data
    (:attr:`flatten_input`), so an MLP on images takes this path too. A CNN made of
    ``Conv2d -> ReLU -> MaxPool2d(2)`` blocks, a Flatten and such a stack (the
    seed's cnn_small) takes it as well: the blocks' own forward and backward
    (:class:`~epochlab.sweeps.fused_conv.HandBlock`), without autograd.
    """

    def __init__(self, leaves: list[tuple[str, nn.Module]]) -> None:
        i = 0
        self.blocks: list[tuple[str, HandBlock]] = []
        while i + 2 < len(leaves) and fusable_block(*(m for _, m in leaves[i:i + 3])):
            self.blocks.append((leaves[i][0], HandBlock(leaves[i][1])))  # type: ignore[arg-type]
            i += 3
        if self.blocks:
            if i == len(leaves) or not _plain_flatten(leaves[i][1]):
                raise ValueError("the conv blocks are not followed by nn.Flatten")
            i += 1
        n_flat = i
        while n_flat < len(leaves) and _plain_flatten(leaves[n_flat][1]):
            n_flat += 1
        self.flatten_input = n_flat > 0 and not self.blocks
        self.specs = hand_specs(leaves[n_flat:])
        leading = []
        for prefix, block in self.blocks:
            leading.append((f"{prefix}weight", tuple(block.conv.weight.shape)))
            if block.conv.bias is not None:
                leading.append((f"{prefix}bias", tuple(block.conv.bias.shape)))
        self.has_norms = any(s.norm is not None for s in self.specs)
        # A plain MLP (the common case) trains in the fewest calls: MLPBackward.
        self.plain_mlp = (not self.blocks and not self.has_norms
                          and all(s.bias for s in self.specs))
        self.layout = FlatLayout(self.specs, leading, biases_last=self.plain_mlp)
        self._mlp: MLPBackward | None = None
        self._norm_state: Norms | None = None  # the training forward's, for its backward
        self.buffer_keys = [f"{s.norm.prefix}{name}" for s in self.specs if s.norm is not None
                            for name in NORM_BUFFERS]
        self.buffers = {}
        self._norm_memo: dict[bool, tuple[dict[str, Tensor], Any, Norms]] = {}

    def bind(self, flat: Tensor, grad: Tensor) -> None:
        self.views = self.layout.views(flat)
        self.fwd_views = prepare_forward(self.views)
        self.grad = grad
        self.grad_views = self.layout.views(grad)
        self.norm_affine = self.layout.norm_views(flat)
        self.norm_grads = self.layout.norm_views(grad)
        named, named_grad = self.layout.named_views(flat), self.layout.named_views(grad)
        self.conv_views = [(named[f"{p}weight"], named.get(f"{p}bias")) for p, _ in self.blocks]
        self.conv_grads = [(named_grad[f"{p}weight"], named_grad.get(f"{p}bias"))
                           for p, _ in self.blocks]
        self._mlp = MLPBackward(self.layout, flat, grad) if self.plain_mlp else None

    def start(self, seeds: list[int]) -> None:
        return None

    def select(self, keep: np.ndarray) -> None:
        self._keep_buffers(keep)

    def _norms(self, training: bool) -> Norms | None:
        """The batch norms' parameters and statistics, made once for the buffers and views
        bound now (a step then builds none; its cache is overwritten step by step)."""
        if not self.has_norms:
            return None
        got = self._norm_memo.get(training)
        # The objects themselves are compared (and held): new buffers (members left, or
        # loaded) or new views (a new parameter buffer) make new Norms.
        if got is None or got[0] is not self.buffers or got[1] is not self.norm_affine:
            b = self.buffers
            stats = [None if s.norm is None else tuple(b[s.norm.prefix + n] for n in NORM_BUFFERS)
                     for s in self.specs]
            got = self._norm_memo[training] = (
                b, self.norm_affine, Norms(self.norm_affine, stats, training, [None] * len(self.specs)))
        return got[2]

    def train_forward(self, x: Tensor) -> Tensor:
        if not self.blocks and not self.has_norms:  # an MLP: the common case, fewest calls
            z, self._cache = forward_prepared(self.fwd_views, self.specs, x)
            return z
        self._saved = []
        for i, ((_, block), (w, b)) in enumerate(zip(self.blocks, self.conv_views, strict=True)):
            x, saved = block.forward(x, w, b, input_grad=i > 0)
            self._saved.append(saved)
        if self.blocks:
            self._block_out = x.shape
            x = x.reshape(x.shape[0], x.shape[1], -1)  # Flatten: channels, then rows, columns
        self._norm_state = self._norms(training=True)
        z, self._cache = forward_prepared(self.fwd_views, self.specs, x, self._norm_state)
        return z

    def train_step(self, x: Tensor, task: str, term: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
        """One training forward and backward: the logits and the filled gradient buffer,
        for the logits' gradient ``term + alpha f(z)`` (:func:`logits_grad`)."""
        mlp = self._mlp
        if mlp is None:
            z = self.train_forward(x)
            return z, self.backward(logits_grad(task, z, term, alpha))
        z, cache = mlp.forward(x)
        buf, parts, parts_t = mlp.buffer(x.shape[1])
        logits_grad(task, z, term, alpha, out=parts[-1])
        mlp.run(cache, buf, parts, parts_t)
        return z, self.grad

    def backward(self, dz: Tensor) -> Tensor:
        g = backward(self.views, self.grad_views, self.specs, self._cache, dz, self._norm_state,
                     self.norm_grads, input_grad=bool(self.blocks))
        if self.blocks:
            g = g.view(self._block_out)
            for i in range(len(self.blocks) - 1, -1, -1):
                g, grad_w, grad_b = self.blocks[i][1].backward(self._saved[i], g)
                gw, gb = self.conv_grads[i]
                gw.copy_(grad_w)
                if gb is not None:
                    gb.copy_(grad_b)
        return self.grad

    def predict(self, x: Tensor) -> Tensor:
        for (_, block), (w, b) in zip(self.blocks, self.conv_views, strict=True):
            x = block.evaluate(x, w, b)
        if self.blocks:
            x = x.reshape(x.shape[0], x.shape[1], -1)
        return forward_prepared(self.fwd_views, self.specs, x, self._norms(training=False))[0]

    def width(self, x_row: Tensor) -> int:
        """Activation values one row produces across the layers (for the memory plan)."""
        total, x = 0, x_row[None, None]
        for _, block in self.blocks:  # the patches, the conv's output before and after pooling
            geo = block.geometry(x)
            o = block.conv.out_channels
            total += 4 * geo.cells * (geo.rows + o) + geo.cells * o
            x = x.new_empty(1, 1, o, *geo.out_hw)
        return total + sum(s.out_features * (2 if s.norm is not None else 1) for s in self.specs)


def _plain_flatten(m: nn.Module) -> bool:
    return type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1


class StackedNet(_StackedBuffers):
    """Any fusable model: stacked forms run on views of the buffer, autograd's backward."""

    flatten_input = False

    def __init__(self, leaves: list[tuple[str, nn.Module]], template: nn.Module) -> None:
        self.template = template
        self.layers: list[tuple[str, StackedForward, list[str]]] = []
        i = 0
        while i < len(leaves):
            prefix, module = leaves[i]
            names = [n for n, _ in module.named_parameters(recurse=False)]
            names += [n for n, _ in module.named_buffers(recurse=False)]
            if i + 2 < len(leaves) and fusable_block(module, leaves[i + 1][1], leaves[i + 2][1]):
                # Conv2d -> ReLU -> MaxPool2d(2) as one block with its own backward.
                self.layers.append((prefix, conv_relu_pool(module), names))
                i += 3
                continue
            self.layers.append((prefix, STACKED_LAYERS[type(module)](module), names))
            i += 1
        self.layout = FlatLayout.of_params(
            [(k, tuple(v.shape)) for k, v in template.named_parameters()]
        )
        self.buffer_keys = [k for k, _ in template.named_buffers()]
        self.buffers: dict[str, Tensor] = {}
        self.generators: list[torch.Generator] = []

    def bind(self, flat: Tensor, grad: Tensor) -> None:
        self.flat = flat

    def start(self, seeds: list[int]) -> None:
        """One dropout generator per member, seeded as ``fit`` seeds torch's RNG."""
        self.generators = [torch.Generator().manual_seed(dropout_seed(s)) for s in seeds]

    def select(self, keep: np.ndarray) -> None:
        self.generators = [self.generators[i] for i in keep]
        self._keep_buffers(keep)

    def snapshot(self) -> Any:
        """The buffers and the dropout generators' states."""
        return super().snapshot(), [g.get_state() for g in self.generators]

    def restore(self, snap: Any) -> None:
        super().restore(snap[0])
        for g, state in zip(self.generators, snap[1], strict=True):
            g.set_state(state)

    def _run(self, named: Mapping[str, Tensor], x: Tensor, step: Step) -> Tensor:
        h = x
        for prefix, fwd, names in self.layers:
            h = fwd(h, {n: named[prefix + n] for n in names}, step)
        return h

    def train_forward(self, x: Tensor) -> Tensor:
        # One leaf per parameter (views of the buffer, detached): autograd then hands back
        # each parameter's gradient without scattering it into a zeroed (K, P) buffer.
        self._leaves = {key: v.detach().requires_grad_(True)
                        for key, v in self.layout.named_views(self.flat).items()}
        with torch.enable_grad():
            self._z = self._run({**self._leaves, **self.buffers}, x,
                                Step(True, self.generators))
        return self._z.detach()

    def train_step(self, x: Tensor, task: str, term: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
        """One training forward and backward (as :meth:`HandNet.train_step`)."""
        z = self.train_forward(x)
        return z, self.backward(logits_grad(task, z, term, alpha))

    def backward(self, dz: Tensor) -> Tensor:
        leaves = list(self._leaves.values())
        grads = torch.autograd.grad(self._z, leaves, dz)
        self._z = self._leaves = None  # free the graph
        k = dz.shape[0]
        return torch.cat([g.reshape(k, -1) for g in grads], dim=1)  # state_dict order

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self._run({**self.layout.named_views(self.flat), **self.buffers}, x, Step(False))

    def width(self, x_row: Tensor) -> int:
        """Activation values one row produces across the layers, times 3 for what autograd
        keeps (inputs of activations, normalization statistics)."""
        total, h = 0, torch.stack([x_row, x_row])  # two rows: batch norm refuses one
        was = self.template.training
        self.template.eval()  # no dropout draws from torch's RNG
        try:
            with torch.no_grad():
                for _, module in sequential_leaves(self.template):
                    h = module(h)
                    total += h[0].numel()
        finally:
            self.template.train(was)
        return 3 * total


def make_net(model: nn.Module) -> HandNet | StackedNet:
    """The fastest way to run ``model`` stacked: :class:`HandNet` when it is a Linear +
    ReLU/Tanh stack, else :class:`StackedNet`; ``ValueError`` when it cannot be fused.

    Example:
        >>> from epochlab.models import mlp
        >>> type(make_net(mlp(4))).__name__, type(make_net(mlp(4, activation="gelu"))).__name__
        ('HandNet', 'StackedNet')
    """
    leaves = _check(model)
    try:
        return HandNet(leaves)
    except ValueError:
        return StackedNet(leaves, model)
