"""Software backend: MLS/PoT GEMMs on decoded values, Mogami kernels == mogami_mul summed in order."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowbit.backends.base import ConvGeometry
from lowbit.backends import software
from lowbit.backends.software import (SoftwareBackend, _torch_bmm, mogami_bmm, mogami_grad_fixed_col,
                                      mogami_grad_reduce)
from lowbit.numerics import reference as R
from lowbit.numerics.mogami import mogami_mul
from lowbit.numerics.quant import quantize

FLT_MAX = torch.finfo(torch.float32).max


def seq_sum(products: torch.Tensor, dim: int) -> torch.Tensor:
    """fp32 sum in increasing index along ``dim``, from +0 (the kernels' documented order)."""
    acc = torch.zeros_like(products.select(dim, 0))
    for i in range(products.shape[dim]):
        acc = acc + products.select(dim, i)
    return acc


def hard_operands(shape, seed, *, dtype=torch.float32):
    """Random values with zeros, negatives, and magnitudes that under/overflow in products."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    scale = torch.ldexp(torch.ones(shape), torch.randint(-70, 70, shape, generator=g).float())
    pick = torch.rand(shape, generator=g)
    x = torch.where(pick < 0.15, torch.zeros_like(x), x)
    x = torch.where((pick > 0.9), x * scale, x)
    return x.to(dtype).float()


def mogami_ref_bmm(a, b, dtype=torch.float32):
    """[B, M, K] x [B, K, N] with mogami_mul products, summed over k in order."""
    prods = mogami_mul(a[:, :, :, None].to(dtype), b[:, None, :, :].to(dtype)).float()
    return seq_sum(prods, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mogami_gemm_equals_mogami_mul_summed_in_order(dtype):
    a = hard_operands((2, 5, 37), 0, dtype=dtype)
    b = hard_operands((2, 37, 19), 1, dtype=dtype)
    max_bits = 0x7F7F0000 if dtype == torch.bfloat16 else 0x7F7FFFFF
    out = mogami_bmm(a, b, max_finite=max_bits)
    ref = mogami_ref_bmm(a, b, dtype)
    assert torch.equal(out, ref)
    assert torch.isinf(ref).sum() == 0 and (ref.abs() > 1e30).any()  # saturated products exist


def test_mogami_gemm_shared_a_and_batch_reduction():
    a = hard_operands((1, 4, 9), 2)
    b = hard_operands((3, 9, 11), 3)
    assert torch.equal(mogami_bmm(a, b), mogami_ref_bmm(a.expand(3, -1, -1), b))
    a3 = hard_operands((3, 4, 9), 4)
    red = mogami_bmm(a3, b, reduce_batch=True)
    prods = mogami_mul(a3[:, :, :, None], b[:, None, :, :])  # [B, M, K, N]
    ref = seq_sum(prods.permute(1, 0, 2, 3).reshape(4, 27, 11), 1)  # order: batch-major, then k
    assert torch.equal(red, ref)


def test_mogami_known_products_through_gemm():
    a = torch.tensor([[1.5, 4.5, -6.0, 1.2345, -3.5, 1e-30, 0.0]])
    b = torch.tensor([[1.5, 3.0, 3.0, 32.0, -3.5, -1e-30, 7.0]])
    cols = torch.diag_embed(b[0])  # one product per output column
    out = mogami_bmm(a[None], cols[None])[0, 0]
    expect = torch.tensor([2.0, 13.0, -16.0, 39.504, 12.0, -0.0, 0.0])
    assert torch.equal(out, expect)


def test_torch_path_matches_kernel_within_reordering_bound():
    a, b = hard_operands((2, 6, 50), 5), hard_operands((2, 50, 13), 6)
    b = b.clamp(-1e6, 1e6)
    a = a.clamp(-1e6, 1e6)
    prods = mogami_mul(a[:, :, :, None], b[:, None, :, :])
    bound = 50 * torch.finfo(torch.float32).eps * prods.abs().sum(2)  # reordering an fp32 sum of K terms
    assert ((_torch_bmm(a, b, False) - mogami_bmm(a, b)).abs() <= bound).all()


def _dy_ref(x, y):
    """d(x (x) y)/dy by its definition: sign(x) 2^(ex + carry), 0 where the product is flushed/saturated."""
    x, y = torch.broadcast_tensors(x, y)
    p = mogami_mul(x, y)
    mx, ex = torch.frexp(x)
    my, _ = torch.frexp(y)
    carry = (mx.abs() * 2 - 1) + (my.abs() * 2 - 1) >= 1
    d = torch.copysign(torch.ldexp(torch.ones_like(x), ex - 1 + carry.to(ex.dtype)), x)
    dead = (p == 0) | (p.abs() == FLT_MAX) | (x == 0) | (y == 0)
    return torch.where(dead, torch.zeros_like(d), d)


def test_exact_derivative_is_the_finite_difference_of_mogami_mul():
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(4000, generator=g), torch.randn(4000, generator=g)
    _, ey = torch.frexp(y)
    h = torch.ldexp(torch.full_like(y, 16.0), ey - 24)  # 16 ulps of y
    p0, p1 = mogami_mul(x, y), mogami_mul(x, y + h)
    fd = (p1.double() - p0.double()) / h.double()
    same_piece = (_dy_ref(x, y) == _dy_ref(x, y + h)) & (torch.frexp(y + h)[1] == ey)
    assert same_piece.float().mean() > 0.9
    assert torch.equal(fd[same_piece], _dy_ref(x, y).double()[same_piece])


def test_exact_gradient_kernels_equal_definition_summed_in_order():
    g = hard_operands((2, 7, 12), 8)  # G[b, r, j]
    p = hard_operands((5, 7), 9)  # P[i, r]
    q = hard_operands((2, 5, 12), 10)  # Q[b, i, j]
    d = _dy_ref(p[None, :, :, None], q[:, :, None, :])  # [B, I, R, J]
    ref = seq_sum(g[:, None, :, :] * d, 2)
    assert torch.equal(mogami_grad_fixed_col(g, p, q), ref)

    g2 = hard_operands((3, 4, 6), 11)  # G[b, i, r]
    x2 = hard_operands((3, 6, 8), 12)  # X[b, r, j]
    w2 = hard_operands((4, 8), 13)  # W[i, j]
    d2 = _dy_ref(x2[:, None, :, :], w2[None, :, None, :])  # [B, I, R, J]
    prods = g2[:, :, :, None] * d2
    ref2 = seq_sum(prods.permute(1, 0, 2, 3).reshape(4, 18, 8), 1)
    assert torch.equal(mogami_grad_reduce(g2, x2, w2), ref2)


# ---- conv methods -----------------------------------------------------------------------

GEOM = ConvGeometry(stride=(2, 1), padding=(1, 2), dilation=(1, 2))


def _mogami_q(shape, seed):
    return quantize(hard_operands(shape, seed).clamp(-1e3, 1e3), "mogami:fp32")


def test_mogami_conv_forward_and_approx_backwards():
    be = SoftwareBackend()
    qw, qa = _mogami_q((4, 3, 3, 2), 20), _mogami_q((2, 3, 7, 8), 21)
    w, a = qw.values, qa.values
    z = be.conv2d_forward(qw, qa, GEOM)
    cols = F.unfold(a, (3, 2), dilation=GEOM.dilation, padding=GEOM.padding, stride=GEOM.stride)  # [N,K,L]
    ref = mogami_ref_bmm(w.reshape(1, 4, -1).expand(2, -1, -1), cols)
    assert torch.equal(z, ref.view(z.shape))

    qe = _mogami_q(tuple(z.shape), 22)
    e = qe.values.reshape(2, 4, -1)
    da = be.conv2d_backward_data(qe, qw, GEOM, qa.shape)
    dcols = mogami_ref_bmm(w.reshape(4, -1).t()[None].expand(2, -1, -1), e)
    ref_da = F.fold(dcols, (7, 8), (3, 2), dilation=GEOM.dilation, padding=GEOM.padding, stride=GEOM.stride)
    assert torch.equal(da, ref_da)

    dw = be.conv2d_weight_grad(qe, qa, GEOM, qw.shape)
    prods = mogami_mul(e[:, :, :, None], cols.transpose(1, 2)[:, None, :, :])  # [N, Co, L, K]
    ref_dw = seq_sum(prods.permute(1, 0, 2, 3).reshape(4, -1, cols.shape[1]), 1)
    assert torch.equal(dw, ref_dw.view(qw.shape))


def test_mogami_exact_backwards_on_convs():
    be = SoftwareBackend()
    qw, qa = _mogami_q((3, 2, 2, 2), 30), _mogami_q((2, 2, 5, 6), 31)
    z = be.conv2d_forward(qw, qa, GEOM)
    qe = _mogami_q(tuple(z.shape), 32)
    w, a, e = qw.values, qa.values, qe.values.reshape(2, 3, -1)
    cols = F.unfold(a, (2, 2), dilation=GEOM.dilation, padding=GEOM.padding, stride=GEOM.stride)
    d = _dy_ref(w.reshape(3, -1).t()[None, :, :, None], cols[:, :, None, :])  # [N, K, Co, L]
    dcols = seq_sum(e[:, None, :, :] * d, 2)
    ref_da = F.fold(dcols, (5, 6), (2, 2), dilation=GEOM.dilation, padding=GEOM.padding, stride=GEOM.stride)
    assert torch.equal(be.mogami_conv2d_backward_data_exact(qe, qw, qa, GEOM), ref_da)
    dw_terms = e[:, :, :, None] * _dy_ref(cols.transpose(1, 2)[:, None, :, :], w.reshape(3, -1)[None, :, None, :])
    ref_dw = seq_sum(dw_terms.permute(1, 0, 2, 3).reshape(3, -1, cols.shape[1]), 1)
    assert torch.equal(be.mogami_conv2d_weight_grad_exact(qe, qa, qw, GEOM), ref_dw.view(qw.shape))


# ---- MLS / PoT GEMM and conv -------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4,g=8,0,group=none", "pot:4", "fp32"])
def test_gemm_is_the_product_of_decoded_operands(fmt):
    g = torch.Generator().manual_seed(40)
    kw = dict(rounding="nearest")
    qa = quantize(torch.randn(9, 70, generator=g), fmt, **kw)
    qb = quantize(torch.randn(5, 70, generator=g), fmt, **kw)
    out = SoftwareBackend().gemm(qa, qb)
    # exact products; the fp32 sum order is the BLAS's: bound by K ulps of the absolute sum
    ref = qa.decode().double() @ qb.decode().double().t()
    bound = 70 * torch.finfo(torch.float32).eps * (qa.decode().abs() @ qb.decode().abs().t()).double()
    assert ((out.double() - ref).abs() <= bound).all()


def test_backend_rejects_bad_operands():
    be = SoftwareBackend()
    qa = quantize(torch.randn(3, 8), "mls:2,1")
    with pytest.raises(ValueError, match="different formats"):
        be.gemm(qa, quantize(torch.randn(3, 8), "pot:4"))
    with pytest.raises(ValueError, match="same K"):
        be.gemm(qa, quantize(torch.randn(3, 9), "mls:2,1"))
    with pytest.raises(ValueError, match="4-D operands"):
        be.conv2d_forward(qa, qa, GEOM)
    with pytest.raises(TypeError, match="QTensors"):
        be.gemm(torch.randn(3, 8), qa)


def test_capabilities():
    caps = SoftwareBackend().capabilities()
    assert caps.name == "software" and set(caps.kinds) == {"mls", "pot", "mogami", "fp32"}
    assert "cuda" in caps.devices


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4", "fp32"])
def test_fused_conv_backward_equals_the_two_methods(fmt):
    be, g = SoftwareBackend(), ConvGeometry(stride=(2, 1), padding=(1, 1), dilation=(1, 1))
    gen = torch.Generator().manual_seed(50)
    qw = quantize(torch.randn(4, 3, 3, 3, generator=gen), fmt, rounding="nearest")
    qa = quantize(torch.randn(2, 3, 8, 7, generator=gen), fmt, rounding="nearest")
    z = be.conv2d_forward(qw, qa, g)
    qe = quantize(torch.randn(z.shape, generator=gen), fmt, rounding="nearest")
    da, dw = be.conv2d_backward(qe, qw, qa, g)
    torch.testing.assert_close(da, be.conv2d_backward_data(qe, qw, g, qa.shape), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dw, be.conv2d_weight_grad(qe, qa, g, qw.shape), rtol=1e-6, atol=1e-6)
    da_only, dw_none = be.conv2d_backward(qe, qw, qa, g, need_weight=False)
    assert dw_none is None and torch.equal(da_only, da)


@pytest.mark.parametrize("geom", [ConvGeometry(), ConvGeometry((2, 1), (1, 2), (1, 2)), ConvGeometry((1, 3), (0, 1), (2, 1))])
def test_native_im2col_equals_unfold(geom):
    from lowbit.backends.software import _unfold

    x = torch.randn(3, 4, 9, 10, generator=torch.Generator().manual_seed(60))
    ref = F.unfold(x, (3, 2), dilation=geom.dilation, padding=geom.padding, stride=geom.stride)
    assert torch.equal(_unfold(x, (3, 2), geom), ref)
    assert torch.equal(_unfold(x, (3, 2), geom, transposed=True), ref.transpose(1, 2))


# ---- the native fast paths (no Inf/NaN, no product near saturation) ------------------------

def benign_operands(shape, seed, *, lo=-30, hi=30, dtype=torch.float32):
    """Zeros, -0, subnormals and magnitudes 2^lo..2^hi (products flush to zero, none saturate)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.ldexp(torch.ones(shape), torch.randint(lo, hi, shape, generator=g))
    pick = torch.rand(shape, generator=g)
    x = torch.where(pick < 0.25, torch.zeros_like(x), x)
    x = torch.where((pick >= 0.25) & (pick < 0.3), -torch.zeros_like(x), x)
    x = torch.where((pick >= 0.3) & (pick < 0.33), x * 1e-39, x)  # subnormal (or zero)
    return x.to(dtype).float()


GENERAL = 0x7F800000  # b_max_bits that forces mogami_bmm's general loop


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lo,hi", [(-30, 30), (-75, -5), (-20, 62)])
def test_fast_gemm_equals_general_and_reference(dtype, lo, hi):
    max_bits = 0x7F7F0000 if dtype == torch.bfloat16 else 0x7F7FFFFF
    for (ba, bb, m, k, n), seed in zip([(1, 3, 5, 37, 19), (2, 2, 9, 16, 33), (1, 1, 1, 1, 1), (3, 3, 8, 64, 48)],
                                       range(0, 100, 10)):
        a = benign_operands((ba, m, k), seed, lo=lo, hi=hi, dtype=dtype)
        b = benign_operands((bb, k, n), seed + 1, lo=lo, hi=hi, dtype=dtype)
        fast = mogami_bmm(a, b, max_finite=max_bits)
        assert torch.equal(fast.view(torch.int32), mogami_bmm(a, b, max_finite=max_bits, b_max_bits=GENERAL).view(torch.int32))
        assert torch.equal(fast, mogami_ref_bmm(a.expand(bb, -1, -1), b, dtype))
        if ba == bb:
            red = mogami_bmm(a, b, reduce_batch=True, max_finite=max_bits)
            prods = mogami_mul(a[:, :, :, None].to(dtype), b[:, None, :, :].to(dtype)).float()
            ref = seq_sum(prods.permute(1, 0, 2, 3).reshape(m, ba * k, n), 1)
            assert torch.equal(red, ref)
            assert torch.equal(red, mogami_bmm(a, b, reduce_batch=True, max_finite=max_bits, b_max_bits=GENERAL))


def test_fast_gemm_at_the_saturation_boundary():
    # |a|max (x) |b|max == max_finite exactly: fast path; one ulp more: the general loop saturates
    big = torch.tensor(2.0**64)
    edge = torch.tensor(FLT_MAX) / 2.0**64  # the product of the patterns is FLT_MAX
    a = torch.stack([big, torch.tensor(1.5), torch.tensor(-0.75)]).view(1, 1, 3)
    for top in (edge, torch.nextafter(edge, torch.tensor(float("inf")))):
        b = torch.stack([top, torch.tensor(3.0), torch.tensor(0.0)]).view(1, 3, 1)
        assert torch.equal(mogami_bmm(a, b), mogami_ref_bmm(a, b))


def test_fast_gemm_products_at_the_flush_boundary():
    # one product per output column (as test_mogami_known_products_through_gemm), all on the fast
    # path: results at, just below and just above the smallest normal, zero and subnormal operands
    tiny = torch.finfo(torch.float32).tiny
    pairs = [(2.0**-63, 2.0**-63), (2.0**-63, -(2.0**-64)), (1.5 * 2.0**-64, 1.5 * 2.0**-63),
             (1.25 * 2.0**-64, 1.5 * 2.0**-63), (-tiny, 1.0), (tiny, 0.9999999), (1e-39, 2.0**40),
             (-0.0, 5.0), (0.0, -0.0), (3.0, -1e-40), (2.0**63, -(2.0**64)), (-1.75, -1.5), (2.0**-100, 2.0**-27)]
    a = torch.tensor([[p[0] for p in pairs]])
    b = torch.tensor([p[1] for p in pairs])
    out = mogami_bmm(a[None], torch.diag_embed(b)[None])[0, 0]
    expect = mogami_mul(a[0], b)
    assert torch.equal(out, expect + 0.0)  # a flushed product sums to +0
    assert expect[0] == tiny and expect[1] == 0 and expect[2] == tiny and expect[3] == 0 and expect[4] == -tiny


CONV_CASES = [  # (N, C, H, W, Co, kh, kw, stride, padding, dilation)
    (2, 3, 9, 16, 5, 3, 3, (1, 1), (1, 1), (1, 1)),
    (1, 4, 8, 13, 7, 3, 2, (2, 1), (1, 2), (1, 2)),
    (2, 5, 11, 24, 4, 1, 3, (1, 2), (0, 1), (2, 1)),
    (3, 2, 7, 33, 9, 2, 5, (2, 3), (2, 2), (1, 2)),
    (1, 6, 16, 16, 16, 3, 3, (2, 2), (1, 1), (1, 1)),
    (2, 3, 5, 9, 1, 1, 1, (1, 1), (0, 0), (1, 1)),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_direct_mogami_convs_equal_the_unfold_lowering(case, monkeypatch):
    import lowbit.backends.software as sw

    n, c, h, w, co, kh, kw, stride, padding, dilation = case
    geom = ConvGeometry(stride, padding, dilation)
    be, seed = SoftwareBackend(), sum(case[:7])
    qw = quantize(benign_operands((co, c, kh, kw), seed, lo=-12, hi=4), "mogami:fp32")
    qa = quantize(benign_operands((n, c, h, w), seed + 1, lo=-8, hi=8), "mogami:fp32")
    wv, av = qw.values, qa.values
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    assert wo >= 8  # the direct kernels' range
    qe = quantize(benign_operands((n, co, ho, wo), seed + 2, lo=-30, hi=-2), "mogami:fp32")
    ev = qe.values.reshape(n, co, -1)
    calls = []
    direct = sw._direct_conv
    monkeypatch.setattr(sw, "_direct_conv", lambda *a, **k: calls.append(direct(*a, **k)) or calls[-1])
    z = be.conv2d_forward(qw, qa, geom)
    da = be.conv2d_backward_data(qe, qw, geom, qa.shape)
    dw = be.conv2d_weight_grad(qe, qa, geom, qw.shape)
    assert len(calls) == 3 and all(r is not None for r in calls)  # the direct kernels ran
    # the reference: F.unfold columns, products summed in increasing k, F.fold for backward-data
    kwargs = dict(dilation=dilation, padding=padding, stride=stride)
    cols = F.unfold(av, (kh, kw), **kwargs)
    assert torch.equal(z, mogami_ref_bmm(wv.reshape(1, co, -1).expand(n, -1, -1), cols).view(z.shape))
    dcols = mogami_ref_bmm(wv.reshape(co, -1).t()[None].expand(n, -1, -1), ev)
    assert torch.equal(da, F.fold(dcols, (h, w), (kh, kw), **kwargs))
    prods = mogami_mul(ev[:, :, :, None], cols.transpose(1, 2)[:, None, :, :])  # [N, Co, L, K]
    assert torch.equal(dw, seq_sum(prods.permute(1, 0, 2, 3).reshape(co, -1, cols.shape[1]), 1).view(dw.shape))
    # and the GEMM lowering the backend falls back to gives the same bits
    monkeypatch.setattr(sw, "_direct_conv", lambda *a, **k: None)
    for got, ref in ((z, be.conv2d_forward(qw, qa, geom)), (da, be.conv2d_backward_data(qe, qw, geom, qa.shape)),
                     (dw, be.conv2d_weight_grad(qe, qa, geom, qw.shape))):
        assert torch.equal(got.view(torch.int32), ref.view(torch.int32))


def test_direct_mogami_conv_declines_where_products_could_saturate():
    from lowbit.backends.software import _CONV_FORWARD, _direct_conv

    geom = ConvGeometry(padding=(1, 1))
    w = torch.full((2, 1, 3, 3), 2.0**70)
    x = benign_operands((1, 1, 4, 8), 3)
    assert _direct_conv(_CONV_FORWARD, x, w, (1, 2, 4, 8), x.shape, w.shape, geom, 0x7F7FFFFF) is not None
    x[0, 0, 1, 1] = 2.0**60
    assert _direct_conv(_CONV_FORWARD, x, w, (1, 2, 4, 8), x.shape, w.shape, geom, 0x7F7FFFFF) is None
    be = SoftwareBackend()
    qw, qa = quantize(w, "mogami:fp32"), quantize(x, "mogami:fp32")
    z = be.conv2d_forward(qw, qa, geom)  # the GEMM lowering: saturated products
    cols = F.unfold(x, (3, 3), padding=1)
    assert torch.equal(z, mogami_ref_bmm(w.reshape(1, 2, -1), cols).view(z.shape))
    assert (z.abs() == FLT_MAX).any()


@pytest.mark.parametrize("mogami_backward", ["approx", "exact"])
def test_mogami_without_a_cpp_compiler_runs_as_torch_ops_and_says_so_once(monkeypatch, mogami_backward):
    """No g++: Mogami layers on CPU take the torch integer path (the CUDA one) instead of failing
    inside the first forward; one warning names the fix (issue 14)."""
    import warnings

    from lowbit.runtime import native as _build
    from lowbit.backends import software
    from lowbit.nn import convert

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 10 * 10, 5))
    x = torch.randn(2, 3, 12, 12)

    def run():
        q = convert(model, "mogami:bf16", skip_first_last=False, rounding="nearest", mogami_backward=mogami_backward)
        y = q(x)
        y.square().sum().backward()
        return y.detach(), [p.grad for p in q.parameters()]

    y_native, g_native = run()
    monkeypatch.setattr(_build, "_loaded", {})  # nothing built in this process yet ...
    monkeypatch.setenv("PATH", "")  # ... and no compiler to build with
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(software, "_NATIVE", {}, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y, grads = run()
        run()
    said = [w for w in caught if "native Mogami kernels are unavailable" in str(w.message)]
    assert len(said) == 1 and "apt-get install g++" in str(said[0].message)
    assert software.native_or_none() is None
    # same products; only the fp32 summation order differs (torch's reduction vs increasing index)
    assert torch.allclose(y, y_native, rtol=1e-5, atol=1e-6 * float(y_native.abs().max()))
    for g, ref in zip(grads, g_native):
        assert torch.allclose(g, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_gemm_product_rules_equal_the_definition(dtype):
    """The C++ GEMM's product (mogami_bits) and the torch path's == reference.mogami_mul on every
    pattern kind, NaN/Inf included; bf16 runs as widened fp32 patterns saturating at the largest bf16."""
    rng = np.random.default_rng(21)
    shift = 0 if dtype == "fp32" else 16
    specials = np.array([0x7F800000, 0xFF800000, 0x7FC00001, 0, 0x80000000, 0x00010000, 0x7F7FFFFF]) >> shift
    a = np.concatenate([rng.integers(0, 1 << (32 - shift), 40_000), np.repeat(specials, len(specials))])
    b = np.concatenate([rng.integers(0, 1 << (32 - shift), 40_000), np.tile(specials, len(specials))])
    want = R.mogami_mul(a, b, dtype).astype(np.uint32) << np.uint32(shift)
    wa, wb = (np.ascontiguousarray(x.astype(np.uint32) << np.uint32(shift)) for x in (a, b))
    max_finite = software.BF16_MAX_AS_FP32 if shift else 0x7F7FFFFF
    torch_bits = software._torch_mul_bits(torch.from_numpy(wa.view(np.int32)), torch.from_numpy(wb.view(np.int32)),
                                          max_finite)
    np.testing.assert_array_equal(torch_bits.numpy().view(np.uint32), want)
    ffi, lib = software.native()
    out = np.zeros_like(wa)
    lib.mogami_mul_bits(ffi.from_buffer("uint32_t[]", wa), ffi.from_buffer("uint32_t[]", wb),
                        ffi.from_buffer("uint32_t[]", out), len(out), max_finite)
    np.testing.assert_array_equal(out, want)
