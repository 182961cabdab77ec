"""The board backend for Zynq / Zynq UltraScale+ boards running PYNQ: GEMMs over AXI DMA.

An overlay holds one or more compute units, each a lowbit GEMM IP fed by its own AXI DMA on its
own PS port (tcl/bd_zynq.tcl); the backend finds every unit in the overlay's .hwh (``ip_dict``)
and drives them all. One kernel call moves as FINN-style stages, each a small function below:
pack into the unit's DMA buffer, flush, program the unit's IP (registers by name),
``recvchannel.transfer`` / ``sendchannel.transfer``, wait with a timeout, invalidate, unpack. The
plan, the spread over the units, each unit's double-buffered call loop and the sum are
``lowbit.board.calls.PipelinedBoard``'s (the emulation's tiling and order, so results are
bit-identical); this backend supplies the units, the DMA transfer, and cuts B-row tiles to the
DMA's limit.
"""
from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

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
from lowbit.board.calls import SLOTS, Call, PipelinedBoard, Unit
from lowbit.board.errors import BoardError, BoardTimeout, DmaError, KernelError, TruncatedOutput


# tcl/bd_zynq.tcl names compute unit i's cells lowbit_gemm_<i> / dma_<i>, unit 0's without a suffix
IP_CELL, DMA_CELL = "lowbit_gemm", "dma"
AXI_DMA_PREFIX = "xilinx.com:ip:axi_dma:"


class PynqUnit(Unit):
    """One compute unit: the GEMM IP, its AXI DMA, and two input and two output DMA buffers."""

    def __init__(self, index: int, overlay, ip_name: str, dma_name: str):
        super().__init__(index, f"unit {index} ({ip_name}, {dma_name})",
                         [PynqSlot(overlay.device, f"unit {index} input {i}") for i in range(SLOTS)])
        self.ip: LowbitGemm = getattr(overlay, ip_name)
        self.dma = getattr(overlay, dma_name)
        self.outputs = [PynqSlot(overlay.device, f"unit {index} output {i}") for i in range(SLOTS)]
        if not isinstance(self.ip, LowbitGemm):
            raise BoardError(f"overlay.{ip_name} is a {type(self.ip).__name__}, not lowbit_drivers.LowbitGemm: "
                             "import lowbit_drivers before building the pynq.Overlay")
        if self.dma.sendchannel is None or self.dma.recvchannel is None:
            raise BoardError(f"the overlay's AXI DMA {dma_name} needs both an MM2S and an S2MM channel")
        if getattr(self.dma, "_sg", False):
            raise BoardError(f"the overlay's AXI DMA {dma_name} is in scatter-gather mode; lowbit overlays use "
                             "direct register (simple) mode: rebuild with `lowbit build --board <board>` (c_include_sg=0)")

    @property
    def max_transfer_bytes(self) -> int:
        return min(self.dma.sendchannel._max_size, self.dma.recvchannel._max_size)

    def registers(self) -> dict:
        regs = {r.name: self.dma.read(int(r)) for r in (DmaReg.MM2S_DMASR, DmaReg.S2MM_DMASR, DmaReg.S2MM_LENGTH)}
        regs.update({f"IP_{k}": v for k, v in self.ip.snapshot().items()})
        return regs

    def reset_dma(self) -> None:
        """Soft-reset this unit's DMA (both channels) and restart it; the other units run on."""
        self.dma.write(int(DmaReg.MM2S_DMACR), CR_RESET)  # PG021: resets the whole engine
        deadline = time.monotonic() + 1.0
        while self.dma.read(int(DmaReg.MM2S_DMACR)) & CR_RESET:
            if time.monotonic() > deadline:
                raise BoardError(f"the AXI DMA of {self.name} did not leave soft reset within 1 s; reload the overlay")
        self.dma.sendchannel.start()
        self.dma.recvchannel.start()

    def release(self) -> None:
        for slot in self.inputs + self.outputs:
            slot.release()


