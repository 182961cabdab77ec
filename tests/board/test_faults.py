"""Fault injection on the simulated board: each fault gives its clear error, the next call works."""
import numpy as np
import pytest
import torch

from lowbit.kernel import wire
from lowbit.board import (BoardTimeout, BufferAllocationError, DmaError, KernelError, TruncatedOutput,
                          open_simulated, simulated_overlay)
from lowbit.board.axi_dma import SR_DEC_ERR, SR_SLV_ERR
from lowbit.backends.emulation import run_axis_stream


def recovers(board, emulation, operands):
    board.timeout_s = 60.0
    a, b = operands("mls:2,1", 5, 6, 40, seed=11)
    assert torch.equal(board.gemm(a, b), emulation.gemm(a, b))


@pytest.mark.parametrize("channel,bit,name", [("mm2s_error", SR_SLV_ERR, "slave error"),
                                              ("s2mm_error", SR_DEC_ERR, "decode error")])
def test_dma_error_bits(board, emulation, operands, channel, bit, name):
    setattr(board.device.faults, channel, bit)
    a, b = operands("pot:4", 3, 4, 8)
    with pytest.raises(DmaError) as err:
        board.gemm(a, b)
    message = str(err.value)
    assert name in message and "on unit 0 (lowbit_gemm, dma), tile 1/4" in message  # 4 B rows: one per unit
    assert "MM2S_DMASR=0x" in message and "S2MM_DMASR=0x" in message
    assert "reset" in message
    recovers(board, emulation, operands)


def test_kernel_that_never_asserts_tlast_times_out(board, emulation, operands):
    board.device.faults.drop_tlast = True
    board.device.faults.cell = "lowbit_gemm"  # unit 0's (the four units' kernels finish in any order)
    board.timeout_s = 0.3
    a, b = operands("mls:2,1", 3, 4, 8)
    with pytest.raises(BoardTimeout, match=r"TLAST.*unit 0 .*tile 1/4.*S2MM_DMASR=0x[0-9a-f]+ \(running\)"):
        board.gemm(a, b)
    recovers(board, emulation, operands)


def test_stuck_ip_is_reset_by_reprogramming_the_pl(emulation, operands):
    def runaway(words):  # streams past its packet and never asserts TLAST
        res = run_axis_stream(words)
        return type(res)(np.concatenate([res.out_words, np.arange(8, dtype=np.uint64)]), -1, res.status,
                         res.consumed)

    board = open_simulated(kernel=runaway, timeout_s=0.3)
    reprograms = []
    download = board.device.download
    board.device.download = lambda *args: (reprograms.append(1), download(*args))
    with pytest.raises(BoardTimeout, match=r"IP CTRL=0x[0-9a-f]+ STATUS=OK"):
        board.gemm(*operands("pot:4", 4, 30, 64))
    assert reprograms == [1] and board.ip.idle
    board.device.kernel, board.timeout_s = run_axis_stream, 60.0
    recovers(board, emulation, operands)


def test_truncated_input_stream_is_a_kernel_error(board, emulation, operands):
    board.device.faults.truncate_input_words = 6
    a, b = operands("mls:2,4", 3, 4, 64)
    with pytest.raises(KernelError, match=r"STATUS=TRUNCATED on unit 0 \(lowbit_gemm, dma\), tile 1/4"):
        board.gemm(a, b)
    recovers(board, emulation, operands)


def test_malformed_header_is_reported_not_ignored(emulation, operands):
    def corrupt_magic(words):
        words = words.copy()
        words[0] ^= np.uint64(1)
        return run_axis_stream(words)

    board = open_simulated(kernel=corrupt_magic, timeout_s=60.0)
    a, b = operands("pot:4", 3, 4, 8)
    with pytest.raises(KernelError, match=r"STATUS=BAD_MAGIC.*header m=3 n=1 k=8"):  # N shared by 4 units
        board.gemm(a, b)
    board.device.kernel = run_axis_stream
    recovers(board, emulation, operands)


def test_short_output_without_status_word(emulation, operands):
    def lose_a_word(words):
        res = run_axis_stream(words)
        return type(res)(res.out_words[1:], res.tlast_index - 1, res.status, res.consumed)

    board = open_simulated(kernel=lose_a_word, timeout_s=60.0)
    a, b = operands("mogami:fp32", 3, 4, 8)
    with pytest.raises(TruncatedOutput, match="received 2 output words, expected 3"):  # m=3 n=1: 2 words + status
        board.gemm(a, b)
    board.device.kernel = run_axis_stream
    recovers(board, emulation, operands)


