"""Conv2d -> ReLU -> MaxPool2d(2) of K members as batched matmuls, with a hand-written backward.

The block every CNN of the seed is made of. Run by
:class:`~epochlab.sweeps.fused_layers.StackedNet` in place of the three
layers' separate stacked forms when they follow each other (see
:func:`conv_relu_pool`), and without autograd by
:class:`~epochlab.sweeps.fused_layers.HandNet` (see :class:`HandBlock`).

How: one gather builds every member's image patches (im2col) in
*window-major* order, the four positions of each 2x2 pooling window in four
row blocks; one ``baddbmm`` computes every member's convolution; the pool
is the elementwise maximum of the four blocks (no strided window reads)
and the ReLU is applied after it (``relu(max(z)) == max(relu(z))``, on a
quarter of the values). The backward routes each pooled gradient to the
first maximum of its window, as ``max_pool2d`` does on ties, then two
``bmm`` calls give the weight and input gradients.

On the 2-core CPU this replaced a grouped convolution, a channels-last
max-pool and autograd's backward through them, which cost more than
training the members one by one (``docs/notes/fused-cnn.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from epochlab.sweeps.fused_ops import _per_member, _side_by_side

__all__ = ["HandBlock", "conv_relu_pool", "fusable_block"]


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def fusable_block(conv: nn.Module, act: nn.Module, pool: nn.Module) -> bool:
    """True when ``conv, act, pool`` is a Conv2d, ReLU and 2x2 max-pool this block computes.

    Example:
        >>> fusable_block(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
        True
        >>> fusable_block(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(3))
        False
    """
    if type(conv) is not nn.Conv2d or type(act) is not nn.ReLU or type(pool) is not nn.MaxPool2d:
        return False
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return (conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and _pair(pool.kernel_size) == (2, 2) and _pair(stride) == (2, 2)
            and _pair(pool.padding) == (0, 0) and _pair(pool.dilation) == (1, 1)
            and not pool.ceil_mode and not pool.return_indices)


class _Geometry:
    """The gather index of one input shape: padded pixel of every (window, cell, patch) entry.

    With a bias, each patch row ends with a constant 1 (the index one past the
    padded image, where the forward appends it): the bias is then one more row of
    the weight matrix, and no pass over the convolution's output adds it.
    """

    def __init__(self, conv: nn.Conv2d, c: int, h: int, w: int) -> None:
        (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
        (ph, pw), (dh, dw) = conv.padding, conv.dilation
        self.pad = (pw, pw, ph, ph)
        hp_in, wp_in = h + 2 * ph, w + 2 * pw
        ho = (hp_in - dh * (kh - 1) - 1) // sh + 1
        wo = (wp_in - dw * (kw - 1) - 1) // sw + 1
        self.out_hw = (ho // 2, wo // 2)
        if min(self.out_hw) < 1:
            raise ValueError(f"a {h}x{w} input leaves no 2x2 pooling window after the convolution")
        dy, dx, py, px, ch, ky, kx = torch.meshgrid(
            torch.arange(2), torch.arange(2), torch.arange(ho // 2), torch.arange(wo // 2),
            torch.arange(c), torch.arange(kh), torch.arange(kw), indexing="ij")
        iy = (2 * py + dy) * sh + ky * dh
        ix = (2 * px + dx) * sw + kx * dw
        self.cells = (ho // 2) * (wo // 2)
        self.patch = c * kh * kw
        self.padded = (c, hp_in, wp_in)
        self.pixels = c * hp_in * wp_in
        index = (ch * (hp_in * wp_in) + iy * wp_in + ix).reshape(4 * self.cells, self.patch)
        self.bias = conv.bias is not None
        if self.bias:
            index = torch.cat([index, torch.full((4 * self.cells, 1), self.pixels)], dim=1)
        self.rows = index.shape[1]  # patch entries, plus the constant 1 with a bias
        self.index = index.reshape(-1)


class _ConvReluPool(torch.autograd.Function):
    """``(K, B, C, H, W)`` -> ``(K, B * cells, O)``: every member's conv, ReLU and 2x2 max-pool."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, geo: _Geometry) -> Tensor:
        k, b = x.shape[0], x.shape[1]
        o, cells, rows = weight.shape[1], geo.cells, geo.rows
        if any(geo.pad):
            x = F.pad(x.reshape(k * b, *x.shape[2:]), geo.pad)
        xf = x.reshape(k, b, geo.pixels)
        w = weight.reshape(k, o, geo.patch)
        if bias is not None:
            xf = torch.cat([xf, xf.new_ones(k, b, 1)], dim=2)
            w = torch.cat([w, bias.unsqueeze(2)], dim=2)
        cols = (xf[:, :, geo.index].view(k, b, 4, cells * rows)
                .transpose(1, 2).reshape(k, 4 * b * cells, rows))
        # A contiguous (rows, O) right operand: the skinny matmul ran 1.7x faster so.
        z = torch.bmm(cols, w.transpose(1, 2).contiguous()).view(k, 4, b * cells, o)
        pooled = torch.maximum(torch.maximum(z[:, 0], z[:, 1]), torch.maximum(z[:, 2], z[:, 3]))
        ctx.save_for_backward(cols, z, pooled, w)
        ctx.geo, ctx.batch, ctx.weight_shape = geo, b, weight.shape
        return pooled.clamp_min(0.0)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        cols, z, pooled, w = ctx.saved_tensors
        geo, b = ctx.geo, ctx.batch
        k, o = w.shape[0], w.shape[1]
        # ReLU's backward (where the result is > 0), with autograd's own kernel. Masks are
        # float tensors: on the CPU, ops producing or reading bool tensors ran 5x slower.
        g = torch.ops.aten.threshold_backward(grad_out.contiguous(), pooled, 0.0)
        # Each window's gradient goes to its first maximum in scan order, as max_pool2d's.
        dz = torch.empty_like(z)
        hit = torch.empty_like(pooled)
        rest = g
        for i in range(4):
            torch.eq(z[:, i], pooled, out=hit)
            torch.mul(rest, hit, out=dz[:, i])
            if i < 3:
                rest = rest - dz[:, i]
        dz = dz.view(k, -1, o)
        grad_wb = torch.bmm(cols.transpose(1, 2), dz).transpose(1, 2)  # (K, O, rows)
        grad_w = grad_wb[:, :, :geo.patch].reshape(ctx.weight_shape)
        grad_b = grad_wb[:, :, geo.patch] if geo.bias else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            dcols = torch.bmm(dz, w).view(k, 4, b, -1).transpose(1, 2).reshape(k, b, -1)
            c, hp, wp = geo.padded
            grad_x = dcols.new_zeros(k, b, geo.pixels + geo.bias).index_add_(2, geo.index, dcols)
            grad_x = grad_x[:, :, :geo.pixels].reshape(k, b, c, hp, wp)
            (pl, pr, pt, pb) = geo.pad
            if any(geo.pad):
                grad_x = grad_x[..., pt:hp - pb, pl:wp - pr]
        return grad_x, grad_w, grad_b, None


class _Saved:
    """What :class:`_ConvReluPool`'s forward keeps, for its backward without autograd."""

    def __init__(self, needs_input_grad: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs_input_grad
        self.saved_tensors: tuple[Tensor, ...] = ()

    def save_for_backward(self, *tensors: Tensor) -> None:
        self.saved_tensors = tensors


class HandBlock:
    """The block on the hand-written path: forward and backward called directly, no autograd.

    :class:`~epochlab.sweeps.fused_layers.HandNet` runs CNNs made of these
    blocks, a Flatten and a Linear stack this way: autograd's graph over the
    stacked layers cost a fifth of cnn_small's fused step.

    Example:
        >>> block = HandBlock(nn.Conv2d(1, 2, 3))
        >>> w, b = torch.zeros(3, 2, 1, 3, 3), torch.zeros(3, 2)
        >>> out, saved = block.forward(torch.ones(3, 4, 1, 8, 8), w, b, input_grad=False)
        >>> out.shape, [g is None for g in block.backward(saved, torch.ones_like(out))]
        (torch.Size([3, 4, 2, 3, 3]), [True, False, False])
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        self.conv = conv
        self.shapes: dict[tuple[int, ...], _Geometry] = {}

    def geometry(self, x: Tensor) -> _Geometry:
        """The gather index for inputs shaped like ``x`` ``(K, B, C, H, W)`` (made once)."""
        key = tuple(x.shape[2:])
        geo = self.shapes.get(key)
        if geo is None:
            geo = self.shapes[key] = _Geometry(self.conv, *key)
        return geo

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None,
                input_grad: bool) -> tuple[Tensor, _Saved]:
        """``(K, B, O, H', W')`` (a view) and what the backward needs."""
        saved = _Saved((input_grad, True, bias is not None, False))
        geo = self.geometry(x)
        return _as_images(_ConvReluPool.forward(saved, x, weight, bias, geo), x, geo), saved

    def backward(self, saved: _Saved,
                 grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """Gradients of the input (None unless asked for), the weight and the bias."""
        k, o = grad.shape[0], grad.shape[2]
        grad_x, grad_w, grad_b, _ = _ConvReluPool.backward(
            saved, grad.permute(0, 1, 3, 4, 2).reshape(k, -1, o))
        return grad_x, grad_w, grad_b

    def evaluate(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The block without gradients (validation, test metrics): one grouped convolution.

        For a pass over all validation rows the im2col matmul's short reduction (9
        values a patch for one input channel) and its patch gather cost more than
        oneDNN's grouped channels-last convolution (360 rows of 8x8 digits, 8 members:
        1.2 ms against 0.45 ms); for training batches both take about the same.
        """
        conv, k = self.conv, x.shape[0]
        cl = torch.channels_last
        z = F.conv2d(_side_by_side(x).contiguous(memory_format=cl),
                     weight.reshape(k * weight.shape[1], *weight.shape[2:]).contiguous(
                         memory_format=cl),
                     None if bias is None else bias.reshape(-1), conv.stride, conv.padding,
                     conv.dilation, k)
        return _per_member(F.max_pool2d(z, 2).clamp_min_(0.0), k)  # relu(max(z)) == max(relu(z))


def _as_images(out: Tensor, x: Tensor, geo: _Geometry) -> Tensor:
    """The block's ``(K, B*cells, O)`` output seen as ``(K, B, O, H', W')`` (a view; the next
    layer's reshape copies it)."""
    return out.view(x.shape[0], x.shape[1], *geo.out_hw, -1).permute(0, 1, 4, 2, 3)


def conv_relu_pool(conv: nn.Conv2d):  # noqa: ANN201 - a StackedForward
    """The stacked form of ``Conv2d -> ReLU -> MaxPool2d(2)`` (see :func:`fusable_block`).

    Takes ``x`` of shape ``(K, B, C, H, W)`` and the conv's parameters as
    ``(K, *shape)`` views; returns ``(K, B, O, H', W')``, member by member
    what the three layers compute.

    Example:
        >>> conv = nn.Conv2d(1, 2, 3)
        >>> run = conv_relu_pool(conv)
        >>> p = {"weight": conv.weight.detach()[None], "bias": conv.bias.detach()[None]}
        >>> run(torch.zeros(1, 5, 1, 8, 8), p, None).shape
        torch.Size([1, 5, 2, 3, 3])
    """
    block = HandBlock(conv)  # its gather indices and its pass without gradients

    def run(x: Tensor, p: Mapping[str, Tensor], step: Any) -> Tensor:
        if step is not None and not step.training:
            return block.evaluate(x, p["weight"], p.get("bias"))
        geo = block.geometry(x)
        return _as_images(_ConvReluPool.apply(x, p["weight"], p.get("bias"), geo), x, geo)

    return run
