"""Quantizers: torch tensor -> QTensor (integer codes + scales + cached dequantized values).

``quantize(x, fmt, rounding=..., generator=...)`` is the one entry point. The exact arithmetic
(the definition the numpy reference ``lowbit.reference`` spells out again independently):

* Random numbers come from a counter-based generator: element ``i`` (flat, C order) gets
  ``r = hash32(hash32(lo32(i) ^ k0) ^ hi32(i) ^ k1)`` with ``(k1 << 32) | k0`` a 64-bit seed drawn
  once per call from ``generator`` (torch's default generator when None). ``hash32`` is the
  "lowbias32" integer hash. So a result depends only on (x, fmt, rounding, seed), not on the
  device, thread count or implementation (torch ops, the native CPU kernel, the reference).
* Stochastic rounding of y >= 0 is ``floor(y + u)`` with ``u = (r >> 8) / 2^24`` (exact, unbiased
  to within 2^-24 of a grid step); nearest is round half to even.
* MLS, PoT: see ``_mls_torch`` and ``_pot_torch`` and docs/formats.md.
* Mogami: fp32 bit patterns as they are; bf16 rounds fp32 to bf16 (nearest even, or stochastic
  by adding ``r >> 16`` to the 16 dropped bits), saturating at the largest finite bf16.
"""
from __future__ import annotations

import math
import mmap
import os
import warnings
from typing import Optional

import numpy as np
import torch

from .formats import FP32, GROUPINGS, MLS, Format, Mogami, PoT, parse
from .qtensor import QTensor

DEFAULT_BLOCK = 32  # group length along K for 2-D MLS operands
ROUNDINGS = ("stochastic", "nearest")
M32 = 0xFFFFFFFF
FLT_MAX = 3.4028234663852886e38
BF16_MAX_BITS = 0x7F7F
POT_SCALE_RANGE = (-126, 127)  # 2^s stays a normal fp32


def quantize(x: torch.Tensor, fmt: "str | Format", *, rounding: str = "stochastic",
             generator: Optional[torch.Generator] = None, block: Optional[int] = None,
             clip_ratio: "float | torch.Tensor | None" = None, impl: str = "auto") -> QTensor:
    """Quantize ``x`` to ``fmt``; the result's ``values`` equal ``decode()`` bit for bit.

    ``block``: group length along the last dim of a 2-D MLS operand (default 32).
    ``clip_ratio``: PoT only, in (0, 1]: the layer scale comes from ``clip_ratio * max|x|``.
    ``impl``: "auto" (native CPU kernel when available, else torch ops), "torch" or "native".
    """
    fmt = parse(fmt)
    _check_args(x, fmt, rounding, block, clip_ratio, impl)
    if x.numel() == 0:
        raise ValueError(f"cannot quantize an empty tensor (shape {tuple(x.shape)})")
    if x.dtype == torch.float64 and bool((x.abs() > FLT_MAX).any()):
        raise ValueError(f"the float64 tensor of shape {tuple(x.shape)} holds values beyond the fp32 range "
                         f"(|x| > {FLT_MAX:.4g}); the quantizers work in fp32: rescale it first")
    seed = draw_seed(generator) if rounding == "stochastic" and not isinstance(fmt, FP32) else 0
    native = _use_native(x, impl)
    if isinstance(fmt, FP32) or (isinstance(fmt, Mogami) and (fmt.dtype == "fp32" or not native)):
        _check_finite(x)  # (the native kernels count NaN/Inf in their own first pass)
    if isinstance(fmt, FP32):
        return _bits_qtensor(fmt, x.detach().float().contiguous(), x.dtype)
    if isinstance(fmt, Mogami):
        return _mogami_quantize(x, fmt, rounding, seed, native)
    if native:
        if isinstance(fmt, MLS):
            return _mls_native(x, fmt, rounding, seed, _block_for(x, block))
        return _pot_native(x, fmt, rounding, seed, _clip(clip_ratio))
    _check_finite(x)
    if isinstance(fmt, MLS):
        return _mls_torch(x, fmt, rounding, seed, _block_for(x, block))
    return _pot_torch(x, fmt, rounding, seed, _clip(clip_ratio))


