"""The emulation backend: bit-exact with the numpy kernel model, consistent with torch's convs,
clear errors, and end-to-end training through lowbit.convert."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from lowbit.kernel import reference as rk
from lowbit.kernel import wire
from lowbit.backends import emulation as em
from lowbit.backends.reference import ReferenceBackend
from lowbit.backends.base import ConvGeometry
from lowbit.numerics.quant import quantize
from lowbit.kernel.wire import Header, Op, Status

U = 2.0 ** -24


@pytest.fixture(scope="module")
def backend():
    return em.EmulationBackend()


@pytest.fixture(scope="module")
def reference():
    return ReferenceBackend()


def _pair(fmt, m, n, k, seed, block=None):
    g = torch.Generator().manual_seed(seed)
    kw = {"block": block} if fmt.startswith("mls") else {}
    a, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    return quantize(a, fmt, generator=g, **kw), quantize(b, fmt, generator=g, **kw)


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4", "mls:0,4", "mls:1,1", "mls:2,1,g=8,0,group=nc", "pot:4",
                                 "mogami:fp32", "mogami:bf16"])
@pytest.mark.parametrize("m,n,k,block", [(7, 5, 9, 9), (33, 70, 100, 9), (131, 20, 49, 7)])
def test_gemm_bit_exact_with_reference(backend, fmt, m, n, k, block):
    qa, qb = _pair(fmt, m, n, k, seed=m * n + k, block=block)
    got, want = backend.gemm(qa, qb), rk.gemm(qa, qb)
    assert got.dtype == torch.float32 and got.shape == (m, n)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_tiling_over_m_and_k_adds_k_tiles_in_order(backend):
    """block 1 with 130 rows: M-tiles of 128 + 2; the A-scale buffer forces K-tiles of 65536 // 128."""
    qa, qb = _pair("mls:2,1", 130, 9, 1100, seed=5, block=1)
    calls = list(em.gemm_tiles(qa.fmt, em.operand_of(qa), em.operand_of(qb), 1, Op.FORWARD))
    assert [(ms.stop - ms.start, len(c)) for ms, _, c in calls] == [(128, 3), (2, 1)]
    assert [h.k for h, _, _ in calls[0][2]] == [512, 512, 76]
    got = backend.gemm(qa, qb)
    assert torch.equal(got, rk.gemm(qa, qb))
    # the documented order: fp32 sum of the K-tiles' outputs, ascending, then St_a * St_b
    tiles = [rk.gemm_call(h, a, b) for h, a, b in calls[0][2]]
    manual = ((tiles[0] + tiles[1]) + tiles[2]) * em.tensor_scale_product(qa, qb)
    assert np.array_equal(got[:128].numpy(), manual)


def test_gemm_close_to_dequantized_matmul(backend):
    qa, qb = _pair("mls:2,4", 40, 30, 90, seed=1, block=9)
    a, b = qa.decode().double(), qb.decode().double()
    got = backend.gemm(qa, qb).double()
    bound = 4 * 90 * U * (a.abs() @ b.abs().T) + 1e-30
    assert bool(((got - a @ b.T).abs() <= bound).all())


