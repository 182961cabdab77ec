"""Quantizer behaviour with hand-computed values, edge cases and errors (both implementations)."""
import pytest
import torch

from lowbit import QTensor
from lowbit.numerics.formats import parse
from lowbit.numerics.quant import DEFAULT_BLOCK, native_available, quantize

IMPLS = ["torch", "native"] if native_available() else ["torch"]


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def q(x, fmt, impl, **kw):
    kw.setdefault("rounding", "nearest")
    return quantize(x, fmt, impl=impl, **kw)


def test_mls_2_1_hand_values(impl):
    # <2,1>: exmin = -3; St = 1, one group with Sg = 1, so X_f = |x|
    x = torch.tensor([[1.0, 0.5, 0.3, -0.1, 0.01, -0.0]])
    t = q(x, "mls:2,1", impl, block=8)
    # 1.0 saturates to 0.75 (exp code 3, man 1); 0.5 exact (3, 0); 0.3 -> 0.25 (2, 0);
    # -0.1 -> -0.125 (1, 0); 0.01 -> 0 (2^-4 grid in the underflow binade); -0 -> +0 code
    assert t.codes.tolist() == [[0b0111, 0b0110, 0b0100, 0b1010, 0, 0]]
    assert t.values.tolist() == [[0.75, 0.5, 0.25, -0.125, 0.0, 0.0]]
    assert t.scale_codes.tolist() == [[0]] and float(t.tensor_scale) == 1.0


def test_mls_underflow_grid_is_continuous(impl):
    # <2,4>: binade 2^-3 has step 2^-7; the underflow code has the same step below 2^-3
    x = torch.tensor([[1.0, 0.124, 0.05, 2.0 ** -7, 2.0 ** -8]])
    t = q(x, "mls:2,4", impl, block=8)
    assert t.values.tolist() == [[0.96875, 0.125, 0.046875, 2.0 ** -7, 0.0]]  # 2^-8 is a tie -> even (0)
    assert t.exp[0, 2].item() == 0 and t.man[0, 2].item() == 6  # 0.046875 = 6 * 2^-7, underflow code


def test_mls_fixed_point_format(impl):
    # <0,3>: 3-bit fixed point k/8, saturating at 7/8
    x = torch.tensor([[1.0, 0.5, 0.3, 0.0624, 0.0626]])
    assert q(x, "mls:0,3", impl, block=8).values.tolist() == [[0.875, 0.5, 0.25, 0.0, 0.125]]


def test_mls_carry_into_next_binade(impl):
    # <2,1>: 0.24 lies in binade 2^-3 (grid 0.125, 0.1875), rounds up to 0.25 = next binade's 1.0
    t = q(torch.tensor([[1.0, 0.24]]), "mls:2,1", impl, block=2)
    assert t.values[0, 1].item() == 0.25 and t.exp[0, 1].item() == 2 and t.man[0, 1].item() == 0


@pytest.mark.parametrize("ratio,eg,mg,code,value", [
    (0.3, 8, 1, (2 << 1) | 1, 0.375),   # 1.2 * 2^-2 rounds up to 1.5 * 2^-2
    (0.9, 8, 1, 0, 1.0),                # 1.8 * 2^-1 -> 2.0 * 2^-1 carries to 1.0 * 2^0
    (0.3, 8, 0, 1 << 0, 0.5),           # <8,0>: next power of two
    (0.01, 2, 1, 3 << 1, 0.125),        # exponent clipped at 1 - 2^2 = -3
    (0.25, 8, 1, 2 << 1, 0.25),         # exact powers of two stay
])
def test_group_scale_rounds_up(impl, ratio, eg, mg, code, value):
    x = torch.tensor([[1.0, 0.0], [ratio, 0.0]])
    t = q(x, f"mls:2,1,g={eg},{mg},group=nc", impl, block=2)
    assert t.scale_codes.tolist() == [[0], [code]]
    assert t.group_scale()[1, 0].item() == value


def test_4d_groups_and_layout(impl):
    x = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    for group, shape in [("nc", (3, 4)), ("n", (3, 1)), ("c", (1, 4)), ("none", (1, 1))]:
        t = q(x, f"mls:2,3,g=8,1,group={group}", impl)
        assert tuple(t.scale_codes.shape) == shape and t.block is None
        assert torch.equal(t.values, t.decode())


def test_2d_default_block_and_partial_block(impl):
    x = torch.randn(3, 70, generator=torch.Generator().manual_seed(1))
    t = q(x, "mls:2,1", impl)
    assert t.block == DEFAULT_BLOCK and tuple(t.scale_codes.shape) == (3, 3)
    t = q(x, "mls:2,1", impl, block=64)
    assert tuple(t.scale_codes.shape) == (3, 2)
    assert torch.equal(t.values, t.decode())


