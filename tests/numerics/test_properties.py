"""Property tests (hypothesis) of the quantizers: range, grid, nearest, unbiasedness, idempotence.

Statistical bound for stochastic rounding: with n draws of a value x between neighbouring grid
points lo < hi, the mean has standard deviation sqrt((hi - x)(x - lo) / n) <= (hi - lo) / (2 sqrt n);
we require |mean - x| <= 5 of those (a false failure every ~1.7 million values) plus the generator's
exact bias bound of 2^-24 grid steps.
"""
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbit import QTensor
from lowbit.numerics.formats import MLS
from lowbit.numerics.quant import group_scale_values, mls_element_codes, native_available, quantize

IMPLS = ["torch", "native"] if native_available() else ["torch"]
SETTINGS = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

element_bits = st.tuples(st.integers(0, 4), st.integers(0, 7)).filter(lambda em: sum(em) >= 1)
mls_formats = st.builds(lambda em, eg, mg, group: MLS(em[0], em[1], eg, mg, group), element_bits,
                        st.integers(0, 8), st.integers(0, 1), st.sampled_from(["nc", "n", "c", "none"]))


def tensor_from(seed: int, shape, spread: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp(spread * torch.randn(shape[0], *([1] * (len(shape) - 1)), generator=g))
    return x * (torch.rand(shape, generator=g) > 0.1)  # some exact zeros


def mls_grid(fmt: MLS, scale_code: int = 0, st_: float = 1.0) -> np.ndarray:
    """Every magnitude one group with this scale code can hold, decoded by QTensor itself."""
    n = 1 << (fmt.ex + fmt.mx)
    codes = torch.arange(n, dtype=torch.int16).view(1, n)
    scale = torch.tensor([[scale_code]], dtype=torch.int16)
    t = QTensor(fmt, codes, scale, torch.tensor(st_, dtype=torch.float32), torch.float32, block=n)
    return np.unique(t.decode().double().numpy())


@settings(**SETTINGS)
@given(fmt=mls_formats, seed=st.integers(0, 2**31), spread=st.floats(0, 4),
       rounding=st.sampled_from(["nearest", "stochastic"]), impl=st.sampled_from(IMPLS))
def test_mls_codes_in_range(fmt, seed, spread, rounding, impl):
    x = tensor_from(seed, (3, 4, 3, 3), spread)
    t = quantize(x, fmt, rounding=rounding, generator=torch.Generator().manual_seed(seed), impl=impl)
    c = t.codes.to(torch.int32)
    assert int(c.min()) >= 0 and int(c.max()) < (1 << fmt.code_bits)
    assert int(t.magnitude_int().max()) <= fmt.max_int
    assert bool(((t.sign == 1) <= (t.magnitude_int() > 0)).all())  # no negative zero codes
    s = t.scale_codes.to(torch.int32)
    assert int(s.min()) >= 0 and int((s >> fmt.mg).max()) <= (1 << fmt.eg) - 1
    assert torch.equal(t.values, t.decode())


@settings(**SETTINGS)
@given(fmt=mls_formats, seed=st.integers(0, 2**31), spread=st.floats(0, 4), impl=st.sampled_from(IMPLS))
def test_mls_nearest_is_on_grid_and_closest(fmt, seed, spread, impl):
    x = tensor_from(seed, (1, 64), spread)  # one block of one row: a single group
    t = quantize(x, fmt, rounding="nearest", block=64, impl=impl)
    grid = mls_grid(fmt, int(t.scale_codes[0, 0]), float(t.tensor_scale))
    v = t.values.double().numpy().ravel()
    xs = x.double().numpy().ravel()
    assert np.isin(np.abs(v), grid).all()
    best = np.abs(np.abs(xs)[:, None] - grid[None, :]).min(axis=1)
    # X_f is |x| times a rounded reciprocal: allow 2^-21 |x| for near-ties
    assert (np.abs(v - xs) <= best + 2.0 ** -21 * np.abs(xs)).all()


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31), spread=st.floats(0, 6), clip=st.floats(0.05, 1.0), impl=st.sampled_from(IMPLS),
       rounding=st.sampled_from(["nearest", "stochastic"]))
def test_pot_codes_grid_and_nearest(seed, spread, clip, impl, rounding):
    x = tensor_from(seed, (16, 20), spread)
    t = quantize(x, "pot:4", rounding=rounding, clip_ratio=clip, impl=impl,
                 generator=torch.Generator().manual_seed(seed))
    c = t.codes.to(torch.int32)
    assert int(c.min()) >= 0 and int(c.max()) <= 31 and not bool((((c & 15) == 0) & (c > 0)).any())
    scale = float(t.tensor_scale)
    grid = np.array([0.0] + [scale * 2.0 ** k for k in range(-14, 1)])
    v, xs = t.values.double().numpy().ravel(), x.double().numpy().ravel()
    assert np.isin(np.abs(v), grid).all()
    if rounding == "nearest":
        best = np.abs(np.abs(xs)[:, None] - grid[None, :]).min(axis=1)
        assert (np.abs(v - xs) <= best).all()
    else:  # stochastic picks one of the two neighbours
        lo = np.array([grid[grid <= a].max() if a <= grid[-1] else grid[-1] for a in np.abs(xs)])
        hi = np.array([grid[grid >= a].min() if a <= grid[-1] else grid[-1] for a in np.abs(xs)])
        assert ((np.abs(v) == lo) | (np.abs(v) == hi)).all()


