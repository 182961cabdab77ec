"""AXI DMA (Xilinx PG021, direct register mode) register names and status bits.

The transfers themselves go through pynq's unmodified ``pynq.lib.dma.DMA`` driver; these names
are for the status snapshot in error messages and for the soft reset."""
from __future__ import annotations

import enum


class DmaReg(enum.IntEnum):
    MM2S_DMACR = 0x00
    MM2S_DMASR = 0x04
    MM2S_SA = 0x18
    MM2S_SA_MSB = 0x1C
    MM2S_LENGTH = 0x28
    S2MM_DMACR = 0x30
    S2MM_DMASR = 0x34
    S2MM_DA = 0x48
    S2MM_DA_MSB = 0x4C
    S2MM_LENGTH = 0x58


S2MM_OFFSET = 0x30  # S2MM registers repeat MM2S's layout 0x30 higher
CR_RS, CR_RESET = 1 << 0, 1 << 2
SR_HALTED, SR_IDLE = 1 << 0, 1 << 1
SR_INT_ERR, SR_SLV_ERR, SR_DEC_ERR = 1 << 4, 1 << 5, 1 << 6
SR_IOC_IRQ, SR_DLY_IRQ, SR_ERR_IRQ = 1 << 12, 1 << 13, 1 << 14
SR_ERRORS = SR_INT_ERR | SR_SLV_ERR | SR_DEC_ERR
CR_RESET_VALUE, SR_RESET_VALUE = 0x00010002, 0x00010001

_SR_NAMES = [(SR_HALTED, "halted"), (SR_IDLE, "idle"), (SR_INT_ERR, "internal error"),
             (SR_SLV_ERR, "slave error"), (SR_DEC_ERR, "decode error"), (SR_IOC_IRQ, "IOC"),
             (SR_ERR_IRQ, "error irq")]


def describe_sr(value: int) -> str:
    flags = [name for bit, name in _SR_NAMES if value & bit]
    return f"0x{value:08x} ({', '.join(flags) or 'running'})"
