"""The native CPU kernel (csrc/quantize.c through cffi) and its output buffers."""
from __future__ import annotations

import math
import mmap
import os
import warnings

import torch

from lowbit.numerics.quant.common import check_finite


_NATIVE_CDEF = """
int64_t lowbit_block_absmax(const float *x, int64_t rows, int64_t len, int64_t block, float *out);
int lowbit_mls(const float *x, int64_t rows, int64_t len, int64_t block, int64_t P, int64_t Q, int group, int eg,
               int mg, int ex, int mx, int stochastic, uint64_t seed, float *st_out, int16_t *scale_codes,
               int16_t *codes, float *values);
int lowbit_mls_cols(const float *x, int64_t B, int64_t R, int64_t C, int64_t block, int group, int eg, int mg,
                    int ex, int mx, int stochastic, uint64_t seed, float *st_out, int16_t *scale_codes,
                    int16_t *codes, float *values);
void lowbit_pot_quantize(const float *x, int64_t n, int32_t s, int32_t half, int max_code,
                         int stochastic, uint64_t seed, int16_t *codes, float *values);
int lowbit_pot(const float *x, int64_t n, float clip, int max_code, int stochastic, uint64_t seed, int32_t *s_out,
               int16_t *codes, float *values);
void lowbit_gather_f32(const float *x, int64_t B, int64_t R, int64_t C, int64_t sb, int64_t sr, int64_t sc,
                       float *out);
void lowbit_gather_i16(const int16_t *x, int64_t B, int64_t R, int64_t C, int64_t sb, int64_t sr, int64_t sc,
                       int16_t *out);
int64_t lowbit_bf16_round(const float *x, int64_t n, int stochastic, uint64_t seed, int16_t *codes, float *values);
int64_t lowbit_mogami_mul_f32(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *out);
int64_t lowbit_mogami_mul_bf16(const uint16_t *a, const uint16_t *b, int64_t n, uint16_t *out);
int64_t lowbit_pack_codes(const uint16_t *codes, int64_t n, int lane_bits, int code_bits, uint8_t *out);
"""


_native_state: dict = {}


def library():
    """(ffi, lib) of csrc/quantize.c, built once per source hash; raises RuntimeError if no compiler."""
    if "lib" not in _native_state:
        from pathlib import Path

        from lowbit.runtime.native import load

        src = Path(__file__).resolve().parents[2] / "csrc" / "quantize.c"
        # -fno-semantic-interposition: calls between the library's own exported functions bind
        # locally and may inline (-fPIC alone made the MLS element loop 1.5x slower in a C harness)
        flags = ["-fopenmp", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-std=c11",
                 "-fno-semantic-interposition"]
        _native_state["lib"] = load("quantize", _NATIVE_CDEF, [src], flags=flags, cplus=False)
    return _native_state["lib"]


def native_available() -> bool:
    """True when the native kernel builds (and loads) on this machine; cached."""
    if "ok" not in _native_state:
        try:
            library()
            _native_state["ok"] = True
        except Exception as err:  # no compiler / no OpenMP: the torch path still works
            _native_state["ok"] = False
            _native_state["error"] = repr(err)
    return _native_state["ok"]


HUGE_MIN_BYTES = 32 << 20  # glibc serves smaller blocks from its heap, reused without page faults


def empty_buffer(shape, dtype: torch.dtype) -> torch.Tensor:
    """An output buffer; large ones are backed by transparent huge pages.

    A fresh multi-MB tensor costs one page fault per 4 KiB on first touch, which is most of
    the time of a streaming kernel (and of ``clone()``). With 2 MiB pages it is ~1/512 of that.
    LOWBIT_HUGEPAGES=0 turns this off.
    """
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < HUGE_MIN_BYTES or os.environ.get("LOWBIT_HUGEPAGES", "1") == "0" or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(*shape, dtype=dtype) if len(shape) else torch.empty((), dtype=dtype)  # ints: 2x faster
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frombuffer warns about non-resizable storage
        return torch.frombuffer(buf, dtype=dtype).view(shape)


def ptr(ffi, t: torch.Tensor, ctype: str):
    """A C pointer to a contiguous CPU tensor's data."""
    assert t.is_contiguous() and t.device.type == "cpu"
    return ffi.cast(ctype, t.data_ptr())


GATHER_MIN = 1 << 14  # smaller views: torch's copy, whose call costs less than the native one's
_GATHER = {torch.float32: ("lowbit_gather_f32", "float *"), torch.int16: ("lowbit_gather_i16", "int16_t *")}


def contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t.detach().contiguous()``, copied by the native tiled gather where t is a CPU view of up to 3
    dims in fp32 or int16 whose last dim is strided (a transpose: torch's copy of one costs about as
    much as quantizing it); the same values either way."""
    if t.is_contiguous():
        return t.detach() if t.requires_grad else t
    t = t.detach()
    if (not t.is_cpu or t.dtype not in _GATHER or t.dim() > 3 or t.stride(-1) == 1 or t.numel() < GATHER_MIN
            or not native_available()):
        return t.contiguous()
    shape, strides = [1] * (3 - t.dim()) + list(t.shape), [0] * (3 - t.dim()) + list(t.stride())
    out = torch.empty(t.shape, dtype=t.dtype)
    ffi, lib = library()
    name, ctype = _GATHER[t.dtype]
    getattr(lib, name)(ffi.cast(ctype, t.data_ptr()), *shape, *strides, ffi.cast(ctype, out.data_ptr()))
    return out


def storage_order(t: torch.Tensor):
    """The dim order in which t's elements lie densely in memory (``t.permute(order)`` is contiguous),
    or None when they do not fill one dense block (a slice, an expanded dim)."""
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    return order if t.permute(order).is_contiguous() else None


def raise_nonfinite(x: torch.Tensor) -> None:
    check_finite(x)
    raise AssertionError("native kernel counted NaN/Inf that torch does not see")
