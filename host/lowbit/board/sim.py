"""A simulated PYNQ board: a ``pynq.Device`` whose AXI DMA and GEMM IP are register-level models.

The unmodified ``pynq.lib.dma.DMA`` driver and ``pynq.Overlay(hwh, download=False)`` run against
it. Memory is non-coherent like a Zynq's: each buffer has a host (cache) view and a DDR view, and
only ``flush`` / ``invalidate`` copy between them, so a missing cache operation shows up as stale
data exactly as on a board. The IP's stream side is the emulation kernel (HLS C++ through cffi).

Register semantics follow Xilinx PG021 (AXI DMA, direct register mode) and the Vitis HLS
``ap_ctrl_hs`` block protocol; see docs/board.md. An overlay may hold several compute units: each
GEMM IP and AXI DMA is its own register model, and each DMA feeds the IP its streams reach in the
.hwh (``stream_paths``), so a unit's wiring comes from the overlay itself, not from cell names.
"""
from __future__ import annotations

import itertools
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pynq
from pynq.buffer import PynqBuffer

from lowbit.kernel import wire
from lowbit.kernel.boards import ID_GPIO_VLNV

from lowbit.board.axi_dma import (CR_RESET, CR_RESET_VALUE, CR_RS, S2MM_OFFSET, SR_DEC_ERR, SR_DLY_IRQ, SR_ERR_IRQ,
                      SR_ERRORS, SR_HALTED, SR_IDLE, SR_INT_ERR, SR_IOC_IRQ, SR_RESET_VALUE)

# Offsets within one channel (MM2S at 0x00, S2MM at 0x30), PG021.
DMACR, DMASR, ADDR, ADDR_MSB, LENGTH = 0x00, 0x04, 0x18, 0x1C, 0x28
AXI_DMA_VLNV = "xilinx.com:ip:axi_dma:7.1"
# Stream ports of the AXI DMA (PG021) and of the HLS top lowbit_gemm_axis (tcl/bd_zynq.tcl)
DMA_MM2S, DMA_S2MM, IP_IN, IP_OUT = "M_AXIS_MM2S", "S_AXIS_S2MM", "in_stream", "out_stream"


@dataclass
class Faults:
    """One-shot faults for tests: each applies to the next transfer/run, then clears itself.

    ``cell``: the GEMM IP cell (e.g. "lowbit_gemm_2") whose unit the stream faults hit (its DMA and
    IP); None: whichever unit runs next."""

    mm2s_error: int = 0  # DMASR error bit(s) raised by the next MM2S transfer
    s2mm_error: int = 0
    drop_tlast: bool = False  # the kernel never asserts TLAST on its output
    truncate_input_words: Optional[int] = None  # the stream the IP sees ends after this many words
    id_version: Optional[int] = None  # sticky: what the ID register (and the IP's ID_VERSION after a run) reads
    fail_allocations: int = 0  # the next N allocate() calls fail like an exhausted CMA pool
    cell: Optional[str] = None

    def hits(self, unit_cell: str) -> bool:
        return self.cell is None or self.cell == unit_cell


@dataclass
class _Channel:
    """State of one DMA channel (PG021 direct register mode)."""

    cr: int = CR_RESET_VALUE
    sr: int = SR_RESET_VALUE
    addr: int = 0
    length: int = 0
    busy: bool = False
    written: int = 0  # S2MM: bytes written into memory so far

    def read(self, off: int) -> int:
        return {DMACR: self.cr, DMASR: self.sr, ADDR: self.addr & 0xFFFFFFFF,
                ADDR_MSB: self.addr >> 32, LENGTH: self.length}.get(off, 0)

    def halt_with(self, error_bits: int) -> None:
        self.sr = (self.sr | error_bits | SR_HALTED | SR_ERR_IRQ) & ~SR_IDLE
        self.cr &= ~CR_RS
        self.busy = False

    def complete(self, nbytes: int) -> None:
        self.length = nbytes
        self.busy = False
        self.sr = (self.sr | SR_IDLE | SR_IOC_IRQ) & ~SR_HALTED


