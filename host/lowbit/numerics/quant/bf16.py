"""Mogami operands and fp32: bit patterns as they are, or rounded to bf16."""
from __future__ import annotations

from typing import Optional

import torch

from lowbit.numerics.formats import Mogami
from lowbit.numerics.qtensor import QTensor
from lowbit.numerics.quant.rng import M32, random_bits
from lowbit.numerics.quant.common import with_values
from lowbit.numerics.quant.native import empty_buffer, library, ptr, raise_nonfinite


BF16_MAX_BITS = 0x7F7F


def round_to_bf16_bits(xf: torch.Tensor, rounding: str, rbits: Optional[torch.Tensor]) -> torch.Tensor:
    """fp32 -> bf16 bit patterns (int32 holding 16 bits), saturating at the largest finite bf16.
    ``rbits``: 16 random bits per element (stochastic)."""
    bits = xf.view(torch.int32).to(torch.int64) & M32
    sign, mag = bits & 0x80000000, bits & 0x7FFFFFFF
    if rounding == "nearest":
        mag = mag + 0x7FFF + ((mag >> 16) & 1)
    else:
        mag = mag + rbits
    top = (mag >> 16).clamp(max=BF16_MAX_BITS)
    return ((sign >> 16) | top).to(torch.int32)


def _as_int16(v: torch.Tensor) -> torch.Tensor:
    """16-bit patterns held in a wider int tensor -> int16 (two's complement), no overflow."""
    return torch.where(v >= 0x8000, v - 0x10000, v).to(torch.int16)


def bits_qtensor(fmt, xf: torch.Tensor, dtype: torch.dtype) -> QTensor:
    one = torch.ones((), dtype=torch.float32, device=xf.device)
    return with_values(QTensor(fmt, xf.view(torch.int32).clone(), None, one, dtype, None))


def mogami_quantize(x: torch.Tensor, fmt: Mogami, rounding: str, seed: int, native: bool) -> QTensor:
    xf = x.detach().float().contiguous()
    if fmt.dtype == "fp32":
        return bits_qtensor(fmt, xf, x.dtype)
    if native:
        return _bf16_native(x, xf, fmt, rounding, seed)
    rbits = random_bits(xf.numel(), seed, xf.device, keep=16).view(xf.shape) if rounding == "stochastic" else None
    codes = _as_int16(round_to_bf16_bits(xf, rounding, rbits))
    one = torch.ones((), dtype=torch.float32, device=xf.device)
    return with_values(QTensor(fmt, codes, None, one, x.dtype, None))


def _bf16_native(x: torch.Tensor, xf: torch.Tensor, fmt: Mogami, rounding: str, seed: int) -> QTensor:
    ffi, lib = library()
    codes = empty_buffer(xf.shape, torch.int16)
    values = empty_buffer(xf.shape, torch.float32)
    if lib.lowbit_bf16_round(ptr(ffi, xf, "float *"), xf.numel(), int(rounding == "stochastic"), seed,
                             ptr(ffi, codes, "int16_t *"), ptr(ffi, values, "float *")):
        raise_nonfinite(x)
    one = torch.ones((), dtype=torch.float32)
    return QTensor(fmt, codes, None, one, x.dtype, None, values=values.to(x.dtype))