# ---------------------------------------------------------------- argument checks


def _check_args(x, fmt, rounding, block, clip_ratio, impl) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"quantize expects a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"quantize needs values, and a meta tensor (shape {tuple(x.shape)}) has none; materialize "
                         "it first (e.g. model.to_empty(device='cpu'), then load or initialize the weights)")
    if not x.is_floating_point():
        raise ValueError(f"quantize expects a floating-point tensor, got {x.dtype} (shape {tuple(x.shape)})")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} unknown; use one of {ROUNDINGS}")
    if impl not in ("auto", "torch", "native"):
        raise ValueError(f"impl={impl!r} unknown; use 'auto', 'torch' or 'native'")
    if isinstance(fmt, MLS) and x.dim() not in (2, 4):
        raise ValueError(
            f"MLS quantizes 4-D conv tensors [N, C, H, W] (groups over dims 0, 1) or 2-D [rows, K] "
            f"(groups of `block` along K); got shape {tuple(x.shape)}: reshape it to 2-D first")
    if block is not None:
        if not (isinstance(fmt, MLS) and x.dim() == 2):
            raise ValueError(f"block= applies to 2-D MLS tensors only (got {fmt} with shape {tuple(x.shape)})")
        if int(block) != block or block < 1:
            raise ValueError(f"block must be a positive integer, got {block!r}")
    if clip_ratio is not None:
        if not isinstance(fmt, PoT):
            raise ValueError(f"clip_ratio applies to pot formats only, not {fmt}")
        r = float(clip_ratio)
        if not 0.0 < r <= 1.0:
            raise ValueError(f"clip_ratio must be in (0, 1], got {r}")


def _check_finite(x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(
            f"cannot quantize a tensor of shape {tuple(x.shape)} holding {n_nan} NaN and {n_inf} Inf "
            "values; the model diverged (lower the learning rate or check the loss)")


def _block_for(x: torch.Tensor, block: Optional[int]) -> Optional[int]:
    if x.dim() == 4:
        return None
    return int(block) if block is not None else DEFAULT_BLOCK


def _clip(clip_ratio) -> float:
    return 1.0 if clip_ratio is None else float(clip_ratio)


def _use_native(x: torch.Tensor, impl: str) -> bool:
    if impl == "torch":
        return False
    if impl == "native":
        if x.device.type != "cpu":
            raise ValueError(f"impl='native' runs on CPU tensors; this one is on {x.device}")
        _native_lib()
        return True
    if x.device.type != "cpu" or os.environ.get("LOWBIT_NATIVE", "1") == "0":
        return False
    return native_available()


# ---------------------------------------------------------------- random numbers


def draw_seed(generator: Optional[torch.Generator] = None) -> int:
    """A 64-bit seed from ``generator`` (or torch's default generator)."""
    device = generator.device if generator is not None else "cpu"
    hi, lo = torch.randint(0, 1 << 32, (2,), generator=generator, device=device, dtype=torch.int64).tolist()
    return (hi << 32) | lo


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x < 2^32 in int64 without signed overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & M32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding values < 2^32."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _signed32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def _hash32_int32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 bit patterns: multiplies wrap mod 2^32 (two's complement, as on every
    CPU and GPU torch runs on; tests compare with the numpy reference), shifts are masked to be
    logical. Half the memory traffic of the int64 form."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _signed32(0x7FEB352D)
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _signed32(0x846CA68B)
    return x ^ ((x >> 16) & 0xFFFF)


_INT32_COUNTERS = (1 << 31) - 1  # flat indices that fit the int32 form (larger tensors: int64)


def random_bits(numel: int, seed: int, device, keep: int = 24) -> torch.Tensor:
    """The top ``keep`` (<= 31) of the 32 counter-based random bits of each flat index, as int32."""
    k0, k1 = seed & M32, (seed >> 32) & M32
    if numel <= _INT32_COUNTERS:
        i = torch.arange(numel, device=device, dtype=torch.int32)
        r = _hash32_int32(_hash32_int32(i ^ _signed32(k0)) ^ _signed32(k1))
        return (r >> (32 - keep)) & ((1 << keep) - 1)
    i = torch.arange(numel, device=device, dtype=torch.int64)
    r = hash32(hash32((i & M32) ^ k0) ^ (i >> 32) ^ k1)
    return (r >> (32 - keep)).to(torch.int32)


