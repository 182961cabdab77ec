"""The board path computes exactly what the emulation backend computes, call for call."""
import numpy as np
import pytest
import torch

from lowbit.kernel import wire
from lowbit.backends import emulation as em
from lowbit.board import packing
from lowbit.kernel.wire import Op

FORMATS = ["mls:2,1", "mls:2,4,g=8,0", "mls:1,1", "pot:4", "mogami:fp32", "mogami:bf16"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(3, 5, 7), (20, 33, 96), (1, 1, 1), (5, 3, wire.MAX_K + 33)])
def test_pack_call_equals_the_emulation_stream(fmt, shape, operands):
    a, b = operands(fmt, *shape, seed=sum(shape))
    block = a.block if a.block else shape[2]
    ours = list(em.gemm_tiles(a.fmt, packing.board_operand(a), packing.board_operand(b), block, Op.WEIGHT_GRAD))
    theirs = list(em.gemm_tiles(a.fmt, em.operand_of(a), em.operand_of(b), block, Op.WEIGHT_GRAD))
    for (_, _, calls), (_, _, ref_calls) in zip(ours, theirs, strict=True):
        for (hdr, at, bt), (_, ref_a, ref_b) in zip(calls, ref_calls, strict=True):
            expected = em.build_stream(hdr, ref_a, ref_b)
            buf = np.full(packing.stream_words(hdr) + 2, 0xA5A5, dtype=np.uint64)  # dirty buffer
            n = packing.pack_call(buf, hdr, at, bt)
            assert n == len(expected) == packing.stream_words(hdr)
            assert np.array_equal(buf[:n], expected)
            assert np.all(buf[n:] == 0xA5A5)  # nothing written past the stream


@pytest.mark.parametrize("fmt", FORMATS)
def test_board_equals_emulation(board, emulation, fmt, operands):
    for i, shape in enumerate([(3, 5, 7), (40, 70, 96)]):
        a, b = operands(fmt, *shape, seed=i)
        assert torch.equal(board.gemm(a, b, op=Op.BACKWARD_DATA), emulation.gemm(a, b, op=Op.BACKWARD_DATA))


def test_tiled_over_m_and_k_equals_emulation(board, emulation, operands):
    a, b = operands("mls:2,1", wire.MAX_M + 9, 6, wire.MAX_K + 64, seed=3, block=64)
    before = board.calls_run
    c = board.gemm(a, b)
    assert board.calls_run - before == 12  # 2 row tiles x 2 K-tiles x 3 B-row shares (6 rows over 4 units)
    assert torch.equal(c, emulation.gemm(a, b))


def test_buffers_are_allocated_once_and_grow_only_when_needed(board, operands):
    small, large = operands("pot:4", 4, 8, 16), operands("pot:4", 64, 300, 200)
    slots = [s for u in board.units for s in u.inputs + u.outputs]
    board.gemm(*small)
    first = [s.allocations for s in slots]
    for _ in range(3):
        board.gemm(*small)
    assert [s.allocations for s in slots] == first
    board.gemm(*large)
    assert all(u.inputs[0].allocations == 2 for u in board.units)  # each unit's slot 0 grew once
    grown = [u.inputs[0].capacity for u in board.units]
    board.gemm(*small)
    assert [u.inputs[0].capacity for u in board.units] == grown  # never shrinks


def test_double_buffering_packs_the_next_call_before_waiting(board, operands, double_buffered):
    a, b = operands("mls:2,1", 3 * wire.MAX_M, 4, 32, seed=5)  # 12 calls: three per unit
    board.trace = []
    board.gemm(a, b)
    stages = board.trace
    double_buffered(stages, units=4)
    addresses = [s.buffer.physical_address for u in board.units for s in u.inputs + u.outputs]
    assert len(set(addresses)) == 16  # two input and two output buffers per unit, none shared


def test_every_call_flushes_and_invalidates(board, operands):
    counters = board.device.counters
    before = dict(counters)
    a, b = operands("mogami:bf16", 2 * wire.MAX_M, 3, 8)
    board.gemm(a, b)
    assert counters["runs"] - before["runs"] == 6  # 2 row tiles x 3 B-row shares
    assert counters["flush"] - before["flush"] == 6 and counters["invalidate"] - before["invalidate"] == 6


def test_bad_operands_are_refused_before_any_transfer(board, operands):
    a, _ = operands("pot:4", 3, 4, 8)
    _, b = operands("mogami:fp32", 3, 4, 8)
    runs = board.device.counters["runs"]
    with pytest.raises(ValueError, match="share one arithmetic"):
        board.gemm(a, b)
    assert board.device.counters["runs"] == runs


