"""The numpy reference: the definition of every quantizer and of the Mogami product.

Written independently of ``lowbit.numerics.quant`` (which is torch, vectorised for speed) and of the
native kernel: groups are found by explicit group ids, exponents with ``np.frexp``, group
scales one at a time with ``math``. The torch and native paths must equal this with ``==`` on
codes and values. Inputs are fp32 numpy arrays; randomness is the counter-based generator below
so every implementation draws the same numbers from the same seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from lowbit.numerics.formats import MLS, Mogami, PoT, parse

U32 = np.uint32


# ---------------------------------------------------------------- random numbers


def hash32(x: np.ndarray) -> np.ndarray:
    """lowbias32 (C. Wellons): a 32-bit integer hash with low bias, on uint32 (wrapping)."""
    x = x.astype(U32)
    with np.errstate(over="ignore"):
        x ^= x >> U32(16)
        x *= U32(0x7FEB352D)
        x ^= x >> U32(15)
        x *= U32(0x846CA68B)
        x ^= x >> U32(16)
    return x


def random_bits(numel: int, seed: int) -> np.ndarray:
    """32 random bits for each flat element index: hash32(hash32(lo(i) ^ k0) ^ hi(i) ^ k1)."""
    i = np.arange(numel, dtype=np.uint64)
    lo, hi = (i & np.uint64(0xFFFFFFFF)).astype(U32), (i >> np.uint64(32)).astype(U32)
    k0, k1 = U32(seed & 0xFFFFFFFF), U32((seed >> 32) & 0xFFFFFFFF)
    return hash32(hash32(lo ^ k0) ^ hi ^ k1)


def round_to_int(y: np.ndarray, rounding: str, r: Optional[np.ndarray]) -> np.ndarray:
    """Nearest: half to even. Stochastic: floor(y + u), u = (r >> 8) / 2^24.

    y (fp32, >= 0) and u are both exact in float64 and their sum needs at most 48 bits whenever
    it is within 2^-53 of an integer, so the float64 floor is the exact floor.
    """
    if rounding == "nearest":
        return np.rint(y).astype(np.int64)
    u = (r >> U32(8)).astype(np.float64) / float(1 << 24)
    return np.floor(y.astype(np.float64) + u).astype(np.int64)


# ---------------------------------------------------------------- results


@dataclass
class RefResult:
    codes: np.ndarray  # int16 (MLS, PoT, bf16) or int32 (fp32 bit patterns)
    scale_codes: Optional[np.ndarray]  # int16, QTensor layout (MLS only)
    tensor_scale: np.float32
    values: np.ndarray  # fp32 dequantized values


# ---------------------------------------------------------------- MLS


def mls_group_ids(shape, group: str, block: Optional[int]):
    """Group id of every element and the scale-code layout shape (QTensor's contract)."""
    if len(shape) == 4:
        n, c, h, w = shape
        ni, ci = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
        rows, cols, layout = ni, ci, (n, c)
        ids = {"nc": ni * c + ci, "n": ni, "c": ci, "none": np.zeros_like(ni)}[group]
        ids = np.broadcast_to(ids[:, :, None, None], shape)
    elif len(shape) == 2:
        r, length = shape
        nblocks = -(-length // block)
        ri, li = np.meshgrid(np.arange(r), np.arange(length), indexing="ij")
        bi = li // block
        layout = (r, nblocks)
        ids = {"nc": ri * nblocks + bi, "n": ri, "c": bi, "none": np.zeros_like(ri)}[group]
    else:
        raise ValueError(f"MLS needs a 2-D or 4-D tensor, got shape {tuple(shape)}")
    out_layout = (layout[0] if group in ("nc", "n") else 1, layout[1] if group in ("nc", "c") else 1)
    return np.ascontiguousarray(ids).reshape(-1), out_layout


def mls_scale_code(ratio: float, eg: int, mg: int) -> int:
    """Round a group ratio Sr/St in [0, 1] up to <eg, mg>: code = eg_code << mg | mantissa bit."""
    low = 1 - (1 << eg)
    if ratio == 0.0:
        return (-low) << mg
    frac, e = math.frexp(ratio)  # ratio = frac * 2^e, frac in [0.5, 1)
    exp, q = e - 1, math.ceil(frac * 2 * (1 << mg))
    if q == 2 << mg:  # the fraction rounded up to 2: renormalise
        exp, q = exp + 1, 1 << mg
    if exp < low:
        exp, q = low, 1 << mg
    return ((-exp) << mg) | (q - (1 << mg))


def mls_scale_value(code: int, mg: int) -> np.float32:
    eg_code, mbit = code >> mg, code & ((1 << mg) - 1)
    frac = np.float32(1.0 + mbit / (1 << mg))
    return np.float32(np.ldexp(frac, -eg_code)) if eg_code < 150 else np.float32(0.0)


def mls_quantize(x: np.ndarray, fmt, rounding: str = "nearest", seed: int = 0,
                 block: Optional[int] = 32) -> RefResult:
    """Algorithm 1 (the reading docs/formats.md states): tensor scale, group scales rounded up, element rounding."""
    fmt = parse(fmt)
    x = np.ascontiguousarray(x, dtype=np.float32)
    flat = x.reshape(-1)
    mag = np.abs(flat)
    gid, layout = mls_group_ids(x.shape, fmt.group, block if x.ndim == 2 else None)
    ngroups = int(gid.max()) + 1
    gmax = np.zeros(ngroups, dtype=np.float32)
    np.maximum.at(gmax, gid, mag)
    st = np.float32(mag.max())
    st_div = st if st > 0 else np.float32(1.0)
    scale_codes = np.array([mls_scale_code(float(g / st_div), fmt.eg, fmt.mg) for g in gmax], dtype=np.int64)
    sg = np.array([mls_scale_value(int(c), fmt.mg) for c in scale_codes], dtype=np.float32)
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.minimum(np.float32(1.0) / (sg * st), np.float32(np.finfo(np.float32).max))
    ratio = np.minimum(mag * inv[gid], np.float32(2.0))
    r = random_bits(flat.size, seed) if rounding == "stochastic" else None
    codes, qint = mls_element(ratio, flat < 0, fmt, rounding, r)
    sign = np.where(codes >> (fmt.ex + fmt.mx) & 1, np.float32(-1.0), np.float32(1.0))
    mag_val = np.ldexp(qint.astype(np.float32), fmt.exmin - fmt.mx).astype(np.float32)
    values = ((sign * mag_val) * sg[gid]) * st
    return RefResult(codes.reshape(x.shape), scale_codes.astype(np.int16).reshape(layout), st,
                     values.astype(np.float32).reshape(x.shape))


def mls_element(ratio: np.ndarray, negative: np.ndarray, fmt: MLS, rounding: str, r):
    """X_f -> (int16 codes, integer magnitudes in units of 2^(exmin - mx))."""
    ex, mx, exmin = fmt.ex, fmt.mx, fmt.exmin
    top = -1 if ex >= 1 else 0  # largest binade (ex = 0: one fixed-point binade)
    _, e2 = np.frexp(ratio)
    e = np.clip(e2.astype(np.int64) - 1, exmin, top)
    y = np.ldexp(ratio, (mx - e).astype(np.int32)).astype(np.float32)
    q = round_to_int(y, rounding, r)
    carry = (q == 2 << mx) & (e < top)
    e, q = np.where(carry, e + 1, e), np.where(carry, 1 << mx, q)
    largest = (2 << mx) - 1 if ex >= 1 else (1 << mx) - 1
    q = np.where(e == top, np.minimum(q, largest), q)
    if ex >= 1:
        normal = q >= (1 << mx)
        exp_code = np.where(normal, e - exmin + 1, 0)
        man = np.where(normal, q - (1 << mx), q)
    else:
        exp_code, man = np.zeros_like(q), q
    qint = q << (e - exmin)  # the grid step of binade e is 2^(e - mx) = 2^(exmin - mx) << (e - exmin)
    sign = (negative & (q > 0)).astype(np.int64)
    codes = (sign << (ex + mx)) | (exp_code << mx) | man
    return codes.astype(np.int16), qint


# ---------------------------------------------------------------- PoT


def pot_quantize(x: np.ndarray, fmt="pot:4", rounding: str = "nearest", seed: int = 0,
                 clip_ratio: float = 1.0) -> RefResult:
    """Sign + 4-bit exponent code: code c in 1..15 is 2^(s - 15 + c), 0 is zero.

    s = ceil(log2(clip_ratio * max|x|)) in [-126, 127]. For |x| between adjacent grid values
    lo < hi (lo = 0 below the smallest), p = (|x| - lo) / (hi - lo); nearest rounds up when
    p >= 1/2, stochastic rounds up with probability p (unbiased). Above 2^s: saturate.
    """
    fmt = parse(fmt)
    x = np.ascontiguousarray(x, dtype=np.float32)
    flat = x.reshape(-1)
    mag = np.abs(flat)
    top = fmt.max_code
    limit = np.float32(mag.max()) * np.float32(clip_ratio)
    s = -126 if limit == 0 else _ceil_log2(float(limit))
    half = -s // 2
    z = np.ldexp(np.ldexp(mag, half).astype(np.float32), -s - half).astype(np.float32)
    lowest = 1 - top  # 2^lowest is the smallest nonzero magnitude relative to 2^s
    _, e2 = np.frexp(z)
    k = np.where(z == 0, lowest - 1, e2.astype(np.int64) - 1)  # z in [2^k, 2^(k+1)); frexp(0) has e2 = 0
    below = k < lowest
    p = np.where(below, np.ldexp(z, -lowest), np.ldexp(z, (-k).astype(np.int32)) - np.float32(1.0)).astype(np.float32)
    if rounding == "nearest":
        up = p >= np.float32(0.5)
    else:
        r24 = (random_bits(flat.size, seed) >> U32(8)).astype(np.float64)
        up = r24 < p.astype(np.float64) * float(1 << 24)
    code = np.where(below, 0, k + top) + up
    code = np.where(k >= 0, top, code)
    sign = (flat < 0) & (code > 0)
    codes = (sign.astype(np.int64) << fmt.bits) | code
    scale = np.float32(2.0 ** s)
    mag_val = np.where(code == 0, np.float32(0.0), np.ldexp(np.float32(1.0), (code - top).astype(np.int32))).astype(np.float32)
    values = (np.where(sign, np.float32(-1.0), np.float32(1.0)) * mag_val) * scale
    return RefResult(codes.astype(np.int16).reshape(x.shape), None, scale, values.astype(np.float32).reshape(x.shape))


def _ceil_log2(v: float) -> int:
    frac, e = math.frexp(v)
    s = e - 1 if frac == 0.5 else e
    return max(-126, min(127, s))


# ---------------------------------------------------------------- bf16 and Mogami


def bf16_round(x: np.ndarray, rounding: str = "nearest", seed: int = 0) -> np.ndarray:
    """fp32 -> bf16 bit patterns (uint16): nearest even, or stochastic (add r >> 16 below the cut).

    Results beyond the largest finite bf16 saturate there (0x7F7F with the sign).
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(U32).astype(np.uint64)
    sign = (bits >> np.uint64(31)) << np.uint64(15)
    mag = bits & np.uint64(0x7FFFFFFF)
    if rounding == "nearest":
        keep = (mag >> np.uint64(16)) & np.uint64(1)
        mag = mag + np.uint64(0x7FFF) + keep
    else:
        mag = mag + (random_bits(mag.size, seed) >> U32(16)).astype(np.uint64)
    top = np.minimum(mag >> np.uint64(16), np.uint64(0x7F7F))
    return (sign | top).astype(np.uint16).reshape(np.shape(x))


def bf16_to_fp32(bits16: np.ndarray) -> np.ndarray:
    return (bits16.astype(U32) << U32(16)).view(np.float32)


FLOAT_LAYOUT = {"fp32": (32, 23, 0x3F800000), "bf16": (16, 7, 0x3F80)}  # width, mantissa bits, one


def mogami_mul(a: np.ndarray, b: np.ndarray, dtype: str = "fp32") -> np.ndarray:
    """The Mogami product rule, THE definition: bit patterns in, bit patterns out (uint32 for
    fp32, uint16 for bf16; wider integer containers are read by their low bits), field by field.

    Exponent fields add (bias removed once) and mantissa fields add, a mantissa carry bumps
    the exponent: exactly the integer add bits(a) + bits(b) - bits(1.0). Zero or subnormal
    operands and results below the smallest normal flush to signed zero; results above the
    largest finite value saturate to it (signed); a NaN or Inf operand (all-ones exponent
    field) gives the positive quiet NaN, whatever the other operand. Every other body (torch in
    ``numerics/mogami.py``, C in ``csrc/``, HLS in ``mac.hpp``) is tested equal to this one.
    """
    width, mbits, one = FLOAT_LAYOUT[dtype]
    a, b = np.asarray(a).astype(np.int64), np.asarray(b).astype(np.int64)
    emask, mmask = (1 << (width - 1 - mbits)) - 1, (1 << mbits) - 1
    bias = one >> mbits
    sign = ((a ^ b) >> (width - 1)) & 1
    ea, eb = (a >> mbits) & emask, (b >> mbits) & emask
    msum = (a & mmask) + (b & mmask)
    carry = msum >> mbits
    e = ea + eb - bias + carry
    man = msum & mmask
    zero = (ea == 0) | (eb == 0) | (e < 1)
    big = e >= emask
    mag = np.where(zero, 0, np.where(big, (emask - 1) << mbits | mmask, e << mbits | man))
    out = (sign << (width - 1)) | mag
    quiet_nan = emask << mbits | 1 << (mbits - 1)
    out = np.where((ea == emask) | (eb == emask), quiet_nan, out)
    return out.astype(np.uint32 if width == 32 else np.uint16)


def quantize(x: np.ndarray, fmt, rounding: str = "nearest", seed: int = 0, block: Optional[int] = 32,
             clip_ratio: float = 1.0) -> RefResult:
    """Dispatch by format (fp32 and mogami:fp32 keep the bit patterns)."""
    fmt = parse(fmt)
    x = np.ascontiguousarray(x, dtype=np.float32)
    one = np.float32(1.0)
    if isinstance(fmt, MLS):
        return mls_quantize(x, fmt, rounding, seed, block)
    if isinstance(fmt, PoT):
        return pot_quantize(x, fmt, rounding, seed, clip_ratio)
    if isinstance(fmt, Mogami) and fmt.dtype == "bf16":
        bits = bf16_round(x, rounding, seed)
        return RefResult(bits.view(np.int16), None, one, bf16_to_fp32(bits))
    return RefResult(x.view(np.int32).copy(), None, one, x.copy())
