"""The simulated AXI DMA follows PG021's register behaviour; buffers are non-coherent."""
import types

import numpy as np
import pynq
import pytest

from lowbit.kernel import wire
from lowbit.board.axi_dma import (CR_RESET, DmaReg, SR_DEC_ERR, SR_HALTED, SR_IDLE, SR_INT_ERR, SR_IOC_IRQ,
                                  SR_SLV_ERR)
from lowbit.board import simulated_overlay
from lowbit.board.sim import SimulatedBoard

BIT = str(simulated_overlay("zcu104"))


def echo_kernel(words):
    """Returns the input's word sum and an OK status word, TLAST on the last."""
    out = np.array([int(words.sum()) & (2**64 - 1), wire.status_word(wire.Status.OK)], dtype=np.uint64)
    return types.SimpleNamespace(out_words=out, tlast_index=1, status=wire.Status.OK, consumed=len(words))


@pytest.fixture
def sim():
    import lowbit_drivers  # noqa: F401

    device = SimulatedBoard(kernel=echo_kernel)
    overlay = pynq.Overlay(BIT, download=False, device=device)
    return device, overlay.dma, overlay.lowbit_gemm


def sr(dma, reg):
    return dma.read(int(reg))


def test_reset_values_and_run_stop(sim):
    device, dma, _ = sim  # the pynq driver already set RS on both channels
    assert not sr(dma, DmaReg.MM2S_DMASR) & SR_HALTED
    assert not sr(dma, DmaReg.MM2S_DMASR) & SR_IDLE  # running, no transfer yet: neither halted nor idle
    dma.write(int(DmaReg.MM2S_DMACR), CR_RESET)
    assert sr(dma, DmaReg.MM2S_DMASR) == 0x00010001 and sr(dma, DmaReg.S2MM_DMASR) == 0x00010001
    assert dma.read(int(DmaReg.MM2S_DMACR)) == 0x00010002
    dma.sendchannel.start()
    assert dma.sendchannel.running


def test_transfer_round_trip_reports_bytes_received(sim):
    device, dma, ip = sim
    src = pynq.allocate((6,), np.uint64, target=device)
    dst = pynq.allocate((8,), np.uint64, target=device)
    src[:] = [1, 2, 3, 4, 5, 6]
    ip.start_kernel()
    dma.recvchannel.transfer(dst)
    dma.sendchannel.transfer(src)
    dma.sendchannel.wait()
    dma.recvchannel.wait()
    assert dma.recvchannel.transferred == 16  # S2MM LENGTH reads back the bytes actually received
    assert int(dst[0]) == 21 and wire.parse_status_word(int(dst[1])) == wire.Status.OK
    assert sr(dma, DmaReg.S2MM_DMASR) & (SR_IDLE | SR_IOC_IRQ) == SR_IDLE | SR_IOC_IRQ
    dma.write(int(DmaReg.S2MM_DMASR), SR_IOC_IRQ)  # write-1-to-clear
    assert not sr(dma, DmaReg.S2MM_DMASR) & SR_IOC_IRQ
    assert ip.snapshot()["CYCLES"] == 6


def test_flush_is_needed_memory_is_not_coherent(sim):
    device, dma, ip = sim
    src = pynq.allocate((2,), np.uint64, target=device)
    dst = pynq.allocate((2,), np.uint64, target=device)
    src[:] = [5, 7]
    src.flush()
    src[:] = [100, 100]  # still only in the CPU's cache: the DMA must read the flushed 5, 7
    ip.start_kernel()
    dma.recvchannel.transfer(dst)
    device.flush, saved = (lambda *a: None), device.flush  # a host that forgets to flush
    dma.sendchannel.transfer(src)
    device.flush = saved
    dma.recvchannel.wait()
    assert int(dst[0]) == 12


def test_zero_length_is_an_internal_error_and_bad_address_a_decode_error(sim):
    device, dma, _ = sim
    dma.write(int(DmaReg.MM2S_SA), 0x10)
    dma.write(int(DmaReg.MM2S_LENGTH), 0)
    assert sr(dma, DmaReg.MM2S_DMASR) & (SR_INT_ERR | SR_HALTED) == SR_INT_ERR | SR_HALTED
    assert dma.sendchannel.error and not dma.sendchannel.running  # PG021: an error halts the channel
    dma.write(int(DmaReg.MM2S_DMACR), CR_RESET)
    dma.sendchannel.start()
    dma.write(int(DmaReg.MM2S_SA), 0x10)  # no buffer there
    dma.write(int(DmaReg.MM2S_LENGTH), 64)
    assert sr(dma, DmaReg.MM2S_DMASR) & (SR_DEC_ERR | SR_HALTED) == SR_DEC_ERR | SR_HALTED


def test_packet_longer_than_the_s2mm_buffer_is_an_internal_error(sim):
    device, dma, ip = sim
    src = pynq.allocate((4,), np.uint64, target=device)
    dst = pynq.allocate((1,), np.uint64, target=device)  # the kernel sends 2 words
    ip.start_kernel()
    dma.recvchannel.transfer(dst)
    dma.sendchannel.transfer(src)
    assert sr(dma, DmaReg.S2MM_DMASR) & SR_INT_ERR
    assert not ip.idle or sr(dma, DmaReg.S2MM_DMASR) & SR_HALTED


def test_injected_slave_error_is_one_shot(sim):
    device, dma, ip = sim
    src = pynq.allocate((4,), np.uint64, target=device)
    device.faults.mm2s_error = SR_SLV_ERR
    dma.sendchannel.transfer(src)
    assert sr(dma, DmaReg.MM2S_DMASR) & SR_SLV_ERR and dma.sendchannel.error
    assert device.faults.mm2s_error == 0
    dma.write(int(DmaReg.MM2S_DMACR), CR_RESET)
    dma.sendchannel.start()
    dma.sendchannel.transfer(src)
    assert not dma.sendchannel.error


def test_allocation_limits_and_release():
    device = SimulatedBoard(kernel=echo_kernel, ddr_bytes=1 << 16)
    buf = pynq.allocate((4096,), np.uint64, target=device)  # 32 KiB
    with pytest.raises(RuntimeError, match="Failed to allocate"):
        pynq.allocate((8192,), np.uint64, target=device)
    assert buf.physical_address % SimulatedBoard.PAGE == 0
    buf.freebuffer()
    pynq.allocate((8000,), np.uint64, target=device)  # the released memory is available again
