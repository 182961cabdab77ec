"""The native copies and one-call quantizers behind the training step give the values of the plain
paths bit for bit: the tiled gather equals torch's contiguous copy, a transposed view quantizes
as its contiguous copy does (PoT rounded to nearest reads a dense one in place), and the PoT scale
exponent taken in C equals pot_scale_exponent."""
import pytest
import torch

from lowbit.numerics.formats import parse
from lowbit.numerics.quant import contiguous, native, native_available, pot_scale_exponent, quantize

pytestmark = pytest.mark.skipif(not native_available(), reason="native kernel unavailable (no C compiler)")

GEN = torch.Generator().manual_seed(11)


def _base(shape, dtype):
    if dtype == torch.int16:
        return torch.randint(-30000, 30000, shape, generator=GEN, dtype=torch.int16)
    return torch.randn(shape, generator=GEN)


def _views(dtype=torch.float32):
    """Strided views as the layers make them: transposes (2-D, per batch), a head split, an
    expanded (stride 0) operand, offset and stepped slices, sizes that do not fill the 32 x 32 tiles."""
    a, b = _base((70, 45), dtype), _base((6, 33, 17), dtype)
    heads = _base((9, 12, 16), dtype)  # [L, N*H, hd] -> [N*H, hd, L]
    return [a.t(), a[3:50:2, 5:].t(), b.transpose(1, 2), heads.transpose(0, 1).transpose(1, 2),
            _base((1, 40, 8), dtype).expand(5, 40, 8).transpose(1, 2), b[:, ::2, 1:].transpose(1, 2)]


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("dtype", [torch.float32, torch.int16])
def test_gather_equals_torch_contiguous(index, dtype, monkeypatch):
    view = _views(dtype)[index]
    monkeypatch.setattr(native, "GATHER_MIN", 0)  # the native copy for every size
    assert not view.is_contiguous() and view.stride(-1) != 1
    out = contiguous(view)
    assert out.is_contiguous() and out.dtype == view.dtype and out.shape == view.shape
    assert torch.equal(out, view.contiguous())


def test_gather_of_a_large_view_at_the_default_threshold():
    view = torch.randn(3, 300, 70, generator=GEN).transpose(1, 2)  # 63,000 elements: the native copy
    assert view.numel() >= native.GATHER_MIN
    assert torch.equal(contiguous(view), view.contiguous())


def test_gather_leaves_other_tensors_to_torch():
    x = torch.randn(4, 5, 6, 7, generator=GEN).transpose(1, 3)  # 4-D: torch's copy
    assert torch.equal(contiguous(x), x.contiguous())
    y = torch.randn(5, 6, generator=GEN, dtype=torch.float64).t()
    assert torch.equal(contiguous(y), y.contiguous())
    z = torch.randn(5, 6, generator=GEN, requires_grad=True)
    assert contiguous(z.t()).requires_grad is False  # values only, as the quantizer reads them


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4", "mls:3,2,g=8,1,group=n", "pot:4"])
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_transposed_view_quantizes_as_its_copy(fmt, rounding, monkeypatch):
    monkeypatch.setattr(native, "GATHER_MIN", 0)
    for x in _views():
        if fmt.startswith("mls") and x.dim() == 3:
            x = x[1]  # MLS takes 2-D operands: one batch's transposed slice
        kw = dict(block=16) if fmt.startswith("mls") else {}
        a = quantize(x, fmt, rounding=rounding, generator=torch.Generator().manual_seed(3), **kw)
        b = quantize(x.contiguous(), fmt, rounding=rounding, generator=torch.Generator().manual_seed(3), **kw)
        assert torch.equal(a.codes, b.codes) and torch.equal(a.values.view(torch.int32), b.values.view(torch.int32))
        assert torch.equal(a.tensor_scale, b.tensor_scale)
        if a.scale_codes is not None:
            assert torch.equal(a.scale_codes, b.scale_codes)


def test_pot_nearest_reads_a_permuted_view_in_place():
    """Dense permutations (a transpose, a head split) are quantized in memory order, no copy: the codes
    and values come back as the same view; slices and expanded dims are gathered first."""
    heads = torch.randn(9, 12, 16, generator=GEN)
    for x in (heads.transpose(0, 1), heads.permute(1, 2, 0), heads[0].t()):
        q = quantize(x, "pot:4", rounding="nearest")
        assert q.codes.stride() == x.stride() and q.values.stride() == x.stride()
        assert torch.equal(q.values, quantize(x.contiguous(), "pot:4", rounding="nearest").values)
    sliced = heads[:, ::2].transpose(0, 1)
    assert quantize(sliced, "pot:4", rounding="nearest").codes.is_contiguous()


@pytest.mark.parametrize("absmax", [0.0, 1e-45, 3e-39, 2.0 ** -126, 0.75, 1.0, 1.0000001, 2.0 ** 100, 3.4e38])
@pytest.mark.parametrize("clip", [1.0, 0.5, 0.3, 1e-3])
def test_native_pot_scale_exponent_equals_the_python_rule(absmax, clip):
    x = torch.tensor([absmax, -absmax / 3, 0.0], dtype=torch.float32)
    s = pot_scale_exponent(float(x.abs().max()), clip)
    t = quantize(x, parse("pot:4"), rounding="nearest", clip_ratio=clip, impl="native")
    assert float(t.tensor_scale) == 2.0 ** s
