"""Autograd Functions for Alg. 2 of the MLS paper: three low-bit GEMMs per layer.

forward : qW = Q(W), qA = Q(A), Z = conv(qW, qA)
backward: qE = Q(dL/dZ) once; dA = conv_bwd_data(qE, qW); dW = conv_wgrad(qE, qA)
The gradients pass straight through the quantizers (STE); bias is added in fp32 outside.
"""
from __future__ import annotations

import dataclasses

from typing import Optional

import torch
import torch.nn.functional as F

from lowbit.backends.base import ConvGeometry
from lowbit.numerics.formats import MLS, Mogami
from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Op
from lowbit.nn.spec import LayerSpec, pow2_round


def _exact_mogami(spec: LayerSpec, method: str):
    fn = getattr(spec.backend, method, None)
    if fn is None:
        raise ValueError(f"layer {spec.label!r}: backend {spec.backend.name!r} has no exact Mogami backward "
                         f"({method}); use mogami_backward='approx' or the software backend")
    return fn


class QConv2dFunction(torch.autograd.Function):
    """A conv2d with ``groups`` groups: each group is its own GEMM triple on the group's slice of
    the quantized W, A and E (one quantization per tensor; a group keeps the tensor's scales)."""

    @staticmethod
    def forward(ctx, x, weight, spec: LayerSpec, geom: ConvGeometry, groups: int = 1):
        qw, qa = spec.quantize(weight, "W"), spec.quantize(x, "A")
        wbc = None
        if spec.wbc:
            qw, wbc = _weight_bias_correction(spec, weight, qw)
        z = _cat([spec.run("fwd", "conv2d_forward", w, a, geom)
                  for w, a in zip(split_channels(qw, 0, groups), split_channels(qa, 1, groups))], dim=1)
        if wbc is not None:
            z = z + _wbc_term(wbc, _window_sum(qa.dequantize(), weight.shape, geom, groups))
        ctx.spec, ctx.geom, ctx.qw, ctx.qa, ctx.wbc, ctx.groups = spec, geom, qw, qa, wbc, groups
        ctx.input_shape, ctx.weight_shape = x.shape, weight.shape
        return z

    @staticmethod
    def backward(ctx, dz):
        spec, geom, groups = ctx.spec, ctx.geom, ctx.groups
        qe = spec.quantize(dz, "E")
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        in_shape = _group_shape(ctx.input_shape, 1, groups)
        w_shape = _group_shape(ctx.weight_shape, 0, groups)
        parts = [_conv_backward(spec, e, w, a, geom, in_shape, w_shape, need_x, need_w)
                 for e, w, a in zip(split_channels(qe, 1, groups), split_channels(ctx.qw, 0, groups),
                                    split_channels(ctx.qa, 1, groups))]
        dx = _cat([p[0] for p in parts], dim=1) if need_x else None
        dw = _cat([p[1] for p in parts], dim=0) if need_w else None
        if need_x and ctx.wbc is not None:
            dx = dx + _window_sum_input_grad(qe.dequantize(), ctx.wbc, ctx.input_shape, ctx.weight_shape, geom,
                                             groups)
        ctx.qw = ctx.qa = None
        return dx, dw, None, None, None


def _conv_backward(spec, qe, qw, qa, geom, input_shape, weight_shape, need_x, need_w):
    fused = getattr(spec.backend, "conv2d_backward", None)
    if fused is not None and not isinstance(spec.fmt, Mogami) and (need_x or need_w):
        spec.record("bwd_data", int(need_x))
        spec.record("wgrad", int(need_w))
        return fused(qe, qw, qa, geom, need_input=need_x, need_weight=need_w)
    return _conv_backward_unfused(spec, qe, qw, qa, geom, input_shape, weight_shape, need_x, need_w)


def _conv_backward_unfused(spec, qe, qw, qa, geom, input_shape, weight_shape, need_x, need_w):
    exact = isinstance(spec.fmt, Mogami) and spec.mogami_backward == "exact"
    dx = dw = None
    if need_x:
        spec.record("bwd_data")
        if exact:
            dx = _exact_mogami(spec, "mogami_conv2d_backward_data_exact")(qe, qw, qa, geom)
        else:
            dx = spec.backend.conv2d_backward_data(qe, qw, geom, input_shape)
    if need_w:
        spec.record("wgrad")
        if exact:
            dw = _exact_mogami(spec, "mogami_conv2d_weight_grad_exact")(qe, qa, qw, geom)
        else:
            dw = spec.backend.conv2d_weight_grad(qe, qa, geom, weight_shape)
    return dx, dw