def test_tiles_larger_than_one_dma_transfer_are_cut_without_changing_results(board, emulation, operands):
    limit = 4096  # as if the DMAs were built with a 12-bit length register
    for unit in board.units:
        unit.dma.sendchannel._max_size = unit.dma.recvchannel._max_size = limit  # pynq itself refuses more
    board.max_transfer_bytes = limit
    a, b = operands("mogami:fp32", 9, 200, 40, seed=9)  # 200 B rows x 160 bytes: ~32 KiB in one call
    before = board.calls_run
    assert torch.equal(board.gemm(a, b), emulation.gemm(a, b))
    assert board.calls_run - before == 16  # 4 shares of 50 B rows, each cut into 4 chunks of at most 13
    assert all(u.inputs[0].capacity * 8 <= limit * 1.5 for u in board.units)


def test_next_call_is_packed_while_the_kernel_runs(emulation, operands):
    """Threaded board: call 0's kernel waits until the host has packed call 1, which only a host
    that packs while the board computes can do (a serial host would leave the kernel waiting)."""
    import threading
    import time as _time

    from lowbit.backends.emulation import run_axis_stream
    from lowbit.board import open_simulated

    seen = {}

    def kernel(words):
        if not seen:
            seen["first"] = threading.current_thread() is not threading.main_thread()
            deadline = _time.monotonic() + 20
            while ("pack", 1, 0, 1) not in board.trace and _time.monotonic() < deadline:
                _time.sleep(0.001)
            seen["packed_meanwhile"] = ("pack", 1, 0, 1) in board.trace
        return run_axis_stream(words)

    board = open_simulated("pynq-z2", kernel=kernel, threaded=True, timeout_s=60.0)  # one unit
    board.trace = []
    a, b = operands("pot:4", 2 * wire.MAX_M, 6, 24, seed=2)
    assert torch.equal(board.gemm(a, b), emulation.gemm(a, b))
    assert seen == {"first": True, "packed_meanwhile": True}


@pytest.mark.parametrize("fmt", FORMATS)
def test_single_tile_stream_holds_each_operand_exactly_as_qtensor_pack(fmt, operands):
    """Whole operands in one call: after the header, the stream is a.pack() then b.pack()."""
    a, b = operands(fmt, 7, 9, 40, seed=4)
    block = a.block if a.block else 40
    (_, _, calls), = list(em.gemm_tiles(a.fmt, packing.board_operand(a), packing.board_operand(b), block, Op.FORWARD))
    (hdr, at, bt), = calls
    buf = np.zeros(packing.stream_words(hdr), dtype=np.uint64)
    packing.pack_call(buf, hdr, at, bt)
    body = buf[wire.HEADER_WORDS:].tobytes()
    assert body == a.pack() + b.pack()


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4", "mogami:bf16"])
@pytest.mark.parametrize("shape,block", [((300, 70, 9000), 64), ((130, 5, 600), 9), ((3, 2, 8192 + 7), 8192),
                                         ((128, 9, 8192), 1)])
def test_planner_with_default_limits_is_the_emulations_tiling(fmt, shape, block, operands):
    """Holds lowbit.board.packing.plan_calls and lowbit.backends.emulation.gemm_tiles together."""
    a, b = operands(fmt, *shape, block=block)
    blk = a.block if a.block else shape[2]
    oa, ob = packing.board_operand(a), packing.board_operand(b)
    ours = list(packing.plan_calls(a.fmt, oa, ob, blk, Op.FORWARD))
    theirs = list(em.gemm_tiles(a.fmt, oa, ob, blk, Op.FORWARD))
    assert len(ours) == len(theirs)
    for (ms, ns, calls), (ms2, ns2, calls2) in zip(ours, theirs):
        assert (ms, ns) == (ms2, ns2)
        assert [c[0] for c in calls] == [c[0] for c in calls2]  # the headers: m, n, k, block of every call


