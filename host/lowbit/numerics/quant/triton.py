"""Fused Triton element passes of the MLS and PoT quantizers (the CUDA path of ``lowbit.numerics.quant``).

One kernel per call reads x, draws the counter-based random bits, rounds, and writes the int16
codes and the fp32 values: the same arithmetic as ``quant._mls_elements`` / ``quant._pot_elements``
and ``csrc/quantize.c`` (``mls_run``, ``pot_run``), bit for bit (tests/numerics/test_quant_triton.py runs the
kernels under Triton's interpreter, ``TRITON_INTERPRET=1``, against the numpy reference). The group
scales and block maxima stay torch ops in ``quant``; only the per-element pass is here.

Random counters are flat indices of the original (unpadded) tensor, as int32: the launchers accept
at most ``MAX_ELEMENTS`` elements (``quant`` keeps larger tensors on the torch path). Group of element
i: ``row * nblocks + col // block`` with ``row = i // row_len`` (2-D: rows of length K, blocks of
``block`` along K, the last one possibly partial; 4-D [N, C, H, W]: rows are the (n, c) planes of
H*W elements, one block per row). Per-group scales come as flat [rows * nblocks] arrays.

``TRITON_INTERPRET`` is read when the kernels are decorated, i.e. when this module is imported:
the tests set it and ``importlib.reload`` this module. The kernels use only triton.language
builtins (no jitted helpers of triton's standard library such as ``tl.zeros_like``), which the
interpreter cannot call when triton itself was imported before the variable was set.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from lowbit.numerics.formats import MLS, PoT
from lowbit.numerics.quant.rng import seed_words

BLOCK = 1024  # elements per program
# int32 offsets, including the masked lanes of the last program, must not wrap
MAX_ELEMENTS = (1 << 31) - 1 - BLOCK
_HASH_M1 = tl.constexpr(0x7FEB352D)
_HASH_M2 = tl.constexpr(0x846CA68B)


@triton.jit
def _lowbias32(x):
    """lowbias32 on uint32: multiplies wrap mod 2^32, shifts of unsigned values are logical."""
    x = x ^ (x >> 16)
    x = x * tl.full(x.shape, _HASH_M1, tl.uint32)
    x = x ^ (x >> 15)
    x = x * tl.full(x.shape, _HASH_M2, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _random24(offs, k0, k1):
    """(r >> 8) of r = hash32(hash32(i ^ k0) ^ k1) for flat indices i < 2^31 (high word 0), int32."""
    i = offs.to(tl.uint32, bitcast=True)
    r = _lowbias32(_lowbias32(i ^ k0.to(tl.uint32, bitcast=True)) ^ k1.to(tl.uint32, bitcast=True))
    return (r >> 8).to(tl.int32, bitcast=True)


@triton.jit
def _float_exponent(v):
    """floor(log2 v) for normal fp32 v >= 0; -127 for zero and subnormals."""
    return ((v.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127


@triton.jit
def _pow2(k):
    """2^k as fp32 for int32 k in [-126, 127], from the bits."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _round_grid(y, rbits, STOCHASTIC: tl.constexpr):
    """y >= 0 (fp32, < 2^24) to int32: floor(y + rbits / 2^24), or half to even. Truncation is
    the floor here; y - whole is exact, and so is its product with 2^24 (both as quant does)."""
    whole = y.to(tl.int32)
    frac = y - whole.to(tl.float32)
    if STOCHASTIC:
        frac24 = (frac * 16777216.0).to(tl.int32)
        q = whole + ((frac24 + rbits) >> 24)
    else:
        up = (frac > 0.5) | ((frac == 0.5) & ((whole & 1) == 1))
        q = whole + up.to(tl.int32)
    return q