def test_group_scales_follow_group_maxima(impl):
    # each row's block maximum maps to the top of its grid: rows differing by 2^k get scales 2^k apart
    x = torch.ones(4, 8) * torch.tensor([[1.0], [0.5], [0.25], [2.0 ** -20]])
    t = q(x, "mls:2,1", impl, block=8)
    assert t.group_scale()[:, 0].tolist() == [1.0, 0.5, 0.25, 2.0 ** -20]


def test_all_zero_tensor_and_groups(impl):
    for x in (torch.zeros(2, 3, 4, 4), torch.zeros(5, 9)):
        t = q(x, "mls:2,1", impl, rounding="stochastic")
        assert torch.equal(t.values, torch.zeros_like(x)) and not torch.isnan(t.values).any()
        assert int(t.codes.abs().sum()) == 0
    x = torch.randn(2, 3, 4, 4)
    x[1, 2] = 0
    t = q(x, "mls:2,1", impl)
    assert torch.equal(t.values[1, 2], torch.zeros(4, 4)) and torch.isfinite(t.values).all()
    assert torch.equal(q(torch.zeros(7), "pot:4", impl).values, torch.zeros(7))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4", "mogami:bf16", "mogami:fp32", "fp32"])
def test_nonfinite_input_raises_with_shape(impl, fmt, bad):
    x = torch.randn(2, 3, 4, 5)
    x[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 5\).*(NaN|Inf)"):
        q(x, fmt, impl)


def test_float64_beyond_fp32_range_raises(impl):
    x = torch.tensor([[1.0, 1e39]], dtype=torch.float64)
    with pytest.raises(ValueError, match="beyond the fp32 range"):
        q(x, "mls:2,1", impl)


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(4, 4)
    with pytest.raises(ValueError, match="reshape it to 2-D"):
        quantize(torch.randn(2, 3, 4), "mls:2,1")
    with pytest.raises(ValueError, match="rounding"):
        quantize(x, "mls:2,1", rounding="up")
    with pytest.raises(ValueError, match="block"):
        quantize(torch.randn(1, 2, 3, 3), "mls:2,1", block=4)
    with pytest.raises(ValueError, match="block"):
        quantize(x, "mls:2,1", block=0)
    with pytest.raises(ValueError, match="clip_ratio"):
        quantize(x, "mls:2,1", clip_ratio=0.5)
    with pytest.raises(ValueError, match="clip_ratio"):
        quantize(x, "pot:4", clip_ratio=1.5)
    with pytest.raises(ValueError, match="floating-point"):
        quantize(torch.ones(2, 2, dtype=torch.int32), "mls:2,1")
    with pytest.raises(ValueError, match="empty"):
        quantize(torch.empty(0, 4), "mls:2,1")
    with pytest.raises(ValueError, match="accepted"):
        quantize(x, "mls:9,9")


def test_pot_hand_values(impl):
    # max 1 -> s = 0: grid 2^-14 .. 2^0; linear-domain nearest (ties up)
    x = torch.tensor([1.0, 0.7, 0.74, -0.76, 0.75, 2.0 ** -14, 1.01 * 2.0 ** -15, 0.99 * 2.0 ** -15, 0.0])
    t = q(x, "pot:4", impl)
    assert t.values.tolist() == [1.0, 0.5, 0.5, -1.0, 1.0, 2.0 ** -14, 2.0 ** -14, 0.0, 0.0]
    assert t.codes.tolist() == [15, 14, 14, 16 | 15, 15, 1, 1, 0, 0]
    assert float(t.tensor_scale) == 1.0


def test_pot_scale_and_clip_ratio(impl):
    x = torch.tensor([3.0, -1.0, 0.3])
    assert float(q(x, "pot:4", impl).tensor_scale) == 4.0  # ceil(log2 3) = 2
    t = q(x, "pot:4", impl, clip_ratio=0.3)  # 0.9 -> s = 0: 3.0 saturates at 1
    assert float(t.tensor_scale) == 1.0 and t.values.tolist() == [1.0, -1.0, 0.25]


def test_bf16_nearest_equals_torch_cast():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(3)) * 1e3
    t = quantize(x, "mogami:bf16", rounding="nearest")
    assert torch.equal(t.codes.view(torch.bfloat16), x.bfloat16())
    assert t.dtype == torch.float32 and torch.equal(t.values, x.bfloat16().float())


def test_fp32_and_mogami_fp32_keep_bits():
    x = torch.randn(3, 5)
    for fmt in ("fp32", "mogami:fp32"):
        t = quantize(x, fmt)
        assert torch.equal(t.codes, x.view(torch.int32)) and torch.equal(t.values, x)


