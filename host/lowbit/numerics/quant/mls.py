"""MLS (multi-level scaling): tensor scale, group scales rounded up, elements on the <Ex,Mx> grid."""
from __future__ import annotations

from typing import Optional

import torch

from lowbit.numerics.formats import GROUPINGS, MLS
from lowbit.numerics.qtensor import QTensor
from lowbit.numerics.quant.rng import INT32_COUNTERS, hash32_int32, keys_tensor, random_bits
from lowbit.numerics.quant.common import FLT_MAX, float_exponent, group_scale_codes, group_scale_values, group_view, pow2, reduce_groups, round_grid, ungroup, with_values
from lowbit.numerics.quant.native import contiguous, empty_buffer, library, raise_nonfinite, storage_order
from lowbit.numerics.quant.accel import maybe_compiled, run_triton


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


def mls_torch(x: torch.Tensor, fmt: MLS, rounding: str, seed: int, block: Optional[int]) -> QTensor:
    xf = x.detach().float().contiguous()
    view = group_view(xf, block)
    st = view.abs().amax()
    gmax = reduce_groups(view.abs().amax(dim=2, keepdim=True), fmt.group)  # [P|1, Q|1, 1]
    sgf = gmax / torch.where(st > 0, st, torch.ones_like(st))
    scale_codes = group_scale_codes(sgf, fmt.eg, fmt.mg)
    sg = group_scale_values(scale_codes, fmt.mg)
    inv = torch.reciprocal(sg * st).clamp(max=FLT_MAX)
    stochastic = rounding == "stochastic"
    if stochastic and xf.numel() > INT32_COUNTERS:
        rbits = group_view(random_bits(xf.numel(), seed, xf.device).view(xf.shape), block)
        ratio = (view.abs() * inv).clamp(max=2.0)
        codes = ungroup(mls_element_codes(ratio, view < 0, fmt, rounding, rbits), xf.shape)
        return with_values(QTensor(fmt, codes, scale_codes[:, :, 0], st.clone(), x.dtype, block))
    row_len = xf.shape[-1] if xf.dim() == 2 else view.shape[1] * view.shape[2]

    def torch_elements(fn):
        codes, values = fn(view, inv, sg, st, keys_tensor(seed, xf.device), row_len, fmt, stochastic)
        return ungroup(codes, xf.shape), ungroup(values, xf.shape)

    codes, values = (run_triton("mls", (fmt, stochastic), xf,
                                 lambda kernels: kernels.mls_elements(xf, inv, sg, st, seed, fmt, stochastic, block),
                                 lambda: torch_elements(mls_elements))
                     or torch_elements(_elementwise_mls(xf.device)))
    return QTensor(fmt, codes, scale_codes[:, :, 0], st.clone(), x.dtype, block, values=values.to(x.dtype))


def mls_elements(view, inv, sg, st, keys, row_len: int, fmt: MLS, stochastic: bool):
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
        r = hash32_int32(hash32_int32(idx ^ keys[0]) ^ keys[1])
        rbits = (r >> 8) & 0xFFFFFF
    e, q = _mls_grid(ratio, fmt, "stochastic" if stochastic else "nearest", rbits)
    code = _mls_magnitude_code(e, q, fmt)
    sign = (view < 0) & (code > 0)
    mag = (q.to(torch.float32) * pow2(e - fmt.mx)).clamp(max=fmt.max_int * 2.0 ** (fmt.exmin - fmt.mx))  # exact
    return _signed_codes(code, sign, fmt), (torch.where(sign, -mag, mag) * sg) * st


def _elementwise_mls(device: torch.device):
    return maybe_compiled("mls", mls_elements, device)


def mls_native(x: torch.Tensor, fmt: MLS, rounding: str, seed: int, block: Optional[int]) -> QTensor:
    ffi, lib = library()
    if x.dim() == 2 and x.dtype == torch.float32 and not x.is_contiguous() and storage_order(x) == [1, 0]:
        q = _mls_native_transposed(ffi, lib, x, fmt, rounding, seed, block)
        if q is not None:
            return q
    xf = contiguous(x if x.dtype == torch.float32 else x.detach().to(torch.float32))
    if xf.dim() == 4:
        n, c, h, w = xf.shape
        rows, length, blk, grid = n * c, h * w, h * w, (n, c)
    else:
        rows, length = xf.shape
        blk = block
        grid = (rows, -(-length // block))
    scale_codes, codes, values, st = _outputs(ffi, fmt, grid, xf.shape)
    status = lib.lowbit_mls(ffi.cast("float *", xf.data_ptr()), rows, length, blk, grid[0], grid[1],
                            GROUPINGS.index(fmt.group), fmt.eg, fmt.mg, fmt.ex, fmt.mx, int(rounding == "stochastic"),
                            seed, st, *_pointers(ffi, scale_codes, codes, values))
    return _qtensor(x, fmt, block, status, scale_codes, codes, values, st)


def _mls_native_transposed(ffi, lib, x, fmt: MLS, rounding: str, seed: int, block: int) -> Optional[QTensor]:
    """x = s.t() of a contiguous s [K, rows] (the layers' transposes): quantized in place by
    lowbit_mls_cols, the codes and values returned as the same transposed view; None where the kernel
    does not take it (no AVX-512, rows not a multiple of 16), and the caller copies."""
    rows, length = x.shape
    grid = (rows, -(-length // block))
    scale_codes, codes, values, st = _outputs(ffi, fmt, grid, (length, rows))
    status = lib.lowbit_mls_cols(ffi.cast("float *", x.data_ptr()), 1, length, rows, block,
                                 GROUPINGS.index(fmt.group), fmt.eg, fmt.mg, fmt.ex, fmt.mx,
                                 int(rounding == "stochastic"), seed, st, *_pointers(ffi, scale_codes, codes, values))
    if status == -3:
        return None
    return _qtensor(x, fmt, block, status, scale_codes, codes.t(), values.t(), st)


def _outputs(ffi, fmt: MLS, grid, shape):
    """Scale codes in the QTensor layout [P|1][Q|1], codes, values and the tensor scale's slot."""
    layout = (grid[0] if fmt.group in ("nc", "n") else 1, grid[1] if fmt.group in ("nc", "c") else 1)
    return (torch.empty(layout, dtype=torch.int16), empty_buffer(shape, torch.int16),
            empty_buffer(shape, torch.float32), ffi.new("float *"))


def _pointers(ffi, scale_codes, codes, values):
    return (ffi.cast("int16_t *", scale_codes.data_ptr()), ffi.cast("int16_t *", codes.data_ptr()),
            ffi.cast("float *", values.data_ptr()))


def _qtensor(x, fmt: MLS, block, status: int, scale_codes, codes, values, st) -> QTensor:
    if status == -1:
        raise_nonfinite(x)
    if status == -2:
        raise MemoryError(f"MLS quantizer: no memory for the group maxima of a {tuple(x.shape)} tensor")
    return QTensor(fmt, codes, scale_codes, torch.tensor(st[0], dtype=torch.float32), x.dtype, block,
                   values=values if x.dtype == torch.float32 else values.to(x.dtype))