def _conv_case(fmt, seed):
    g = torch.Generator().manual_seed(seed)
    A, W = torch.randn(4, 6, 8, 8, generator=g), torch.randn(5, 6, 3, 3, generator=g)
    qa, qw = quantize(A, fmt, generator=g), quantize(W, fmt, generator=g)
    geom = ConvGeometry((1, 1), (1, 1), (1, 1))
    z = F.conv2d(qa.decode(), qw.decode(), padding=1)
    qe = quantize(torch.randn(z.shape, generator=g), fmt, generator=g)
    return qa, qw, qe, geom


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4", "pot:4"])
def test_conv_three_gemms_match_software_style(backend, reference, fmt):
    """Emulated convs vs F.conv2d / torch.nn.grad on dequantized operands (the software backend's
    method). Bound: fp32 summation order, |diff| <= 4 * R * 2^-24 * (|a| conv |b|) for a reduction
    of length R (the kernel's integer sums are exact; the fp32 block sum, the K-tile sum and the
    scale products account for the rest). Emulation and the numpy model agree bit for bit."""
    qa, qw, qe, geom = _conv_case(fmt, seed=3)
    a, w, e = qa.decode().double(), qw.decode().double(), qe.decode().double()
    emu = [backend.conv2d_forward(qw, qa, geom), backend.conv2d_backward_data(qe, qw, geom, qa.shape),
           backend.conv2d_weight_grad(qe, qa, geom, qw.shape)]
    ref = [reference.conv2d_forward(qw, qa, geom), reference.conv2d_backward_data(qe, qw, geom, qa.shape),
           reference.conv2d_weight_grad(qe, qa, geom, qw.shape)]
    torch_ = [(F.conv2d(a, w, padding=1), F.conv2d(a.abs(), w.abs(), padding=1), 6 * 9),
              (conv2d_input(qa.shape, w, e, padding=1), conv2d_input(qa.shape, w.abs(), e.abs(), padding=1), 5 * 9),
              (conv2d_weight(a, qw.shape, e, padding=1), conv2d_weight(a.abs(), qw.shape, e.abs(), padding=1), 4 * 64)]
    for got, want, (exact, mag, r) in zip(emu, ref, torch_):
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))
        assert bool(((got.double() - exact).abs() <= 4 * r * U * mag + 1e-30).all())
        if fmt == "pot:4":  # one exact integer sum, one rounding: the correctly rounded result
            assert torch.equal(got, exact.float())


def test_conv_integer_partial_sums_exact():
    """MLS intra-group sums of the lowered forward conv == an exact integer conv per (co, ci)."""
    qa, qw, _, geom = _conv_case("mls:2,1", seed=4)
    f = qa.fmt
    a_int = torch.from_numpy(rk.mls_decode(qa.codes.numpy() & 0xF, f.ex, f.mx)).double()
    w_int = torch.from_numpy(rk.mls_decode(qw.codes.numpy() & 0xF, f.ex, f.mx)).double()
    from lowbit.backends import lowering

    captured = {}

    class Capture(em.EmulationBackend):
        def gemm(self, a, b, *, op=Op.FORWARD):
            captured["a"], captured["b"] = em.operand_of(a), em.operand_of(b)
            return super().gemm(a, b, op=op)

    lowering.conv2d_forward(Capture(), qw, qa, geom)
    p = rk.mls_partials(captured["a"].codes, captured["b"].codes, 9, f.ex, f.mx)  # [Co, N*H*W, Ci]
    n, ci, h, w = qa.shape
    for c in range(ci):
        exact = F.conv2d(a_int[:, c:c + 1], w_int[:, c:c + 1], padding=1)  # [N, Co, H, W]
        lowered = torch.from_numpy(p[:, :, c]).reshape(-1, n, h, w).permute(1, 0, 2, 3).double()
        assert torch.equal(lowered, exact)
    ffi, lib = em.kernel_lib()
    a0, b0 = captured["a"].codes[0, :9].astype(np.uint16), captured["b"].codes[10, :9].astype(np.uint16)
    assert lib.lowbit_mls_block_sum(ffi.from_buffer("uint16_t[]", a0), ffi.from_buffer("uint16_t[]", b0), 9,
                                    f.ex, f.mx) == p[0, 10, 0]


