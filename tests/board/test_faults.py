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
    assert name in message and "tile 1/1" in message and "MM2S_DMASR=0x" in message and "S2MM_DMASR=0x" in message
    assert "reset" in message
    recovers(board, emulation, operands)


def test_kernel_that_never_asserts_tlast_times_out(board, emulation, operands):
    board.device.faults.drop_tlast = True
    board.timeout_s = 0.3
    a, b = operands("mls:2,1", 3, 4, 8)
    with pytest.raises(BoardTimeout, match=r"TLAST.*tile 1/1.*S2MM_DMASR=0x[0-9a-f]+ \(running\)"):
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
    with pytest.raises(KernelError, match="STATUS=TRUNCATED on tile 1/1"):
        board.gemm(a, b)
    recovers(board, emulation, operands)


def test_malformed_header_is_reported_not_ignored(emulation, operands):
    def corrupt_magic(words):
        words = words.copy()
        words[0] ^= np.uint64(1)
        return run_axis_stream(words)

    board = open_simulated(kernel=corrupt_magic, timeout_s=60.0)
    a, b = operands("pot:4", 3, 4, 8)
    with pytest.raises(KernelError, match=r"STATUS=BAD_MAGIC.*header m=3 n=4 k=8"):
        board.gemm(a, b)
    board.device.kernel = run_axis_stream
    recovers(board, emulation, operands)


def test_short_output_without_status_word(emulation, operands):
    def lose_a_word(words):
        res = run_axis_stream(words)
        return type(res)(res.out_words[1:], res.tlast_index - 1, res.status, res.consumed)

    board = open_simulated(kernel=lose_a_word, timeout_s=60.0)
    a, b = operands("mogami:fp32", 3, 4, 8)
    with pytest.raises(TruncatedOutput, match="received 6 output words, expected 7"):
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


def test_allocation_failure_mid_gemm_resets_the_call_in_flight(board, emulation, operands):
    board.gemm(*operands("pot:4", wire.MAX_M, 50, 300))  # one call: slot 0 buffers sized, slot 1 empty
    board.device.faults.fail_allocations = 1
    resets = []
    reset = board.reset
    board.reset = lambda: (resets.append(1), reset())
    a, b = operands("pot:4", 2 * wire.MAX_M, 50, 300)  # call 1 goes to slot 1, allocated while call 0 runs
    with pytest.raises(BufferAllocationError):
        board.gemm(a, b)
    assert resets == [1] and board.inputs[1].capacity == 0
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
