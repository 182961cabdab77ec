"""The torch quantizers (and the native CPU kernel) equal the numpy reference bit for bit."""
import numpy as np
import pytest
import torch

from lowbit.numerics import reference as R
from lowbit.numerics.quant import draw_seed, quantize

MLS_FORMATS = ["mls:2,1", "mls:2,4", "mls:0,3", "mls:1,1", "mls:1,0", "mls:0,1", "mls:4,7,g=8,0,group=c",
               "mls:3,2,g=2,1,group=n", "mls:2,3,g=0,1,group=none", "mls:2,1,g=8,1,group=none"]


def _impls():
    from lowbit.numerics.quant import native_available

    return ["torch", "native"] if native_available() else ["torch"]


def assert_matches_reference(x, fmt, rounding, impl, seed=11, **kw):
    q = quantize(x, fmt, rounding=rounding, generator=torch.Generator().manual_seed(seed), impl=impl, **kw)
    drawn = draw_seed(torch.Generator().manual_seed(seed)) if rounding == "stochastic" else 0
    ref = R.quantize(x.numpy(), fmt, rounding, drawn, **{k: v for k, v in kw.items() if v is not None})
    np.testing.assert_array_equal(q.codes.numpy(), ref.codes)
    if ref.scale_codes is not None:
        np.testing.assert_array_equal(q.scale_codes.numpy(), ref.scale_codes)
    assert float(q.tensor_scale) == float(ref.tensor_scale)
    # compare bit patterns: catches -0.0 vs 0.0 and any last-bit difference
    np.testing.assert_array_equal(q.values.float().numpy().view(np.int32), ref.values.view(np.int32))
    assert torch.equal(q.values, q.decode())
    return q


def _spread(shape, group_dims, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    scale_shape = [s if i in group_dims else 1 for i, s in enumerate(shape)]
    return x * torch.exp(3 * torch.randn(scale_shape, generator=g))


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("fmt", MLS_FORMATS)
def test_mls_4d_matches_reference(fmt, rounding, impl):
    x = _spread((3, 5, 4, 6), (0, 1), 1)
    x[0, 1] = 0  # an all-zero group
    assert_matches_reference(x, fmt, rounding, impl)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("fmt", MLS_FORMATS)
@pytest.mark.parametrize("block", [1, 8, 45, 64])
def test_mls_2d_matches_reference(fmt, rounding, block, impl):
    x = _spread((7, 45), (0,), 2)
    assert_matches_reference(x, fmt, rounding, impl, block=block)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("ratio", [3e-39, 1e-44, 2.0 ** -126, 1.7e-38])
def test_group_to_tensor_ratio_below_the_normal_range_matches_reference(ratio, impl):
    """Group max / St subnormal in fp32: the scale exponent goes below -126 (<8,m> scales reach -255)."""
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(7))
    x[1, 2] *= ratio / float(x[1, 2].abs().max())
    x[0, 0, 0, 0] = 1.0 + float(x.abs().max())
    for fmt in ("mls:2,1,g=8,1,group=nc", "mls:2,3,g=8,0,group=nc"):
        assert_matches_reference(x, fmt, "nearest", impl)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_groups_straddling_parallel_tasks_match_reference(rounding, impl):
    """Larger than one task of the native kernel (4096 elements), with groups (323 elements;
    2-D blocks of 32 and a partial 6) that cross the task boundaries."""
    assert_matches_reference(_spread((3, 7, 17, 19), (0, 1), 5), "mls:2,1", rounding, impl)
    assert_matches_reference(_spread((150, 70), (0,), 6), "mls:2,4", rounding, impl, block=32)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("clip", [None, 0.5, 0.3])
def test_pot_matches_reference(rounding, clip, impl):
    x = _spread((50, 30), (0,), 3)
    x[4, :7] = 0.0  # exact zeros (ReLU outputs): code 0, not the binade frexp(0) suggests
    x[5, :3] = -0.0
    assert_matches_reference(x, "pot:4", rounding, impl, clip_ratio=clip)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("magnitude", [1e-39, 1e-30, 1e30, 1e38])
