"""The arithmetic of fused training: K stacked MLPs, by hand.

This module owns the parts of :mod:`epochlab.sweeps.fused` that are pure
tensor code with no notion of epochs or data:

- the layout of all K members' parameters in one flat ``(K, P)`` buffer
  (:class:`FlatLayout`), in the order of the model's ``state_dict``; a
  model's layers unrolled (:func:`sequential_leaves`) and the Linear +
  ReLU/Tanh stacks the hand-written path takes (:func:`parse_sequential`);
- a hand-written forward and backward for Linear + ReLU/Tanh stacks with
  batched matmuls (:func:`forward`, :func:`backward`), with an optional
  ``BatchNorm1d`` between a Linear and its activation (the seed's slide 9
  model; each member's batch statistics and running statistics), and the losses
  ``BCEWithLogits`` / cross-entropy / MSE with the gradient of their
  per-member batch mean (:func:`loss_and_grad`, and its parts the loop calls:
  :func:`logits_grad` a step, :func:`row_losses` an epoch);
- per-member Adam, AdamW and SGD updates on the flat buffer
  (:class:`FusedAdam`, :class:`FusedSGD`) that follow the order of
  operations of ``torch.optim``'s single-tensor (CPU) code paths, with the
  per-member scalars (learning rate, bias corrections) computed in float64.

Why by hand: autograd over stacked parameters costs twice the hand-written
backward at the sizes sweeps use (see ``shared/notes/fused-prototype.md``);
every other supported layer runs by autograd (:mod:`epochlab.sweeps.fused_layers`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from epochlab.models.cnn import CNN

ACTIVATIONS: dict[type[nn.Module], str] = {nn.ReLU: "relu", nn.Tanh: "tanh"}


@dataclass(frozen=True)
class LayerSpec:
    """One Linear layer of a hand-written stack and the activation that follows it."""

    index: int  # position among the model's layers (for messages)
    in_features: int
    out_features: int
    bias: bool
    activation: str | None  # "relu", "tanh" or None (the output layer)
    prefix: str = ""  # its state_dict prefix, e.g. "0." or "1.2."
    norm: NormSpec | None = None  # a BatchNorm1d between the Linear and its activation


@dataclass(frozen=True)
class NormSpec:
    """A ``BatchNorm1d`` (affine, with running statistics) on the hand-written path."""

    prefix: str  # its state_dict prefix
    eps: float
    momentum: float | None  # None: a cumulative average, as nn.BatchNorm1d(momentum=None)


NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class Norms:
    """What the batch norms of a hand-written stack use in one forward pass, by layer.

    ``affine``: ``(gamma, beta)`` as ``(K, 1, F)`` views of the parameter buffer;
    ``stats``: running mean and variance ``(K, F)`` and batches counted ``(K,)``,
    updated in place in training; ``cache``: ``(x_hat, 1/std)`` for the backward.
    ``None`` where a layer has no batch norm.
    """

    affine: list[tuple[Tensor, Tensor] | None]
    stats: list[tuple[Tensor, Tensor, Tensor] | None]
    training: bool
    cache: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)


def sequential_leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers of an ``nn.Sequential``, nested ones unrolled, with their state_dict prefixes.

    epochlab's own CNNs (:class:`epochlab.models.cnn.CNN`: a backbone's layers,
    then the head's) unroll the same way: they compute exactly their layers in order.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
        >>> [(p, type(l).__name__) for p, l in sequential_leaves(m)]
        [('0.', 'Flatten'), ('1.0.', 'Linear'), ('1.1.', 'ReLU')]
    """
    out: list[tuple[str, nn.Module]] = []

    def walk(seq: nn.Sequential, prefix: str) -> None:
        # Every place, as forward runs them (named_children lists a module used twice once).
        for name, child in seq._modules.items():
            if child is None:
                continue
            if type(child) is nn.Sequential:
                walk(child, f"{prefix}{name}.")
            else:
                out.append((f"{prefix}{name}.", child))

    if type(model) is CNN and type(model.backbone.body) is nn.Sequential:
        walk(model.backbone.body, "backbone.body.")
        if type(model.head) is nn.Sequential:
            walk(model.head, "head.")
        else:
            out.append(("head.", model.head))
    elif isinstance(model, nn.Sequential):
        walk(model, "")
    else:
        raise ValueError(f"the model is a {type(model).__name__}, but must be an nn.Sequential")
    if not out:
        raise ValueError("the nn.Sequential is empty")
    return out


def parse_sequential(model: nn.Module) -> list[LayerSpec]:
    """The Linear layers of a Linear + ReLU/Tanh stack (the hand-written path); raises
    ``ValueError`` saying why not."""
    return hand_specs(sequential_leaves(model))


def hand_specs(leaves: list[tuple[str, nn.Module]]) -> list[LayerSpec]:
    """:func:`parse_sequential` on layers already unrolled."""
    specs: list[LayerSpec] = []
    for i, (prefix, module) in enumerate(leaves):
        if type(module) is nn.Linear:
            if specs and specs[-1].activation is None:
                raise ValueError(
                    f"layer {i} is a Linear directly after the Linear at {specs[-1].index}: "
                    "put an activation (ReLU or Tanh) between them"
                )
            if not module.weight.dtype.is_floating_point:
                raise ValueError(f"layer {i} has {module.weight.dtype} weights")
            specs.append(LayerSpec(i, module.in_features, module.out_features,
                                   module.bias is not None, None, prefix))
        elif type(module) is nn.BatchNorm1d:
            last = specs[-1] if specs else None
            if last is None or last.activation is not None or last.norm is not None:
                raise ValueError(f"layer {i} (BatchNorm1d) must directly follow an nn.Linear")
            if not (module.affine and module.track_running_stats):
                raise ValueError(f"layer {i} is a BatchNorm1d without affine parameters or "
                                 "running statistics: the hand-written path needs both")
            specs[-1] = dataclasses.replace(
                last, norm=NormSpec(prefix, float(module.eps), module.momentum))
        elif type(module) in ACTIVATIONS:
            if not specs or specs[-1].activation is not None:
                raise ValueError(f"layer {i} ({type(module).__name__}) must follow an nn.Linear")
            specs[-1] = dataclasses.replace(specs[-1], activation=ACTIVATIONS[type(module)])
        else:
            raise ValueError(
                f"layer {i} is {type(module).__name__}: the hand-written path takes only "
                "nn.Linear, nn.BatchNorm1d, nn.ReLU and nn.Tanh"
            )
    if not specs:
        raise ValueError("the model has no nn.Linear layer")
    if specs[-1].activation is not None or specs[-1].norm is not None:
        raise ValueError("the last layer must be an nn.Linear (the model returns logits)")
    return specs


