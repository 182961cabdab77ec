"""The software backend: torch ops on dequantized values (CPU and CUDA), native Mogami GEMMs.

MLS and PoT products are exact in fp32 (few-bit significands), so F.conv2d / matmul on the
dequantized operands is the exact product set summed in fp32 (summation order: the BLAS's).
Mogami products are computed by ``csrc/mogami_gemm.cpp`` (OpenMP, vectorised over output
elements, fixed order: each output adds its products in increasing reduction index) on CPU:
convolutions run as direct kernels (no im2col / col2im buffers) where no operand is Inf/NaN and
no product can saturate, else as im2col + GEMM (+ F.fold); on CUDA by chunked torch integer ops.
Where the native kernels cannot be built (no C++ compiler) CPU tensors take the torch integer ops
too, with one warning naming the fix: same products, sums in torch's order, slower.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from lowbit.numerics.quant.native import ptr
from lowbit.numerics.formats import Mogami
from lowbit.numerics.mogami import FP32_MAX_FINITE_BITS, mogami_mul_bits
from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Op
from lowbit.backends.base import Backend, Capabilities, ConvGeometry

_CSRC = Path(__file__).resolve().parent.parent / "csrc" / "mogami_gemm.cpp"
_CDEF = """
void mogami_gemm(const uint32_t* A, const uint32_t* B, float* C, int64_t batch, int64_t m_rows,
                 int64_t n_cols, int64_t k_red, int64_t sab, int64_t sam, int64_t sbb, int reduce_batch,
                 uint32_t max_finite, uint32_t max_b);
int mogami_conv2d(int which, const uint32_t* p, const uint32_t* q, float* out, const int64_t* geo,
                  uint32_t max_finite);
void mogami_grad_fixed_col(const float* G, const uint32_t* P, const uint32_t* Q, float* C, int64_t batch,
                           int64_t m_rows, int64_t n_cols, int64_t k_red, int64_t sgb);
void mogami_grad_reduce(const float* G, const uint32_t* X, const uint32_t* W, float* C, int64_t batch,
                        int64_t m_rows, int64_t n_cols, int64_t k_red, int64_t sgb, int64_t sgi, int64_t sxb);
void im2col(const float* x, float* cols, int64_t n_batch, int64_t channels, int64_t height, int64_t width,
            int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
            int64_t out_h, int64_t out_w, int transposed);
