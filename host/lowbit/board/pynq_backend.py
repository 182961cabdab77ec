"""The board backend for Zynq / Zynq UltraScale+ boards running PYNQ: GEMMs over AXI DMA.

One kernel call moves as FINN-style stages, each a small function below: pack into the DMA buffer,
flush, program the IP (registers by name), ``recvchannel.transfer`` / ``sendchannel.transfer``,
wait with a timeout, invalidate, unpack. The plan, the double-buffered call loop and the sum are
``lowbit.board.calls.PipelinedBoard``'s (the emulation's tiling and order, so results are
bit-identical); this backend supplies the DMA transfer and cuts B-row tiles to the DMA's limit.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import List, Optional

import numpy as np

import lowbit_drivers  # noqa: F401  registers the IP driver before any Overlay is built
from lowbit_drivers import LowbitGemm
from lowbit_drivers.gemm import VersionMismatch, build_hint

from lowbit.kernel import wire
from lowbit.backends.base import Capabilities
from lowbit.backends.emulation import Operand
from lowbit.kernel.boards import ID_CELL, ID_GPIO_VLNV
from lowbit.kernel.wire import Header, Status
from lowbit.board import packing
from lowbit.board.axi_dma import CR_RESET, DmaReg, describe_sr
from lowbit.board.buffers import PynqSlot
from lowbit.board.calls import SLOTS, Call, PipelinedBoard
from lowbit.board.errors import BoardError, BoardTimeout, DmaError, KernelError, TruncatedOutput


class PynqBackend(PipelinedBoard):
    """``Backend`` over a loaded overlay holding the lowbit GEMM IP and an AXI DMA."""

    name = "board"

    def __init__(self, overlay, *, ip_name: Optional[str] = None, dma_name: Optional[str] = None,
                 board: str = "<board>", timeout_s: float = 10.0, limits: Optional[packing.KernelLimits] = None):
        """``limits``: the on-chip buffers the bitstream's kernel was built with (manifest
        ``a_elems``/``scale_buf``); the emulation's by default, which makes results bit-identical."""
        self.overlay = overlay
        self.limits = limits or packing.KernelLimits()
        self.device = overlay.device
        self.board = board
        self.timeout_s = float(timeout_s)
        ip_name = ip_name or _find_ip(overlay, wire.VLNV, UNIT0_IP)
        self.ip: LowbitGemm = getattr(overlay, ip_name)
        self.dma = getattr(overlay, dma_name or _find_ip(overlay, "xilinx.com:ip:axi_dma:", UNIT0_DMA))
        if not isinstance(self.ip, LowbitGemm):
            raise BoardError(f"overlay.{ip_name} is a {type(self.ip).__name__}, not lowbit_drivers.LowbitGemm: "
                             "import lowbit_drivers before building the pynq.Overlay")
        if self.dma.sendchannel is None or self.dma.recvchannel is None:
            raise BoardError("the overlay's AXI DMA needs both an MM2S and an S2MM channel")
        if getattr(self.dma, "_sg", False):
            raise BoardError("the overlay's AXI DMA is in scatter-gather mode; lowbit overlays use direct register "
                             "(simple) mode: rebuild with `lowbit build --board <board>` (c_include_sg=0)")
        self.max_transfer_bytes = min(self.dma.sendchannel._max_size, self.dma.recvchannel._max_size)
        self.check_version()
        self.inputs = [PynqSlot(self.device, f"input {i}") for i in range(SLOTS)]
        self.outputs = [PynqSlot(self.device, f"output {i}") for i in range(SLOTS)]
        self.trace: Optional[List[tuple]] = None  # set to [] to record the stage order
        self.calls_run = 0

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, ("mls", "pot", "mogami"), True, ("cpu", "cuda"),
                            f"lowbit GEMM IP on {self.board} through AXI DMA (pynq)")

    # -- B-row tiles cut to what one DMA transfer carries
    def _fit_transfers(self, ns: slice, calls: list):
        n = ns.stop - ns.start
        chunk = n
        while chunk > 1 and any(self._too_big(replace(hdr, n=chunk)) for hdr, _, _ in calls):
            chunk = -(-chunk // 2)
        if any(self._too_big(replace(hdr, n=chunk)) for hdr, _, _ in calls):
            raise BoardError(f"one B row of this GEMM does not fit the DMA's {self.max_transfer_bytes}-byte transfer "
                             "limit; rebuild the overlay with a larger c_sg_length_width")
        for j0 in range(0, n, chunk):
            j1 = min(n, j0 + chunk)
            yield slice(ns.start + j0, ns.start + j1), [
                (replace(hdr, n=j1 - j0), at, Operand(bt.codes[j0:j1], bt.scales[j0:j1])) for hdr, at, bt in calls]

    def _too_big(self, header: Header) -> bool:
        limit = self.max_transfer_bytes
        return (packing.stream_words(header) * wire.WORD_BYTES > limit
                or packing.output_words(header) * wire.WORD_BYTES > limit)

    # -- the transfer step of the shared GEMM (lowbit.board.calls)
    def _launch(self, call: Call) -> None:
        inbuf = self.inputs[call.slot].buffer
        out_words = packing.output_words(call.header)
        outbuf = self.outputs[call.slot].ensure(out_words)
        try:
            self.ip.start_kernel()
            self.dma.recvchannel.transfer(outbuf, 0, out_words * wire.WORD_BYTES)
            self.dma.sendchannel.transfer(inbuf, 0, call.in_words * wire.WORD_BYTES)  # flushes first
        except RuntimeError as err:
            raise self._fault(DmaError, f"starting the DMA failed: {err}", call) from err

    def _finish(self, call: Call) -> np.ndarray:
        self._stage("wait", call)
        self._wait(call)
        send, recv = self.dma.sendchannel, self.dma.recvchannel
        send.wait()
        recv.wait()  # invalidates the output buffer, reads back the bytes received
        self._stage("unpack", call)
        return self._unpack(call, recv.transferred // wire.WORD_BYTES)

    def _wait(self, call: Call) -> None:
        send, recv = self.dma.sendchannel, self.dma.recvchannel
        deadline = time.monotonic() + self.timeout_s
        polls = 0
        while True:
            if send.error or recv.error:
                raise self._fault(DmaError, "the AXI DMA raised an error bit", call)
            if send.idle and recv.idle:
                return
            if time.monotonic() > deadline:
                raise self._fault(BoardTimeout, f"no end of transfer within {self.timeout_s:g} s (the IP "
                                  "never asserted TLAST, or stopped reading its input)", call)
            polls += 1
            if polls > 64:
                time.sleep(min(1e-3, 1e-5 * polls))

    def _unpack(self, call: Call, received: int) -> np.ndarray:
        words = self.outputs[call.slot].buffer
        expected = packing.output_words(call.header)
        if received < 1:
            raise self._fault(TruncatedOutput, "the output stream carried no words", call)
        try:
            status = wire.parse_status_word(int(words[received - 1]))
        except ValueError as err:
            raise self._fault(TruncatedOutput, f"{err}; received {received} of {expected} words", call) from err
        if status != Status.OK:
            raise self._fault(KernelError, "the kernel rejected the call with "
                              + packing.rejection(status, call.header, self.board), call)
        if received != expected:
            raise self._fault(TruncatedOutput, f"received {received} output words, expected {expected}", call)
        self.calls_run += 1
        return packing.unpack_call(words[: received - 1], call.header.m, call.header.n)

    # -- faults: report with the register state, reset, leave the backend usable
    def registers(self) -> dict:
        regs = {r.name: self.dma.read(int(r)) for r in (DmaReg.MM2S_DMASR, DmaReg.S2MM_DMASR, DmaReg.S2MM_LENGTH)}
        regs.update({f"IP_{k}": v for k, v in self.ip.snapshot().items()})
        return regs

    def _fault(self, kind: type, what: str, call: Call) -> BoardError:
        regs = self.registers()
        state = (f"MM2S_DMASR={describe_sr(regs['MM2S_DMASR'])}, S2MM_DMASR={describe_sr(regs['S2MM_DMASR'])}, "
                 f"S2MM_LENGTH={regs['S2MM_LENGTH']}, IP CTRL=0x{regs['IP_CTRL']:x} "
                 f"STATUS={_status_name(regs['IP_STATUS'])} CYCLES={regs['IP_CYCLES']}")
        self.reset()
        return kind(f"{what} on {call.describe()}. Registers: {state}. The DMA and IP were reset; "
                    "no weights were changed and the next call can proceed.")

    def reset(self) -> None:
        """Soft-reset the DMA (both channels), restart it; reprogram the PL if the IP is stuck."""
        self._reset_dma()
        if not self.ip.idle:
            self.overlay.device.download(self.overlay, self.overlay.parser)  # PL reset, PS clocks untouched
            self._reset_dma()
            self.check_version()

    def check_version(self) -> None:
        """Read the overlay's ID register (a constant, readable before any run; the IP's own
        ID_VERSION is an HLS output that reads 0 until a run wrote it) and refuse another IP or
        wire version."""
        info = self.overlay.ip_dict.get(ID_CELL)
        if info is None or info.get("type") != ID_GPIO_VLNV:
            raise BoardError(f"the overlay has no {ID_CELL} ID register ({ID_GPIO_VLNV}), so its wire version "
                             "cannot be read before a run; " + build_hint(self.board))
        value = getattr(self.overlay, ID_CELL).mmio.read(0)
        ip_id, version = value >> 16, value & 0xFFFF
        if ip_id != wire.IP_ID:
            raise VersionMismatch(f"the overlay's {ID_CELL} register reads 0x{value:08x}: its ID 0x{ip_id:04x} is not "
                                  f"the lowbit GEMM (0x{wire.IP_ID:04x}); the loaded bitstream is not a lowbit overlay; "
                                  + build_hint(self.board))
        if version != wire.WIRE_VERSION:
            raise VersionMismatch(f"the lowbit IP speaks wire version {version}, this host library speaks "
                                  f"{wire.WIRE_VERSION}; " + build_hint(self.board))

    def _reset_dma(self) -> None:
        self.dma.write(int(DmaReg.MM2S_DMACR), CR_RESET)  # PG021: resets the whole engine
        deadline = time.monotonic() + 1.0
        while self.dma.read(int(DmaReg.MM2S_DMACR)) & CR_RESET:
            if time.monotonic() > deadline:
                raise BoardError("the AXI DMA did not leave soft reset within 1 s; reload the overlay")
        self.dma.sendchannel.start()
        self.dma.recvchannel.start()

    def _abandon(self, call: Call) -> None:
        self.reset()

    def close(self) -> None:
        for slot in self.inputs + self.outputs:
            slot.release()


def _status_name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return str(code)


# tcl/bd_zynq.tcl names compute unit i's cells lowbit_gemm_<i> / dma_<i> and unit 0's without a
# suffix; this backend drives unit 0 of an overlay with several.
UNIT0_IP, UNIT0_DMA = "lowbit_gemm", "dma"


def _find_ip(overlay, vlnv_prefix: str, unit0: str = "") -> str:
    names = [name for name, info in overlay.ip_dict.items() if str(info.get("type", "")).startswith(vlnv_prefix)]
    if len(names) > 1 and unit0 in names:
        return unit0
    if len(names) != 1:
        found = ", ".join(f"{n} ({i.get('type')})" for n, i in overlay.ip_dict.items())
        raise BoardError(f"expected exactly one IP of type {vlnv_prefix} in the overlay, found {len(names)}: {found}; "
                         "pass ip_name=/dma_name= to choose")
    return names[0]