class AxiDmaModel:
    """MM2S / S2MM channels of an AXI DMA without scatter-gather."""

    def __init__(self, board: "SimulatedBoard", cell: str):
        self.board, self.cell = board, cell
        self.unit_cell = ""  # the GEMM IP its streams reach (set when the overlay's wiring is read)
        self.mm2s, self.s2mm = _Channel(), _Channel()

    def reset(self) -> None:
        self.mm2s, self.s2mm = _Channel(), _Channel()

    def _channel(self, offset: int):
        return (self.s2mm, offset - S2MM_OFFSET) if offset >= S2MM_OFFSET else (self.mm2s, offset)

    def read(self, offset: int) -> int:
        ch, off = self._channel(offset)
        return ch.read(off)

    def write(self, offset: int, value: int) -> None:
        ch, off = self._channel(offset)
        if off == DMACR:
            self._write_cr(ch, value)
        elif off == DMASR:
            ch.sr &= ~(value & (SR_IOC_IRQ | SR_ERR_IRQ | SR_DLY_IRQ))  # write-1-to-clear interrupts
        elif off == ADDR:
            ch.addr = (ch.addr & ~0xFFFFFFFF) | value
        elif off == ADDR_MSB:
            ch.addr = (ch.addr & 0xFFFFFFFF) | (value << 32)
        elif off == LENGTH:
            self._start(ch, value)

    def _write_cr(self, ch: _Channel, value: int) -> None:
        if value & CR_RESET:  # soft reset resets the whole engine, both channels
            self.reset()
            return
        ch.cr = value
        if value & CR_RS and not ch.sr & SR_ERRORS:
            ch.sr &= ~SR_HALTED
        elif not value & CR_RS and not ch.busy:
            ch.sr |= SR_HALTED

    def _start(self, ch: _Channel, nbytes: int) -> None:
        if ch.sr & SR_HALTED:
            return  # PG021: LENGTH writes while halted are ignored
        ch.length, ch.busy, ch.written = nbytes, True, 0
        ch.sr &= ~SR_IDLE
        faults = self.board.faults
        injected = (faults.mm2s_error if ch is self.mm2s else faults.s2mm_error) if faults.hits(self.unit_cell) else 0
        if nbytes == 0:
            ch.halt_with(SR_INT_ERR)
        elif injected:
            ch.halt_with(injected)
            if ch is self.mm2s:
                faults.mm2s_error = 0
            else:
                faults.s2mm_error = 0
        elif self.board.memory_at(ch.addr, nbytes) is None:
            ch.halt_with(SR_DEC_ERR)


class GemmIpModel:
    """The lowbit GEMM IP's s_axilite side (ap_ctrl_hs) around the emulation kernel."""

    def __init__(self, board: "SimulatedBoard", cell: str):
        self.board, self.cell = board, cell
        self.runs = 0  # packets this IP took (kept over resets: what a test counts per unit)
        self.reset()

    def reset(self) -> None:
        self.ctrl = wire.CTRL_IDLE
        # HLS s_axilite scalar outputs (STATUS, ID_VERSION, CYCLES) hold what the last completed run
        # wrote: 0 on a fresh or reset IP.
        self.regs = {wire.Reg.GIE: 0, wire.Reg.IER: 0, wire.Reg.ISR: 0, wire.Reg.STATUS: 0, wire.Reg.CYCLES: 0,
                     wire.Reg.ID_VERSION: 0}
        self.output: Optional[np.ndarray] = None  # output bytes not yet taken by S2MM
        self.output_has_tlast = False
        self.computing = False  # a packet is being processed (threaded boards)

    @property
    def running(self) -> bool:
        return bool(self.ctrl & wire.CTRL_START)

    def read(self, offset: int) -> int:
        if offset == wire.Reg.CTRL:
            stuck = self.output is not None or self.computing  # busy, or pushing output S2MM does not take
            value = self.ctrl & ~wire.CTRL_IDLE if stuck else self.ctrl
            self.ctrl &= ~wire.CTRL_DONE  # ap_done is clear-on-read
            return value
        return self.regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        if offset == wire.Reg.CTRL:
            if value & wire.CTRL_START:
                self.ctrl = (self.ctrl | wire.CTRL_START) & ~wire.CTRL_IDLE
        elif offset == wire.Reg.ISR:
            self.regs[wire.Reg.ISR] &= ~value  # toggle-on-write in HLS; clear is what drivers do
        elif offset in (wire.Reg.GIE, wire.Reg.IER):
            self.regs[offset] = value

    def accept(self, result) -> int:
        """Take the kernel's result for the packet it consumed; returns the words it consumed."""
        self.computing = False
        out = np.asarray(result.out_words, dtype=np.uint64)
        tlast = result.tlast_index if result.tlast_index is not None and result.tlast_index >= 0 else None
        if self.board.faults.drop_tlast and self.board.faults.hits(self.cell):
            self.board.faults.drop_tlast, tlast = False, None
        self.output = (out if tlast is None else out[: tlast + 1]).astype("<u8").view(np.uint8)
        self.output_has_tlast = tlast is not None
        self.regs[wire.Reg.STATUS] = int(result.status)
        self.regs[wire.Reg.CYCLES] = int(getattr(result, "beats", result.consumed)) & 0xFFFFFFFF
        self.regs[wire.Reg.ID_VERSION] = self.board.id_register_value()
        self.ctrl = (self.ctrl & ~wire.CTRL_START) | wire.CTRL_DONE | wire.CTRL_IDLE | wire.CTRL_READY
        return int(result.consumed)