@triton.jit(do_not_specialize=["k0", "k1"])
def _mls_kernel(x_ptr, inv_ptr, sg_ptr, st_ptr, codes_ptr, values_ptr, n, row_len, block, nblocks, k0, k1,
                mag_max, MX: tl.constexpr, EXMIN: tl.constexpr, EMAX: tl.constexpr, CODE_MAX: tl.constexpr,
                SIGN_SHIFT: tl.constexpr, STOCHASTIC: tl.constexpr, SPLIT_ROWS: tl.constexpr,
                BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    v = tl.load(x_ptr + offs, mask=mask, other=0.0)
    row = offs // row_len
    if SPLIT_ROWS:
        g = row * nblocks + (offs - row * row_len) // block
    else:
        g = row
    inv = tl.load(inv_ptr + g, mask=mask, other=0.0)
    sg = tl.load(sg_ptr + g, mask=mask, other=0.0)
    st = tl.load(st_ptr)
    ratio = tl.minimum(tl.abs(v) * inv, 2.0)
    e = tl.minimum(tl.maximum(_float_exponent(ratio), EXMIN), EMAX)
    if STOCHASTIC:
        rbits = _random24(offs, k0, k1)
    else:
        rbits = tl.full(offs.shape, 0, tl.int32)
    q = _round_grid(ratio * _pow2(MX - e), rbits, STOCHASTIC)
    code = tl.minimum(((e - EXMIN) << MX) + q, CODE_MAX)
    sign = (v < 0.0) & (code > 0)
    tl.store(codes_ptr + offs, ((sign.to(tl.int32) << SIGN_SHIFT) | code).to(tl.int16), mask=mask)
    mag = tl.minimum(q.to(tl.float32) * _pow2(e - MX), mag_max)  # exact
    tl.store(values_ptr + offs, (tl.where(sign, -mag, mag) * sg) * st, mask=mask)


@triton.jit(do_not_specialize=["k0", "k1"])
def _pot_kernel(x_ptr, codes_ptr, values_ptr, n, k0, k1, step1, step2, scale, MAX_CODE: tl.constexpr,
                STOCHASTIC: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    v = tl.load(x_ptr + offs, mask=mask, other=0.0)
    z = (tl.abs(v) * step1) * step2  # |x| 2^-s in two exact power-of-two steps
    lowest = 1 - MAX_CODE
    k = tl.minimum(tl.maximum(_float_exponent(z), lowest - 1), 0)
    below = k < lowest
    # position between 2^k and 2^(k+1) (between 0 and 2^lowest below the grid), in [0, 1);
    # both products are exact, so a fused multiply-add would give the same p
    p = tl.where(below, z * _pow2(tl.full(k.shape, -lowest, tl.int32)), z * _pow2(-k) - 1.0)
    if STOCHASTIC:
        up = _random24(offs, k0, k1).to(tl.float32) < p * 16777216.0
    else:
        up = p >= 0.5
    code = tl.where(below, 0, k + MAX_CODE) + up.to(tl.int32)
    code = tl.where(k >= 0, MAX_CODE, code)
    sign = ((v < 0.0) & (code > 0)).to(tl.int32)
    tl.store(codes_ptr + offs, ((sign << 4) | code).to(tl.int16), mask=mask)
    mag_bits = tl.where(code == 0, 0, (code - MAX_CODE + 127) << 23)
    signed = (mag_bits | (sign << 31)).to(tl.float32, bitcast=True)
    tl.store(values_ptr + offs, signed * scale, mask=mask)


# ---------------------------------------------------------------- launchers


def _check_source(xf: torch.Tensor) -> None:
    if xf.dtype != torch.float32 or not xf.is_contiguous():
        raise ValueError(f"the Triton quantizer takes a contiguous fp32 tensor, got {xf.dtype} "
                         f"(contiguous={xf.is_contiguous()})")
    if not 0 < xf.numel() <= MAX_ELEMENTS:
        raise ValueError(f"the Triton quantizer takes 1 to {MAX_ELEMENTS} elements (int32 random counters), "
                         f"got {xf.numel()}")


def _launch_options(device: torch.device) -> dict:
    # no FMA contraction on the GPU: the arithmetic must round each product as quant.py does
    return {"enable_fp_fusion": False} if device.type == "cuda" else {}


def _on_device(device: torch.device):
    """Triton launches on the current CUDA device: make it the tensor's (cuda:1 under cuda:0)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def mls_elements(xf: torch.Tensor, inv: torch.Tensor, sg: torch.Tensor, st: torch.Tensor, seed: int, fmt: MLS,
                 stochastic: bool, block: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Codes (int16) and values (fp32) of MLS elements, shaped like ``xf``.

    xf: contiguous fp32, 4-D [N, C, H, W] or 2-D [rows, K]; inv, sg: 1/(Sg St) and Sg per group as
    ``quant._mls_torch`` has them, [P|1, Q|1, 1] over the grouped view [P, Q, B] (4-D: [N, C, HW];
    2-D: [rows, ceil(K / block), block]); st: the tensor scale (0-d fp32 on xf's device).
    """
    if not isinstance(fmt, MLS):
        raise TypeError(f"mls_elements expects an MLS format, got {fmt!r}")
    _check_source(xf)
    if xf.dim() == 4:
        n_, c_, h_, w_ = xf.shape
        grid_pq, row_len, blk, nblocks = (n_, c_), h_ * w_, h_ * w_, 1
    elif xf.dim() == 2:
        if block is None or int(block) != block or block < 1:
            raise ValueError(f"2-D MLS needs a positive integer block, got {block!r}")
        rows, row_len = xf.shape
        blk, nblocks = int(block), -(-row_len // int(block))
        grid_pq = (rows, nblocks)
    else:
        raise ValueError(f"MLS tensors are 4-D or 2-D, got shape {tuple(xf.shape)}")
    expected = (grid_pq[0], grid_pq[1], 1)
    for name, t in (("inv", inv), ("sg", sg)):
        if t.dim() != 3 or any(s not in (1, e) for s, e in zip(t.shape, expected)):
            raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to the groups {expected}")
    inv_full = inv.to(torch.float32).expand(expected).reshape(-1).contiguous()
    sg_full = sg.to(torch.float32).expand(expected).reshape(-1).contiguous()
    st32 = st.to(device=xf.device, dtype=torch.float32).reshape(1)
    codes = torch.empty(xf.shape, dtype=torch.int16, device=xf.device)
    values = torch.empty(xf.shape, dtype=torch.float32, device=xf.device)
    k0, k1 = seed_words(seed)  # signed int32 arguments, bit-cast to uint32 inside
    numel = xf.numel()
    with _on_device(xf.device):
        _mls_kernel[(triton.cdiv(numel, BLOCK),)](
            xf, inv_full, sg_full, st32, codes, values, numel, row_len, blk, nblocks, k0, k1,
            float(fmt.max_int * 2.0 ** (fmt.exmin - fmt.mx)),
            MX=fmt.mx, EXMIN=fmt.exmin, EMAX=-1 if fmt.ex >= 1 else 0, CODE_MAX=(1 << (fmt.ex + fmt.mx)) - 1,
            SIGN_SHIFT=fmt.code_bits - 1, STOCHASTIC=bool(stochastic), SPLIT_ROWS=nblocks > 1, BLOCK_SIZE=BLOCK,
            **_launch_options(xf.device))
    return codes, values


def pot_elements(xf: torch.Tensor, seed: int, s: int, fmt: PoT, stochastic: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Codes (int16) and values (fp32) of PoT elements with layer scale 2^s, shaped like ``xf``."""
    if not isinstance(fmt, PoT):
        raise TypeError(f"pot_elements expects a PoT format, got {fmt!r}")
    _check_source(xf)
    if int(s) != s or not -126 <= s <= 127:
        raise ValueError(f"the PoT scale exponent must be an integer in [-126, 127], got {s!r}")
    s = int(s)
    half = -s // 2
    codes = torch.empty(xf.shape, dtype=torch.int16, device=xf.device)
    values = torch.empty(xf.shape, dtype=torch.float32, device=xf.device)
    k0, k1 = seed_words(seed)  # signed int32 arguments, bit-cast to uint32 inside
    numel = xf.numel()
    with _on_device(xf.device):
        _pot_kernel[(triton.cdiv(numel, BLOCK),)](
            xf, codes, values, numel, k0, k1, float(2.0 ** half), float(2.0 ** (-s - half)), float(2.0 ** s),
            MAX_CODE=fmt.max_code, STOCHASTIC=bool(stochastic), BLOCK_SIZE=BLOCK, **_launch_options(xf.device))
    return codes, values