void mogami_mul_bits(const uint32_t* a, const uint32_t* b, uint32_t* out, int64_t n, uint32_t max_finite);
"""
_FLAGS = ("-fopenmp", "-march=native", "-fno-fast-math", "-std=c++17")


def native():
    """(ffi, lib) of the Mogami kernels, built once per source hash."""
    from lowbit.runtime.native import load

    return load("mogami_gemm", _CDEF, [_CSRC], flags=_FLAGS)


_NATIVE: dict = {}


def native_or_none():
    """``native()``, or None where it cannot be built or loaded: then CPU tensors take the torch
    integer path (said once, with the fix)."""
    if "lib" not in _NATIVE:
        try:
            _NATIVE["lib"] = native()
        except (RuntimeError, OSError) as err:
            _NATIVE["lib"] = None
            reason = str(err).splitlines()[0][:300]
            warnings.warn(f"lowbit: the native Mogami kernels are unavailable ({reason}); Mogami layers on CPU run "
                          "as torch integer ops instead (same products, sums in torch's order, several times "
                          "slower). Install a C++ compiler with OpenMP (Debian/Ubuntu: apt-get install g++) for "
                          "the native kernels", RuntimeWarning, stacklevel=3)
    return _NATIVE["lib"]




def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32).contiguous().view(torch.int32)


# ---- Mogami GEMM primitives on fp32 tensors (bit patterns read from the values) ----------

_MAG, _EXP, _MAN, _ONE = 0x7FFFFFFF, 0x7F800000, 0x007FFFFF, 0x3F800000
_MAX_FINITE = FP32_MAX_FINITE_BITS
BF16_MAX_AS_FP32 = 0x7F7F0000


def max_finite_bits(fmt) -> int:
    """Saturation value (fp32 bits) of Mogami products in ``fmt``."""
    return BF16_MAX_AS_FP32 if isinstance(fmt, Mogami) and fmt.dtype == "bf16" else _MAX_FINITE


def _torch_mul_bits(ua: torch.Tensor, ub: torch.Tensor, max_finite: int = _MAX_FINITE) -> torch.Tensor:
    """Mogami products of int32 fp32 patterns (the CUDA path): ``numerics.mogami.mogami_mul_bits``."""
    r = mogami_mul_bits(ua.to(torch.int64), ub.to(torch.int64), torch.float32, max_finite)
    return (r - ((r >> 31) << 32)).to(torch.int32)  # back to the int32 pattern


def _torch_dy_bits(ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
    ux, uy = ux.to(torch.int64) & 0xFFFFFFFF, uy.to(torch.int64) & 0xFFFFFFFF
    t = (ux & _MAG) + (uy & _MAG) - _ONE
    bad = ((ux & _EXP) == _EXP) | ((uy & _EXP) == _EXP) | ((ux & _EXP) == 0) | ((uy & _EXP) == 0)
    bad = bad | (t >= _EXP) | (t < 0x00800000)
    carry = ((ux & _MAN) + (uy & _MAN)) >> 23
    d = (ux & 0x80000000) | ((ux & _EXP) + (carry << 23))
    d = torch.where(bad, torch.zeros_like(d), d)
    return (d - ((d >> 31) << 32)).to(torch.int32)


def mogami_bmm(a: torch.Tensor, b: torch.Tensor, *, reduce_batch: bool = False,
               max_finite: int = _MAX_FINITE, b_max_bits: int | None = None) -> torch.Tensor:
    """C[b] = A[b] (x) B[b] for a [Ba|1, M, K], b [Bb, K, N] fp32; reduce_batch sums over b too.
    ``max_finite``: saturation bits (``max_finite_bits(fmt)``). ``b_max_bits``: an upper bound of
    b's magnitude patterns (bits & 0x7FFFFFFF) if known, else the kernel scans b to decide between
    its fast path and the general loop (>= 0x7F800000 forces the general loop; same results)."""
    batch = b.shape[0]
    if a.device.type == "cpu" and native_or_none() is not None:
        a_bits, b_bits = _bits(a), _bits(b)
        m, k = a.shape[1], a.shape[2]
        n = b.shape[2]
        out = torch.empty((m, n) if reduce_batch else (batch, m, n), dtype=torch.float32)
        ffi, lib = native()
        sab = 0 if a.shape[0] == 1 and batch > 1 else m * k
        lib.mogami_gemm(ptr(ffi, a_bits, "uint32_t*"), ptr(ffi, b_bits, "uint32_t*"),
                        ptr(ffi, out, "float*"), batch, m, n, k, sab, k, k * n, int(reduce_batch), max_finite,
                        0xFFFFFFFF if b_max_bits is None else b_max_bits)
        return out
    return _torch_bmm(a, b, reduce_batch, max_finite)


def _torch_bmm(a, b, reduce_batch, max_finite=_MAX_FINITE, chunk_elems: int = 1 << 24):
    """Same products on any device; sums each k-chunk with torch (order: torch's reduction)."""
    a_bits, b_bits = _bits(a).expand(b.shape[0], -1, -1), _bits(b)
    batch, m, k = a_bits.shape
    n = b.shape[2]
    out = torch.zeros(batch, m, n, dtype=torch.float32, device=b.device)
    step = max(1, chunk_elems // max(1, batch * m * n))
    for k0 in range(0, k, step):
        pa = a_bits[:, :, k0:k0 + step, None]
        pb = b_bits[:, None, k0:k0 + step, :]
        out += _torch_mul_bits(pa, pb, max_finite).view(torch.float32).sum(dim=2)
    return out.sum(0) if reduce_batch else out


def mogami_grad_fixed_col(g, p, q):
    """C[b,i,j] = SUM_r G[b,r,j] * d(P[i,r] (x) Q[b,i,j])/dQ;  g [B,R,J], p [I,R], q [B,I,J]."""
    batch, rr, jj = g.shape
    ii = p.shape[0]
    if g.device.type == "cpu" and native_or_none() is not None:
        g, pb, qb = g.contiguous(), _bits(p), _bits(q)
        out = torch.empty(batch, ii, jj, dtype=torch.float32)
        ffi, lib = native()
        lib.mogami_grad_fixed_col(ptr(ffi, g, "float*"), ptr(ffi, pb, "uint32_t*"), ptr(ffi, qb, "uint32_t*"),
                                  ptr(ffi, out, "float*"), batch, ii, jj, rr, rr * jj)
        return out
    d = _torch_dy_bits(_bits(p)[None, :, :, None], _bits(q)[:, :, None, :]).view(torch.float32)
    return (g[:, None, :, :] * d).sum(dim=2)


def mogami_grad_reduce(g, x, w):
    """C[i,j] = SUM_{b,r} G[b,i,r] * d(X[b,r,j] (x) W[i,j])/dW;  g [B,I,R], x [B,R,J], w [I,J]."""
    batch, ii, rr = g.shape
    jj = w.shape[1]
    if g.device.type == "cpu" and native_or_none() is not None:
        g, xb, wb = g.contiguous(), _bits(x), _bits(w)
        out = torch.empty(ii, jj, dtype=torch.float32)
        ffi, lib = native()
        lib.mogami_grad_reduce(ptr(ffi, g, "float*"), ptr(ffi, xb, "uint32_t*"), ptr(ffi, wb, "uint32_t*"),
                               ptr(ffi, out, "float*"), batch, ii, jj, rr, ii * rr, rr, rr * jj)
        return out
    out = torch.zeros(ii, jj, dtype=torch.float32, device=g.device)
    for bi in range(batch):
        d = _torch_dy_bits(_bits(x[bi])[None, :, :], _bits(w)[:, None, :]).view(torch.float32)
        out += (g[bi][:, :, None] * d).sum(dim=1)
    return out


# ---- the backend -------------------------------------------------------------------------

@contextlib.contextmanager
def exact_fp32(device: torch.device):
    """No TF32 inside: on CUDA, cuDNN convs and matmuls would round MLS/PoT values that carry an
    arbitrary fp32 tensor scale to 10-bit mantissas, and the products would no longer be exact."""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            yield
    finally:
        matmul.allow_tf32 = saved


def _geom_kwargs(geom: ConvGeometry) -> dict:
    return dict(stride=geom.stride, padding=geom.padding, dilation=geom.dilation)


def _unfold(x: torch.Tensor, kernel, geom: ConvGeometry, *, transposed: bool = False) -> torch.Tensor:
    """im2col as F.unfold ([N, K, L]; transposed: [N, L, K]); native on CPU."""
    if x.device.type != "cpu" or native_or_none() is None:
        cols = F.unfold(x, kernel, dilation=geom.dilation, padding=geom.padding, stride=geom.stride)
        return cols.transpose(1, 2).contiguous() if transposed else cols
    x = x.float().contiguous()
    n, c, h, w = x.shape
    ho, wo = geom.output_hw((h, w), kernel)
    k, l = c * kernel[0] * kernel[1], ho * wo
    cols = torch.empty((n, l, k) if transposed else (n, k, l), dtype=torch.float32)
    ffi, lib = native()
    lib.im2col(ptr(ffi, x, "float*"), ptr(ffi, cols, "float*"), n, c, h, w, kernel[0], kernel[1],
               geom.stride[0], geom.stride[1], geom.padding[0], geom.padding[1], geom.dilation[0],
               geom.dilation[1], ho, wo, int(transposed))
    return cols


_CONV_FORWARD, _CONV_BACKWARD_DATA, _CONV_WEIGHT_GRAD = 0, 1, 2


def _direct_conv(which: int, p: torch.Tensor, q: torch.Tensor, out_shape, x_shape, w_shape, geom: ConvGeometry,
                 max_finite: int):
    """The native direct convolution kernels (fast path, no im2col / col2im) on CPU: the output,
    or None where they do not apply (an Inf/NaN operand, a product that could saturate, narrow
    outputs); the caller then lowers to the GEMM."""
    if p.device.type != "cpu" or native_or_none() is None:
        return None
    n, c, h, w = x_shape
    co, _, kh, kw = w_shape
    ho, wo = geom.output_hw((h, w), (kh, kw))
    if wo < 8 or ho < 1 or n == 0:
        return None
    p, q = _bits(p), _bits(q)
    out = torch.empty(tuple(out_shape), dtype=torch.float32)
    ffi, lib = native()
    geo = ffi.new("int64_t[15]", [n, c, h, w, co, kh, kw, *geom.stride, *geom.padding, *geom.dilation, ho, wo])
    status = lib.mogami_conv2d(which, ptr(ffi, p, "uint32_t*"), ptr(ffi, q, "uint32_t*"), ptr(ffi, out, "float*"),
                               geo, max_finite)
    if status == 2:
        raise MemoryError("mogami_conv2d: out of memory for its scratch buffers")
    return out if status == 0 else None


class SoftwareBackend(Backend):
    name = "software"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            name="software", kinds=("mls", "pot", "mogami", "fp32"), exact_integer=False,
            devices=("cpu", "cuda"),
            description="torch ops on dequantized values (exact products, fp32 sums); native Mogami GEMM",
        )

    # -- GEMM ----------------------------------------------------------------------------
    def gemm(self, a: QTensor, b: QTensor, *, op: Op = Op.FORWARD) -> torch.Tensor:
        _check_pair(a, b, "gemm", 2)
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"gemm needs a [M,K] and b [N,K] with the same K; got {tuple(a.shape)} and {tuple(b.shape)}")
        if isinstance(a.fmt, Mogami):
            return mogami_bmm(a.dequantize()[None], b.dequantize().t()[None], max_finite=max_finite_bits(a.fmt))[0]
        with exact_fp32(a.device):
            return a.dequantize().float() @ b.dequantize().float().t()

    def gemm_batched(self, a: QTensor, b: QTensor, batch: int, *, op: Op = Op.FORWARD) -> torch.Tensor:
        """[batch, M, N]: slice i of a [batch*M, K] times slice i of b [batch*N, K]^T, the values
        ``gemm`` gives each pair (one torch.bmm; Mogami: the native batched kernel). Either
        operand may also come as a [batch, rows, K] view (a transpose, read in place)."""
        _check_pair(a, b, "gemm_batched", (2, 3))
        k = a.shape[-1]
        va = a.dequantize().float().reshape(batch, -1, k)
        vb = b.dequantize().float().reshape(batch, -1, k)
        if isinstance(a.fmt, Mogami):
            return mogami_bmm(va.contiguous(), vb.transpose(1, 2).contiguous(), max_finite=max_finite_bits(a.fmt))
        with exact_fp32(a.device):
            return torch.bmm(va, vb.transpose(1, 2))

    # -- convolutions ----------------------------------------------------------------------
    def conv2d_forward(self, qw: QTensor, qa: QTensor, geom: ConvGeometry) -> torch.Tensor:
        _check_pair(qw, qa, "conv2d_forward", 4)
        w, a = qw.dequantize().float(), qa.dequantize().float()
        if not isinstance(qw.fmt, Mogami):
            with exact_fp32(a.device):
                return F.conv2d(a, w, None, **_geom_kwargs(geom))
        n, co, kernel = a.shape[0], w.shape[0], w.shape[2:]
        ho, wo = geom.output_hw(a.shape[2:], kernel)
        z = _direct_conv(_CONV_FORWARD, a, w, (n, co, ho, wo), a.shape, w.shape, geom, max_finite_bits(qw.fmt))
        if z is not None:
            return z
        cols = _unfold(a, kernel, geom)  # [N, K, L]
        z = mogami_bmm(w.reshape(1, co, -1), cols, max_finite=max_finite_bits(qw.fmt))
        return z.view(n, co, ho, wo)

    def conv2d_backward_data(self, qe: QTensor, qw: QTensor, geom: ConvGeometry,
                             input_shape: torch.Size) -> torch.Tensor:
        _check_pair(qe, qw, "conv2d_backward_data", 4)
        e, w = qe.dequantize().float(), qw.dequantize().float()
        if not isinstance(qe.fmt, Mogami):
            with exact_fp32(e.device):
                return conv2d_input(tuple(input_shape), w, e, **_geom_kwargs(geom))
        n, co = e.shape[:2]
        dx = _direct_conv(_CONV_BACKWARD_DATA, e, w, tuple(input_shape), tuple(input_shape), w.shape, geom,
                          max_finite_bits(qe.fmt))
        if dx is not None:
            return dx
        wt = w.reshape(co, -1).t().contiguous()[None]  # [1, K, Co]
        dcols = mogami_bmm(wt, e.reshape(n, co, -1), max_finite=max_finite_bits(qe.fmt))
        return self._fold(dcols, input_shape, w.shape[2:], geom)

    def conv2d_weight_grad(self, qe: QTensor, qa: QTensor, geom: ConvGeometry,
                           weight_shape: torch.Size) -> torch.Tensor:
        _check_pair(qe, qa, "conv2d_weight_grad", 4)
        e, a = qe.dequantize().float(), qa.dequantize().float()
        if not isinstance(qe.fmt, Mogami):
            with exact_fp32(e.device):
                return conv2d_weight(a, tuple(weight_shape), e, **_geom_kwargs(geom))
        n, co = e.shape[:2]
        dw = _direct_conv(_CONV_WEIGHT_GRAD, e, a, tuple(weight_shape), a.shape, tuple(weight_shape), geom,
                          max_finite_bits(qe.fmt))
        if dw is not None:
            return dw
        cols_t = _unfold(a, weight_shape[2:], geom, transposed=True)  # [N, L, K]
        dw = mogami_bmm(e.reshape(n, co, -1), cols_t, reduce_batch=True, max_finite=max_finite_bits(qe.fmt))
        return dw.view(weight_shape)

    def conv2d_backward(self, qe: QTensor, qw: QTensor, qa: QTensor, geom: ConvGeometry, *,
                        need_input: bool = True, need_weight: bool = True):
        """(dA, dW) in one aten.convolution_backward call (one pass over E instead of two).
        MLS / PoT / fp32 only; same values as conv2d_backward_data / conv2d_weight_grad."""
        if isinstance(qe.fmt, Mogami):
            raise ValueError("conv2d_backward is the fused path for mls / pot / fp32; Mogami uses the GEMM kernels")
        e, w, a = qe.dequantize().float(), qw.dequantize().float(), qa.dequantize().float()
        with exact_fp32(e.device):
            da, dw, _ = torch.ops.aten.convolution_backward(
                e, a, w, None, list(geom.stride), list(geom.padding), list(geom.dilation), False, [0, 0], 1,
                [need_input, need_weight, False])
        return da, dw

    # -- Mogami exact backward (true derivative of the integer-add product) ----------------
    def mogami_conv2d_backward_data_exact(self, qe: QTensor, qw: QTensor, qa: QTensor,
                                          geom: ConvGeometry) -> torch.Tensor:
        """dA[n,k,l] = SUM_co E[n,co,l] * d(W[co,k] (x) A[n,k,l])/dA, folded back to A's shape."""
        e, w, a = qe.dequantize().float(), qw.dequantize().float(), qa.dequantize().float()
        n, co = e.shape[:2]
        cols = _unfold(a, w.shape[2:], geom)
        dcols = mogami_grad_fixed_col(e.reshape(n, co, -1), w.reshape(co, -1).t(), cols)
        return self._fold(dcols, a.shape, w.shape[2:], geom)

    def mogami_conv2d_weight_grad_exact(self, qe: QTensor, qa: QTensor, qw: QTensor,
                                        geom: ConvGeometry) -> torch.Tensor:
        """dW[co,k] = SUM_{n,l} E[n,co,l] * d(A[n,k,l] (x) W[co,k])/dW."""
        e, w, a = qe.dequantize().float(), qw.dequantize().float(), qa.dequantize().float()
        n, co = e.shape[:2]
        cols_t = _unfold(a, w.shape[2:], geom, transposed=True)
        return mogami_grad_reduce(e.reshape(n, co, -1), cols_t, w.reshape(co, -1)).view(w.shape)

    @staticmethod
    def _fold(dcols, input_shape, kernel, geom):
        return F.fold(dcols, tuple(input_shape[2:]), kernel, dilation=geom.dilation,
                      padding=geom.padding, stride=geom.stride)


def _check_pair(x: QTensor, y: QTensor, where: str, dims) -> None:
    """``dims``: the operands' rank, or a tuple of the ranks allowed."""
    if not isinstance(x, QTensor) or not isinstance(y, QTensor):
        raise TypeError(f"{where} takes QTensors (from lowbit.quantize); got {type(x).__name__}, {type(y).__name__}")
    allowed = dims if isinstance(dims, tuple) else (dims,)
    if x.codes.dim() not in allowed or y.codes.dim() not in allowed:
        ranks = " or ".join(map(str, allowed))
        raise ValueError(f"{where} needs {ranks}-D operands; got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.fmt.kind != y.fmt.kind:
        raise ValueError(f"{where}: operands in different formats ({x.fmt} and {y.fmt}); quantize both to one format")