class IdRegisterModel:
    """The overlay's ID register (tcl/bd_zynq.tcl): an AXI GPIO whose inputs are tied to a constant,
    so GPIO_DATA (offset 0) reads IP_ID | WIRE_VERSION from the moment the PL is configured."""

    def __init__(self, board: "SimulatedBoard", cell: str):
        self.board, self.cell = board, cell

    def reset(self) -> None:
        pass

    def read(self, offset: int) -> int:
        return self.board.id_register_value() if offset == 0 else 0

    def write(self, offset: int, value: int) -> None:
        pass  # all inputs: writes have no effect


@dataclass
class _Allocation:
    phys: int
    host: np.ndarray  # uint8, what the CPU sees (through its cache)
    ddr: np.ndarray  # uint8, what the DMA sees


def _default_kernel():
    from lowbit.backends.emulation import kernel_lib, run_axis_stream

    kernel_lib()  # built and loaded now: not inside the first timed call, once per unit's worker thread
    return run_axis_stream


class SimulatedBoard(pynq.Device):
    """A ``pynq.Device`` with REGISTER_RW access and numpy-backed, non-coherent DMA buffers.

    ``kernel(words) -> AxisResult`` defaults to ``lowbit.backends.emulation.run_axis_stream``.
    """

    DDR_BASE = 0x1000_0000
    PAGE = 4096

    def __init__(self, kernel: Optional[Callable] = None, ddr_bytes: int = 512 << 20, tag: str = "lowbit-sim",
                 threaded: bool = False):
        """``threaded``: the kernel runs in a worker thread (the cffi call releases the GIL), so the
        host's polling, packing and the kernel overlap as on a board; else it runs inside the
        register write that starts the stream (deterministic, for register-level tests)."""
        super().__init__(tag)
        self.threaded = threaded
        self._lock = threading.RLock()
        self.name = tag
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False}
        self.kernel = kernel or _default_kernel()
        self.ddr_bytes = ddr_bytes
        self.faults = Faults()
        self.bitfile_name = None
        self.timestamp = ""
        self._allocations: Dict[int, _Allocation] = {}
        self._bo_ids = itertools.count(1)
        self._next_phys = self.DDR_BASE
        self._peripherals: Dict[int, tuple] = {}  # base -> (range, model)
        self.paths: List[StreamPath] = []  # the compute units as the overlay wires them
        self.simulated = True
        self.counters = {"flush": 0, "invalidate": 0, "reg_read": 0, "reg_write": 0, "runs": 0}

    # -- metadata: the same parser PYNQ 3/4 uses on a board for a .bit with a .hwh beside it
    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False):
        from pynqmetadata.frontends import Metadata

        from lowbit.board.compat import runtime_metadata_parser

        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise RuntimeError(f"no {hwh.name} beside {bitfile_name}: the simulated board needs the overlay's .hwh")
        parser = runtime_metadata_parser()(Metadata(input=hwh))
        if not partial:
            parser.refresh_hierarchy_dict()
        return parser

    def set_bitfile_name(self, bitfile_name: str) -> None:
        super().set_bitfile_name(bitfile_name)
        self._peripherals = {}
        cells = {}
        for name, info in self.ip_dict.items():
            base = info.get("phys_addr")
            if base is None:
                continue
            kind = {AXI_DMA_VLNV: AxiDmaModel, wire.VLNV: GemmIpModel, ID_GPIO_VLNV: IdRegisterModel}.get(info["type"])
            if kind is None:
                continue
            cells[name] = model = kind(self, name)
            self._peripherals[base] = (info["addr_range"], model)
        self.paths = []
        for dma, ip in stream_paths(Path(bitfile_name).with_suffix(".hwh")):
            if isinstance(cells.get(dma), AxiDmaModel) and isinstance(cells.get(ip), GemmIpModel):
                self.paths.append(StreamPath(cells[dma], cells[ip]))
                cells[dma].unit_cell = ip

    def id_register_value(self) -> int:
        forced = self.faults.id_version
        return forced if forced is not None else (wire.IP_ID << 16) | wire.WIRE_VERSION

    def download(self, bitstream, parser=None):
        """Reprogramming the PL resets every IP, as on a board."""
        self.reset_pl()
        self.post_download(bitstream, parser or self.parser)

    def reset_pl(self) -> None:
        with self._lock:
            for path in self.paths:
                path.generation += 1
            for _, model in self._peripherals.values():
                model.reset()

    def models(self, kind: type) -> list:
        return [m for _, m in self._peripherals.values() if isinstance(m, kind)]

    # -- REGISTER_RW capability (what pynq.MMIO calls)
    def _peripheral(self, address: int):
        for base, (size, model) in self._peripherals.items():
            if base <= address < base + size:
                return model, address - base
        raise RuntimeError(f"simulated board: no IP at address 0x{address:x} (is the overlay loaded?)")

    def read_registers(self, address: int, length: int) -> bytes:
        with self._lock:
            self.counters["reg_read"] += 1
            model, off = self._peripheral(address)
            return int(model.read(off) & 0xFFFFFFFF).to_bytes(4, "little")[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        with self._lock:
            self.counters["reg_write"] += 1
            model, off = self._peripheral(address)
            for i in range(0, len(data), 4):
                model.write(off + i, int.from_bytes(data[i:i + 4], "little"))
            if isinstance(model, AxiDmaModel) and off == DMACR and data[0] & CR_RESET:
                for path in self.paths:
                    if path.dma is model:
                        path.generation += 1  # the DMA reset drops what a worker still holds for it
            self._advance()

    # -- memory
    def allocate(self, shape, dtype, **kwargs):
        if self.faults.fail_allocations:
            self.faults.fail_allocations -= 1
            raise RuntimeError("Failed to allocate buffer: CMA pool exhausted (simulated)")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        in_use = sum(a.host.nbytes for a in self._allocations.values())
        if in_use + nbytes > self.ddr_bytes:
            raise RuntimeError(f"Failed to allocate buffer of {nbytes} bytes: {in_use} of {self.ddr_bytes} in use")
        bo = next(self._bo_ids)
        size = max(nbytes, 1)
        alloc = _Allocation(self._next_phys, np.zeros(size, np.uint8), np.zeros(size, np.uint8))
        self._next_phys += -(-size // self.PAGE) * self.PAGE
        self._allocations[bo] = alloc
        buf = PynqBuffer(shape, dtype, buffer=alloc.host, device=self, device_address=alloc.phys,
                         bo=bo, coherent=False)
        buf.memory, buf.pointer, buf.return_to = self, bo, self  # freebuffer() hands the bo back
        buf.freed = True  # no munmap: numpy owns the memory
        return buf

    def return_pointer(self, bo: int) -> None:
        self._allocations.pop(bo, None)

    def flush(self, bo, offset, ptr, size):
        self.counters["flush"] += 1
        a = self._allocations[bo]
        a.ddr[offset:offset + size] = a.host[offset:offset + size]

    def invalidate(self, bo, offset, ptr, size):
        self.counters["invalidate"] += 1
        a = self._allocations[bo]
        a.host[offset:offset + size] = a.ddr[offset:offset + size]

    def memory_at(self, phys: int, nbytes: int) -> Optional[np.ndarray]:
        """The DDR bytes [phys, phys + nbytes) when they lie inside one allocation, else None."""
        for a in self._allocations.values():
            if a.phys <= phys and phys + nbytes <= a.phys + a.ddr.nbytes:
                return a.ddr[phys - a.phys: phys - a.phys + nbytes]
        return None

    # -- the streams between each unit's DMA and its IP
    def _advance(self) -> None:
        for path in self.paths:
            self._feed(path)
            self._drain(path.dma, path.ip)

    def _feed(self, path: "StreamPath") -> None:
        dma, ip = path.dma, path.ip
        ch = dma.mm2s
        if not (ch.busy and ip.running and ip.output is None and not ip.computing):
            return
        words = self.memory_at(ch.addr, ch.length).view("<u8").astype(np.uint64)
        faults = self.faults
        if faults.truncate_input_words is not None and faults.hits(ip.cell):
            words, faults.truncate_input_words = words[: faults.truncate_input_words], None
        self.counters["runs"] += 1
        ip.runs += 1
        ip.computing = True
        if not self.threaded:
            self._finish_run(path, words, self.kernel(words), path.generation)
            return
        worker = threading.Thread(target=self._run_worker, args=(path, words, path.generation), daemon=True)
        worker.start()

    def _run_worker(self, path, words, generation) -> None:
        result = self.kernel(words)  # outside the lock: the host keeps polling and packing meanwhile
        with self._lock:
            self._finish_run(path, words, result, generation)

    def _finish_run(self, path, words, result, generation) -> None:
        if generation != path.generation:
            return  # reset while computing: the result goes nowhere, as with a reset IP
        dma, ip = path.dma, path.ip
        consumed = ip.accept(result)
        if consumed >= len(words):
            dma.mm2s.complete(dma.mm2s.length)
        # else the kernel stopped reading: MM2S stays busy with its words, as a stalled stream does
        self._drain(dma, ip)

    def _drain(self, dma: AxiDmaModel, ip: GemmIpModel) -> None:
        ch = dma.s2mm
        if not ch.busy or ip.output is None:
            return
        out = ip.output
        room = ch.length - ch.written
        dest = self.memory_at(ch.addr, ch.length)
        take = min(room, len(out))
        dest[ch.written: ch.written + take] = out[:take]
        ch.written += take
        ip.output = out[take:] if take < len(out) else None
        if take < len(out) and ip.output_has_tlast:
            ch.halt_with(SR_INT_ERR)  # packet longer than the buffer: PG021's S2MM internal error
            ip.output = None
        elif ip.output is None and ip.output_has_tlast:
            ch.complete(ch.written)  # LENGTH reads back the bytes actually received


@dataclass
class StreamPath:
    """One compute unit as the overlay wires it: the DMA whose MM2S stream feeds the IP and whose
    S2MM stream takes the IP's output."""

    dma: AxiDmaModel
    ip: GemmIpModel
    generation: int = 0  # bumped by a reset of the PL or of this DMA: a late worker result is dropped


def stream_paths(hwh: Path) -> List[tuple]:
    """(DMA cell, GEMM IP cell) of every unit in a .hwh: the DMA's MM2S and the IP's input are one
    stream net, and so are the IP's output and the DMA's S2MM (BUSINTERFACE BUSNAME names the net)."""
    if not hwh.is_file():
        return []
    dmas, ips = {}, {}
    for module in ET.parse(hwh).getroot().iter("MODULE"):
        cell = module.get("FULLNAME", "").lstrip("/")
        nets = {b.get("NAME"): b.get("BUSNAME") for b in module.iter("BUSINTERFACE")}
        vlnv = module.get("VLNV", "")
        if vlnv == AXI_DMA_VLNV:
            dmas[(nets.get(DMA_MM2S), nets.get(DMA_S2MM))] = cell
        elif vlnv == wire.VLNV:
            ips[cell] = (nets.get(IP_IN), nets.get(IP_OUT))
    paths = []
    for ip, nets in sorted(ips.items()):
        if nets not in dmas:
            raise RuntimeError(f"simulated board: {hwh.name}: the streams of {ip} ({IP_IN} on {nets[0]}, {IP_OUT} on "
                               f"{nets[1]}) do not both reach one AXI DMA; a unit is one DMA feeding one IP")
        paths.append((dmas[nets], ip))
    return paths