def test_board_built_with_smaller_buffers_tiles_k_for_them(emulation, operands):
    from lowbit.board import open_simulated

    limits = packing.KernelLimits(a_elems=16 * 1024, scale_buf=8 * 1024)
    board = open_simulated(timeout_s=60.0)
    board.limits = limits
    board.trace = []
    a, b = operands("mls:2,1", 64, 40, 1152, block=9, seed=6)
    c = board.gemm(a, b)
    calls = [c for _, _, g in board._plan(a, b, 9, Op.FORWARD) for c in g]
    assert all(call.header.m * call.header.k <= limits.a_elems for call in calls) and len(calls) > 1
    expected = emulation.gemm(a, b)  # one K-tile there: the sums differ only by fp32 rounding
    assert torch.allclose(c, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_calls_go_to_every_unit_and_run_at_once(emulation, operands):
    """Threaded ZCU104-like board: each of the first four kernel runs waits until all four units
    compute at once, which only a host that starts every unit before waiting on any can reach;
    the calls are spread evenly (counted per unit by the simulated IPs) and the result is exact."""
    import threading

    from lowbit.backends.emulation import run_axis_stream
    from lowbit.board import open_simulated
    from lowbit.board.sim import GemmIpModel

    together = threading.Barrier(4, timeout=20)
    started = []

    def kernel(words):
        started.append(1)
        if len(started) <= 4:
            together.wait()  # BrokenBarrierError (a timeout) unless four units run concurrently
        return run_axis_stream(words)

    board = open_simulated("zcu104", kernel=kernel, threaded=True, timeout_s=60.0)
    a, b = operands("mls:2,1", 2 * wire.MAX_M, 40, 64, seed=4)  # 2 row tiles x 4 shares of 10 B rows
    assert torch.equal(board.gemm(a, b), emulation.gemm(a, b))
    assert not together.broken
    assert [ip.runs for ip in board.device.models(GemmIpModel)] == [2, 2, 2, 2]
    assert [u.calls_run for u in board.units] == [2, 2, 2, 2]
    board.close()


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4", "mogami:fp32"])
def test_a_four_unit_board_equals_emulation_and_the_reference(fmt, operands, emulation):
    """The ZCU104-like overlay (four units): board == emulation == lowbit.kernel.reference.gemm,
    with ==, on a GEMM tiled over M, K and the units."""
    from lowbit.board import open_simulated
    from lowbit.kernel import reference

    board = open_simulated("zcu104", timeout_s=60.0)
    a, b = operands(fmt, wire.MAX_M + 3, 37, 700, seed=8, block=64)
    c = board.gemm(a, b, op=Op.WEIGHT_GRAD)
    assert torch.equal(c, emulation.gemm(a, b, op=Op.WEIGHT_GRAD))
    assert torch.equal(c, reference.gemm(a, b, op=Op.WEIGHT_GRAD))
    assert min(u.calls_run for u in board.units) >= 1  # every unit took part
    board.close()


def test_a_one_unit_overlay_still_runs_every_call_on_its_unit(operands, emulation, double_buffered):
    from lowbit.board import open_simulated

    board = open_simulated("pynq-z2", timeout_s=60.0)
    assert [u.name for u in board.units] == ["unit 0 (lowbit_gemm, dma)"]
    a, b = operands("mls:2,1", 3 * wire.MAX_M, 40, 64, seed=6)
    board.trace = []
    assert torch.equal(board.gemm(a, b), emulation.gemm(a, b))
    double_buffered(board.trace, units=1)
    assert board.units[0].calls_run == 3 and board.device.counters["runs"] == 3  # N is not split for one unit
    board.close()


def test_n_is_split_into_one_share_per_unit_as_the_cycle_model_counts(operands):
    """The board's plan is plan_tiles with the cycle model's share of N per unit."""
    import math

    from lowbit.backends.emulation import plan_tiles
    from lowbit.board import open_simulated
    from lowbit.backends.emulation import unit_share_n

    board = open_simulated("zcu104", timeout_s=60.0)
    for m, n, k in [(300, 70, 96), (5, 3, 40), (128, 1, 8)]:
        a, b = operands("pot:4", m, n, k)
        ours = [c.header for _, _, g in board._plan(a, b, k, Op.FORWARD) for c in g]
        share = min(wire.MAX_N, math.ceil(n / 4))
        assert unit_share_n(n, 4) == share
        assert ours == [h for _, _, calls in plan_tiles(a.fmt, m, n, k, k, Op.FORWARD, board.limits, share)
                        for _, h in calls]
    board.close()


def test_the_board_plan_keeps_the_builds_longest_call(operands):
    """A build whose calls hold at most k_max of K (a Mogami build's k_tile) is tiled to it: the
    board's planner used to rebuild the limits without k_max and sent K = MAX_K calls that such a
    kernel answers BAD_DIMS."""
    from lowbit.backends.emulation import plan_tiles

    limits = packing.KernelLimits(k_max=1024)
    a, b = operands("mogami:bf16", 5, 6, 3000)
    calls = list(packing.plan_calls(a.fmt, packing.board_operand(a), packing.board_operand(b), 3000, Op.FORWARD,
                                    limits))
    headers = [hdr for _, _, group in calls for hdr, _, _ in group]
    assert [h.k for h in headers] == [1024, 1024, 952]
    assert headers == [h for _, _, group in plan_tiles(a.fmt, 5, 6, 3000, 3000, Op.FORWARD, limits) for _, h in group]