class QConvTranspose2dFunction(torch.autograd.Function):
    """conv_transpose2d as the backward-data conv of a conv whose weight is W [Cin, Cout/g, kh, kw]:
    forward Z = bwd_data(Q(A), Q(W)); backward dA = conv(Q(E), Q(W)) (that conv's forward) and
    dW = wgrad(errors Q(A), inputs Q(E)). Three GEMMs in the format, groups as in QConv2dFunction."""

    @staticmethod
    def forward(ctx, x, weight, spec: LayerSpec, geom: ConvGeometry, groups: int, out_shape):
        qw, qa = spec.quantize(weight, "W"), spec.quantize(x, "A")
        group_out = _group_shape(out_shape, 1, groups)
        z = _cat([spec.run("fwd", "conv2d_backward_data", a, w, geom, group_out)
                  for a, w in zip(split_channels(qa, 1, groups), split_channels(qw, 0, groups))], dim=1)
        ctx.spec, ctx.geom, ctx.groups, ctx.qw, ctx.qa, ctx.weight_shape = spec, geom, groups, qw, qa, weight.shape
        return z

    @staticmethod
    def backward(ctx, dz):
        spec, geom, groups = ctx.spec, ctx.geom, ctx.groups
        qe = spec.quantize(dz, "E")
        es, ws, as_ = (split_channels(qe, 1, groups), split_channels(ctx.qw, 0, groups),
                       split_channels(ctx.qa, 1, groups))
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = _cat([spec.run("bwd_data", "conv2d_forward", w, e, geom) for w, e in zip(ws, es)], dim=1)
        if ctx.needs_input_grad[1]:
            w_shape = _group_shape(ctx.weight_shape, 0, groups)
            dw = _cat([spec.run("wgrad", "conv2d_weight_grad", a, e, geom, w_shape) for a, e in zip(as_, es)], dim=0)
        ctx.qw = ctx.qa = None
        return dx, dw, None, None, None, None


def split_channels(q: QTensor, dim: int, groups: int) -> list:
    """``groups`` equal slices of a 4-D QTensor along ``dim`` (0 or 1): codes, values and the MLS
    group scales (their [N|1, C|1] layout) are sliced; the tensor scale is shared."""
    if groups == 1:
        return [q]
    size = q.shape[dim] // groups
    out = []
    for g in range(groups):
        sl = slice(g * size, (g + 1) * size)
        pick = (lambda t: t[sl].contiguous()) if dim == 0 else (lambda t: t[:, sl].contiguous())
        scales = q.scale_codes
        if scales is not None and scales.shape[dim] > 1:
            scales = pick(scales)
        out.append(dataclasses.replace(q, codes=pick(q.codes), scale_codes=scales,
                                       values=None if q.values is None else pick(q.values)))
    return out


def _cat(parts: list, dim: int) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)  # one group: no copy


def _group_shape(shape, dim: int, groups: int) -> torch.Size:
    shape = list(shape)
    shape[dim] //= groups
    return torch.Size(shape)


class QLinearFunction(torch.autograd.Function):
    """x [B, in], weight [out, in]. Each GEMM's operands are grouped along its reduction dim:
    forward along ``in``; backward-data quantizes W^T and E along ``out``; the weight gradient
    quantizes E^T and A^T along the batch. With MLS this quantizes E (and W, A) once per
    grouping; PoT / fp32 have no groups, so their transposes reuse the same codes. The bias
    (or None) is added in place to the forward GEMM's fresh output; its gradient is dz summed
    over rows."""

    @staticmethod
    def forward(ctx, x, weight, bias, spec: LayerSpec):
        qa, qw = spec.quantize(x, "A", block=spec.block), spec.quantize(weight, "W", block=spec.block)
        wbc = None
        if spec.wbc:
            qw, wbc = _weight_bias_correction(spec, weight, qw)
        z = spec.run("fwd", "gemm", qa, qw)
        if wbc is not None:
            z = z + wbc * qa.dequantize().sum(dim=1, keepdim=True)
        if bias is not None:
            z.add_(bias)
        ctx.spec, ctx.qa, ctx.qw, ctx.wbc = spec, qa, qw, wbc
        if isinstance(spec.fmt, MLS):  # the others transpose qa and qw: x need not outlive the forward
            ctx.save_for_backward(x, weight)
        return z

    @staticmethod
    def backward(ctx, dz):
        spec, qa, qw = ctx.spec, ctx.qa, ctx.qw
        grouped = isinstance(spec.fmt, MLS)
        x, weight = ctx.saved_tensors if grouped else (None, None)
        qe = spec.quantize(dz, "E", block=spec.block)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            qwt = spec.quantize(weight.t(), "W", block=spec.block) if grouped else _transpose(qw)
            dx = spec.run("bwd_data", "gemm", qe, qwt, op=Op.BACKWARD_DATA)
            if ctx.wbc is not None:
                dx = dx + (qe.dequantize() * ctx.wbc).sum(dim=1, keepdim=True)
        if ctx.needs_input_grad[1]:
            qet = spec.quantize(dz.t(), "E", block=spec.block) if grouped else _transpose(qe)
            qat = spec.quantize(x.t(), "A", block=spec.block) if grouped else _transpose(qa)
            dw = spec.run("wgrad", "gemm", qet, qat, op=Op.WEIGHT_GRAD)
        ctx.qa = ctx.qw = None
        return dx, dw, _bias_grad(ctx, dz), None


