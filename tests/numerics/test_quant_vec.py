"""The native MLS quantizer's vector paths (AVX-512: rows whose length and block are multiples of 16,
4-D sources with H*W a multiple of 16; branch-free group scales) give the torch path's codes, scale
codes, tensor scale and values bit for bit, including group ratios that are subnormal, zero groups,
saturating elements and every grouping; the native PoT quantizer (AVX-512 on z's bit pattern)
likewise, on lengths that end mid-vector, below the grid, on every binade and at the top code."""
import pytest
import torch

from lowbit.numerics.quant import native_available, quantize

pytestmark = pytest.mark.skipif(not native_available(), reason="native kernel unavailable (no C compiler)")

FORMATS = ["mls:2,1", "mls:2,4", "mls:3,2,g=8,1,group=n", "mls:1,0,g=8,1,group=c", "mls:0,3,g=8,1,group=none",
           "mls:4,3,g=4,0"]
SHAPES_2D = [((2048, 64), 32), ((512, 16), 16), ((64, 96), 32), ((33, 48), 16), ((7, 160), 48), ((5, 32), 32),
             ((9, 64), 17)]
SHAPES_4D = [(4, 8, 16, 16), (2, 3, 8, 8), (3, 5, 4, 4)]


def _hard(shape, seed):
    """Wide dynamic range: zero elements, whole zero rows, a row or plane 2^-140 below the rest
    (subnormal group ratios for <8,1> group scales) and one huge element."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * torch.exp(4 * torch.randn(shape, generator=gen))
    flat = x.view(-1)
    flat[::7] = 0.0
    flat[1::13] *= 1e-30
    groups = x.view(-1, x.shape[-2] * x.shape[-1]) if x.dim() == 4 else x  # rows / (n, c) planes
    groups[1] = 0.0
    groups[2] *= 2.0 ** -140
    flat[5] = 3e37
    return x


def _same(a, b):
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.scale_codes, b.scale_codes)
    assert torch.equal(a.tensor_scale.view(torch.int32), b.tensor_scale.view(torch.int32))
    assert torch.equal(a.values.view(torch.int32), b.values.view(torch.int32))
    assert torch.equal(a.values.view(torch.int32), a.decode().view(torch.int32))


def _both(x, fmt, rounding, **kw):
    return [quantize(x, fmt, rounding=rounding, generator=torch.Generator().manual_seed(5), impl=impl, **kw)
            for impl in ("native", "torch")]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("shape,block", SHAPES_2D)
def test_2d_vector_path_equals_torch(fmt, rounding, shape, block):
    _same(*_both(_hard(shape, shape[0] + block), fmt, rounding, block=block))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("shape", SHAPES_4D)
def test_4d_vector_path_equals_torch(fmt, rounding, shape):
    _same(*_both(_hard(shape, sum(shape)), fmt, rounding))


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_zero_tensor_on_the_vector_path(fmt):
    _same(*_both(torch.zeros(32, 64), fmt, "stochastic", block=32))


def test_counters_run_on_across_rows_and_blocks():
    """A counter is the flat index: the same row at another position rounds differently."""
    x = torch.rand(1, 64).repeat(64, 1) + 1.0
    q = quantize(x, "mls:2,1", rounding="stochastic", generator=torch.Generator().manual_seed(5), block=32)
    assert not all(torch.equal(q.codes[0], q.codes[r]) for r in range(1, 64))
    _same(q, _both(x, "mls:2,1", "stochastic", block=32)[1])


POT_SIZES = [16, 4096, 4097, 31, 7, (64, 48), (3, 5, 16, 16)]


def _pot_hard(size, seed):
    """Every binade of a 4-bit grid and below it: |x| from 2^-20 to 1 relative to the maximum,
    exact powers of two and midpoints between them, zeros and negative zeros."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size, generator=gen) * torch.exp2(-20 * torch.rand(size, generator=gen))
    flat = x.view(-1)
    flat[::5] = torch.exp2(-torch.randint(0, 18, flat[::5].shape, generator=gen).float())
    flat[2::11] = 1.5 * torch.exp2(-torch.randint(0, 18, flat[2::11].shape, generator=gen).float())
    flat[3::17] = 0.0
    flat[4::19] = -0.0
    return x


@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("size", POT_SIZES, ids=str)
@pytest.mark.parametrize("clip", [1.0, 0.3])
def test_pot_vector_path_equals_torch(rounding, size, clip):
    a, b = _both(_pot_hard(size, 3), "pot:4", rounding, clip_ratio=clip)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.tensor_scale.view(torch.int32), b.tensor_scale.view(torch.int32))
    assert torch.equal(a.values.view(torch.int32), b.values.view(torch.int32))
    assert torch.equal(a.values.view(torch.int32), a.decode().view(torch.int32))


def _bit_patterns(top: int, step: int) -> torch.Tensor:
    """Every step-th fp32 bit pattern below ``top`` (zero, subnormals, all binades up to top's), both signs:
    an odd step walks through the mantissas, so both sides of every rounding midpoint occur."""
    bits = torch.arange(0, top, step, dtype=torch.int64)
    bits = torch.cat([bits, bits | (1 << 31)])
    return (bits - ((bits >> 31) << 32)).to(torch.int32).view(torch.float32)


@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("top", [0x0D000000, 0x3F800000, 0x7F800000], ids=["below-2^-101", "below-1", "all-finite"])
@pytest.mark.parametrize("clip", [1.0, 2.0 ** -20])
def test_pot_bit_pattern_sweep_equals_torch(rounding, top, clip):
    """The vector path's bit-pattern formulation against the torch definition on ~1M patterns a case:
    tensor scales near 2^-101, 1 and 2^127, and a clip ratio that saturates most elements."""
    a, b = _both(_bit_patterns(top, 4093), "pot:4", rounding, clip_ratio=clip)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.values.view(torch.int32), b.values.view(torch.int32))


TRANSPOSED = [((64, 2048), 32), ((48, 50), 16), ((16, 7), 32), ((32, 64), 17), ((33, 48), 16)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("shape,block", TRANSPOSED)
def test_2d_transposed_view_read_in_place_equals_torch(fmt, rounding, shape, block):
    """A transposed view (the layers' x^T, dz^T, W^T) is read in place where its rows are a multiple of
    16 (codes and values come back as the same view; ragged last blocks, blocks not a multiple of 16)
    and copied first otherwise (33 rows); either way the torch path's results on the same operand."""
    x = _hard(shape, shape[0] + block).t().contiguous().t()
    a, b = _both(x, fmt, rounding, block=block)
    assert a.codes.is_contiguous() == (shape[0] % 16 != 0)
    assert torch.equal(a.codes, b.codes)
    assert torch.equal(a.scale_codes, b.scale_codes)
    assert torch.equal(a.tensor_scale.view(torch.int32), b.tensor_scale.view(torch.int32))
    assert torch.equal(a.values.view(torch.int32), b.values.view(torch.int32))