def test_extreme_magnitudes_match_reference(rounding, magnitude, impl):
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(4)).clamp(-3, 3) * magnitude
    assert_matches_reference(x, "mls:2,1", rounding, impl)
    assert_matches_reference(x, "mls:0,4,g=8,1,group=none", rounding, impl)
    assert_matches_reference(x.reshape(-1), "pot:4", rounding, impl)


@pytest.mark.parametrize("impl", _impls())
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("fmt", ["mogami:bf16", "mogami:fp32", "fp32"])
def test_float_formats_match_reference(fmt, rounding, impl):
    x = _spread((20, 30), (0,), 5)
    x[0, :4] = torch.tensor([3.3e38, -3.39e38, 0.0, -0.0])  # saturation and signed zeros
    assert_matches_reference(x, fmt, rounding, impl)


@pytest.mark.parametrize("form", ["int32", "int64"])
def test_reference_random_bits_match_torch(form, monkeypatch):
    import lowbit.numerics.quant as quant_mod
    from lowbit.numerics.quant import random_bits

    if form == "int64":  # the form used for tensors of 2^31 elements and more
        monkeypatch.setattr(quant_mod.rng, "INT32_COUNTERS", 0)
    seed = 0x0123456789ABCDEF
    expected = R.random_bits(100_000, seed).astype(np.int64)
    for keep in (16, 24, 31):
        np.testing.assert_array_equal(random_bits(100_000, seed, "cpu", keep=keep).numpy(), expected >> (32 - keep))


def _lowbias32_python(x: int) -> int:
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def test_reference_hash_equals_plain_integer_arithmetic():
    xs = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 123456789]
    np.testing.assert_array_equal(R.hash32(np.array(xs, dtype=np.uint32)), [_lowbias32_python(v) for v in xs])
    # element index (5 << 32) | 77 with seed 0xDEADBEEF_12345678: the high word enters the second round
    expected = _lowbias32_python(_lowbias32_python(77 ^ 0x12345678) ^ 5 ^ 0xDEADBEEF)
    from lowbit.numerics.quant import hash32 as torch_hash32
    assert int(torch_hash32(torch_hash32(torch.tensor([77 ^ 0x12345678])) ^ 5 ^ 0xDEADBEEF)) == expected


def test_compiled_elementwise_path_matches_reference(monkeypatch):
    """The function CUDA runs through torch.compile, compiled here on CPU by Inductor."""
    import lowbit.numerics.quant as quant_mod

    monkeypatch.setenv("LOWBIT_COMPILE", "force")
    monkeypatch.setattr(quant_mod.accel, "_compiled", {})
    x = _spread((3, 5, 4, 6), (0, 1), 6)
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="lowbit: torch.compile")  # no silent fallback to eager
        assert_matches_reference(x, "mls:2,1", "stochastic", "torch")
    assert "mls" in quant_mod.accel._compiled and quant_mod.accel._compiled["mls"] is not quant_mod.mls_elements


@pytest.mark.parametrize("dtype,inf,nan,qnan,one,zero", [("fp32", 0x7F800000, 0x7FC00001, 0x7FC00000, 0x3F800000, 0),
                                                         ("bf16", 0x7F80, 0x7FC1, 0x7FC0, 0x3F80, 0)])
def test_mogami_nan_or_inf_operand_gives_the_quiet_nan(dtype, inf, nan, qnan, one, zero):
    """The definition's special case (the kernel's): NaN/Inf beats zero and saturation, any sign."""
    sign = 1 << (31 if dtype == "fp32" else 15)
    a = np.array([inf, inf | sign, nan, zero, one | sign, inf, nan | sign], dtype=np.int64)
    b = np.array([one, one, one, inf, nan, inf, zero | sign], dtype=np.int64)
    assert R.mogami_mul(a, b, dtype).tolist() == [qnan] * len(a)
    assert R.mogami_mul(np.array([one | sign]), np.array([one]), dtype).tolist() == [one | sign]
