"""PoT (power of two, ALS-POTQ): a power-of-two layer scale and 4-bit exponent codes."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np
import torch

from lowbit.numerics.formats import PoT
from lowbit.numerics.qtensor import QTensor
from lowbit.numerics.quant.rng import INT32_COUNTERS, hash32_int32, keys_tensor, random_bits
from lowbit.numerics.quant.common import float_exponent, pow2, with_values
from lowbit.numerics.quant.native import contiguous, empty_buffer, library, raise_nonfinite, storage_order
from lowbit.numerics.quant.accel import maybe_compiled, run_triton


POT_SCALE_RANGE = (-126, 127)  # 2^s stays a normal fp32


def pot_scale_exponent(absmax: float, clip_ratio: float) -> int:
    """s = ceil(log2(clip_ratio * max|x|)) (fp32 product), clipped to POT_SCALE_RANGE."""
    m = float(np.float32(absmax) * np.float32(clip_ratio))
    if m == 0.0:
        return POT_SCALE_RANGE[0]
    man, e = math.frexp(m)
    s = e - 1 if man == 0.5 else e
    return max(POT_SCALE_RANGE[0], min(POT_SCALE_RANGE[1], s))


def pot_element_codes(z: torch.Tensor, negative: torch.Tensor, max_code: int, rounding: str,
                      rbits: Optional[torch.Tensor]) -> torch.Tensor:
    """Codes for z = |x| / 2^s (fp32): 2^k -> k + max_code, 0 -> 0, linear-domain rounding."""
    lowest = 1 - max_code  # exponent of the smallest nonzero magnitude, relative to 2^s
    k = float_exponent(z).clamp(lowest - 1, 0)
    # p: position between 2^k and 2^(k+1) (between 0 and 2^lowest below the grid), in [0, 1)
    below = k < lowest
    p = torch.where(below, z * pow2(torch.full_like(k, -lowest)), z * pow2(-k) - 1.0)
    if rounding == "nearest":
        up = p >= 0.5
    else:
        up = rbits.to(torch.float32) < p * float(1 << 24)
    code = torch.where(below, torch.zeros_like(k), k + max_code) + up.to(torch.int32)
    code = torch.where(k >= 0, torch.full_like(code, max_code), code)
    sign = (negative & (code > 0)).to(torch.int32)
    return ((sign << 4) | code).to(torch.int16)


def pot_torch(x: torch.Tensor, fmt: PoT, rounding: str, seed: int, clip_ratio: float) -> QTensor:
    xf = x.detach().float().contiguous()
    s = pot_scale_exponent(float(xf.abs().amax()), clip_ratio)
    stochastic = rounding == "stochastic"
    scale = pow2(torch.tensor(s)).to(xf.device)
    if stochastic and xf.numel() > INT32_COUNTERS:
        z = xf.abs() * 2.0 ** (-s // 2) * 2.0 ** (-s - (-s // 2))
        rbits = random_bits(xf.numel(), seed, xf.device).view(xf.shape)
        codes = pot_element_codes(z, xf < 0, fmt.max_code, rounding, rbits)
        return with_values(QTensor(fmt, codes, None, scale, x.dtype, None))

    def torch_elements(fn):
        codes, values = fn(xf.reshape(-1), keys_tensor(seed, xf.device), float(2.0 ** (-s // 2)),
                           float(2.0 ** (-s - (-s // 2))), float(2.0 ** s), fmt.max_code, stochastic)
        return codes.view(xf.shape), values.view(xf.shape)

    codes, values = (run_triton("pot", (fmt, stochastic), xf,
                                 lambda kernels: kernels.pot_elements(xf, seed, s, fmt, stochastic),
                                 lambda: torch_elements(pot_elements))
                     or torch_elements(maybe_compiled("pot", pot_elements, xf.device)))
    return QTensor(fmt, codes, None, scale, x.dtype, None,
                   values=values if x.dtype == torch.float32 else values.to(x.dtype))


def pot_elements(flat, keys, step1: float, step2: float, scale: float, max_code: int, stochastic: bool):
    """Codes and values of PoT elements; z = |x| 2^-s in two exact power-of-two steps."""
    z = flat.abs() * step1 * step2
    rbits = None
    if stochastic:
        idx = torch.arange(flat.numel(), device=flat.device, dtype=torch.int32)
        rbits = (hash32_int32(hash32_int32(idx ^ keys[0]) ^ keys[1]) >> 8) & 0xFFFFFF
    codes = pot_element_codes(z, flat < 0, max_code, "stochastic" if stochastic else "nearest", rbits)
    c = codes.to(torch.int32)
    e = c & max_code
    mag = torch.where(e == 0, torch.zeros_like(e, dtype=torch.float32), pow2(e - max_code))
    sign = 1.0 - 2.0 * ((c >> 4) & 1).to(torch.float32)
    return codes, (sign * mag) * scale


def pot_native(x: torch.Tensor, fmt: PoT, rounding: str, seed: int, clip_ratio: float) -> QTensor:
    """One native call: max |x|, the scale exponent (``pot_scale_exponent``'s rule) and the elements.
    A permuted view rounded to nearest is quantized in memory order and returned as the same view (each
    element's code depends on it and the maximum alone; stochastic bits follow the logical order)."""
    order = None if x.is_contiguous() or rounding != "nearest" else storage_order(x)
    if order is not None:
        q = pot_native(x.permute(order), fmt, rounding, seed, clip_ratio)
        back = sorted(range(x.dim()), key=order.__getitem__)
        return dataclasses.replace(q, codes=q.codes.permute(back), values=q.values.permute(back))
    ffi, lib = library()
    xf = contiguous(x if x.dtype == torch.float32 else x.detach().to(torch.float32))
    codes = empty_buffer(xf.shape, torch.int16)
    values = empty_buffer(xf.shape, torch.float32)
    s = ffi.new("int32_t *")
    if lib.lowbit_pot(ffi.cast("float *", xf.data_ptr()), xf.numel(), clip_ratio, fmt.max_code,
                      int(rounding == "stochastic"), seed, s, ffi.cast("int16_t *", codes.data_ptr()),
                      ffi.cast("float *", values.data_ptr())):
        raise_nonfinite(x)
    scale = torch.tensor(2.0 ** s[0], dtype=torch.float32)  # 2^s, s in [-126, 127]: exact
    return QTensor(fmt, codes, None, scale, x.dtype, None,
                   values=values if x.dtype == torch.float32 else values.to(x.dtype))
