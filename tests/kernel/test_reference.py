"""The numpy kernel model against the compiled C++ policies and tops: integer parts with ==."""
import numpy as np
import pytest

from lowbit.kernel import reference as rk
from lowbit.kernel import wire
from lowbit.backends.emulation import kernel_lib, run_axis_stream, run_mm
from lowbit.kernel.wire import Op, Status
from lowbit.numerics import formats
from lowbit.numerics.formats import MLS

FORMATS = [(2, 1), (2, 4), (0, 4), (1, 1), (4, 7), (3, 2), (0, 1), (1, 0)]


@pytest.fixture(scope="module")
def lib():
    return kernel_lib()


def _u16(ffi, arr):
    return ffi.from_buffer("uint16_t[]", np.ascontiguousarray(arr, dtype=np.uint16))


@pytest.mark.parametrize("ex,mx", FORMATS)
def test_mls_block_sums_exact(lib, ex, mx):
    ffi, c = lib
    rng = np.random.default_rng(ex * 10 + mx)
    bits = 1 + ex + mx
    for length in (1, 9, 49, 1024):
        a = rng.integers(0, 1 << bits, (3, length))
        b = rng.integers(0, 1 << bits, (2, length))
        p = rk.mls_partials(a, b, length, ex, mx)[:, :, 0]
        got = np.array([[c.lowbit_mls_block_sum(_u16(ffi, a[i]), _u16(ffi, b[j]), length, ex, mx)
                         for j in range(2)] for i in range(3)])
        assert np.array_equal(got, p)


def test_mls_worst_case_accumulation_is_exact(lib):
    """<4,7>: the widest product (44 bits) summed MAX_K times, near 2^57, all one sign."""
    ffi, c = lib
    f = MLS(4, 7)
    top = ((1 << f.ex) - 1) << f.mx | ((1 << f.mx) - 1)
    for sign in (0, 1):
        a = np.full(wire.MAX_K, top | (sign << (f.code_bits - 1)))
        b = np.full(wire.MAX_K, top)
        expected = (-1) ** sign * wire.MAX_K * f.max_int ** 2
        assert rk.mls_partials(a[None], b[None], wire.MAX_K, 4, 7)[0, 0, 0] == expected
        assert c.lowbit_mls_block_sum(_u16(ffi, a), _u16(ffi, b), wire.MAX_K, 4, 7) == expected
    assert expected.bit_length() <= 57


@pytest.mark.parametrize("eg,mg", [(8, 1), (8, 0), (4, 1), (0, 0)])
def test_mls_group_scaling_and_rounding(lib, eg, mg):
    ffi, c = lib
    rng = np.random.default_rng(eg + mg)
    ex, mx = 2, 4
    p = np.concatenate([rng.integers(-(1 << 57), 1 << 57, 200), rng.integers(-300, 300, 50),
                        (1 << 24) + np.arange(-4, 5), [0, 1, -1, (1 << 25) + 1, (1 << 25) + 3, (1 << 25) + 2]])
    sa = rng.integers(0, 1 << (eg + mg), p.size)
    sb = rng.integers(0, 1 << (eg + mg), p.size)
    ref = np.array([rk.mls_block_values(np.array([[[pi]]]), np.array([[ai]]), np.array([[bi]]), ex, mx, eg, mg)[0, 0, 0]
                    for pi, ai, bi in zip(p, sa, sb)], dtype=np.float32)
    got = np.array([c.lowbit_mls_block_value(int(pi), int(ai), int(bi), ex, mx, eg, mg) for pi, ai, bi in zip(p, sa, sb)],
                   dtype=np.float32)
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_scaled_to_f32_rounds_half_to_even_and_flushes():
    t = np.array([(1 << 24) + 1, (1 << 24) + 3, (1 << 25) + 2, (1 << 25) + 6, -((1 << 24) + 1), 5, 3, 0])
    got = rk.scaled_to_f32(t, 0)
    assert list(got) == [2.0 ** 24, 2.0 ** 24 + 4, 2.0 ** 25, 2.0 ** 25 + 8, -(2.0 ** 24), 5, 3, 0]
    assert rk.scaled_to_f32(np.array([1]), -126)[0] == np.float32(2.0 ** -126)
    assert rk.scaled_to_f32(np.array([1, 3]), -127).tolist() == [0.0, 2.0 ** -126 * 1.5]
    big = np.array([(1 << 61) - 1])
    assert rk.scaled_to_f32(big, -2)[0] == np.float32(2.0 ** 59)
    assert rk.round_to_f32(np.array([(1 << 53) + 1, (1 << 60) + (1 << 36)])).tolist() == [2.0 ** 53, 2.0 ** 60]