def _bias_grad(ctx, dz: torch.Tensor) -> Optional[torch.Tensor]:
    return dz.sum(0) if ctx.needs_input_grad[2] else None


def _transpose(q: QTensor) -> QTensor:
    """Transpose of an ungrouped (PoT / fp32 / Mogami) 2-D QTensor: same codes, same scale."""
    values = None if q.values is None else q.values.t()
    return QTensor(q.fmt, q.codes.t(), None, q.tensor_scale, q.dtype, q.block, values)


# ---- Mogami linear layers run as 1x1 convolutions of the batch laid out as pixels -------

class QLinearMogamiFunction(torch.autograd.Function):
    """Z^T = conv1x1(W, A^T as [1, in, B, 1]): every product an integer add, both backwards too."""

    @staticmethod
    def forward(ctx, x, weight, bias, spec: LayerSpec):
        x4 = x.t().reshape(1, x.shape[1], x.shape[0], 1)
        w4 = weight.reshape(*weight.shape, 1, 1)
        z4 = QConv2dFunction.forward(ctx, x4, w4, spec, ConvGeometry())
        ctx.batch = x.shape[0]
        z = z4.reshape(weight.shape[0], x.shape[0]).t()
        return z if bias is None else z.add_(bias)

    @staticmethod
    def backward(ctx, dz):
        dz4 = dz.t().reshape(1, dz.shape[1], dz.shape[0], 1)
        dx4, dw4 = QConv2dFunction.backward(ctx, dz4)[:2]
        dx = None if dx4 is None else dx4.reshape(dx4.shape[1], ctx.batch).t()
        dw = None if dw4 is None else dw4.reshape(dw4.shape[:2])
        return dx, dw, _bias_grad(ctx, dz), None


@torch.compiler.disable
def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], spec: LayerSpec) -> torch.Tensor:
    """F.linear(x, weight, bias) over x's last dim with its three GEMMs in spec's format."""
    fn = QLinearMogamiFunction if isinstance(spec.fmt, Mogami) else QLinearFunction
    z = fn.apply(x.reshape(-1, x.shape[-1]), weight, bias, spec)
    return z.reshape(*x.shape[:-1], weight.shape[0])


# ---- ALS-POTQ Weight Bias Correction (formula in docs/layers.md) -------------------------

def _weight_bias_correction(spec: LayerSpec, weight: torch.Tensor, qw: QTensor):
    """delta_c = mean(W_c) - mean(Q(W_c)) per output channel, rounded to a power of two. The layer
    adds delta_c * (sum of the inputs under the window): the coherent part of the weight
    quantization error (it meets every input of the window with one sign) is removed with one
    shift per output element and an additions-only window sum shared by all channels."""
    w = weight.detach()
    delta = w.reshape(w.shape[0], -1).mean(dim=1) - qw.dequantize().reshape(w.shape[0], -1).float().mean(dim=1)
    return qw, pow2_round(delta)


def _window_sum(a: torch.Tensor, weight_shape, geom: ConvGeometry, groups: int = 1) -> torch.Tensor:
    """[N, groups, Ho, Wo]: each group's input summed under the window (additions only)."""
    ones = torch.ones((groups,) + tuple(weight_shape[1:]), dtype=a.dtype, device=a.device)
    return F.conv2d(a, ones, None, geom.stride, geom.padding, geom.dilation, groups)


def _wbc_term(mu: torch.Tensor, window_sums: torch.Tensor) -> torch.Tensor:
    """mu_c times its group's window sum, per output channel c."""
    n, groups, ho, wo = window_sums.shape
    return (mu.view(1, groups, -1, 1, 1) * window_sums.unsqueeze(2)).reshape(n, -1, ho, wo)


def _window_sum_input_grad(e, mu, input_shape, weight_shape, geom: ConvGeometry, groups: int = 1) -> torch.Tensor:
    n, co, ho, wo = e.shape
    e_sum = (e * mu.view(1, -1, 1, 1)).view(n, groups, co // groups, ho, wo).sum(dim=2)
    ones = torch.ones((groups,) + tuple(weight_shape[1:]), dtype=e.dtype, device=e.device)
    return torch.nn.grad.conv2d_input(tuple(input_shape), ones, e_sum, geom.stride, geom.padding, geom.dilation,
                                      groups)
