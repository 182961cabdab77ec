"""Average relative quantization error (ARE)."""
import math

import pytest
import torch

from lowbit import quant_error, quantize


def test_hand_values():
    x = torch.tensor([1.0, 2.0, 0.0, -4.0])
    q = torch.tensor([1.0, 1.0, 0.5, -4.0])
    assert quant_error(x, q) == pytest.approx((0 + 1 + 0.5 + 0) / 7)
    assert quant_error(x, q, kind="elementwise") == pytest.approx((0 + 0.5 + 0) / 3)


def test_accepts_qtensor_and_format():
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t = quantize(x, "mls:2,1", rounding="nearest")
    direct = float((t.values - x).abs().sum() / x.abs().sum())
    assert quant_error(x, t) == pytest.approx(direct, rel=1e-6)
    assert quant_error(x, "mls:2,1") == pytest.approx(direct, rel=1e-6)  # nearest by default


def test_zero_cases_and_errors():
    z = torch.zeros(3)
    assert quant_error(z, z) == 0.0 and quant_error(z, z, kind="elementwise") == 0.0
    assert math.isinf(quant_error(z, torch.ones(3)))
    with pytest.raises(ValueError, match="shapes differ"):
        quant_error(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="kind"):
        quant_error(z, z, kind="max")


def test_more_mantissa_bits_give_smaller_error():
    x = torch.randn(8, 16, 6, 6, generator=torch.Generator().manual_seed(1))
    errs = [quant_error(x, f"mls:2,{m}") for m in range(0, 6)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.02


def test_nc_grouping_beats_no_grouping_on_varied_ranges():
    # Fig. 6 row 1 of the MLS paper: <0,3> elements, <8,1> scales, N x C groups have smaller ARE
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 16, 6, 6, generator=g) * torch.exp(2 * torch.randn(8, 16, 1, 1, generator=g))
    nc = quant_error(x, "mls:0,3,g=8,1,group=nc")
    n = quant_error(x, "mls:0,3,g=8,1,group=n")
    none = quant_error(x, "mls:0,3,g=8,1,group=none")
    assert nc < n < none


def test_stochastic_error_is_larger_than_nearest():
    x = torch.randn(4, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    sr = quant_error(x, "mls:2,1", rounding="stochastic", generator=torch.Generator().manual_seed(0))
    assert sr > quant_error(x, "mls:2,1")