def test_pot_block_sums_exact(lib):
    ffi, c = lib
    rng = np.random.default_rng(7)
    for length in (1, 37, 512):
        a, b = rng.integers(0, 32, length), rng.integers(0, 32, length)
        ref = rk.pot_partials(a[None], b[None])[0, 0]
        assert c.lowbit_pot_block_sum(_u16(ffi, a), _u16(ffi, b), length) == ref
        manual = sum((-1) ** ((x >> 4) ^ (y >> 4)) * (1 << ((x & 15) + (y & 15) - 2))
                     for x, y in zip(a.tolist(), b.tolist()) if x & 15 and y & 15)
        assert ref == manual
    top = np.full(wire.MAX_K, 15)
    assert c.lowbit_pot_block_sum(_u16(ffi, top), _u16(ffi, top), wire.MAX_K) == wire.MAX_K << 28


def _f32_bits(values):
    return np.array(values, dtype=np.float32).view(np.uint32)


def test_mogami_known_values_and_rules(lib):
    ffi, c = lib
    pairs = [(1.5, 1.5, 2.0), (4.5, 3.0, 13.0), (-6.0, 3.0, -16.0), (-3.5, -3.5, 12.0), (1.3, -1.3, None),
             (1e-30, 1e-30, 0.0), (1e-30, -1e-30, -0.0), (0.0, 5.0, 0.0), (3e38, 3e38, 3.4028235e38),
             (-3e38, 3e38, -3.4028235e38), (1e-45, 2.0, 0.0)]
    a, b = _f32_bits([p[0] for p in pairs]), _f32_bits([p[1] for p in pairs])
    ref = rk.mogami_mul_bits(a, b, 32)
    got = np.array([c.lowbit_mogami_mul_bits(int(x), int(y), 32) for x, y in zip(a, b)], dtype=np.uint32)
    assert np.array_equal(got, ref)
    for (x, y, want), r in zip(pairs, ref.view(np.float32)):
        if want is not None:
            assert r == np.float32(want) and np.signbit(r) == np.signbit(np.float32(want)), (x, y, r)
    assert np.float32(rk.mogami_mul_bits(_f32_bits([1.2345]), _f32_bits([32.0]), 32).view(np.float32)[0]) == np.float32(39.504)
    nan = rk.mogami_mul_bits(_f32_bits([np.inf]), _f32_bits([1.0]), 32)
    assert nan[0] == 0x7FC00000 == c.lowbit_mogami_mul_bits(int(_f32_bits([np.inf])[0]), 0x3F800000, 32)


def test_mogami_matches_the_software_backend_rule(lib):
    software = pytest.importorskip("lowbit.backends.software")
    import torch

    ffi, c = lib
    rng = np.random.default_rng(3)
    a = rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32)
    ref = rk.mogami_mul_bits(a, b, 32)
    sw = software._torch_mul_bits(torch.from_numpy(a.view(np.int32)), torch.from_numpy(b.view(np.int32)))
    assert np.array_equal(sw.numpy().view(np.uint32), ref)
    sample = [c.lowbit_mogami_mul_bits(int(x), int(y), 32) for x, y in zip(a[:2000], b[:2000])]
    assert np.array_equal(np.array(sample, dtype=np.uint32), ref[:2000])
    a16, b16 = (a >> 16), (b >> 16)
    ref16 = rk.mogami_mul_bits(a16, b16, 16)
    sample16 = [c.lowbit_mogami_mul_bits(int(x), int(y), 16) for x, y in zip(a16[:2000], b16[:2000])]
    assert np.array_equal(np.array(sample16, dtype=np.uint32), ref16[:2000])


@pytest.mark.parametrize("name,words", rk.golden_cases(seed=11), ids=lambda v: v if isinstance(v, str) else "")
def test_tops_match_reference_stream(name, words):
    expected, status = rk.run_stream(words)
    res = run_axis_stream(words)
    assert res.status == status
    assert np.array_equal(res.out_words, expected)
    assert res.tlast_index == len(expected) - 1
    assert res.consumed == len(words) and res.beats == len(words)
    assert res.id_version == (wire.IP_ID << 16) | wire.WIRE_VERSION
    assert wire.parse_status_word(res.out_words[-1]) == status
    out_mm, status_mm = run_mm(words)
    assert status_mm == status and np.array_equal(out_mm, expected)