def test_reproducible_from_generator(impl):
    x = torch.randn(2, 4, 6, 6)
    for fmt in ("mls:2,1", "pot:4", "mogami:bf16"):
        a = quantize(x, fmt, generator=torch.Generator().manual_seed(5), impl=impl)
        b = quantize(x, fmt, generator=torch.Generator().manual_seed(5), impl=impl)
        c = quantize(x, fmt, generator=torch.Generator().manual_seed(6), impl=impl)
        assert torch.equal(a.codes, b.codes) and torch.equal(a.values, b.values)
        assert not torch.equal(a.codes, c.codes)
    torch.manual_seed(9)
    a = quantize(x, "mls:2,1", impl=impl)
    torch.manual_seed(9)
    assert torch.equal(a.codes, quantize(x, "mls:2,1", impl=impl).codes)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_keep_dtype(impl, dtype):
    x = torch.randn(2, 3, 4, 4).to(dtype)
    for fmt in ("mls:2,4", "pot:4"):
        t = q(x, fmt, impl)
        assert t.values.dtype == dtype and t.dequantize().dtype == dtype
        assert torch.equal(t.values, t.decode())
        assert torch.equal(t.codes, q(x.float(), fmt, impl).codes)


def test_non_contiguous_input(impl):
    x = torch.randn(4, 6, 5, 5).transpose(0, 1)
    assert torch.equal(q(x, "mls:2,1", impl).codes, q(x.contiguous(), "mls:2,1", impl).codes)


def test_native_and_torch_agree_on_a_large_tensor():
    if not native_available():
        pytest.skip("native kernel unavailable (no C compiler)")
    x = torch.randn(8, 32, 16, 16, generator=torch.Generator().manual_seed(2))
    for fmt in ("mls:2,1", "mls:2,4,g=8,1,group=c", "pot:4"):
        a = quantize(x, fmt, generator=torch.Generator().manual_seed(1), impl="torch")
        b = quantize(x, fmt, generator=torch.Generator().manual_seed(1), impl="native")
        assert torch.equal(a.codes, b.codes) and torch.equal(a.values, b.values)


def test_result_is_a_qtensor_with_codes_not_floats():
    t = quantize(torch.randn(2, 3, 3, 3), "mls:2,1")
    assert isinstance(t, QTensor) and t.codes.dtype == torch.int16 and t.scale_codes.dtype == torch.int16
    assert t.fmt == parse("mls:2,1") and t.tensor_scale.dim() == 0


@pytest.mark.cuda
def test_cuda_equals_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = torch.randn(4, 8, 6, 6)
    for fmt in ("mls:2,1", "pot:4", "mogami:bf16"):
        a = quantize(x, fmt, generator=torch.Generator().manual_seed(1), impl="torch")
        b = quantize(x.cuda(), fmt, generator=torch.Generator().manual_seed(1))
        assert b.values.device.type == "cuda"
        assert torch.equal(a.codes, b.codes.cpu()) and torch.equal(a.values, b.values.cpu())


def test_large_outputs_on_huge_pages_behave_like_tensors(monkeypatch, tmp_path):
    if not native_available():
        pytest.skip("native kernel unavailable")
    import lowbit.numerics.quant

    monkeypatch.setattr(lowbit.numerics.quant.native, "HUGE_MIN_BYTES", 1 << 20)  # take the huge-page path at this size
    # 4.9 MB of values (huge pages); odd H*W puts groups off vector bounds
    x = torch.randn(2, 2, 511, 601, generator=torch.Generator().manual_seed(8))
    for fmt in ("mls:2,1", "pot:4"):
        a = quantize(x, fmt, generator=torch.Generator().manual_seed(0))
        monkeypatch.setenv("LOWBIT_HUGEPAGES", "0")
        b = quantize(x, fmt, generator=torch.Generator().manual_seed(0))
        c = quantize(x, fmt, generator=torch.Generator().manual_seed(0), impl="torch")
        monkeypatch.delenv("LOWBIT_HUGEPAGES")
        assert torch.equal(a.values, b.values) and torch.equal(a.codes, b.codes)
        assert torch.equal(a.values, c.values) and torch.equal(a.codes, c.codes)
    v = a.values
    v.mul_(2).add_(1)  # writable, in place
    torch.save(v, tmp_path / "v.pt")
    assert torch.equal(torch.load(tmp_path / "v.pt"), b.values * 2 + 1)
    del a, v  # the mapping is released with its last tensor


def test_meta_tensor_gets_a_clear_error():
    """A meta tensor has no values: quantize said "Tensor.item() cannot be called on meta tensors" (issue 14)."""
    for fmt in ("mls:2,1", "pot:4", "mogami:bf16", "fp32"):
        with pytest.raises(ValueError, match=r"meta tensor \(shape \(4, 8\)\) has none; materialize"):
            quantize(torch.empty(4, 8, device="meta"), fmt)
