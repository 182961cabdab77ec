"""Mogami multiplication: known values, the field-by-field reference, special cases, errors."""
import numpy as np
import pytest
import torch

from lowbit import mogami_mul
from lowbit.numerics.mogami import mogami_mul_bits
from lowbit.numerics import reference as R

KNOWN = [(1.5, 1.5, 2.0), (4.5, 3.0, 13.0), (-6.0, 3.0, -16.0), (1.2345, 32.0, 39.504),
         (-3.5, -3.5, 12.0), (1e-30, 1e-30, 0.0), (1e-30, -1e-30, -0.0)]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(autouse=True, params=["native", "torch"])
def path(request, monkeypatch):
    """Every test runs on the fused CPU kernel and on the torch-ops path (CUDA's)."""
    from lowbit.numerics.quant import native_available

    if request.param == "native" and not native_available():
        pytest.skip("native kernel unavailable")
    monkeypatch.setenv("LOWBIT_NATIVE", "1" if request.param == "native" else "0")
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a,b,expected", KNOWN)
def test_known_values(dtype, a, b, expected):
    out = mogami_mul(torch.tensor([a], dtype=dtype), torch.tensor([b], dtype=dtype))
    assert out.dtype == dtype
    # exact: the expected value rounded to the operand format (39.504 is 32 * fl(1.2345))
    assert out.item() == torch.tensor([expected], dtype=dtype).item()
    assert torch.signbit(out).item() == (np.copysign(1.0, expected) < 0)


def test_1_3_times_minus_1_3_is_minus_1_6_within_one_ulp():
    out32 = mogami_mul(torch.tensor([1.3]), torch.tensor([-1.3]))
    assert out32.view(torch.int32).item() == torch.tensor([-1.6]).view(torch.int32).item() - 1  # 0xBFCCCCCC
    out16 = mogami_mul(torch.tensor([1.3], dtype=torch.bfloat16), torch.tensor([-1.3], dtype=torch.bfloat16))
    assert out16.item() == -1.59375  # -1.6 in bf16 is -1.6015625, one ulp away


def _bits(t):
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int16).numpy().astype(np.int64) & (
        0xFFFFFFFF if t.dtype == torch.float32 else 0xFFFF)


@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_field_by_field_reference_on_all_exponents(dtype):
    g = torch.Generator().manual_seed(0)
    n = 200_000
    if dtype == torch.float32:
        raw = torch.randint(0, 1 << 31, (2, n), generator=g, dtype=torch.int64) * 2 + torch.randint(0, 2, (2, n), generator=g)
        raw = raw & 0xFFFFFFFF
        exp = (raw >> 23) & 0xFF
        raw = torch.where(exp == 0xFF, raw ^ (1 << 23), raw)  # no Inf/NaN operands
        a, b = (torch.where(r >= 1 << 31, r - (1 << 32), r).to(torch.int32).view(torch.float32) for r in raw)
    else:
        raw = torch.randint(0, 1 << 16, (2, n), generator=g, dtype=torch.int64)
        exp = (raw >> 7) & 0xFF
        raw = torch.where(exp == 0xFF, raw ^ (1 << 7), raw)
        a, b = (torch.where(r >= 1 << 15, r - (1 << 16), r).to(torch.int16).view(torch.bfloat16) for r in raw)
    out = mogami_mul(a, b)
    ref = R.mogami_mul(_bits(a), _bits(b), "fp32" if dtype == torch.float32 else "bf16")
    np.testing.assert_array_equal(_bits(out), ref.astype(np.int64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_rule_equals_the_definition_on_every_pattern_kind(dtype):
    """``mogami_mul_bits`` (the one torch body) == reference.mogami_mul, NaN/Inf operands included."""
    width = 32 if dtype == torch.float32 else 16
    g = torch.Generator().manual_seed(5)
    raw = torch.randint(0, 1 << width, (2, 50_000), generator=g, dtype=torch.int64)
    specials = torch.tensor([0x7F800000, 0xFF800000, 0x7FC00001, 0, 0x80000000, 0x00000001, 0x7F7FFFFF])
    specials = specials if width == 32 else specials >> 16
    a = torch.cat([raw[0], specials.repeat_interleave(len(specials))])
    b = torch.cat([raw[1], specials.repeat(len(specials))])
    got = mogami_mul_bits(a, b, dtype)
    want = R.mogami_mul(a.numpy(), b.numpy(), "fp32" if width == 32 else "bf16").astype(np.int64)
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_cases(dtype):
    big = torch.finfo(dtype).max
    tiny = torch.finfo(dtype).tiny
    a = torch.tensor([0.0, -0.0, 5.0, big, -big, tiny / 4, tiny, 2.0, 0.5], dtype=dtype)
    b = torch.tensor([7.0, 7.0, -0.0, 2.0, 4.0, 3.0, 0.5, tiny, tiny], dtype=dtype)
    out = mogami_mul(a, b)
    # zeros stay signed zeros; overflow saturates at the largest finite; subnormal operands and
    # results below the smallest normal flush to zero; exact on powers of two in range
    assert out.tolist() == [0.0, -0.0, -0.0, big, -big, 0.0, 0.0, 2 * tiny, 0.0]
    assert torch.signbit(out).tolist() == [False, True, True, False, True, False, False, False, False]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_never_overestimates_and_error_at_most_one_ninth(dtype):
    g = torch.Generator().manual_seed(1)
    a = (torch.rand(100_000, generator=g) * 8 + 0.1).to(dtype)
    b = (torch.rand(100_000, generator=g) * 8 + 0.1).to(dtype)
    exact = a.double() * b.double()
    rel = (mogami_mul(a, b).double() - exact) / exact
    assert rel.max().item() <= 0.0
    assert rel.min().item() >= -1 / 9 - 1e-12
    assert -0.045 < rel.mean().item() < -0.03  # Mitchell: about -3.85 % for uniform mantissas


def test_power_of_two_operand_is_exact():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    for k in (-3, 0, 5):
        assert torch.equal(mogami_mul(x, torch.full_like(x, 2.0 ** k)), x * 2.0 ** k)


def test_broadcasting_and_shape():
    a = torch.randn(3, 1)
    b = torch.randn(1, 4)
    assert mogami_mul(a, b).shape == (3, 4)


def test_errors():
    with pytest.raises(ValueError, match="float32 or two bfloat16"):
        mogami_mul(torch.ones(2), torch.ones(2, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="float32 or two bfloat16"):
        mogami_mul(torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(2,\).*NaN or Inf"):
        mogami_mul(torch.tensor([1.0, float("nan")]), torch.ones(2))
    with pytest.raises(TypeError):
        mogami_mul(1.0, torch.ones(2))


@pytest.mark.cuda
def test_cuda_equals_cpu(path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator().manual_seed(4)
    for dtype in DTYPES:
        a = (torch.randn(10_000, generator=g) * 1e3).to(dtype)
        b = (torch.randn(10_000, generator=g) * 1e-3).to(dtype)
        got = mogami_mul(a.cuda(), b.cuda())
        assert got.device.type == "cuda" and torch.equal(got.cpu(), mogami_mul(a, b))
