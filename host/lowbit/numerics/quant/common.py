"""Helpers the quantizers share: exact powers of two, grid rounding, MLS group views and scales."""
from __future__ import annotations

from typing import Optional

import torch


FLT_MAX = 3.4028234663852886e38


def pow2(k: torch.Tensor) -> torch.Tensor:
    """2^k as fp32 for integer k in [-126, 127], built from the bits (exact everywhere)."""
    return ((k.to(torch.int32) + 127) << 23).view(torch.float32)


def float_exponent(v: torch.Tensor) -> torch.Tensor:
    """floor(log2 v) for normal fp32 v >= 0; -127 for zero and subnormals."""
    return ((v.view(torch.int32) >> 23) & 0xFF) - 127


def round_grid(y: torch.Tensor, rounding: str, rbits: Optional[torch.Tensor]) -> torch.Tensor:
    """Round y >= 0 (fp32, < 2^24) to an integer: half to even, or floor(y + r24 / 2^24)."""
    if rounding == "nearest":
        return torch.round(y).to(torch.int32)
    whole = torch.floor(y)
    frac24 = ((y - whole) * float(1 << 24)).to(torch.int32)
    up = (frac24 + rbits) >> 24
    return whole.to(torch.int32) + up


def group_view(xf: torch.Tensor, block: Optional[int]) -> torch.Tensor:
    """The source as [P, Q, B]: groups are [P|1, Q|1] (4-D: [N, C, HW]; 2-D: [R, nblocks, block])."""
    if xf.dim() == 4:
        n, c, h, w = xf.shape
        return xf.reshape(n, c, h * w)
    rows, length = xf.shape
    nblocks = -(-length // block)
    padded = torch.nn.functional.pad(xf, (0, nblocks * block - length))
    return padded.reshape(rows, nblocks, block)


def ungroup(v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) == 4:
        return v.reshape(shape)
    return v.reshape(shape[0], -1)[:, : shape[1]]


def reduce_groups(gmax: torch.Tensor, group: str) -> torch.Tensor:
    """Per-[P, Q] maxima -> the format's grouping (keepdim)."""
    if group in ("n", "none"):
        gmax = gmax.amax(dim=1, keepdim=True)
    if group in ("c", "none"):
        gmax = gmax.amax(dim=0, keepdim=True)
    return gmax


def group_scale_codes(sgf: torch.Tensor, eg: int, mg: int) -> torch.Tensor:
    """Round group-scale ratios Sr/St in [0, 1] UP to <eg, mg>; returns int16 codes.

    Carry of the fraction to 2 renormalises to the next binade; the exponent is clipped to
    [1 - 2^eg, 0]; a zero ratio gets the smallest scale.
    """
    man, e = torch.frexp(sgf.double())  # sgf = man * 2^e, man in [0.5, 1)
    exp = e.to(torch.int32) - 1
    scaled = man * float(1 << (mg + 1))  # frac * 2^mg with frac = 2 man, exact in float64
    q = scaled.to(torch.int32)
    q = q + (q.to(torch.float64) < scaled).to(torch.int32)  # ceil (torch.ceil on float64 is slow on CPU)
    carry = q == (1 << (mg + 1))
    q = torch.where(carry, torch.full_like(q, 1 << mg), q)
    exp = exp + carry.to(torch.int32)
    low = 1 - (1 << eg)
    floor_it = (exp < low) | (sgf == 0)
    exp = torch.where(floor_it, torch.full_like(exp, low), exp)
    q = torch.where(floor_it, torch.full_like(q, 1 << mg), q)
    return (((-exp) << mg) | (q - (1 << mg))).to(torch.int16)


def group_scale_values(codes: torch.Tensor, mg: int) -> torch.Tensor:
    """fp32 values of group-scale codes, computed as QTensor.group_scale() does."""
    c = codes.to(torch.int32)
    eg_code, mbit = c >> mg, c & ((1 << mg) - 1)
    frac = 1.0 + mbit.to(torch.float32) / (1 << mg)
    return torch.ldexp(frac, -eg_code.to(torch.float32))


def check_finite(x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(
            f"cannot quantize a tensor of shape {tuple(x.shape)} holding {n_nan} NaN and {n_inf} Inf "
            "values; the model diverged (lower the learning rate or check the loss)")


def with_values(qt):
    """The QTensor with its decoded values cached (its own type: this module does not import qtensor,
    which imports the native loader)."""
    return type(qt)(qt.fmt, qt.codes, qt.scale_codes, qt.tensor_scale, qt.dtype, qt.block, values=qt.decode())
