"""Default lowering of the three training convolutions to ``Backend.gemm`` (im2col on codes).

Every conv becomes ``C = gemm(a, b)`` with a [M, K], b [N, K] grouped along K (docs/layers.md):

=================  ==============================  =================  ==========================
conv               a (rows, groups along K)        b (rows)           block (intra-group sum)
=================  ==============================  =================  ==========================
forward            W  [Co, (ci,i,j)], groups ci    A cols [(n,x,y)]   kh*kw
backward data      W' [Ci, (co,i,j)], groups co    E cols [(n,h,w)]   kh*kw   (W' = W^T flipped)
weight gradient    E  [Co, (n,x,y)],  groups n     A cols [(ci,i,j)]  Ho*Wo
=================  ==============================  =================  ==========================

im2col moves integer codes only; padding (and the zeros between the strided error positions of
the backward-data conv) is code 0, an exact zero in every format. Group scales are expanded per
row and per block from the 4-D [N|1, C|1] layout.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from lowbit.numerics.formats import MLS
from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Op
from lowbit.backends.geometry import ConvGeometry


def _scale_grid(q: QTensor) -> Optional[torch.Tensor]:
    """[dim0, dim1] scale codes of a 4-D MLS QTensor (broadcast from [N|1, C|1])."""
    if not isinstance(q.fmt, MLS):
        return None
    return q.scale_codes.expand(q.shape[0], q.shape[1]).to(torch.int16)


def _matrix(like: QTensor, codes: torch.Tensor, scales: Optional[torch.Tensor], block: int) -> QTensor:
    mls = isinstance(like.fmt, MLS)
    return QTensor(like.fmt, codes.contiguous(), scales.contiguous() if mls else None, like.tensor_scale,
                   like.dtype, block if mls else None)


def _patches(codes: torch.Tensor, kernel: Tuple[int, int], dilation, padding, stride) -> torch.Tensor:
    """Strided view [N, C, Ho, Wo, kh, kw] of the zero-padded integer codes (padding = code 0);
    the callers permute and reshape it into their GEMM operand with a single copy."""
    dilation, padding, stride = (_pair(v) for v in (dilation, padding, stride))
    x = F.pad(codes, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else codes
    span = [dilation[i] * (kernel[i] - 1) + 1 for i in (0, 1)]
    return x.unfold(2, span[0], stride[0]).unfold(3, span[1], stride[1])[..., :: dilation[0], :: dilation[1]]


def _rows_by_position(p: torch.Tensor) -> torch.Tensor:
    """[N, C, Ho, Wo, kh, kw] -> [(n, x, y), (c, i, j)]."""
    n, c, ho, wo, kh, kw = p.shape
    return p.permute(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_forward(backend, qw: QTensor, qa: QTensor, geom: ConvGeometry) -> torch.Tensor:
    co, ci, kh, kw = qw.shape
    n, _, h, w = qa.shape
    ho, wo = geom.output_hw((h, w), (kh, kw))
    b_codes = _rows_by_position(_patches(qa.codes, (kh, kw), geom.dilation, geom.padding, geom.stride))
    sa, sw = _scale_grid(qa), _scale_grid(qw)
    b_scales = sa.repeat_interleave(ho * wo, dim=0) if sa is not None else None
    a = _matrix(qw, qw.codes.reshape(co, ci * kh * kw), sw, kh * kw)
    b = _matrix(qa, b_codes, b_scales, kh * kw)
    c = backend.gemm(a, b, op=Op.FORWARD)  # [Co, N*Ho*Wo]
    return c.reshape(co, n, ho, wo).permute(1, 0, 2, 3).contiguous()


def _upsample_pad(codes: torch.Tensor, size_in: Tuple[int, int], kernel, geom: ConvGeometry) -> torch.Tensor:
    """Errors with (stride-1) zero codes between positions, padded so that a stride-1 conv with the
    flipped kernel yields the input's spatial size (negative padding crops)."""
    n, c, ho, wo = codes.shape
    s, d, p = geom.stride, geom.dilation, geom.padding
    if tuple(s) == (1, 1):
        up = codes
    else:
        up = torch.zeros((n, c, (ho - 1) * s[0] + 1, (wo - 1) * s[1] + 1), dtype=codes.dtype, device=codes.device)
        up[:, :, :: s[0], :: s[1]] = codes
    pads = []
    for axis in (1, 0):  # F.pad order: last dim first
        before = d[axis] * (kernel[axis] - 1) - p[axis]
        after = size_in[axis] - up.shape[2 + axis] - before + d[axis] * (kernel[axis] - 1)
        pads += [before, after]
    return F.pad(up, pads) if any(pads) else up


def conv2d_backward_data(backend, qe: QTensor, qw: QTensor, geom: ConvGeometry,
                         input_shape: torch.Size) -> torch.Tensor:
    n, ci, h, w = input_shape
    co, _, kh, kw = qw.shape
    e_up = _upsample_pad(qe.codes, (h, w), (kh, kw), geom)
    b_codes = _rows_by_position(_patches(e_up, (kh, kw), geom.dilation, 0, 1))  # [N*H*W, Co*kk]
    w_flip = qw.codes.permute(1, 0, 2, 3).flip(2, 3).reshape(ci, co * kh * kw)
    se, sw = _scale_grid(qe), _scale_grid(qw)
    a = _matrix(qw, w_flip, sw.t() if sw is not None else None, kh * kw)
    b = _matrix(qe, b_codes, se.repeat_interleave(h * w, dim=0) if se is not None else None, kh * kw)
    c = backend.gemm(a, b, op=Op.BACKWARD_DATA)  # [Ci, N*H*W]
    return c.reshape(ci, n, h, w).permute(1, 0, 2, 3).contiguous()


def conv2d_weight_grad(backend, qe: QTensor, qa: QTensor, geom: ConvGeometry,
                       weight_shape: torch.Size) -> torch.Tensor:
    co, ci, kh, kw = weight_shape
    n, _, ho, wo = qe.shape
    p = _patches(qa.codes, (kh, kw), geom.dilation, geom.padding, geom.stride)  # [N, Ci, Ho, Wo, kh, kw]
    if tuple(p.shape[2:4]) != (ho, wo):
        raise ValueError(f"weight gradient: errors are {ho}x{wo} but the activations give "
                         f"{p.shape[2]}x{p.shape[3]} positions for geometry {geom}; check stride/padding/dilation")
    b_codes = p.permute(1, 4, 5, 0, 2, 3).reshape(ci * kh * kw, n * ho * wo)
    a_codes = qe.codes.permute(1, 0, 2, 3).reshape(co, n * ho * wo)
    se, sa = _scale_grid(qe), _scale_grid(qa)
    a = _matrix(qe, a_codes, se.t() if se is not None else None, ho * wo)
    b = _matrix(qa, b_codes, sa.t().repeat_interleave(kh * kw, dim=0) if sa is not None else None, ho * wo)
    c = backend.gemm(a, b, op=Op.WEIGHT_GRAD)  # [Co, Ci*kk]
    return c.reshape(weight_shape)