class FlatLayout:
    """Offsets of every parameter of one member in a row of the ``(K, P)`` buffer.

    The order is the model's ``state_dict`` order, so one row is
    ``torch.cat([p.flatten() for p in model.state_dict().values()])``; with
    ``biases_last`` the stack's biases follow all its weights, side by side (so
    :class:`MLPBackward` writes all their gradients in one call). Rows are
    read and written by key (:meth:`stack`, :meth:`unstack`), never by position.
    Built from the hand-written path's layers (``specs``) or, with
    :meth:`of_params`, from any model's parameters.
    """

    def __init__(self, specs: list[LayerSpec],
                 leading: list[tuple[str, tuple[int, ...]]] | None = None,
                 biases_last: bool = False) -> None:
        self.specs = specs
        entries: list[tuple[str, tuple[int, ...]]] = list(leading or [])  # e.g. conv blocks
        biases = []
        for s in specs:
            entries.append((f"{s.prefix}weight", (s.out_features, s.in_features)))
            if s.bias:
                (biases if biases_last else entries).append((f"{s.prefix}bias", (s.out_features,)))
            if s.norm is not None:
                entries.append((f"{s.norm.prefix}weight", (s.out_features,)))
                entries.append((f"{s.norm.prefix}bias", (s.out_features,)))
        self._set(entries + biases)

    @classmethod
    def of_params(cls, entries: list[tuple[str, tuple[int, ...]]]) -> FlatLayout:
        """A layout of the given ``(state_dict key, shape)`` pairs, in that order."""
        layout = cls([])
        layout._set(entries)
        return layout

    def _set(self, entries: list[tuple[str, tuple[int, ...]]]) -> None:
        self.entries: list[tuple[str, int, tuple[int, ...]]] = []  # key, offset, shape
        offset = 0
        for key, shape in entries:
            self.entries.append((key, offset, tuple(shape)))
            offset += math.prod(shape)
        self.n_params = offset

    def named_views(self, flat: Tensor) -> dict[str, Tensor]:
        """Every parameter as a ``(K, *shape)`` view of ``flat``, by state_dict key."""
        k = flat.shape[0]
        return {key: flat[:, off : off + math.prod(shape)].view(k, *shape)
                for key, off, shape in self.entries}

    def views(self, flat: Tensor) -> list[tuple[Tensor, Tensor | None]]:
        """``(W, b)`` per layer as views of ``flat``: W is (K, out, in), b (K, out)."""
        out: list[tuple[Tensor, Tensor | None]] = []
        named = self.named_views(flat)
        for s in self.specs:
            out.append((named[f"{s.prefix}weight"], named.get(f"{s.prefix}bias")))
        return out

    def norm_views(self, flat: Tensor) -> list[tuple[Tensor, Tensor] | None]:
        """``(gamma, beta)`` per layer as ``(K, 1, F)`` views of ``flat`` (None: no batch norm)."""
        named = self.named_views(flat)
        return [None if s.norm is None else (named[f"{s.norm.prefix}weight"].unsqueeze(1),
                                             named[f"{s.norm.prefix}bias"].unsqueeze(1))
                for s in self.specs]

    def stack(self, state_dicts: list[dict[str, Tensor]], dtype: torch.dtype) -> Tensor:
        """One row per member, built from the members' state_dicts."""
        rows = [
            torch.cat([sd[key].detach().reshape(-1).to(dtype) for key, _, _ in self.entries])
            for sd in state_dicts
        ]
        return torch.stack(rows)

    def unstack(self, row: Tensor) -> dict[str, Tensor]:
        """A state_dict (same keys as the original nn.Sequential) from one row."""
        return {
            key: row[off : off + math.prod(shape)].reshape(shape).clone()
            for key, off, shape in self.entries
        }


def _side_by_side(x: Tensor) -> Tensor:
    """``(K, B, C, *S)`` -> ``(B, K*C, *S)``: every member's channels next to each other, so a
    per-channel op of torch (grouped convolution, pooling, batch norm) serves all members."""
    return x.transpose(0, 1).reshape(x.shape[1], x.shape[0] * x.shape[2], *x.shape[3:])