def test_run_axis_stream_contract():
    qa, qb = _pair("pot:4", 3, 4, 20, seed=9)
    hdr = Header.for_gemm(Op.FORWARD, qa.fmt, 3, 4, 20, 20)
    words = em.build_stream(hdr, em.operand_of(qa), em.operand_of(qb))
    res = em.run_axis_stream(words)
    assert isinstance(res, em.AxisResult) and res.status == Status.OK
    assert res.out_words.dtype == np.uint64 and len(res.out_words) == hdr.output_words()
    assert res.tlast_index == len(res.out_words) - 1 and res.consumed == len(words)
    short = em.run_axis_stream(words[:-3])
    assert short.status == Status.TRUNCATED and short.consumed == len(words) - 3
    assert short.tlast_index == len(short.out_words) - 1
    assert em.run_axis_stream(words[:1]).out_words.tolist() == [wire.status_word(Status.TRUNCATED)]
    with pytest.raises(ValueError, match="empty"):
        em.run_axis_stream(np.zeros(0, dtype=np.uint64))
    with pytest.raises(TypeError, match="unsigned 64-bit"):
        em.run_axis_stream(np.zeros(4, dtype=np.float32))


def test_bad_operands_are_explained(backend):
    qa, qb = _pair("mls:2,1", 3, 4, 18, seed=1, block=9)
    pa, pb = _pair("pot:4", 3, 4, 18, seed=1)
    with pytest.raises(ValueError, match="share one arithmetic"):
        backend.gemm(qa, pb)
    qc, _ = _pair("mls:2,1", 3, 4, 18, seed=1, block=6)
    with pytest.raises(ValueError, match="same block"):
        backend.gemm(qc, qb)
    with pytest.raises(ValueError, match=r"a \[M, K\] and b \[N, K\]"):
        backend.gemm(pa, _pair("pot:4", 3, 4, 17, seed=1)[1])
    big_a, big_b = _pair("mls:2,1", 2, 2, wire.MAX_K + 10, seed=2, block=wire.MAX_K + 10)
    with pytest.raises(ValueError, match="MAX_K"):
        backend.gemm(big_a, big_b)


def test_missing_compiler_and_headers_are_explained(monkeypatch, tmp_path):
    from lowbit.runtime import native as _build
    from lowbit.kernel import headers as hls_headers

    monkeypatch.setenv("LOWBIT_AP_TYPES", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps hls4ml==1.3.0"):
        hls_headers.ap_types_dir()
    monkeypatch.delenv("LOWBIT_AP_TYPES")
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_build, "_loaded", {})
    monkeypatch.setattr(_build.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found"):
        em.EmulationBackend()


def test_convert_trains_digits_on_emulation():
    nn_mod = pytest.importorskip("lowbit.nn")
    from lowbit import data, models

    torch.manual_seed(0)
    ds = data.load("digits")
    x, y = ds.train.x[:256], ds.train.y[:256]
    model = nn_mod.convert(models.get("digits_cnn"), "mls:2,1", backend="emulation")
    calls = {"n": 0}
    be = em.EmulationBackend
    original = be.gemm

    def counting(self, a, b, *, op=Op.FORWARD):
        calls["n"] += 1
        return original(self, a, b, op=op)

    be.gemm = counting
    try:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses = []
        for step in range(12):
            idx = torch.arange(step * 64, step * 64 + 64) % 256
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        be.gemm = original
    assert calls["n"] > 0 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3


def test_concurrent_callers_get_their_own_results():
    """The kernel's buffers are static (one IP): concurrent Python threads are serialised."""
    import threading

    streams = []
    for seed in range(4):
        qa, qb = _pair("mls:2,4", 20, 300, 90, seed=seed, block=9)
        hdr = Header.for_gemm(Op.FORWARD, qa.fmt, 20, 300, 90, 9)
        streams.append(em.build_stream(hdr, em.operand_of(qa), em.operand_of(qb)))
    expected = [rk.run_stream(w)[0] for w in streams]
    results = [None] * 4

    def work(i):
        for _ in range(3):
            results[i] = em.run_axis_stream(streams[i]).out_words

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, e) for r, e in zip(results, expected))