def _check_unbiased(samples: np.ndarray, x: np.ndarray, step: np.ndarray) -> None:
    n = samples.shape[1]
    mean = samples.mean(axis=1)
    bound = 5 * step / (2 * np.sqrt(n)) + 2.0 ** -24 * step
    assert (np.abs(mean - x) <= bound).all(), np.max(np.abs(mean - x) / bound)


@settings(max_examples=8, deadline=None)
@given(fmt=mls_formats.filter(lambda f: f.group == "none"), seed=st.integers(0, 2**31), impl=st.sampled_from(IMPLS))
def test_mls_stochastic_is_unbiased(fmt, seed, impl):
    n, k = 4096, 16
    g = torch.Generator().manual_seed(seed)
    xmax = float(mls_grid(fmt)[-1])
    vals = (torch.rand(k, generator=g) * 2 - 1) * xmax  # inside the grid: no saturation
    x = torch.cat([vals[:, None].expand(k, n), torch.ones(1, n)])  # the row of ones fixes St = Sg = 1
    t = quantize(x, fmt, rounding="stochastic", block=n, generator=g, impl=impl)
    grid = mls_grid(fmt)
    a = vals.double().abs().numpy()
    step = np.array([grid[grid >= v].min() - grid[grid <= v].max() for v in a])
    _check_unbiased(t.values[:k].double().numpy(), vals.double().numpy(), step)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31), impl=st.sampled_from(IMPLS))
def test_pot_stochastic_is_unbiased(seed, impl):
    n, k = 4096, 16
    g = torch.Generator().manual_seed(seed)
    vals = (torch.rand(k, generator=g) * 2 - 1) * torch.exp2(-torch.randint(0, 16, (k,), generator=g).float())
    x = torch.cat([vals[:, None].expand(k, n), torch.ones(1, n)])
    t = quantize(x, "pot:4", rounding="stochastic", generator=g, impl=impl)
    grid = np.array([0.0] + [2.0 ** e for e in range(-14, 1)])
    a = vals.double().abs().numpy()
    step = np.array([grid[grid >= v].min() - grid[grid <= v].max() for v in a])
    _check_unbiased(t.values[:k].double().numpy(), vals.double().numpy(), step)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_bf16_stochastic_is_unbiased(seed):
    n, k = 4096, 16
    g = torch.Generator().manual_seed(seed)
    vals = torch.randn(k, generator=g) * 10
    t = quantize(vals[:, None].expand(k, n), "mogami:bf16", rounding="stochastic", generator=g)
    step = 2.0 ** (torch.floor(torch.log2(vals.abs())) - 7)  # bf16 keeps 7 fraction bits
    assert ((vals.bfloat16().float() - vals).abs() <= step / 2).all()
    _check_unbiased(t.values.double().numpy(), vals.double().numpy(), step.double().numpy())


@settings(**SETTINGS)
@given(seed=st.integers(0, 2**31), spread=st.floats(0, 6), impl=st.sampled_from(IMPLS))
def test_nearest_is_idempotent_for_pot_and_bf16(seed, spread, impl):
    x = tensor_from(seed, (6, 50), spread)
    once = quantize(x, "pot:4", rounding="nearest", impl=impl)
    assert torch.equal(quantize(once.values, "pot:4", rounding="nearest", impl=impl).values, once.values)
    b = quantize(x, "mogami:bf16", rounding="nearest")
    assert torch.equal(quantize(b.values, "mogami:bf16", rounding="nearest").values, b.values)


@settings(**SETTINGS)
@given(fmt=mls_formats, seed=st.integers(0, 2**31), spread=st.floats(0, 4))
def test_mls_grid_points_round_to_themselves(fmt, seed, spread):
    # With the group and tensor scales fixed, nearest rounding of a grid point is that point.
    # (Re-quantizing a whole MLS tensor can move its maximum: St = max|x| but the largest element
    # value is 1 - 2^-(mx+1), so the maximum saturates and St shrinks; see docs/formats.md.)
    x = tensor_from(seed, (2, 3, 4, 4), spread)
    t = quantize(x, fmt, rounding="nearest", impl="torch")
    sg = t.expand_groups(group_scale_values(t.scale_codes, fmt.mg)).float()
    ratio = (t.values.abs() / (sg * t.tensor_scale)).float()
    ratio = torch.where(torch.isfinite(ratio), ratio, torch.zeros_like(ratio))
    again = mls_element_codes(ratio, t.values < 0, fmt, "nearest", None)
    assert torch.equal(again, t.codes)