class PynqBackend(PipelinedBoard):
    """``Backend`` over a loaded overlay holding one or more compute units (lowbit GEMM IP + AXI DMA)."""

    name = "board"

    def __init__(self, overlay, *, ip_name: Optional[str] = None, dma_name: Optional[str] = None,
                 board: str = "<board>", timeout_s: float = 10.0, limits: Optional[packing.KernelLimits] = None,
                 compute_units: Optional[int] = None):
        """``limits``: the on-chip buffers the bitstream's kernel was built with (manifest
        ``kernel_limits``); the emulation's by default, which makes results bit-identical.
        ``ip_name``/``dma_name``: drive only that one unit; by default every unit of the overlay.
        ``compute_units``: the count the build says (manifest), checked against the overlay's."""
        self.overlay = overlay
        self.limits = limits or packing.KernelLimits()
        self.device = overlay.device
        self.board = board
        self.timeout_s = float(timeout_s)
        cells = [(ip_name or IP_CELL, dma_name or DMA_CELL)] if ip_name or dma_name else unit_cells(overlay.ip_dict)
        if compute_units is not None and not (ip_name or dma_name) and len(cells) != compute_units:
            raise BoardError(f"the overlay's .hwh holds {len(cells)} compute unit(s) ({', '.join(c for c, _ in cells)}) "
                             f"but its manifest.json says compute_units={compute_units}: the two files are from "
                             f"different builds; rebuild with `lowbit build --board {board}`")
        self.units: List[PynqUnit] = [PynqUnit(i, overlay, ip, dma) for i, (ip, dma) in enumerate(cells)]
        self.max_transfer_bytes = min(unit.max_transfer_bytes for unit in self.units)
        self.check_version()
        self.trace: Optional[List[tuple]] = None  # set to [] to record the stage order

    @property
    def ip(self) -> LowbitGemm:
        """Unit 0's IP (register-level tools and benchmarks)."""
        return self.units[0].ip

    @property
    def dma(self):
        """Unit 0's DMA (register-level tools and benchmarks)."""
        return self.units[0].dma

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, ("mls", "pot", "mogami"), True, ("cpu", "cuda"),
                            f"lowbit GEMM IP on {self.board} through AXI DMA (pynq), {len(self.units)} compute unit(s)")

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
        unit = self.units[call.unit]
        inbuf = unit.inputs[call.slot].buffer
        out_words = packing.output_words(call.header)
        outbuf = unit.outputs[call.slot].ensure(out_words)
        try:
            unit.ip.start_kernel()
            unit.dma.recvchannel.transfer(outbuf, 0, out_words * wire.WORD_BYTES)
            unit.dma.sendchannel.transfer(inbuf, 0, call.in_words * wire.WORD_BYTES)  # flushes first
        except RuntimeError as err:
            raise self._fault(DmaError, f"starting the DMA failed: {err}", call) from err

    def _finish(self, call: Call) -> np.ndarray:
        self._stage("wait", call)
        self._wait(call)
        send, recv = self.units[call.unit].dma.sendchannel, self.units[call.unit].dma.recvchannel
        send.wait()
        recv.wait()  # invalidates the output buffer, reads back the bytes received
        self._stage("unpack", call)
        return self._unpack(call, recv.transferred // wire.WORD_BYTES)

    def _wait(self, call: Call) -> None:
        dma = self.units[call.unit].dma
        send, recv = dma.sendchannel, dma.recvchannel
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
        words = self.units[call.unit].outputs[call.slot].buffer
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
        return packing.unpack_call(words[: received - 1], call.header.m, call.header.n)

    # -- faults: report with the unit's register state, reset, leave the backend usable
    def registers(self, unit: int = 0) -> dict:
        return self.units[unit].registers()

    def _fault(self, kind: type, what: str, call: Call) -> BoardError:
        """The error for a fault of ``call``'s unit, its registers read first; the unit's DMA is reset
        at once, its IP (if stuck) by ``_recover`` once the other units' calls have finished."""
        unit = self.units[call.unit]
        regs = unit.registers()
        state = (f"MM2S_DMASR={describe_sr(regs['MM2S_DMASR'])}, S2MM_DMASR={describe_sr(regs['S2MM_DMASR'])}, "
                 f"S2MM_LENGTH={regs['S2MM_LENGTH']}, IP CTRL=0x{regs['IP_CTRL']:x} "
                 f"STATUS={_status_name(regs['IP_STATUS'])} CYCLES={regs['IP_CYCLES']}")
        unit.reset_dma()
        return kind(f"{what} on {unit.name}, {call.describe()}. Registers: {state}. The DMA and IP were reset; "
                    "no weights were changed and the next call can proceed.")

    def reset(self) -> None:
        """Soft-reset every unit's DMA; reprogram the PL if an IP is stuck (PS clocks untouched)."""
        for unit in self.units:
            unit.reset_dma()
        self._recover()

    def _recover(self) -> None:
        stuck = [unit for unit in self.units if not unit.ip.idle]
        if stuck:
            self.overlay.device.download(self.overlay, self.overlay.parser)  # PL reset: every unit
            for unit in self.units:
                unit.reset_dma()
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

    def close(self) -> None:
        for unit in self.units:
            unit.release()


def _status_name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return str(code)


_UNIT_NAME = re.compile(rf"^(?P<path>.*/)?{IP_CELL}(?:_(?P<index>[1-9][0-9]*))?$")


def unit_cells(ip_dict: Dict[str, dict]) -> List[Tuple[str, str]]:
    """(IP cell, DMA cell) of every compute unit in an overlay's ``ip_dict``, unit 0 first: every
    lowbit GEMM IP, named as tcl/bd_zynq.tcl names it, with the AXI DMA beside it. Raises
    ``BoardError`` naming what is missing or misnamed."""
    ips = sorted(name for name, info in ip_dict.items() if str(info.get("type", "")) == wire.VLNV)
    if not ips:
        found = ", ".join(f"{n} ({i.get('type')})" for n, i in ip_dict.items())
        raise BoardError(f"the overlay holds no lowbit GEMM IP ({wire.VLNV}); found: {found}")
    units = {}
    for name in ips:
        match = _UNIT_NAME.match(name)
        if match is None:
            raise BoardError(f"the overlay's lowbit IP {name!r} is not named {IP_CELL} / {IP_CELL}_<i> as "
                             "tcl/bd_zynq.tcl names compute units; pass ip_name=/dma_name= to drive it alone")
        index = int(match["index"] or 0)
        dma = f"{match['path'] or ''}{DMA_CELL}{'' if index == 0 else f'_{index}'}"
        if not str(ip_dict.get(dma, {}).get("type", "")).startswith(AXI_DMA_PREFIX):
            raise BoardError(f"compute unit {index} ({name}) has no AXI DMA named {dma} in the overlay; "
                             "rebuild it with `lowbit build`, or pass ip_name=/dma_name= to drive one unit")
        units[index] = (name, dma)
    missing = sorted(set(range(len(units))) - set(units))
    if missing:
        raise BoardError(f"the overlay's compute units are {', '.join(n for n, _ in units.values())}: unit(s) "
                         f"{', '.join(map(str, missing))} missing (units are numbered 0..N-1); rebuild it with "
                         "`lowbit build`")
    return [units[i] for i in range(len(units))]