@pytest.mark.parametrize("config", ["full", "pynq-z2"])
def test_kernel_builds_report_their_limits(config):
    limits = em.CONFIGS[config]
    ffi, lib = em.kernel_lib(limits)
    out = np.zeros(2, dtype=np.uint32)
    lib.lowbit_kernel_limits(ffi.from_buffer("uint32_t[]", out))
    assert out.tolist() == [limits.scale_buf, limits.a_elems]


def test_small_board_config_tiles_to_fit_and_stays_exact():
    """The PYNQ-Z2 buffer sizes: 16K A elements, 8K scales. The host tiles M and K to fit; the
    result equals the numpy model under the same tiling; an oversized call is refused."""
    small = em.EmulationBackend("pynq-z2")
    limits = small.limits
    qa, qb = _pair("mls:2,1", 100, 70, 600, seed=12, block=9)
    calls = [c for _, _, cs in em.gemm_tiles(qa.fmt, em.operand_of(qa), em.operand_of(qb), 9, Op.FORWARD, limits)
             for c in cs]
    assert len(calls) > 1
    for hdr, _, _ in calls:
        assert hdr.m * hdr.k <= limits.a_elems and max(hdr.m, hdr.n) * hdr.nblocks <= limits.scale_buf
    assert torch.equal(small.gemm(qa, qb), rk.gemm(qa, qb, limits=limits))
    pa, pb = _pair("pot:4", 64, 5, 1000, seed=13)
    assert torch.equal(small.gemm(pa, pb), rk.gemm(pa, pb, limits=limits))
    hdr = Header.for_gemm(Op.FORWARD, qa.fmt, 100, 70, 600, 9)
    words = em.build_stream(hdr, em.operand_of(qa), em.operand_of(qb))
    assert em.run_axis_stream(words, limits=limits).status == Status.BAD_DIMS
    assert em.run_axis_stream(words).status == Status.OK
    with pytest.raises(ValueError, match="unknown kernel config"):
        em.EmulationBackend("zynq-7000")


@pytest.mark.parametrize("fmt,k,block", [("mls:2,1", 50, 9), ("mls:2,4", 63, 7), ("mls:3,4", 10, 3), ("pot:4", 37, 37),
                                         ("mogami:fp32", 9, 9), ("mogami:bf16", 11, 11)])
def test_stream_length_matches_the_wire_spec(fmt, k, block):
    qa, qb = _pair(fmt, 5, 3, k, seed=k, block=block)
    hdr = Header.for_gemm(Op.FORWARD, qa.fmt, 5, 3, k, block)
    words = em.build_stream(hdr, em.operand_of(qa), em.operand_of(qb))
    assert len(words) == hdr.input_words()
    assert len(em.run_axis_stream(words).out_words) == hdr.output_words()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_operands_come_back_on_cuda(backend):
    qa, qb = _pair("mls:2,1", 9, 7, 27, seed=21, block=9)
    to_cuda = lambda q: type(q)(q.fmt, q.codes.cuda(), None if q.scale_codes is None else q.scale_codes.cuda(),  # noqa: E731
                                q.tensor_scale.cuda(), q.dtype, q.block)
    got = backend.gemm(to_cuda(qa), to_cuda(qb))
    assert got.device.type == "cuda" and torch.equal(got.cpu(), backend.gemm(qa, qb))


def test_last_k_tile_shorter_than_a_block():
    """K = 512 blocks of 9 (what the A-scale buffer allows for 128 rows) + 5: the last K-tile is one
    partial block (header block 9 > k 5, which the kernel accepts as a single block)."""
    qa, qb = _pair("mls:2,1", 128, 3, 512 * 9 + 5, seed=41, block=9)
    calls = next(iter(em.gemm_tiles(qa.fmt, em.operand_of(qa), em.operand_of(qb), 9, Op.FORWARD)))[2]
    assert [(h.k, h.block, h.nblocks) for h, _, _ in calls] == [(4608, 9, 512), (5, 9, 1)]
    assert torch.equal(em.EmulationBackend().gemm(qa, qb), rk.gemm(qa, qb))
