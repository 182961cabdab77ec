"""The board-configuration record: one frozen record per board, the single source of every kernel
fact that differs between boards (array shape per arithmetic family, what a bitstream carries,
buffer sizes and their storage, clock, port widths, the part's resources).

``lowbit boards --emit-hpp`` writes ``hls/include/lowbit/board_config.hpp`` from
this file (a test holds the committed header to it). ``lowbit build``, the manifest, the emulation
backend, the host tiler and the cycle model (``lowbit.kernel.model``) read only this record.

A bitstream carries ONE arithmetic family (``mls``, ``pot`` or ``mogami``), chosen at build time;
the emulation build (``EMULATION``) carries all of them at the protocol's full limits.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Tuple

from lowbit.kernel import wire
from lowbit.kernel.wire import Arith
from lowbit.numerics.formats import MLS_MAX_EX, MLS_MAX_MX

FAMILIES = ("mls", "pot", "mogami")
FAMILY_ARITHS = {"mls": (Arith.MLS,), "pot": (Arith.POT,), "mogami": (Arith.MOGAMI_FP32, Arith.MOGAMI_BF16)}
# The Zynq overlay's ID register (tcl/bd_zynq.tcl): an AXI GPIO whose inputs are tied to IP_ID |
# WIRE_VERSION, read at GPIO_DATA (offset 0) on a fresh overlay, before any kernel run.
ID_CELL = "lowbit_id"
ID_GPIO_VLNV = "xilinx.com:ip:axi_gpio:2.0"
# The MLS datapath's protocol-wide bounds (the formats lowbit accepts): the emulation carries all of them.
MLS_PROTOCOL_MAX = (MLS_MAX_EX, MLS_MAX_MX)


@dataclass(frozen=True)
class Part:
    """An FPGA part and what it holds (data sheets: DS190, DS891, DS962)."""

    name: str
    bram36: int
    uram: int
    dsp: int
    lut: int


@dataclass(frozen=True)
class Array:
    """The output-stationary PE array of one arithmetic family: rows x cols PEs, each with a
    simd-wide K-SIMD; ``interleave`` outputs per PE in flight (Mogami: covers the fp32 add latency);
    ``finishers`` block finishers shared round-robin by the PEs (MLS, PoT; Mogami PEs add in place)."""

    rows: int
    cols: int
    simd: int
    interleave: int = 1
    k_tile: int = wire.MAX_K  # the longest K-tile its B tiles hold (Mogami: cols x interleave rows)
    a_elems: int = 0  # 0: the board's A buffer; else this family's (wider codes, same memory)
    finishers: int = 0

    @property
    def macs_per_cycle(self) -> int:
        return self.rows * self.cols * self.simd


@dataclass(frozen=True)
class KernelLimits:
    """On-chip buffers of one kernel build: group scales of A and of B (entries each) and A itself
    (elements, in ``a_banks`` row banks: row m in bank m % a_banks, so a call of M rows takes
    ceil(M / a_banks) whole passes). The header check rejects a call that does not fit (BAD_DIMS);
    the host tiles to fit."""

    scale_buf: int = 1 << 16
    a_elems: int = wire.MAX_M * wire.MAX_K
    k_max: int = wire.MAX_K  # the longest K of one call (what the B tiles hold)
    a_banks: int = 1  # the PE array's rows on a board build

    def a_rows(self, m: int) -> int:
        """Rows of A storage a call of ``m`` rows occupies (whole banks)."""
        return -(-m // self.a_banks) * self.a_banks

    def a_fits(self, m: int, k: int) -> bool:
        return self.a_rows(m) * k <= self.a_elems

    def max_rows(self, k: int) -> int:
        """Most rows of A of length ``k`` the A buffer holds (whole banks where one bank's rows fit)."""
        return max(self.a_elems // k // self.a_banks * self.a_banks, 1)

    def to_manifest(self) -> dict:
        return {"scale_buf": self.scale_buf, "a_elems": self.a_elems, "k_max": self.k_max, "a_banks": self.a_banks}

    @classmethod
    def from_manifest(cls, manifest: dict) -> "KernelLimits":
        """The limits ``lowbit build`` wrote (``manifest["kernel_limits"]``, see ``to_manifest``); a
        manifest without them (a hand-made fixture) means the protocol's full limits."""
        entry = manifest.get("kernel_limits")
        if entry is None:
            return cls()
        try:
            return cls(scale_buf=int(entry["scale_buf"]), a_elems=int(entry["a_elems"]),
                       k_max=int(entry.get("k_max", wire.MAX_K)), a_banks=int(entry.get("a_banks", 1)))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"manifest kernel_limits {entry!r} needs integer scale_buf and a_elems; "
                             "rebuild the overlay with `lowbit build`") from None

    @property
    def same_as_emulation(self) -> bool:
        return self == KernelLimits()


FULL_LIMITS = KernelLimits()


@dataclass(frozen=True)
class BoardConfig:
    name: str
    kind: str  # "zynq" (AXI-Stream top behind an AXI DMA) | "alveo" (m_axi top, v++)
    part: Part
    clock_mhz: float
    hp_bits: int  # PS high-performance port (Zynq) / m_axi port (Alveo) data width
    stream_bits: int  # the engine's input/output word per cycle per unit (the input router's 64 bits)
    arrays: Tuple[Tuple[str, Array], ...]  # family -> array; the families a bitstream can be built for
    limits: KernelLimits
    storage: Tuple[Tuple[str, str], ...]  # buffer ("a_tile", "b_tiles") -> "bram" | "uram"; scales, FIFOs: bram
    mls_max: Tuple[int, int]  # (Ex, Mx) bounds of the MLS formats an MLS bitstream carries
    compute_units: int = 1
    # one per compute unit: Alveo v++ sp= memory banks; Zynq PS slave ports (one AXI DMA + IP on each)
    memory_banks: Tuple[str, ...] = ()

    @property
    def clock_ns(self) -> float:
        return round(1000.0 / self.clock_mhz, 3)

    def storage_of(self, buffer: str) -> str:
        return dict(self.storage).get(buffer, "bram")

    def array(self, family: str) -> Array:
        found = dict(self.arrays).get(family)
        if found is None:
            raise ValueError(f"board {self.name} has no {family} build; its bitstreams carry one of "
                             f"{', '.join(f for f, _ in self.arrays)}")
        return found

    @property
    def families(self) -> Tuple[str, ...]:
        return tuple(f for f, _ in self.arrays)

    def peak_macs_per_cycle(self, family: str) -> int:
        return self.array(family).macs_per_cycle * self.compute_units


ON_CHIP_BRAM = (("a_tile", "bram"), ("b_tiles", "bram"))
A_BRAM_B_URAM = (("a_tile", "bram"), ("b_tiles", "uram"))
ON_CHIP_URAM = (("a_tile", "uram"), ("b_tiles", "uram"))
# Arrays sized with the measured PE and finisher costs (hw_cost.json, lowbit.kernel.model.datapath):
# MLS S = 3 (3x3 blocks of 9 take 3 steps, no masked lane); PoT one block = K, S = 4. One compute
# unit takes one 64-bit word a cycle, so the larger parts get more units, not larger arrays.
# A tiles sized to whole URAM banks (4K deep): MLS 16 banks x 3 codes x 4K, PoT 16 x 4 x 4K.
ALVEO_ARRAYS = (("mls", Array(16, 6, 3, finishers=32, a_elems=48 << 12)),
                ("pot", Array(16, 4, 4, finishers=4, a_elems=1 << 18)),
                ("mogami", Array(16, 4, 1, interleave=8, k_tile=2048, a_elems=1 << 16)))

PYNQ_Z2 = BoardConfig(
    name="pynq-z2", kind="zynq", part=Part("xc7z020clg400-1", bram36=140, uram=0, dsp=220, lut=53_200),
    clock_mhz=100.0, hp_bits=64, stream_bits=64,
    # MLS: paired PEs on 144 DSPs, 16 finishers (the 3x3 GEMMs finish-bound at half rate);
    # Mogami: 64 PEs of 2 DSPs (fp32_add_mac) in 32 x 2, the quarter target; 32 rows sustain more of
    # ResNet-20's GEMMs than 16 x 4 or 8 x 8 (model)
    arrays=(("mls", Array(16, 6, 3, finishers=16)), ("pot", Array(16, 4, 4, finishers=4)),
            ("mogami", Array(32, 2, 1, interleave=8, k_tile=512))),
    limits=KernelLimits(scale_buf=1 << 13, a_elems=1 << 14), storage=ON_CHIP_BRAM, mls_max=(2, 4))
ZCU104 = BoardConfig(
    name="zcu104", kind="zynq", part=Part("xczu7ev-ffvc1156-2-e", bram36=312, uram=96, dsp=1728, lut=230_400),
    clock_mhz=200.0, hp_bits=128, stream_bits=64,
    # MLS A tile: 16 banks x 3 codes x 1K (one BRAM36 each); Mogami B tiles 4K deep (one URAM each),
    # 64 PEs per unit in 32 x 2 (256 over the 4 units; 32 rows sustain more of ResNet-20 than 8 x 8)
    arrays=(("mls", Array(16, 6, 3, finishers=16, a_elems=48 << 10)), ("pot", Array(16, 4, 4, finishers=4)),
            ("mogami", Array(32, 2, 1, interleave=8, k_tile=512, a_elems=1 << 15))),
    limits=KernelLimits(scale_buf=1 << 15, a_elems=1 << 16), storage=A_BRAM_B_URAM, mls_max=(2, 4),
    compute_units=4, memory_banks=("S_AXI_HP0_FPD", "S_AXI_HP1_FPD", "S_AXI_HP2_FPD", "S_AXI_HP3_FPD"))
U50 = BoardConfig(
    name="u50", kind="alveo", part=Part("xcu50-fsvh2104-2-e", bram36=1344, uram=640, dsp=5952, lut=872_000),
    clock_mhz=300.0, hp_bits=512, stream_bits=64, arrays=ALVEO_ARRAYS,
    limits=FULL_LIMITS, storage=ON_CHIP_URAM, mls_max=(2, 4),
    compute_units=8, memory_banks=tuple(f"HBM[{i}]" for i in range(8)))
U250 = BoardConfig(
    name="u250", kind="alveo", part=Part("xcu250-figd2104-2L-e", bram36=2688, uram=1280, dsp=12_288, lut=1_728_000),
    clock_mhz=300.0, hp_bits=512, stream_bits=64, arrays=ALVEO_ARRAYS,
    limits=FULL_LIMITS, storage=ON_CHIP_URAM, mls_max=(2, 4),
    # two units per DDR bank and SLR (each takes one 64-bit word a cycle, 2.4 GB/s at 300 MHz, of a
    # DDR4-2400 channel's 19.2 GB/s). 12 or 16 units fit the part too, but ResNet-20's small GEMMs
    # (weight gradients of N = 144-576) cannot fill them: Mogami would sustain 40% / 34% of its peak.
    compute_units=8, memory_banks=tuple(f"DDR[{i // 2}]" for i in range(8)))

BOARDS: Dict[str, BoardConfig] = {b.name: b for b in (PYNQ_Z2, ZCU104, U50, U250)}


@dataclass(frozen=True)
class Build:
    """What one kernel build carries: a board's limits and families (one family per bitstream; the
    emulation carries all of them)."""

    name: str  # C++ identifier of the configuration
    limits: KernelLimits
    families: Tuple[str, ...]
    mls_max: Tuple[int, int]

    @property
    def arith_mask(self) -> int:
        return sum(1 << int(a) for f in self.families for a in FAMILY_ARITHS[f])

    def carries(self, arith: Arith, ex: int = 0, mx: int = 0) -> bool:
        if not self.arith_mask >> int(arith) & 1:
            return False
        return arith != Arith.MLS or (ex <= self.mls_max[0] and mx <= self.mls_max[1])

    @property
    def define(self) -> str:
        return f"-DLOWBIT_BOARD={self.name}"


EMULATION = Build("emulation", FULL_LIMITS, FAMILIES, MLS_PROTOCOL_MAX)
# The emulation's PE array, chosen for the host CPU (any shape gives the same bits: integer block sums
# are exact and every output keeps its fp32 order): a pass covers a whole call's rows (MAX_M), so the
# row loop is one long vector loop per B value, as fast as the first engine's; one lane per PE (no block
# masks), no interleave (no fp32 adder latency to hide); one finisher per 9 MACs/cycle.
# benchmarks/emulation.py measures it.
EMULATION_ARRAY = Array(wire.MAX_M, 2, 1, finishers=29)


def build_of(board: str, family: str) -> Build:
    """The kernel build ``lowbit build --board BOARD --arith FAMILY`` makes."""
    cfg = board_config(board)
    arr = cfg.array(family)
    limits = replace(cfg.limits, k_max=min(cfg.limits.k_max, arr.k_tile), a_elems=arr.a_elems or cfg.limits.a_elems,
                     a_banks=arr.rows)
    return Build(f"{cfg.name.replace('-', '_')}_{family}", limits, (family,), cfg.mls_max)


def all_builds() -> Tuple[Build, ...]:
    return (EMULATION,) + tuple(build_of(b, f) for b, cfg in BOARDS.items() for f in cfg.families)


def board_config(name: str) -> BoardConfig:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known: {', '.join(BOARDS)}") from None


def limits_of(name: str) -> KernelLimits:
    """The buffers of a board's builds ('full' or 'emulation': the protocol's whole limits)."""
    return FULL_LIMITS if name in ("full", "emulation") else board_config(name).limits


# ------------------------------------------------------------------------------------------------
# The generated C++ header
# ------------------------------------------------------------------------------------------------
HPP_PATH = Path("hls/include/lowbit/board_config.hpp")


def _struct(build: Build, cfg: BoardConfig = None) -> list:
    lines = [f"struct {build.name} {{",
             f"    static const uint32_t SCALE_BUF = {build.limits.scale_buf}u;",
             f"    static const uint32_t A_ELEMS = {build.limits.a_elems}u;",
             f"    static const uint32_t K_MAX = {build.limits.k_max}u;",
             f"    static const uint32_t ARITH_MASK = 0x{build.arith_mask:X}u;",
             f"    static const unsigned MLS_MAX_EX = {build.mls_max[0]}, MLS_MAX_MX = {build.mls_max[1]};"]
    arr = EMULATION_ARRAY if cfg is None else cfg.array(build.families[0])
    lines += [f"    static const unsigned ROWS = {arr.rows}, COLS = {arr.cols}, SIMD = {arr.simd}, "
              f"INTERLEAVE = {arr.interleave};",
              f"    static const unsigned FINISHERS = {arr.finishers};  // block finishers; 0: the PEs add in place"]
    if cfg is not None:
        lines += [f"    static const unsigned STREAM_BITS = {cfg.stream_bits}, HP_BITS = {cfg.hp_bits};",
                  f"    static const unsigned COMPUTE_UNITS = {cfg.compute_units};",
                  f"    static const bool A_URAM = {'true' if cfg.storage_of('a_tile') == 'uram' else 'false'}, "
                  f"B_URAM = {'true' if cfg.storage_of('b_tiles') == 'uram' else 'false'};"]
    lines += ["};", ""]
    return lines


def emit_hpp() -> str:
    lines = [
        "// GENERATED by `lowbit boards --emit-hpp` from host/lowbit/kernel/boards.py. Do not edit.",
        "// One struct per kernel build; -DLOWBIT_BOARD=<name> selects it (default: emulation, every family).",
        "#pragma once",
        "#include <stdint.h>",
        "",
        "namespace lowbit {",
        "namespace boards {",
    ]
    lines += _struct(EMULATION)
    for name, cfg in BOARDS.items():
        for family in cfg.families:
            lines += _struct(build_of(name, family), cfg)
    lines += ["}  // namespace boards", "", "#ifndef LOWBIT_BOARD", "#define LOWBIT_BOARD emulation", "#endif",
              "typedef boards::LOWBIT_BOARD BoardConfig;", "", "}  // namespace lowbit", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from lowbit.kernel.headers import generated_header_main

    return generated_header_main("lowbit boards", __doc__.splitlines()[0], HPP_PATH, emit_hpp, argv)


if __name__ == "__main__":
    sys.exit(main())
