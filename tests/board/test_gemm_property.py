"""Property: for random shapes and random kernel buffer limits, the simulated board, the emulation
and the numpy kernel model compute the same GEMM bit for bit (issue 14).

Shapes include one-row and one-column tiles (M or N one more than a tile) and many K-tiles (small
buffers). The board's IP runs the emulation kernel built with the protocol's full buffers behind a
check that every call fits the drawn limits: a kernel's buffers only decide which calls it accepts,
so within them the full kernel computes what a kernel built with those limits computes."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbit import quantize
from lowbit.kernel import wire
from lowbit.backends import emulation as em
from lowbit.board import packing
from lowbit.kernel.reference import gemm as reference_gemm
from lowbit.kernel.wire import Header, Op

FORMATS = ["mls:2,1", "mls:2,4,g=8,0", "pot:4", "mogami:fp32", "mogami:bf16"]


class FitsLimits:
    """The board's kernel: runs each call and records the calls a kernel with ``limits`` could not hold."""

    def __init__(self):
        self.limits, self.misfits = em.FULL, []

    def __call__(self, words):
        h = Header.from_words(words)
        nb = h.nblocks if h.has_scales else 0
        if h.m * h.k > self.limits.a_elems or max(h.m, h.n) * nb > self.limits.scale_buf:
            self.misfits.append(h)
        return em.run_axis_stream(words)


@pytest.fixture(scope="module")
def board():
    from lowbit.board import open_simulated

    backend = open_simulated("zcu104", kernel=FitsLimits(), timeout_s=60.0)
    yield backend
    backend.close()


_EMULATION = []


def emulated(a, b, op, limits):
    """The emulation backend's host loop and kernel, tiled for ``limits``."""
    if limits == em.FULL:
        if not _EMULATION:
            _EMULATION.append(em.EmulationBackend())
        return _EMULATION[0].gemm(a, b, op=op)
    return em.tiled_gemm(a, b, op, lambda hdr, at, bt: em._emulated_call(hdr, at, bt), limits)


@st.composite
def cases(draw):
    """Tiles one row/column past a full tile, or a few rows; many K-tiles from small buffers (a
    thin A tile of 1..7 rows crosses 3+ K-tiles at K > 2 * MAX_K or A_ELEMS / rows)."""
    fmt = draw(st.sampled_from(FORMATS))
    m = draw(st.sampled_from([1, 2, 3, 7, wire.MAX_M - 1, wire.MAX_M, wire.MAX_M + 1]))
    n = draw(st.sampled_from([1, 2, 5, 129, 257]))
    if m * n <= 8 and draw(st.integers(0, 2)) == 0:
        # the numpy model adds Mogami products one k at a time: 3 K-tiles of 7 rows in K <= 3700 there
        low = 3400 if fmt.startswith("mogami") else 2 * wire.MAX_K + 1
        k, block = draw(st.integers(low, low + 300)), draw(st.sampled_from([32, 300]))
    else:
        block = draw(st.sampled_from([1, 8, 32, 300]))
        k = draw(st.integers(1, 48 if block == 1 else 700))  # block 1 with one-block K-tiles: a call per element
    a_elems = draw(st.sampled_from([wire.MAX_K, wire.MAX_K + 3000, 1 << 15, em.FULL.a_elems]))
    scale_buf = draw(st.sampled_from([wire.MAX_M, 200, 1 << 12, em.FULL.scale_buf]))
    op = draw(st.sampled_from(list(Op)))
    return fmt, m, n, k, block, em.KernelLimits(scale_buf=scale_buf, a_elems=a_elems), op


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_board_equals_emulation_equals_numpy_model(board, case):
    fmt, m, n, k, block, limits, op = case
    g = torch.Generator().manual_seed(m * 7919 + n * 104729 + k)
    blk = min(block, k) if fmt.startswith("mls") else None
    a = quantize(torch.randn(m, k, generator=g), fmt, rounding="nearest", block=blk)
    b = quantize(torch.randn(n, k, generator=g), fmt, rounding="nearest", block=blk)
    board.limits = packing.KernelLimits(a_elems=limits.a_elems, scale_buf=limits.scale_buf)
    board.device.kernel.limits, board.device.kernel.misfits = limits, []
    c = board.gemm(a, b, op=op)
    assert board.device.kernel.misfits == [], f"calls that do not fit {limits}"
    assert torch.equal(c, emulated(a, b, op, limits))
    assert torch.equal(c, reference_gemm(a, b, op=op, limits=limits))