def test_wrong_version_register_is_refused_with_a_build_hint():
    from lowbit_drivers import VersionMismatch

    from lowbit.board.sim import SimulatedBoard
    from lowbit.board.device import open_pynq

    device = SimulatedBoard()
    device.faults.id_version = (wire.IP_ID << 16) | (wire.WIRE_VERSION + 1)
    with pytest.raises(VersionMismatch, match=r"wire version 2.*lowbit build --board zcu104"):
        open_pynq(str(simulated_overlay("zcu104")), device=device)
    device.faults.id_version = 0xDEAD0001
    with pytest.raises(VersionMismatch, match="not a lowbit overlay"):
        open_pynq(str(simulated_overlay("zcu104")), device=device)


def test_buffer_allocation_failure_keeps_the_backend_usable(board, emulation, operands):
    board.device.faults.fail_allocations = 1
    a, b = operands("mls:2,1", 3, 4, 8)
    with pytest.raises(BufferAllocationError, match="CMA"):
        board.gemm(a, b)
    recovers(board, emulation, operands)


def test_allocation_failure_mid_gemm_finishes_the_calls_in_flight(board, emulation, operands):
    """Unit 0's second call cannot get its buffer while every unit runs its first: the error comes
    back only after all four calls in flight finished (no DMA left writing into a buffer the next
    GEMM reuses), without a reset, and the next GEMM is exact."""
    from lowbit.board.sim import GemmIpModel

    board.gemm(*operands("pot:4", wire.MAX_M, 50, 300))  # one call per unit: slot 0 buffers sized, slot 1 empty
    board.device.faults.fail_allocations = 1
    reprograms = []
    download = board.device.download
    board.device.download = lambda *args: (reprograms.append(1), download(*args))
    runs = board.device.counters["runs"]
    a, b = operands("pot:4", 2 * wire.MAX_M, 50, 300)  # each unit's call 1 goes to its slot 1, allocated meanwhile
    with pytest.raises(BufferAllocationError):
        board.gemm(a, b)
    assert board.device.counters["runs"] - runs == 4 and reprograms == []
    assert all(u.dma.sendchannel.idle and u.dma.recvchannel.idle and u.ip.idle for u in board.units)
    assert all(ip.output is None and not ip.computing for ip in board.device.models(GemmIpModel))
    assert board.units[0].inputs[1].capacity == 0
    assert torch.equal(board.gemm(a, b), emulation.gemm(a, b))


def test_fault_during_training_leaves_the_weights_untouched(board, emulation):
    import lowbit
    from lowbit.models.digits_cnn import DigitsCNN

    torch.manual_seed(0)
    model = lowbit.convert(DigitsCNN(width=4), "mls:2,1", backend=board, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    board.device.faults.s2mm_error = SR_SLV_ERR
    with pytest.raises(DmaError):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(before[k], v) for k, v in params.items())
    loss = torch.nn.functional.cross_entropy(model(x), y)  # the next step works
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(before[k], v) for k, v in params.items())


@pytest.mark.parametrize("fault, value, error, what", [
    ("truncate_input_words", 6, KernelError, "STATUS=TRUNCATED"),  # a bad status
    ("drop_tlast", True, BoardTimeout, "no end of transfer within 1 s"),  # a DMA timeout
])
def test_a_fault_on_one_unit_names_it_and_leaves_the_others_consistent(emulation, operands, fault, value, error,
                                                                        what):
    """Unit 2 of four faults on its first call: the error names the unit and the call; every other
    unit's call in flight has finished before the error comes back (nothing writes into their
    buffers afterwards), and the next GEMM runs on all four units and is exact."""
    import time

    from lowbit.board.sim import GemmIpModel

    board = open_simulated("zcu104", timeout_s=60.0)
    board.device.faults.cell = "lowbit_gemm_2"
    setattr(board.device.faults, fault, value)
    if fault == "drop_tlast":
        board.timeout_s = 1.0
    a, b = operands("mls:2,1", 2 * wire.MAX_M, 16, 64, seed=7)  # 2 row tiles x 4 B-row shares: two calls per unit
    with pytest.raises(error, match=rf"{what}.* on unit 2 \(lowbit_gemm_2, dma_2\), tile 3/8"):
        board.gemm(a, b)
    others = [u for u in board.units if u.index != 2]

    def ddr(unit):
        return [board.device.memory_at(s.buffer.physical_address, s.buffer.nbytes).copy() for s in unit.outputs
                if s.buffer is not None]

    seen = {u.index: ddr(u) for u in others}
    assert all(u.dma.sendchannel.idle and u.dma.recvchannel.idle for u in others)
    ips = board.device.models(GemmIpModel)
    assert all(ip.output is None and not ip.computing for ip in ips)
    time.sleep(0.3)
    assert all(np.array_equal(x, y) for u in others for x, y in zip(seen[u.index], ddr(u), strict=True))
    board.timeout_s = 60.0
    before = {ip.cell: ip.runs for ip in ips}
    assert torch.equal(board.gemm(a, b), emulation.gemm(a, b))
    assert {ip.cell: ip.runs - before[ip.cell] for ip in ips} == {ip.cell: 2 for ip in ips}
    board.close()