@pytest.mark.parametrize("build_name", ["emulation", "pynq_z2_mls", "zcu104_pot"])
def test_host_limits_match_kernel_config(build_name):
    """The compiled kernel's KernelConfig (from the generated board_config.hpp) is the record's."""
    from lowbit.backends import emulation
    from lowbit.kernel import boards

    build = {b.name: b for b in boards.all_builds()}[build_name]
    ffi, lib = emulation.kernel_lib(build)
    out = np.zeros(2, dtype=np.uint32)
    lib.lowbit_kernel_limits(ffi.from_buffer("uint32_t[]", out))
    assert out.tolist() == [build.limits.scale_buf, build.limits.a_elems]
    assert (emulation.SCALE_BUF, emulation.A_ELEMS) == (rk.SCALE_BUF, rk.A_ELEMS) == (1 << 16, wire.MAX_M * wire.MAX_K)


@pytest.mark.parametrize("bits", [32, 16])
def test_mogami_matches_lowbit_mogami_mul(lib, bits):
    """The kernel's product == lowbit.mogami_mul bit for bit on finite operands (it raises on NaN/Inf)."""
    import torch

    from lowbit.numerics.mogami import mogami_mul

    ffi, c = lib
    rng = np.random.default_rng(bits)
    exp_mask = 0x7F800000 if bits == 32 else 0x7F80
    raw = rng.integers(0, 1 << bits, (2, 30000), dtype=np.uint64).astype(np.uint32)
    raw = raw[:, ((raw[0] & exp_mask) != exp_mask) & ((raw[1] & exp_mask) != exp_mask)]
    edge = np.array([[0, 0x80000000, 0x00000001, 0x3F800000, 0x7F7FFFFF, 0x00800000, 0x3FC00000],
                     [0x3F800000, 0x7F7FFFFF, 0x3F800000, 0x7F7FFFFF, 0x7F7FFFFF, 0x00800000, 0xBFC00000]],
                    dtype=np.uint32)
    if bits == 16:
        edge = edge >> 16
    a, b = np.concatenate([raw, edge], axis=1)
    if bits == 32:
        ta, tb = torch.from_numpy(a.view(np.float32)), torch.from_numpy(b.view(np.float32))
        want = mogami_mul(ta, tb).numpy().view(np.uint32)
    else:
        ta = torch.from_numpy(a.astype(np.uint16).view(np.int16)).view(torch.bfloat16)
        tb = torch.from_numpy(b.astype(np.uint16).view(np.int16)).view(torch.bfloat16)
        want = mogami_mul(ta, tb).view(torch.int16).numpy().view(np.uint16).astype(np.uint32)
    assert np.array_equal(rk.mogami_mul_bits(a, b, bits), want)
    sample = np.array([c.lowbit_mogami_mul_bits(int(x), int(y), bits) for x, y in zip(a[:3000], b[:3000])],
                      dtype=np.uint32)
    assert np.array_equal(sample, want[:3000])
    tail = np.array([c.lowbit_mogami_mul_bits(int(x), int(y), bits) for x, y in zip(a[-7:], b[-7:])], dtype=np.uint32)
    assert np.array_equal(tail, want[-7:])


@pytest.mark.parametrize("past", [{"ex": formats.MLS_MAX_EX + 1}, {"mx": formats.MLS_MAX_MX + 1},
                                  {"eg": formats.MLS_MAX_EG + 1}, {"mg": formats.MLS_MAX_MG + 1}, {"ex": 0, "mx": 0}],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_compiled_header_check_accepts_exactly_the_formats_ranges(past):
    """The kernel (its ranges generated into wire.hpp) runs the widest format lowbit.numerics.formats
    accepts and answers BAD_FORMAT one past each bound, as the model does."""
    widest = MLS(formats.MLS_MAX_EX, formats.MLS_MAX_MX, formats.MLS_MAX_EG, formats.MLS_MAX_MG)
    words = rk._case_words(np.random.default_rng(5), Op.FORWARD, widest, 3, 2, 19, 8)
    for case, want in ((words, Status.OK), (rk._patch_header(words, **past), Status.BAD_FORMAT)):
        assert rk.run_stream(case)[1] == want
        assert run_axis_stream(case).status == want
    with pytest.raises(ValueError, match="out of range"):
        MLS(**{"ex": widest.ex, "mx": widest.mx, "eg": widest.eg, "mg": widest.mg, **past})
