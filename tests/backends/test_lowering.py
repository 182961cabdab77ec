"""The default conv lowering (im2col on codes) against torch's convs on dequantized operands.

The lowering runs through a plain backend whose gemm is ``a.decode() @ b.decode().T``, so the
only difference to F.conv2d / torch.nn.grad is the fp32 summation order. Bound used: for a
reduction of length R, |C - C_torch| <= 2 * R * 2^-24 * (|A| conv |B|) + 1e-30 (elementwise,
the standard fp32 dot-product error bound for either order, doubled for the two orders).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from lowbit.backends.base import Backend, Capabilities, ConvGeometry
from lowbit.numerics.quant import quantize

U = 2.0 ** -24


class PlainGemm(Backend):
    name = "plain"

    def __init__(self):
        self.blocks = []

    def capabilities(self):
        return Capabilities(self.name, ("mls", "pot", "mogami"), False, ("cpu",))

    def gemm(self, a, b, *, op=None):
        assert a.codes.dim() == 2 and b.codes.dim() == 2 and a.shape[1] == b.shape[1]
        self.blocks.append((op, a.block, b.block))
        return a.decode() @ b.decode().T


GEOMETRIES = [((1, 1), (0, 0), (1, 1)), ((1, 1), (1, 1), (1, 1)), ((2, 2), (1, 1), (1, 1)),
              ((2, 1), (0, 2), (2, 1)), ((3, 3), (2, 2), (1, 1)), ((1, 2), (1, 0), (1, 2))]


def _within(got, want, bound):
    assert got.shape == want.shape
    assert bool(((got - want).abs() <= bound).all()), float(((got - want).abs() - bound).max())


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4,g=8,0,group=nc", "mls:2,1,g=8,1,group=n", "pot:4", "mogami:fp32"])
@pytest.mark.parametrize("stride,padding,dilation", GEOMETRIES)
def test_lowered_convs_equal_torch(fmt, stride, padding, dilation):
    g = torch.Generator().manual_seed(hash((fmt, stride, padding, dilation)) % 2 ** 31)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    geom = ConvGeometry(stride, padding, dilation)
    A, W = torch.randn(3, 4, 11, 9, generator=g), torch.randn(5, 4, 3, 2, generator=g)
    qa, qw = quantize(A, fmt, rounding="nearest"), quantize(W, fmt, rounding="nearest")
    a, w = qa.decode(), qw.decode()
    z = F.conv2d(a, w, **kw)
    qe = quantize(torch.randn(z.shape, generator=g), fmt, rounding="nearest")
    e = qe.decode()
    be = PlainGemm()

    r = w[0].numel()
    _within(be.conv2d_forward(qw, qa, geom), z, 2 * r * U * F.conv2d(a.abs(), w.abs(), **kw) + 1e-30)
    da = conv2d_input(A.shape, w, e, **kw)
    bound = 2 * 5 * 6 * U * conv2d_input(A.shape, w.abs(), e.abs(), **kw) + 1e-30
    _within(be.conv2d_backward_data(qe, qw, geom, A.shape), da, bound)
    dw = conv2d_weight(a, W.shape, e, **kw)
    bound = 2 * e[:, 0].numel() * U * conv2d_weight(a.abs(), W.shape, e.abs(), **kw) + 1e-30
    _within(be.conv2d_weight_grad(qe, qa, geom, W.shape), dw, bound)

    mls = fmt.startswith("mls")
    ho_wo = z.shape[2] * z.shape[3]
    from lowbit.kernel.wire import Op
    assert be.blocks == [(Op.FORWARD, 6, 6) if mls else (Op.FORWARD, None, None),
                         (Op.BACKWARD_DATA, 6, 6) if mls else (Op.BACKWARD_DATA, None, None),
                         (Op.WEIGHT_GRAD, ho_wo, ho_wo) if mls else (Op.WEIGHT_GRAD, None, None)]


def test_lowering_moves_codes_only():
    """Padding is code 0 and every other element of the patches is a code of the input, where
    F.unfold puts it."""
    from lowbit.backends.lowering import _patches

    def im2col(codes, kernel, dilation, padding, stride):
        p = _patches(codes, kernel, dilation, padding, stride)  # [N, C, Ho, Wo, kh, kw]
        n, c, ho, wo, kh, kw = p.shape
        return p.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, ho * wo)

    codes = torch.randint(-2 ** 15, 2 ** 15, (2, 3, 7, 6), dtype=torch.int16)
    got = im2col(codes, (3, 2), (2, 1), (1, 2), (2, 1))
    want = F.unfold(codes.double(), (3, 2), dilation=(2, 1), padding=(1, 2), stride=(2, 1)).to(torch.int16)
    assert got.dtype == torch.int16 and torch.equal(got, want)
    big = torch.randint(-2 ** 31, 2 ** 31 - 1, (1, 2, 5, 5), dtype=torch.int32)
    assert torch.equal(im2col(big, (3, 3), 1, 1, 1), F.unfold(big.double(), 3, padding=1).to(torch.int32))


def test_weight_grad_geometry_mismatch_is_explained():
    be = PlainGemm()
    qa = quantize(torch.randn(2, 3, 8, 8), "mls:2,1")
    qe = quantize(torch.randn(2, 4, 5, 5), "mls:2,1")
    with pytest.raises(ValueError, match="errors are 5x5"):
        be.conv2d_weight_grad(qe, qa, ConvGeometry(), torch.Size([4, 3, 3, 3]))