# ---------------------------------------------------------------- helpers


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


def _group_view(xf: torch.Tensor, block: Optional[int]) -> torch.Tensor:
    """The source as [P, Q, B]: groups are [P|1, Q|1] (4-D: [N, C, HW]; 2-D: [R, nblocks, block])."""
    if xf.dim() == 4:
        n, c, h, w = xf.shape
        return xf.reshape(n, c, h * w)
    rows, length = xf.shape
    nblocks = -(-length // block)
    padded = torch.nn.functional.pad(xf, (0, nblocks * block - length))
    return padded.reshape(rows, nblocks, block)


def _ungroup(v: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) == 4:
        return v.reshape(shape)
    return v.reshape(shape[0], -1)[:, : shape[1]]


def _reduce_groups(gmax: torch.Tensor, group: str) -> torch.Tensor:
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


# ---------------------------------------------------------------- MLS


def _mls_grid(xf_ratio: torch.Tensor, fmt: MLS, rounding: str, rbits: Optional[torch.Tensor]):
    """(binade e, grid integer q) of X_f = |x| / (Sg St) (fp32, clamped to [0, 2]); q is in
    [2^mx, 2^(mx+1)] above the underflow range, 2^(mx+1) being a carry into binade e + 1."""
    e = float_exponent(xf_ratio).clamp(fmt.exmin, -1 if fmt.ex >= 1 else 0)
    return e, round_grid(xf_ratio * pow2(fmt.mx - e), rounding, rbits)


def _mls_magnitude_code(e: torch.Tensor, q: torch.Tensor, fmt: MLS) -> torch.Tensor:
    """((e - exmin) << mx) + q: q's leading bit lands in the exponent field and a carry is the
    next binade's code; codes grow with the magnitude, so saturation is a min."""
    return (((e - fmt.exmin) << fmt.mx) + q).clamp(max=(1 << (fmt.ex + fmt.mx)) - 1)


def _signed_codes(code: torch.Tensor, sign: torch.Tensor, fmt) -> torch.Tensor:
    return ((sign.to(torch.int32) << (fmt.code_bits - 1)) | code).to(torch.int16)


def mls_element_codes(xf_ratio: torch.Tensor, negative: torch.Tensor, fmt: MLS, rounding: str,
                      rbits: Optional[torch.Tensor]) -> torch.Tensor:
    """Round X_f = |x| / (Sg St) (fp32, clamped to [0, 2]) onto the <ex, mx> grid; int16 codes."""
    e, q = _mls_grid(xf_ratio, fmt, rounding, rbits)
    code = _mls_magnitude_code(e, q, fmt)
    return _signed_codes(code, negative & (code > 0), fmt)


def _mls_torch(x: torch.Tensor, fmt: MLS, rounding: str, seed: int, block: Optional[int]) -> QTensor:
    xf = x.detach().float().contiguous()
    view = _group_view(xf, block)
    st = view.abs().amax()
    gmax = _reduce_groups(view.abs().amax(dim=2, keepdim=True), fmt.group)  # [P|1, Q|1, 1]
    sgf = gmax / torch.where(st > 0, st, torch.ones_like(st))
    scale_codes = group_scale_codes(sgf, fmt.eg, fmt.mg)
    sg = group_scale_values(scale_codes, fmt.mg)
    inv = torch.reciprocal(sg * st).clamp(max=FLT_MAX)
    stochastic = rounding == "stochastic"
    if stochastic and xf.numel() > _INT32_COUNTERS:
        rbits = _group_view(random_bits(xf.numel(), seed, xf.device).view(xf.shape), block)
        ratio = (view.abs() * inv).clamp(max=2.0)
        codes = _ungroup(mls_element_codes(ratio, view < 0, fmt, rounding, rbits), xf.shape)
        return _with_values(QTensor(fmt, codes, scale_codes[:, :, 0], st.clone(), x.dtype, block))
    row_len = xf.shape[-1] if xf.dim() == 2 else view.shape[1] * view.shape[2]

    def torch_elements(fn):
        codes, values = fn(view, inv, sg, st, _keys_tensor(seed, xf.device), row_len, fmt, stochastic)
        return _ungroup(codes, xf.shape), _ungroup(values, xf.shape)

    codes, values = (_run_triton("mls", (fmt, stochastic), xf,
                                 lambda kernels: kernels.mls_elements(xf, inv, sg, st, seed, fmt, stochastic, block),
                                 lambda: torch_elements(_mls_elements))
                     or torch_elements(_elementwise_mls(xf.device)))
    return QTensor(fmt, codes, scale_codes[:, :, 0], st.clone(), x.dtype, block, values=values.to(x.dtype))


def _mls_elements(view, inv, sg, st, keys, row_len: int, fmt: MLS, stochastic: bool):
    """Codes and values of a grouped view [P, Q, B] (per-group inv, sg: [P|1, Q|1, 1]).

    Pure elementwise work, so that torch.compile fuses it into one kernel on CUDA; the random
    counters are the flat source indices p * row_len + q * B + b (padding lanes are discarded).
    """
    ratio = (view.abs() * inv).clamp(max=2.0)
    rbits = None
    if stochastic:
        n_p, n_q, n_b = view.shape
        dev = view.device
        idx = (torch.arange(n_p, device=dev, dtype=torch.int32)[:, None, None] * row_len
               + torch.arange(n_q, device=dev, dtype=torch.int32)[None, :, None] * n_b
               + torch.arange(n_b, device=dev, dtype=torch.int32))
        r = _hash32_int32(_hash32_int32(idx ^ keys[0]) ^ keys[1])
        rbits = (r >> 8) & 0xFFFFFF
    e, q = _mls_grid(ratio, fmt, "stochastic" if stochastic else "nearest", rbits)
    code = _mls_magnitude_code(e, q, fmt)
    sign = (view < 0) & (code > 0)
    mag = (q.to(torch.float32) * pow2(e - fmt.mx)).clamp(max=fmt.max_int * 2.0 ** (fmt.exmin - fmt.mx))  # exact
    return _signed_codes(code, sign, fmt), (torch.where(sign, -mag, mag) * sg) * st


_compiled: dict = {}


def _elementwise_mls(device: torch.device):
    return _maybe_compiled("mls", _mls_elements, device)


def _maybe_compiled(name: str, fn, device: torch.device):
    """``fn`` through torch.compile on CUDA (one fused kernel instead of dozens of passes);
    eager elsewhere or with LOWBIT_COMPILE=0. Both are the same arithmetic (tests compare)."""
    mode = os.environ.get("LOWBIT_COMPILE", "1")  # "0": never, "1": on CUDA, "force": everywhere
    if mode == "0" or (device.type != "cuda" and mode != "force"):
        return fn
    if name not in _compiled:
        try:
            _compiled[name] = torch.compile(fn, dynamic=True)
        except Exception:  # no compiler backend: eager is the same arithmetic, only slower
            _compiled[name] = fn
    compiled = _compiled[name]

    def run(*args):
        try:
            return compiled(*args)
        except Exception as err:  # a failed compile must not stop training: fall back, say so once
            if compiled is not fn:
                warnings.warn(f"lowbit: torch.compile of the {name} quantizer failed ({err!r}); using eager ops")
                _compiled[name] = fn
            return fn(*args)

    return run


# ---------------------------------------------------------------- Triton (CUDA)

_TRITON_DEVICE_TYPES = ("cuda",)  # where the fused Triton element pass is used (tests add "cpu" + interpreter)
_triton_state: dict = {}


def _triton_kernels():
    """``lowbit.quant_triton``, or None when triton does not import here (checked once)."""
    if "module" not in _triton_state:
        try:
            from . import quant_triton
        except Exception:  # no triton (or a broken install): the torch path is the same arithmetic
            quant_triton = None
        _triton_state["module"] = quant_triton
    return _triton_state["module"]


def _run_triton(name: str, key, xf: torch.Tensor, launch, torch_elements):
    """``launch(quant_triton)`` -> (codes, values) from one fused Triton kernel, or None for the torch
    path: not on CUDA, LOWBIT_TRITON=0, no triton, more elements than int32 counters cover, or a
    failed launch (warned once per quantizer; that quantizer then stays on the torch path).

    The first call per ``key`` (format, rounding) is checked against ``torch_elements()`` (eager torch
    ops) bit for bit: a kernel that compiles but computes differently on this GPU is caught there,
    warned about, and replaced by the torch path."""
    if (xf.device.type not in _TRITON_DEVICE_TYPES or os.environ.get("LOWBIT_TRITON", "1") == "0"
            or name in _triton_state.setdefault("failed", set())):
        return None
    kernels = _triton_kernels()
    if kernels is None or xf.numel() > kernels.MAX_ELEMENTS:
        return None
    try:
        codes, values = launch(kernels)
    except Exception as err:  # a kernel that does not build must not stop training
        _triton_failed(name, f"failed ({err!r})")
        return None
    checked = _triton_state.setdefault("checked", set())
    if key not in checked:
        want_codes, want_values = torch_elements()
        if not (torch.equal(codes, want_codes) and torch.equal(values.view(torch.int32), want_values.view(torch.int32))):
            _triton_failed(name, "gave other codes or values than torch ops on its first call")
            return want_codes, want_values
        checked.add(key)
    return codes, values


def _triton_failed(name: str, what: str) -> None:
    _triton_state["failed"].add(name)
    warnings.warn(f"lowbit: the Triton {name} quantizer {what}; using torch ops from now on")


def seed_words(seed: int) -> tuple:
    """The 64-bit seed as its two 32-bit words (k0 low, k1 high), each as a signed int32."""
    return _signed32(seed & M32), _signed32((seed >> 32) & M32)


def _keys_tensor(seed: int, device) -> torch.Tensor:
    """The seed words as the int32 tensor the torch element functions take."""
    return torch.tensor(seed_words(seed), dtype=torch.int32, device=device)


# ---------------------------------------------------------------- PoT


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


def _pot_torch(x: torch.Tensor, fmt: PoT, rounding: str, seed: int, clip_ratio: float) -> QTensor:
    xf = x.detach().float().contiguous()
    s = pot_scale_exponent(float(xf.abs().amax()), clip_ratio)
    stochastic = rounding == "stochastic"
    scale = pow2(torch.tensor(s)).to(xf.device)
    if stochastic and xf.numel() > _INT32_COUNTERS:
        z = xf.abs() * 2.0 ** (-s // 2) * 2.0 ** (-s - (-s // 2))
        rbits = random_bits(xf.numel(), seed, xf.device).view(xf.shape)
        codes = pot_element_codes(z, xf < 0, fmt.max_code, rounding, rbits)
        return _with_values(QTensor(fmt, codes, None, scale, x.dtype, None))

    def torch_elements(fn):
        codes, values = fn(xf.reshape(-1), _keys_tensor(seed, xf.device), float(2.0 ** (-s // 2)),
                           float(2.0 ** (-s - (-s // 2))), float(2.0 ** s), fmt.max_code, stochastic)
        return codes.view(xf.shape), values.view(xf.shape)

    codes, values = (_run_triton("pot", (fmt, stochastic), xf,
                                 lambda kernels: kernels.pot_elements(xf, seed, s, fmt, stochastic),
                                 lambda: torch_elements(_pot_elements))
                     or torch_elements(_maybe_compiled("pot", _pot_elements, xf.device)))
    return QTensor(fmt, codes, None, scale, x.dtype, None, values=values.to(x.dtype))


def _pot_elements(flat, keys, step1: float, step2: float, scale: float, max_code: int, stochastic: bool):
    """Codes and values of PoT elements; z = |x| 2^-s in two exact power-of-two steps."""
    z = flat.abs() * step1 * step2
    rbits = None
    if stochastic:
        idx = torch.arange(flat.numel(), device=flat.device, dtype=torch.int32)
        rbits = (_hash32_int32(_hash32_int32(idx ^ keys[0]) ^ keys[1]) >> 8) & 0xFFFFFF
    codes = pot_element_codes(z, flat < 0, max_code, "stochastic" if stochastic else "nearest", rbits)
    c = codes.to(torch.int32)
    e = c & max_code
    mag = torch.where(e == 0, torch.zeros_like(e, dtype=torch.float32), pow2(e - max_code))
    sign = 1.0 - 2.0 * ((c >> 4) & 1).to(torch.float32)
    return codes, (sign * mag) * scale


# ---------------------------------------------------------------- Mogami / fp32


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


def _bits_qtensor(fmt, xf: torch.Tensor, dtype: torch.dtype) -> QTensor:
    one = torch.ones((), dtype=torch.float32, device=xf.device)
    return _with_values(QTensor(fmt, xf.view(torch.int32).clone(), None, one, dtype, None))


def _mogami_quantize(x: torch.Tensor, fmt: Mogami, rounding: str, seed: int, native: bool) -> QTensor:
    xf = x.detach().float().contiguous()
    if fmt.dtype == "fp32":
        return _bits_qtensor(fmt, xf, x.dtype)
    if native:
        return _bf16_native(x, xf, fmt, rounding, seed)
    rbits = random_bits(xf.numel(), seed, xf.device, keep=16).view(xf.shape) if rounding == "stochastic" else None
    codes = _as_int16(round_to_bf16_bits(xf, rounding, rbits))
    one = torch.ones((), dtype=torch.float32, device=xf.device)
    return _with_values(QTensor(fmt, codes, None, one, x.dtype, None))


def _with_values(qt: QTensor) -> QTensor:
    return QTensor(qt.fmt, qt.codes, qt.scale_codes, qt.tensor_scale, qt.dtype, qt.block, values=qt.decode())


# ---------------------------------------------------------------- native CPU kernel

_NATIVE_CDEF = """
int64_t lowbit_block_absmax(const float *x, int64_t rows, int64_t len, int64_t block, float *out);
int lowbit_mls(const float *x, int64_t rows, int64_t len, int64_t block, int64_t P, int64_t Q, int group, int eg,
               int mg, int ex, int mx, int stochastic, uint64_t seed, float *st_out, int16_t *scale_codes,
               int16_t *codes, float *values);
void lowbit_pot_quantize(const float *x, int64_t n, int32_t s, int32_t half, int max_code,
                         int stochastic, uint64_t seed, int16_t *codes, float *values);
int64_t lowbit_bf16_round(const float *x, int64_t n, int stochastic, uint64_t seed, int16_t *codes, float *values);
int64_t lowbit_mogami_mul_f32(const uint32_t *a, const uint32_t *b, int64_t n, uint32_t *out);
int64_t lowbit_mogami_mul_bf16(const uint16_t *a, const uint16_t *b, int64_t n, uint16_t *out);
int64_t lowbit_pack_codes(const uint16_t *codes, int64_t n, int lane_bits, int code_bits, uint8_t *out);
"""
_native_state: dict = {}
_CHUNK = 1 << 16  # elements per parallel block of a whole-tensor reduction


def _native_lib():
    """(ffi, lib) of csrc/quantize.c, built once per source hash; raises RuntimeError if no compiler."""
    if "lib" not in _native_state:
        from pathlib import Path

        from ._build import load

        src = Path(__file__).resolve().parent / "csrc" / "quantize.c"
        flags = ["-fopenmp", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-std=c11"]
        _native_state["lib"] = load("quantize", _NATIVE_CDEF, [src], flags=flags, cplus=False)
    return _native_state["lib"]


def native_available() -> bool:
    """True when the native kernel builds (and loads) on this machine; cached."""
    if "ok" not in _native_state:
        try:
            _native_lib()
            _native_state["ok"] = True
        except Exception as err:  # no compiler / no OpenMP: the torch path still works
            _native_state["ok"] = False
            _native_state["error"] = repr(err)
    return _native_state["ok"]


_HUGE_MIN_BYTES = 32 << 20  # glibc serves smaller blocks from its heap, reused without page faults


def _empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An output buffer; large ones are backed by transparent huge pages.

    A fresh multi-MB tensor costs one page fault per 4 KiB on first touch, which is most of
    the time of a streaming kernel (and of ``clone()``). With 2 MiB pages it is ~1/512 of that.
    LOWBIT_HUGEPAGES=0 turns this off.
    """
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    if nbytes < _HUGE_MIN_BYTES or os.environ.get("LOWBIT_HUGEPAGES", "1") == "0" or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # frombuffer warns about non-resizable storage
        return torch.frombuffer(buf, dtype=dtype).view(shape)


def _ptr(ffi, t: torch.Tensor, ctype: str):
    return ffi.cast(ctype, t.data_ptr())


def _raise_nonfinite(x: torch.Tensor) -> None:
    _check_finite(x)
    raise AssertionError("native kernel counted NaN/Inf that torch does not see")


def _mls_native(x: torch.Tensor, fmt: MLS, rounding: str, seed: int, block: Optional[int]) -> QTensor:
    ffi, lib = _native_lib()
    xf = x.detach().to(torch.float32).contiguous()
    if xf.dim() == 4:
        n, c, h, w = xf.shape
        rows, length, blk, grid = n * c, h * w, h * w, (n, c)
    else:
        rows, length = xf.shape
        blk = block
        grid = (rows, -(-length // block))
    layout = (grid[0] if fmt.group in ("nc", "n") else 1, grid[1] if fmt.group in ("nc", "c") else 1)
    scale_codes = torch.empty(layout, dtype=torch.int16)
    codes = _empty(xf.shape, torch.int16)
    values = _empty(xf.shape, torch.float32)
    st = ffi.new("float *")
    status = lib.lowbit_mls(_ptr(ffi, xf, "float *"), rows, length, blk, grid[0], grid[1],
                            GROUPINGS.index(fmt.group), fmt.eg, fmt.mg, fmt.ex, fmt.mx, int(rounding == "stochastic"),
                            seed, st, _ptr(ffi, scale_codes, "int16_t *"), _ptr(ffi, codes, "int16_t *"),
                            _ptr(ffi, values, "float *"))
    if status == -1:
        _raise_nonfinite(x)
    if status == -2:
        raise MemoryError(f"MLS quantizer: no memory for the group maxima of a {tuple(x.shape)} tensor")
    return QTensor(fmt, codes, scale_codes, torch.tensor(st[0], dtype=torch.float32), x.dtype, block,
                   values=values.to(x.dtype))


def _pot_native(x: torch.Tensor, fmt: PoT, rounding: str, seed: int, clip_ratio: float) -> QTensor:
    ffi, lib = _native_lib()
    xf = x.detach().to(torch.float32).contiguous()
    n = xf.numel()
    bmax = torch.empty(-(-n // _CHUNK), dtype=torch.float32)
    if lib.lowbit_block_absmax(_ptr(ffi, xf, "float *"), 1, n, _CHUNK, _ptr(ffi, bmax, "float *")):
        _raise_nonfinite(x)
    s = pot_scale_exponent(float(bmax.amax()), clip_ratio)
    codes = _empty(xf.shape, torch.int16)
    values = _empty(xf.shape, torch.float32)
    lib.lowbit_pot_quantize(_ptr(ffi, xf, "float *"), n, s, -s // 2, fmt.max_code, int(rounding == "stochastic"),
                            seed, _ptr(ffi, codes, "int16_t *"), _ptr(ffi, values, "float *"))
    scale = pow2(torch.tensor(s))
    return QTensor(fmt, codes, None, scale, x.dtype, None, values=values.to(x.dtype))


def _bf16_native(x: torch.Tensor, xf: torch.Tensor, fmt: Mogami, rounding: str, seed: int) -> QTensor:
    ffi, lib = _native_lib()
    codes = _empty(xf.shape, torch.int16)
    values = _empty(xf.shape, torch.float32)
    if lib.lowbit_bf16_round(_ptr(ffi, xf, "float *"), xf.numel(), int(rounding == "stochastic"), seed,
                             _ptr(ffi, codes, "int16_t *"), _ptr(ffi, values, "float *")):
        _raise_nonfinite(x)
    one = torch.ones((), dtype=torch.float32)
    return QTensor(fmt, codes, None, one, x.dtype, None, values=values.to(x.dtype))
