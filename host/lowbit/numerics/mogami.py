"""Mogami's multiplication: add two IEEE-754 bit patterns as integers (no multiplier).

``mogami_mul(a, b)`` = bits(a) + bits(b) - bits(1.0) on the 31-bit magnitudes (0x3F800000 for
fp32, 0x3F80 for bf16), sign = sign(a) xor sign(b). Special cases are decided from the exponent
fields, never by a real multiply:

* an operand that is zero or subnormal (exponent field 0) gives signed zero;
* a result below the smallest normal (exponent field < 1) flushes to signed zero;
* a result beyond the largest finite value saturates to the signed largest finite value
  (not inf: a saturated product keeps a training step finite and visible);
* NaN or Inf operands raise ValueError.

The result is exact for a power-of-two operand and otherwise under-estimates (Mitchell's
logarithmic multiplication, at worst -1/9 at 1.5 x 1.5 = 2.0).
"""
from __future__ import annotations

import torch

# dtype: (int view, bits(1.0), smallest normal, largest finite, exponent field mask, quiet NaN, sign bit index)
_LAYOUT = {torch.float32: (torch.int32, 0x3F800000, 0x00800000, 0x7F7FFFFF, 0x7F800000, 0x7FC00000, 31),
           torch.bfloat16: (torch.int16, 0x3F80, 0x0080, 0x7F7F, 0x7F80, 0x7FC0, 15)}
FP32_MAX_FINITE_BITS = _LAYOUT[torch.float32][3]


def mogami_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise Mogami product of two fp32 or two bf16 tensors (broadcasting)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise TypeError("mogami_mul expects two torch tensors")
    if a.dtype != b.dtype or a.dtype not in _LAYOUT:
        raise ValueError(f"mogami_mul needs two float32 or two bfloat16 tensors, got {a.dtype} and {b.dtype}; "
                         "convert with .float() or .bfloat16()")
    if a.device.type == "cpu" and b.device.type == "cpu" and _native_ok():
        return _mogami_native(a, b)
    _check_finite(a, b)
    a, b = torch.broadcast_tensors(a, b)
    from lowbit.numerics.quant.accel import maybe_compiled

    return maybe_compiled("mogami", _mogami_ops, a.device)(a.contiguous(), b.contiguous())


def mogami_mul_bits(ua: torch.Tensor, ub: torch.Tensor, dtype: torch.dtype = torch.float32,
                    max_finite: int | None = None) -> torch.Tensor:
    """The product rule in torch ops, the one torch body of ``lowbit.numerics.reference.mogami_mul``.

    ``ua``, ``ub``: int64 tensors of bit patterns of ``dtype`` (unsigned, or the signed int view
    widened: only the magnitude bits and the sign bit are read); returns the product's unsigned
    patterns (int64), NaN/Inf operands giving the quiet NaN as in the definition.
    ``max_finite`` lowers the saturation value (the software backend's bf16 products in fp32
    patterns saturate at the largest bf16).
    """
    _, one, min_normal, largest, exp_mask, quiet_nan, sign_shift = _LAYOUT[dtype]
    mag_mask = (1 << sign_shift) - 1
    ma, mb = ua & mag_mask, ub & mag_mask
    mag = (ma + mb - one).clamp_(max=largest if max_finite is None else max_finite)
    zero = (torch.minimum(ma, mb) < min_normal) | (mag < min_normal)
    out = torch.where(zero, 0, mag) | ((ua ^ ub) & (1 << sign_shift))
    return torch.where(torch.maximum(ma, mb) >= exp_mask, quiet_nan, out)


def _mogami_ops(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mogami_mul_bits`` on two float tensors of one dtype (CUDA, and CPU without the native kernel)."""
    int_dtype, sign_shift = _LAYOUT[a.dtype][0], _LAYOUT[a.dtype][-1]
    out = mogami_mul_bits(a.view(int_dtype).to(torch.int64), b.view(int_dtype).to(torch.int64), a.dtype)
    out = out - ((out >> sign_shift) << (sign_shift + 1))  # back to the signed view's value
    return out.to(int_dtype).view(a.dtype)


def _check_finite(a: torch.Tensor, b: torch.Tensor) -> None:
    for name, t in (("a", a), ("b", b)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"mogami_mul operand {name} of shape {tuple(t.shape)} holds NaN or Inf")


def _native_ok() -> bool:
    import os

    from lowbit.numerics.quant.native import native_available

    return os.environ.get("LOWBIT_NATIVE", "1") != "0" and native_available()


def _mogami_native(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same rule in the fused CPU kernel (csrc/quantize.c): one pass, no temporaries."""
    from lowbit.numerics.quant.native import empty_buffer, library

    ffi, lib = library()
    a, b = (t.contiguous() for t in torch.broadcast_tensors(a, b))
    out = empty_buffer(a.shape, a.dtype)
    ctype, fn = ("uint32_t *", lib.lowbit_mogami_mul_f32) if a.dtype == torch.float32 else \
        ("uint16_t *", lib.lowbit_mogami_mul_bf16)
    if fn(ffi.cast(ctype, a.data_ptr()), ffi.cast(ctype, b.data_ptr()), a.numel(), ffi.cast(ctype, out.data_ptr())):
        _check_finite(a, b)
    return out