def _per_member(y: Tensor, k: int) -> Tensor:
    """The inverse of :func:`_side_by_side`: ``(B, K*C, *S)`` -> ``(K, B, C, *S)`` (a view)."""
    return y.reshape(y.shape[0], k, y.shape[1] // k, *y.shape[2:]).transpose(0, 1)


def forward(
    views: list[tuple[Tensor, Tensor | None]], specs: list[LayerSpec], x: Tensor,
    norms: Norms | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """Logits ``(K, B, out)`` of all members for inputs ``x`` of shape ``(K, B, in)``.

    Returns the logits and the cache the backward needs: the input of every
    layer (after the previous activation). ``norms`` is required when a layer
    has a batch norm.
    """
    return forward_prepared(prepare_forward(views), specs, x, norms)


def prepare_forward(
    views: list[tuple[Tensor, Tensor | None]],
) -> list[tuple[Tensor, Tensor | None]]:
    """``(W^T, b[:, None])`` per layer: views that stay valid while the buffer is updated in
    place, made once so a training step does not rebuild them (fewer calls a step)."""
    return [(w.transpose(1, 2), b.unsqueeze(1) if b is not None else None) for w, b in views]


def forward_prepared(
    prepared: list[tuple[Tensor, Tensor | None]], specs: list[LayerSpec], x: Tensor,
    norms: Norms | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """:func:`forward` with the views of :func:`prepare_forward`."""
    cache = [x]
    h = x
    for li, ((wt, b), s) in enumerate(zip(prepared, specs, strict=True)):
        z = torch.baddbmm(b, h, wt) if b is not None else torch.bmm(h, wt)
        if s.norm is not None:
            z = _batch_norm(z, li, s.norm, norms)
        if s.activation == "relu":
            z = z.clamp_min_(0.0)
        elif s.activation == "tanh":
            z = z.tanh_()
        h = z
        cache.append(h)
    return h, cache


def running_factor(count: Tensor, momentum: float | None) -> float:
    """Count a training batch in ``count`` (batch norm's ``num_batches_tracked``, stacked) and
    return the weight of its statistics in the running ones, as ``nn.BatchNorm`` does:
    ``momentum``, or ``1 / count`` (a cumulative average) when it is None.

    Example:
        >>> count = torch.zeros(2, dtype=torch.long)
        >>> running_factor(count, None), running_factor(count, None), running_factor(count, 0.1)
        (1.0, 0.5, 0.1)
    """
    count.add_(1)  # counted before the factor is taken
    return momentum if momentum is not None else 1.0 / float(count[0])


def _batch_norm(z: Tensor, li: int, spec: NormSpec, norms: Norms | None) -> Tensor:
    """Each member's ``BatchNorm1d`` of ``z`` ``(K, B, F)``, as nn.BatchNorm1d computes it."""
    if norms is None:
        raise ValueError("a layer has a batch norm: pass its parameters and statistics (norms)")
    gamma, beta = norms.affine[li]
    running_mean, running_var, count = norms.stats[li]
    if not norms.training:
        invstd = running_var.add(spec.eps).rsqrt_().unsqueeze(1)
        return torch.addcmul(beta, (z - running_mean.unsqueeze(1)).mul_(invstd), gamma)
    k, n = z.shape[0], z.shape[1]
    if n < 2:  # nn.BatchNorm1d's own refusal, word for word
        raise ValueError(f"Expected more than 1 value per channel when training, "
                         f"got input size {torch.Size([n, z.shape[2]])}")
    # Two passes, as torch's CPU batch-norm kernel: the mean, then the centred squares. The
    # row sums are batched matmuls with rows of 1/n and 1/(n - 1): the mean, and in one
    # call the variance and its unbiased form for the running statistics (a fifth of the
    # time of mean() and the scalar ops on this size).
    mean_rows, var_rows = _row_weights(k, n, z.dtype)
    mean = torch.bmm(mean_rows, z)
    centered = z - mean
    var = torch.bmm(var_rows, centered * centered)  # (K, 2, F): biased, unbiased
    factor = running_factor(count, spec.momentum)
    # As torch's kernel: running = (1 - factor) * running + factor * batch, the variance
    # unbiased (lerp: the same to rounding, one call).
    running_mean.lerp_(mean.view(k, -1), factor)
    running_var.lerp_(var[:, 1], factor)
    invstd = var[:, :1].add(spec.eps).rsqrt_()
    x_hat = centered.mul_(invstd)
    norms.cache[li] = (x_hat, invstd)
    return torch.addcmul(beta, x_hat, gamma)


_ROW_WEIGHTS: dict[tuple[int, int, torch.dtype], tuple[Tensor, Tensor]] = {}


def _row_weights(k: int, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Rows of ``1/n`` ``(K, 1, n)``, and of ``1/n`` and ``1/(n - 1)`` ``(K, 2, n)``: means and
    unbiased means over a batch of ``n`` rows as batched matmuls; made once per shape
    (contiguous: a broadcast view would be copied by every matmul)."""
    key = (k, n, dtype)
    got = _ROW_WEIGHTS.get(key)
    if got is None:
        if len(_ROW_WEIGHTS) > 64:
            _ROW_WEIGHTS.clear()
        both = torch.tensor([1.0 / n, 1.0 / (n - 1)], dtype=torch.float64).to(dtype)
        both = both.view(1, 2, 1).expand(k, 2, n).contiguous()
        got = _ROW_WEIGHTS[key] = (both[:, :1].contiguous(), both)
    return got


def _batch_norm_backward(dy: Tensor, li: int, norms: Norms,
                         grads: list[tuple[Tensor, Tensor] | None]) -> Tensor:
    """The gradient through layer ``li``'s batch norm; its gamma and beta gradients into
    ``grads``: dz = gamma / std * (dy - mean(dy) - x_hat * mean(dy * x_hat))."""
    x_hat, invstd = norms.cache[li]
    gamma = norms.affine[li][0]
    g_gamma, g_beta = grads[li]
    torch.sum(dy, dim=1, keepdim=True, out=g_beta)
    torch.sum(dy * x_hat, dim=1, keepdim=True, out=g_gamma)
    # dy - (g_beta + x_hat * g_gamma) / n, times gamma / std: three calls
    scale = gamma * invstd
    dz = torch.addcmul(g_beta, x_hat, g_gamma)
    return torch.addcmul(dy * scale, dz, scale, value=-1.0 / dy.shape[1])


def backward(
    views: list[tuple[Tensor, Tensor | None]],
    grad_views: list[tuple[Tensor, Tensor | None]],
    specs: list[LayerSpec],
    cache: list[Tensor],
    dz: Tensor,
    norms: Norms | None = None,
    norm_grads: list[tuple[Tensor, Tensor] | None] | None = None,
    input_grad: bool = False,
) -> Tensor | None:
    """Write the gradients of every member's loss into ``grad_views``.

    ``dz`` is the gradient of each member's loss with respect to its logits,
    ``(K, B, out)``; members are independent, so this is the gradient of the
    sum of the members' losses. With batch norms, ``norms`` is the one the
    training forward filled and ``norm_grads`` the ``(gamma, beta)`` gradient
    views (:meth:`FlatLayout.norm_views` of the gradient buffer). With
    ``input_grad`` it returns the gradient of the first layer's input (for
    layers before the stack, such as convolutions), else None.
    """
    for li in range(len(specs) - 1, -1, -1):
        (w, _), (gw, gb) = views[li], grad_views[li]
        h_in = cache[li]
        # bmm into a fresh tensor, then copy: bmm(out=) into a strided view of
        # the flat buffer is about 3x slower (it leaves the batched kernel).
        gw.copy_(torch.bmm(dz.transpose(1, 2), h_in))
        if gb is not None:
            # into the strided view directly: one call instead of sum + copy
            torch.sum(dz, dim=1, out=gb)
        if li == 0:
            return torch.bmm(dz, w) if input_grad else None
        dh = _input_grad_op(w)(dz, w)
        act = specs[li - 1].activation
        if act == "relu":
            # autograd's own ReLU backward: one fused kernel, no bool mask tensor.
            dz = torch.ops.aten.threshold_backward(dh, h_in, 0.0)
        else:  # tanh: d tanh = 1 - tanh^2, and h_in is the tanh output
            dz = dh.mul_(1.0 - h_in * h_in)
        if specs[li - 1].norm is not None:
            dz = _batch_norm_backward(dz, li - 1, norms, norm_grads)
    return None  # pragma: no cover - the loop returns at the first layer


class MLPBackward:
    """:func:`backward` for a stack of Linear layers that all have a bias and no batch norm
    (the seed's MLPs), in the fewest calls a step.

    Every layer's gradient w.r.t. its output goes into one ``(K, B, sum of widths)``
    buffer (:meth:`buffer`; the caller writes the logits' gradient into its last slice),
    so one sum over the rows gives every bias gradient, into the biases' side-by-side
    place in the gradient buffer (a :class:`FlatLayout` with ``biases_last``). The
    activations' backward writes straight into the buffer (``grad_input=``), and tanh's
    is torch's own ``tanh_backward``, as autograd's.

    Example:
        >>> specs = [LayerSpec(0, 3, 4, True, "relu", "0."), LayerSpec(2, 4, 1, True, None, "2.")]
        >>> layout = FlatLayout(specs, biases_last=True)
        >>> flat, grad = torch.randn(2, layout.n_params), torch.zeros(2, layout.n_params)
        >>> mlp = MLPBackward(layout, flat, grad)
        >>> x = torch.randn(2, 5, 3)
        >>> z, cache = forward(layout.views(flat), specs, x)
        >>> buf, parts, parts_t = mlp.buffer(5)
        >>> _ = torch.mul(z, 0.2, out=parts[-1])
        >>> mlp.run(cache, buf, parts, parts_t)
        >>> ref = torch.zeros_like(grad)
        >>> _ = backward(layout.views(flat), layout.views(ref), specs, cache, z * 0.2)
        >>> torch.allclose(grad, ref)
        True
    """

    def __init__(self, layout: FlatLayout, flat: Tensor, grad: Tensor) -> None:
        specs = layout.specs
        if not all(s.bias and s.norm is None for s in specs):
            raise ValueError("MLPBackward needs biased Linear layers without batch norm")
        offsets = {key: off for key, off, _ in layout.entries}
        first = offsets[f"{specs[0].prefix}bias"]
        self.widths = [s.out_features for s in specs]
        if any(offsets[f"{s.prefix}bias"] != first + sum(self.widths[:i])
               for i, s in enumerate(specs)):
            raise ValueError("the biases are not side by side: use FlatLayout(biases_last=True)")
        self.bias_grads = grad[:, first:first + sum(self.widths)]
        views, grad_views = layout.views(flat), layout.views(grad)
        # Each layer's input's activation (a stack has one between every two Linears).
        acts = [_ACT_BACKWARD.get(s.activation) for s in specs[:-1]]
        self.layers = [(w, gw, act, _input_grad_op(w))
                       for (w, _), (gw, _), act in zip(views, grad_views, [None, *acts], strict=True)]
        # Forward: (W^T, b[:, None], the activation's in-place call) per layer.
        self.forward_layers = [(w.transpose(1, 2), b.unsqueeze(1), _ACT_FORWARD.get(s.activation))
                               for (w, b), s in zip(views, specs, strict=True)]
        self._bufs: dict[int, tuple[Tensor, list[Tensor], list[Tensor]]] = {}

    def buffer(self, rows: int) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The ``(K, rows, sum of widths)`` buffer, its per-layer slices and their transposes
        (views made once per batch size: a step then makes none)."""
        got = self._bufs.get(rows)
        if got is None:
            g = self.bias_grads
            buf = torch.empty(g.shape[0], rows, g.shape[1], dtype=g.dtype)
            parts = list(buf.split(self.widths, dim=2))
            got = self._bufs[rows] = (buf, parts, [p.transpose(1, 2) for p in parts])
        return got

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The logits and every layer's input (:func:`forward_prepared`, without batch norms)."""
        cache = [x]
        for wt, b, act in self.forward_layers:
            x = torch.baddbmm(b, x, wt)
            if act is not None:
                x = act(x)
            cache.append(x)
        return x, cache

    def run(self, cache: list[Tensor], buf: Tensor, parts: list[Tensor],
            parts_t: list[Tensor]) -> None:
        """Every gradient into the gradient buffer; ``parts[-1]`` holds the logits'."""
        layers = self.layers
        li = len(layers) - 1
        while True:
            w, gw, act_backward, input_grad = layers[li]
            h_in = cache[li]
            # bmm into a fresh tensor, then copy: bmm(out=) into a strided view of the flat
            # buffer leaves the batched kernel (about 3x slower).
            gw.copy_(torch.bmm(parts_t[li], h_in))
            if li == 0:
                break
            dh = input_grad(parts[li], w)
            li -= 1
            act_backward(dh, h_in, parts[li])
        torch.sum(buf, dim=1, out=self.bias_grads)


def _input_grad_op(w: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """How a layer's input gradient ``dz @ W`` is taken for weights ``w`` ``(K, out, in)``: a
    batched matmul, or for one output (a binary classifier's last layer) an outer product,
    ``torch.mul``: the same products (bit for bit) without a matmul's call."""
    return torch.mul if w.shape[1] == 1 else torch.bmm


def _relu_backward(dh: Tensor, h: Tensor, out: Tensor) -> Tensor:
    return _THRESHOLD_BACKWARD(dh, h, 0.0, grad_input=out)


def _tanh_backward(dh: Tensor, h: Tensor, out: Tensor) -> Tensor:
    return _TANH_BACKWARD(dh, h, grad_input=out)


def _op(overload: torch._ops.OpOverload) -> Callable[..., Tensor]:
    """An aten overload's C++ entry (``_op``), which skips a Python call a step."""
    return getattr(overload, "_op", overload)


_THRESHOLD_BACKWARD = _op(torch.ops.aten.threshold_backward.grad_input)
_TANH_BACKWARD = _op(torch.ops.aten.tanh_backward.grad_input)
_ACT_BACKWARD: dict[str | None, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "relu": _relu_backward, "tanh": _tanh_backward,
}
_ACT_FORWARD: dict[str | None, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu_, "tanh": torch.tanh_,
}


def loss_and_grad(
    task: str, z: Tensor, y: Tensor, need_grad: bool = True, need_correct: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-member batch-mean loss ``(K,)``, its gradient w.r.t. ``z``, correct counts ``(K,)``.

    ``z`` is ``(K, B, C)``. ``y``: binary ``(K, B, 1)`` floats in {0, 1};
    multiclass ``(K, B)`` int64 labels; regression ``(K, B, C)`` floats.
    The formulas are those of ``torch.nn.functional`` (``BCEWithLogits`` is
    ``(1 - y) z - log sigmoid(z)``), so float64 results agree to rounding.
    Correct counts are ``None`` for regression or without ``need_correct``
    (see :func:`correct_counts`). The training loop itself calls the parts:
    :func:`logits_grad` every step, :func:`row_losses` once an epoch.
    """
    loss = row_losses(task, z, y).mean(dim=1)
    grad = None
    if need_grad:
        grad = logits_grad(task, z, *grad_terms(task, y, z.shape[1], z.shape[2], z.dtype))
    correct = correct_counts(task, z, y) if need_correct else None
    return loss, grad, correct


def row_losses(task: str, z: Tensor, y: Tensor) -> Tensor:
    """Every row's loss ``(K, B)``, for logits ``z`` ``(K, B, C)`` and targets ``y`` as in
    :func:`loss_and_grad`. The loop computes the losses of a whole epoch's steps at once
    from the logits it keeps, not step by step (fewer calls a step)."""
    if task == "binary":  # torch's own kernel: (1 - y) z - log sigmoid(z) in one pass
        return torch.nn.functional.binary_cross_entropy_with_logits(
            z, y, reduction="none").squeeze(2)
    if task == "multiclass":
        return torch.log_softmax(z, dim=2).gather(2, y.unsqueeze(2)).squeeze(2).neg_()
    if task == "regression":
        diff = z - y
        return (diff * diff).mean(dim=2)
    raise ValueError(f"unknown task {task!r}")  # pragma: no cover - validated by the caller


def batch_means(rows: Tensor, sizes: list[int]) -> Tensor:
    """Per-step batch means ``(..., steps)`` of the per-row losses ``rows`` ``(..., sum(sizes))``
    of consecutive batches of ``sizes`` rows (all equal but perhaps the last).

    Example:
        >>> batch_means(torch.tensor([[1.0, 3.0, 5.0, 7.0, 9.0]]), [2, 2, 1])
        tensor([[2., 6., 9.]])
    """
    full = sizes[0]
    n_full = next((i for i, n in enumerate(sizes) if n != full), len(sizes))
    head = rows[..., : n_full * full].unflatten(-1, (n_full, full)).mean(dim=-1)
    if n_full == len(sizes):
        return head
    tail = [part.mean(dim=-1, keepdim=True)
            for part in rows[..., n_full * full :].split(sizes[n_full:], dim=-1)]
    return torch.cat([head, *tail], dim=-1)


def grad_terms(task: str, y: Tensor, n: int, out: int, dtype: torch.dtype,
               into: Tensor | None = None) -> tuple[Tensor, float]:
    """``(T, a)`` such that the gradient of the batch-mean loss over ``n`` rows w.r.t. the
    logits is ``T + a f(z)``, with ``f`` the sigmoid (binary), softmax (multiclass) or
    identity (regression): ``T`` depends on the targets only, so the loop makes it once an
    epoch for all the epoch's batches and a step makes its gradient in two calls
    (:func:`logits_grad`). ``T`` ``(K, B, out)`` is written to ``into`` when given."""
    if task == "multiclass":  # (softmax(z) - onehot(y)) / n
        term = torch.zeros(*y.shape, out, dtype=dtype) if into is None else into.zero_()
        return term.scatter_(-1, y.unsqueeze(-1), -1.0 / n), 1.0 / n
    # binary: (sigmoid(z) - y) / n; regression: 2 (z - y) / (n C), the mean over rows and outputs
    scale = 1.0 / n if task == "binary" else 2.0 / (n * out)
    if into is None:
        return y.mul(-scale), scale
    return torch.mul(y, -scale, out=into), scale


def logits_grad(task: str, z: Tensor, term: Tensor, alpha: float,
                out: Tensor | None = None) -> Tensor:
    """The gradient of every member's batch-mean loss w.r.t. its logits ``z``, from the
    targets' part ``(term, alpha)`` of :func:`grad_terms`; into ``out`` when given."""
    if task == "binary":
        f = torch.sigmoid(z)
    elif task == "multiclass":
        f = torch.softmax(z, dim=2)
    else:
        f = z
    if out is None:
        return torch.add(term, f, alpha=alpha)
    return torch.add(term, f, alpha=alpha, out=out)


def correct_counts(task: str, z: Tensor, y: Tensor) -> Tensor | None:
    """Rows classified right per member ``(K,)``, or None for regression."""
    if task == "regression":
        return None
    return correct_rows(task, z, y).sum(dim=1)


def correct_rows(task: str, z: Tensor, y: Tensor) -> Tensor:
    """Whether each row is classified right ``(K, B)``, for a classification task; the
    training loop counts them for all the epochs it summarizes at once."""
    if task == "binary":
        return ((z > 0) == (y > 0.5)).squeeze(2)
    return z.argmax(dim=2) == y


def _col(values: np.ndarray, like: Tensor) -> Tensor:
    """Per-member float64 scalars as a (K, 1) tensor of the buffer's dtype."""
    return torch.as_tensor(np.asarray(values, dtype=np.float64)).to(like.dtype).view(-1, 1)


def _uniform(values: np.ndarray) -> float | None:
    """The common value when all members share it (use the scalar path: exact, faster)."""
    return float(values[0]) if values.size and np.all(values == values[0]) else None


class FusedAdam:
    """Adam / AdamW for K members at once, as ``torch.optim.Adam(W)`` on each member.

    Follows ``torch.optim.adam._single_tensor_adam`` (the CPU path): L2
    weight decay added to the gradient (Adam) or ``param *= 1 - lr * wd``
    (AdamW); ``exp_avg.lerp_``; ``exp_avg_sq * beta2 + (1 - beta2) g g``;
    step size ``lr / (1 - beta1**t)`` and ``sqrt(1 - beta2**t)`` in float64.
    """

    def __init__(
        self,
        flat: Tensor,
        betas: np.ndarray,
        eps: np.ndarray,
        weight_decay: np.ndarray,
        decoupled: bool,
    ) -> None:
        self.flat = flat
        self.beta1 = np.asarray(betas[:, 0], dtype=np.float64)
        self.beta2 = np.asarray(betas[:, 1], dtype=np.float64)
        self.eps = np.asarray(eps, dtype=np.float64)
        self.wd = np.asarray(weight_decay, dtype=np.float64)
        self.decoupled = decoupled
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        # Updates made: every active member has made the same number (they start together;
        # members only ever leave), so the bias corrections are Python floats.
        self.t = 0
        self._prepare()

    def _prepare(self) -> None:
        like = self.flat
        self.u_beta1, self.u_beta2 = _uniform(self.beta1), _uniform(self.beta2)
        self.u_wd, self.u_eps = _uniform(self.wd), _uniform(self.eps)
        self.t_omb1 = _col(1.0 - self.beta1, like)
        self.t_beta2 = _col(self.beta2, like)
        self.t_omb2 = _col(1.0 - self.beta2, like)
        self.t_wd = _col(self.wd, like)
        self.t_eps = _col(self.eps, like)
        self._lr_seen: np.ndarray | None = None
        self._fast_lr: np.ndarray | None = None  # see step()
        # _kernel_runs' per-run slices of the buffers, and of the last gradient it saw.
        self._runs_args: list[tuple[list[Tensor], list[Tensor], list[Tensor], float]] | None = None
        self._runs_grad: tuple[Tensor | None, list[list[Tensor]]] = (None, [])
        self._kernel_ok = True
        self._step_t = torch.zeros((), dtype=torch.float32)
        self._lr_runs: list[tuple[int, int, float]] | None = None
        # torch's fused Adam kernel, where it exists and takes the buffer (looked up once: a
        # step is a few microseconds of Python); the update direction's scratch buffer.
        kernel = getattr(torch, "_fused_adam_", None)
        self._kernel = kernel if self.flat.is_contiguous() else None
        # AdamW's kernel at lr 1 and weight decay 1 first multiplies the scratch buffer by
        # 1 - 1 * 1 (zeroes it), then subtracts the update: the lr-1 update without a
        # separate zero_ call a step (the same numbers: 0 - u).
        self._kernel_w = getattr(torch, "_fused_adamw_", None)
        self._delta = torch.zeros_like(self.flat) if self._kernel is not None else None
        self._kernel_lists = ([self._delta], [self.exp_avg], [self.exp_avg_sq], [],
                              [self._step_t])

    def snapshot(self) -> tuple[Tensor, Tensor, int]:
        """The moments and step counts, as copies (:meth:`restore` puts them back)."""
        return self.exp_avg.clone(), self.exp_avg_sq.clone(), self.t

    def restore(self, snap: tuple[Tensor, Tensor, int]) -> None:
        """Back to the state of :meth:`snapshot` (the members must be the same)."""
        self.exp_avg.copy_(snap[0])
        self.exp_avg_sq.copy_(snap[1])
        self.t = snap[2]
        if self._delta is not None:  # it may hold the non-finite update of an undone step
            self._delta.zero_()

    def select(self, rows: Tensor, flat: Tensor) -> None:
        """Keep only members ``rows`` (after some stopped); ``flat`` is their new buffer."""
        idx = rows.numpy()
        self.flat = flat
        self.exp_avg = self.exp_avg[rows]
        self.exp_avg_sq = self.exp_avg_sq[rows]
        self.beta1, self.beta2 = self.beta1[idx], self.beta2[idx]
        self.eps, self.wd = self.eps[idx], self.wd[idx]
        self._prepare()

    def step(self, grad: Tensor, lr: np.ndarray) -> None:
        """One update of every member in place; ``lr`` is float64 ``(K,)``."""
        self.t += 1
        if lr is self._fast_lr:  # the rates of the last step, which took the common path
            self._fast_step(grad)
            return
        if self.u_beta1 is None or self.u_beta2 is None or self.u_eps is None:
            self._step_general(grad, lr)
            return
        p = self.flat
        if self.decoupled:  # AdamW: param *= 1 - lr * wd first, as torch.optim.AdamW
            if self.u_wd != 0.0:
                p.mul_(_col(1.0 - lr * self.wd, p))
        elif self.u_wd is None:  # L2 per member: grad + wd * param
            grad = grad + p * self.t_wd
        elif self.u_wd != 0.0:
            grad = grad.add(p, alpha=self.u_wd)
        self._step_uniform(grad, lr)

    def _step_uniform(self, grad: Tensor, lr: np.ndarray) -> None:
        """Betas and eps shared by all members (the common case): few calls.

        Every active member has made the same number of steps (they start
        together; members only ever leave), so the bias corrections are
        Python floats; only the learning rate is per member.
        """
        p = self.flat
        t = self.t
        b1, b2 = self.u_beta1, self.u_beta2
        if lr is not self._lr_seen and not (  # new rates (a schedule moved, members left)
                self._lr_seen is not None and np.array_equal(lr, self._lr_seen)):
            self._lr_seen = lr
            self._uniform_lr = _uniform(lr)
            self._neg_lr_col = _col(-np.asarray(lr, dtype=np.float64), p)
            self._lr_col = _col(np.asarray(lr, dtype=np.float64), p)
            cuts = np.flatnonzero(np.diff(lr)) + 1
            starts, ends = [0, *cuts.tolist()], [*cuts.tolist(), len(lr)]
            # Few runs of equal rates (members sorted by lr): one kernel call per run.
            few = len(starts) <= max(1, len(lr) // 4)
            self._lr_runs = [(a, b, float(lr[a])) for a, b in zip(starts, ends, strict=True)]
            self._lr_runs = self._lr_runs if few else None
            self._runs_args = None
        if self._kernel_ok and self._lr_runs is not None and self._kernel_runs(grad, t):
            if self.u_wd == 0.0:
                self._fast_lr = lr  # the next steps at these rates: _fast_step
            return
        if self._kernel_ok and self._kernel_step(grad, t):
            if self.u_wd == 0.0:
                self._fast_lr = lr  # the next steps at these rates: _fast_step
            return
        self.exp_avg.lerp_(grad, 1.0 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        bc1 = 1.0 - b1**t
        bc2_sqrt = (1.0 - b2**t) ** 0.5
        denom = self.exp_avg_sq.sqrt().div_(bc2_sqrt).add_(self.u_eps)
        if self._uniform_lr is not None:
            p.addcdiv_(self.exp_avg, denom, value=-self._uniform_lr / bc1)
        else:  # param - lr_k / bc1 * exp_avg / denom, lr_k per member
            p.addcdiv_(self.exp_avg * self._neg_lr_col, denom, value=1.0 / bc1)

    def _fast_step(self, grad: Tensor) -> None:
        """The kernel update of the last step again, with nothing decided anew: the same
        rates, no weight decay, shared betas and eps, the kernel known to take the tensors."""
        self._step_t.fill_(self.t)
        if self._runs_args is not None:
            self._update_runs(grad)
        else:
            self._update_lr1(grad)

    def _kernel_runs(self, grad: Tensor, t: int) -> bool:
        """The whole update with torch's fused Adam kernel, one call per run of equal lrs.

        Rows of the buffers are members, so a run of members is a contiguous
        block of rows: the kernel updates the parameters in place at that
        run's learning rate, exactly as ``Adam(fused=True)`` (what ``fit``
        uses) does for one model.
        """
        if self._kernel is None or not grad.is_contiguous():
            self._kernel_ok = False
            return False
        self._step_t.fill_(t)
        if self._runs_args is None:  # each run's slices of the buffers, kept while it holds
            p, m, v = self.flat, self.exp_avg, self.exp_avg_sq
            self._runs_args = [([p[a:b]], [m[a:b]], [v[a:b]], lr) for a, b, lr in self._lr_runs]
            self._runs_grad = (None, [])
        try:
            self._update_runs(grad)
        except (RuntimeError, TypeError, NotImplementedError):  # pragma: no cover - old torch
            self._kernel_ok = False
            return False
        return True

    def _update_runs(self, grad: Tensor) -> None:
        if grad is not self._runs_grad[0]:
            self._runs_grad = (grad, [[grad[a:b]] for a, b, _ in self._lr_runs])
        for (ps, ms, vs, lr), gs in zip(self._runs_args, self._runs_grad[1], strict=True):
            self._kernel(ps, gs, ms, vs, [], [self._step_t], lr=lr, beta1=self.u_beta1,
                         beta2=self.u_beta2, weight_decay=0.0, eps=self.u_eps, amsgrad=False,
                         maximize=False)

    def _kernel_step(self, grad: Tensor, t: int) -> bool:
        """Moments and the lr-1 update in one pass with torch's fused Adam kernel, then each
        member's rate (:meth:`_update_lr1`). False (and never again) where the kernel is
        missing or refuses the tensors; the op-by-op update is used then.
        """
        if self._kernel is None or self._delta is None or not grad.is_contiguous():
            self._kernel_ok = False
            return False
        self._step_t.fill_(t)
        try:
            self._update_lr1(grad)
        except (RuntimeError, TypeError, NotImplementedError):  # pragma: no cover - old torch
            self._kernel_ok = False
            return False
        return True

    def _update_lr1(self, grad: Tensor) -> None:
        """The kernel takes one learning rate per call; run at lr 1 on a zeroed scratch buffer
        it leaves the update direction there, ``-(m / bc1) / (sqrt(v / bc2) + eps)``, which
        is scaled by each member's lr (a third of the passes over memory of the op-by-op
        update). AdamW's kernel at lr 1 and weight decay 1 zeroes the buffer itself."""
        d, m, v, no_max, steps = self._kernel_lists
        kernel, wd = self._kernel_w, 1.0
        if kernel is None:  # torch without the AdamW kernel
            kernel, wd = self._kernel, 0.0
            d[0].zero_()
        kernel(d, [grad], m, v, no_max, steps, lr=1.0, beta1=self.u_beta1, beta2=self.u_beta2,
               weight_decay=wd, eps=self.u_eps, amsgrad=False, maximize=False)
        if self._uniform_lr is not None:
            self.flat.add_(d[0], alpha=self._uniform_lr)
        else:
            self.flat.addcmul_(d[0], self._lr_col)

    def _step_general(self, grad: Tensor, lr: np.ndarray) -> None:
        p = self.flat
        if self.decoupled:
            if self.u_wd != 0.0:
                p.mul_(_col(1.0 - lr * self.wd, p))
        elif self.u_wd is None:
            grad = grad + p * self.t_wd
        elif self.u_wd != 0.0:
            grad = grad.add(p, alpha=self.u_wd)
        if self.u_beta1 is not None:
            self.exp_avg.lerp_(grad, 1.0 - self.u_beta1)
        else:
            self.exp_avg.lerp_(grad, self.t_omb1.expand_as(grad))
        if self.u_beta2 is not None:
            self.exp_avg_sq.mul_(self.u_beta2).addcmul_(grad, grad, value=1.0 - self.u_beta2)
        else:
            self.exp_avg_sq.mul_(self.t_beta2).add_(grad * self.t_omb2 * grad)
        t = float(self.t)
        step_size = lr / (1.0 - self.beta1**t)
        bc2_sqrt = (1.0 - self.beta2**t) ** 0.5
        denom = self.exp_avg_sq.sqrt()
        if np.all(bc2_sqrt == bc2_sqrt[0]):
            denom.div_(float(bc2_sqrt[0]))
        else:
            denom.div_(_col(bc2_sqrt, p))
        denom.add_(self.u_eps if self.u_eps is not None else self.t_eps)
        # addcdiv computes param + value * exp_avg / denom, left to right.
        if np.all(step_size == step_size[0]):
            p.addcdiv_(self.exp_avg, denom, value=-float(step_size[0]))
        else:
            p.add_((self.exp_avg * _col(-step_size, p)).div_(denom))


class FusedSGD:
    """SGD with per-member momentum and L2 weight decay, as ``torch.optim.SGD`` per member.

    Follows ``torch.optim.sgd._single_tensor_sgd`` with dampening 0: the
    momentum buffer starts as the first gradient, then ``buf = m buf + g``;
    Nesterov uses ``g + m buf``; ``param -= lr * g``.
    """

    def __init__(
        self, flat: Tensor, momentum: np.ndarray, weight_decay: np.ndarray, nesterov: bool
    ) -> None:
        self.flat = flat
        self.momentum = np.asarray(momentum, dtype=np.float64)
        self.wd = np.asarray(weight_decay, dtype=np.float64)
        self.nesterov = nesterov
        self.buf: Tensor | None = None
        self._prepare()

    def _prepare(self) -> None:
        self.u_m, self.u_wd = _uniform(self.momentum), _uniform(self.wd)
        self.t_m = _col(self.momentum, self.flat)
        self.t_wd = _col(self.wd, self.flat)

    def snapshot(self) -> Tensor | None:
        """The momentum buffer, as a copy (None before the first step)."""
        return None if self.buf is None else self.buf.clone()

    def restore(self, snap: Tensor | None) -> None:
        """Back to the state of :meth:`snapshot`."""
        self.buf = None if snap is None else snap.clone()

    def select(self, rows: Tensor, flat: Tensor) -> None:
        """Keep only members ``rows``; ``flat`` is their new buffer."""
        idx = rows.numpy()
        self.flat = flat
        if self.buf is not None:
            self.buf = self.buf[rows]
        self.momentum, self.wd = self.momentum[idx], self.wd[idx]
        self._prepare()

    def step(self, grad: Tensor, lr: np.ndarray) -> None:
        """One update of every member in place; ``lr`` is float64 ``(K,)``."""
        p = self.flat
        if self.u_wd is None:
            grad = grad + p * self.t_wd
        elif self.u_wd != 0.0:
            grad = grad.add(p, alpha=self.u_wd)
        if self.u_m != 0.0:
            if self.buf is None:
                self.buf = grad.clone()
            elif self.u_m is not None:
                self.buf.mul_(self.u_m).add_(grad)
            else:
                self.buf.mul_(self.t_m).add_(grad)
            if self.nesterov:
                grad = grad.add(self.buf, alpha=self.u_m) if self.u_m is not None else (
                    grad + self.buf * self.t_m
                )
            else:
                grad = self.buf
        if np.all(lr == lr[0]):
            p.add_(grad, alpha=-float(lr[0]))
        else:
            p.add_(grad * _col(-lr, p))
