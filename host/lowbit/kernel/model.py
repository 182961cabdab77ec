"""Cycle, memory and resource MODEL of the v2 kernel design (docs/hardware.md), per board and
arithmetic family, from the board record (lowbit.kernel.boards) and the design's loop structure.
Every figure here is a model, not a Vitis report: csynth and implementation must confirm them.

Loop structure of one call (DATAFLOW: load -> compute -> finish -> drain, B tiles ping-pong):

* load: header, A scales and A codes into the A tile (A is single-buffered: compute waits for it),
  then B scales whole, then B codes tile by tile (a tile = the rows of one column group: C rows,
  Mogami C x INTERLEAVE rows). The input router takes ONE 64-bit word per cycle per compute unit on
  every board (Zynq: the AXI DMA stream; Alveo: the m_axi top reads 512-bit bursts and narrows
  them to 64-bit words);
* compute per column group: ceil(M / R) row passes; a pass visits each block separately, a block
  of length L taking ceil(L / S) steps (lanes past a block's end are masked: a SIMD word never
  holds two blocks), one flattened pipeline over k with a block-boundary flag, II = 1. PoT and
  Mogami have one block = K; Mogami S = 1 and INTERLEAVE outputs per PE, so a pass is
  K x INTERLEAVE cycles;
* finish: every block end hands R x C integer sums to F finishers (the record's
  ``Array.finishers``) shared round-robin; the array stalls when finishing is the bottleneck;
  Mogami PEs add in place;
* drain: C x M fp32 per column group, two per 64-bit word, one word per cycle.

With ping-pong tiles the column groups overlap: steady state max(load, compute, finish, drain) per
group, plus one group's load and drain and the pipeline depths (PIPELINE_DEPTH) per call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

from lowbit.kernel import wire
from lowbit.numerics.formats import MLS, Mogami, PoT
from lowbit.kernel.wire import Header, Op
from lowbit.kernel.boards import BOARDS, BoardConfig, build_of

# Pipeline depths (cycles) of the v2 datapath, stated per stage (model; csynth reports the real ones).
PIPELINE_DEPTH = {
    "load": 4 + 8,  # header words + AXI read latency
    "decode": 1,  # code -> PE operand at the array edge
    "pe_mls": 4,  # significand product, shift, S-lane adder tree (log2 S = 2), accumulate
    "pe_pot": 3,  # INT4 add, one-hot shift, S-lane tree, accumulate
    "pe_mogami": 3 + 8,  # exponent add + saturation, fp32 add (L_fadd = 8 at 200-300 MHz)
    "finish": 1 + 4 + 8,  # group-scale shift-add, int -> fp32, fp32 block add
    "drain": 2 + 8,  # output FIFO + AXI write latency
}
FADD_DSP = 2  # placeholder only: one fp32 adder bound to DSPs (Vitis HLS fadd, fulldsp)
FINISHER_LUTS = 350  # placeholder only: shift-add scale, int -> fp32, control (model)
CONTROL_LUTS = 6000  # AXI/stream adapters, header check, FSMs, per compute unit (model)
MARGIN = 0.8  # a plan may use at most this share of each part resource (DMA, interconnect, P&R room)


def lane_bits(cfg: BoardConfig, family: str) -> int:
    """Bits per stored code: the widest lane the build's formats use (wire lanes)."""
    if family == "pot":
        return 8
    if family == "mogami":
        return 32
    ex, mx = cfg.mls_max
    code = 1 + ex + mx
    return 4 if code <= 4 else 8 if code <= 8 else 16


# ------------------------------------------------------------------------------------------------
# Memory plan
# ------------------------------------------------------------------------------------------------
BRAM36_SHAPES = ((72, 512), (36, 1024), (18, 2048), (9, 4096), (4, 8192), (2, 16384), (1, 32768))
URAM_SHAPE = (72, 4096)


def bram36_for(width: int, depth: int) -> int:
    """BRAM36 blocks of one memory bank: the best aspect ratio (1K x 36, 2K x 18, ... 512 x 72)."""
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in BRAM36_SHAPES)


def uram_for(width: int, depth: int) -> int:
    return math.ceil(width / URAM_SHAPE[0]) * math.ceil(depth / URAM_SHAPE[1])


@dataclass(frozen=True)
class Memory:
    name: str
    banks: int
    width: int
    depth: int
    storage: str  # "bram" | "uram"

    @property
    def bram36(self) -> int:
        return self.banks * bram36_for(self.width, self.depth) if self.storage == "bram" else 0

    @property
    def uram(self) -> int:
        return self.banks * uram_for(self.width, self.depth) if self.storage == "uram" else 0


def memory_plan(cfg: BoardConfig, family: str) -> List[Memory]:
    """The on-chip memories of one compute unit: A tile (R row banks of S codes a word), B tiles
    (ping-pong, one bank per PE column), the scale buffers (MLS), the stream FIFOs. Large tiles go to
    the record's storage; scales and FIFOs to BRAM."""
    arr, limits = cfg.array(family), build_of(cfg.name, family).limits
    lb, r, c, s = lane_bits(cfg, family), arr.rows, arr.cols, arr.simd
    word = s * lb
    mems = [
        Memory("A tile", r, word, math.ceil(limits.a_elems / (r * s)), cfg.storage_of("a_tile")),
        Memory("B tiles (ping-pong)", 2 * c, word, arr.interleave * math.ceil(limits.k_max / s),
               cfg.storage_of("b_tiles")),
        Memory("input FIFO", 1, cfg.stream_bits, 512, "bram"),
        Memory("output FIFO", 1, cfg.stream_bits, 512, "bram"),
    ]
    if family == "mls":
        mems += [Memory("A scales", r, 16, math.ceil(limits.scale_buf / r), "bram"),
                 Memory("B scales", c, 16, math.ceil(limits.scale_buf / c), "bram")]
    return mems


# ------------------------------------------------------------------------------------------------
# Compute resources
# ------------------------------------------------------------------------------------------------
# The measured PE variants of each family, and of its block finishers (hls/rtl, hw_cost.json): the
# model takes the combination with the fewest LUTs whose DSPs fit the part (MARGIN, per unit).
# "-pack": two PEs of a column (rows 2i, 2i+1) share one DSP multiplier, so the array needs even R.
PE_VARIANTS = {"pot": ("pot:4",), "mls": ("mls:2,4", "mls:2,4-pack", "mls:2,4-lut"),
               "mogami": ("mogami:fp32", "mogami:fp32-dsp")}
FINISH_VARIANTS = {"pot": ("pot:4/finish", "pot:4/finish-dsp"), "mls": ("mls:2,4/finish", "mls:2,4/finish-dsp"),
                   "mogami": ()}
# Used only while host/lowbit/kernel/hw_cost.json has no row for a family's datapath; labelled in the output.
PLACEHOLDER_LUTS_PER_MAC = {("pot", "xc7"): 45, ("pot", "xcup"): 40, ("mls", "xc7"): 70, ("mls", "xcup"): 60,
                            ("mogami", "xc7"): 60, ("mogami", "xcup"): 55}


def fpga_family(cfg: BoardConfig) -> str:
    return "xc7" if cfg.part.name.startswith("xc7") else "xcup"


def _hw_cost():
    from lowbit.kernel import hw_cost  # at call time: tests stand in a fake measurement

    return hw_cost


@dataclass(frozen=True)
class Datapath:
    """The PE and finisher variants one compute unit is costed with, per unit."""

    pe: str
    finisher: str  # "" when the family has none (Mogami) or none is measured
    luts_per_mac: float
    dsps_per_mac: float
    finisher_luts: float
    finisher_dsps: float
    source: str


def finishers(cfg: BoardConfig, family: str) -> int:
    """Block finishers per compute unit (the record's ``Array.finishers``); Mogami PEs add in place."""
    return 0 if family == "mogami" else cfg.array(family).finishers


def dsp_budget(cfg: BoardConfig) -> float:
    """DSPs one compute unit may use."""
    return MARGIN * cfg.part.dsp / cfg.compute_units


def _pe_cost(hw, variant: str, fam: str, arr):
    lanes = 2 * arr.simd if variant.endswith("-pack") else arr.simd
    if variant.endswith("-pack") and arr.rows % 2:
        raise KeyError(f"{variant} pairs rows; R = {arr.rows} is odd")
    for width in dict.fromkeys((lanes, 1)):  # the PE's width, else the one-lane row
        try:
            return hw.per_mac(variant, fam, lanes=width)
        except KeyError:
            continue
    raise KeyError(variant)


def datapath(cfg: BoardConfig, family: str) -> Datapath:
    """The measured (yosys, hw_cost.json) PE and finisher variants with the fewest LUTs per unit
    whose DSPs fit the unit's budget; the labelled placeholder while no variant is measured."""
    arr, hw, fam = cfg.array(family), _hw_cost(), fpga_family(cfg)
    nfin = finishers(cfg, family)
    fins = []
    for name in FINISH_VARIANTS[family]:
        try:
            r = hw.lookup(name, fam)
        except (KeyError, AttributeError):
            continue
        fins.append((name, float(r["luts"]), float(r["dsps"])))
    if not FINISH_VARIANTS[family]:
        fins = [("", 0.0, 0.0)]
    elif not fins:  # no finisher measured: the labelled placeholder finisher
        fins = [("", float(FINISHER_LUTS), float(FADD_DSP))]
    best = None
    for variant in PE_VARIANTS[family]:
        try:
            cost = _pe_cost(hw, variant, fam, arr)
        except KeyError:
            continue
        for fname, fl, fd in fins:
            dsp = cost.dsps * arr.macs_per_cycle + nfin * fd
            lut = cost.luts * arr.macs_per_cycle + nfin * fl
            if dsp <= dsp_budget(cfg) and (best is None or lut < best[0]):
                fin_src = f", {fname}" if fname else ", placeholder finisher" if fl else ""
                src = f"hw_cost.json (yosys, {cost.lanes}-lane {cost.datapath}{fin_src})"
                best = (lut, Datapath(variant, fname, cost.luts, cost.dsps, fl, fd, src))
    if best is not None:
        return best[1]
    lut = float(PLACEHOLDER_LUTS_PER_MAC[(family, fam)])
    return Datapath("", "", lut, 0.0, float(FINISHER_LUTS), float(FADD_DSP), "placeholder (no hw_cost.json row)")


def luts_per_mac(cfg: BoardConfig, family: str) -> Tuple[float, float, str]:
    """(LUTs per MAC, DSPs per MAC of the PE datapath, where the figures come from)."""
    d = datapath(cfg, family)
    return d.luts_per_mac, d.dsps_per_mac, d.source


def resources(cfg: BoardConfig, family: str) -> Dict[str, object]:
    arr, cus = cfg.array(family), cfg.compute_units
    d = datapath(cfg, family)
    fin = finishers(cfg, family)
    dsp = math.ceil(d.dsps_per_mac * arr.macs_per_cycle + fin * d.finisher_dsps)
    if family == "mogami" and d.source.startswith("placeholder"):
        dsp += arr.rows * arr.cols * FADD_DSP  # placeholder: one DSP fp32 adder per PE
    lut = arr.macs_per_cycle * d.luts_per_mac + fin * d.finisher_luts + CONTROL_LUTS
    mems = memory_plan(cfg, family)
    return {"dsp_used": dsp * cus, "lut_estimate": int(round(lut * cus)), "lut_source": d.source,
            "pe_variant": d.pe, "finisher_variant": d.finisher,
            "bram36_used": sum(m.bram36 for m in mems) * cus, "uram_used": sum(m.uram for m in mems) * cus}


def fits(cfg: BoardConfig, family: str, margin: float = MARGIN) -> Dict[str, bool]:
    res, part = resources(cfg, family), cfg.part
    return {"bram36": res["bram36_used"] <= margin * part.bram36, "uram": res["uram_used"] <= margin * part.uram,
            "dsp": res["dsp_used"] <= margin * part.dsp, "lut": res["lut_estimate"] <= margin * part.lut}


# ------------------------------------------------------------------------------------------------
# Cycles
# ------------------------------------------------------------------------------------------------
def pass_steps(arr, h: Header) -> int:
    """Cycles of one m-pass: each block of length L takes ceil(L / S) steps (lanes past a block's
    end masked); PoT and Mogami have one block = K; Mogami x INTERLEAVE."""
    s = arr.simd
    if h.has_scales and h.block:
        full, tail = divmod(h.k, h.block)
        steps = full * math.ceil(h.block / s) + math.ceil(tail / s)
    else:
        steps = math.ceil(h.k / s)
    return steps * arr.interleave


def call_cycles(cfg: BoardConfig, family: str, h: Header) -> int:
    """Cycles of one kernel call on one compute unit (model)."""
    arr = cfg.array(family)
    per_beat = cfg.stream_bits // wire.WORD_BITS
    sec = h.section_words()
    beats = lambda words: math.ceil(words / per_beat)  # noqa: E731
    a_load = beats(wire.HEADER_WORDS + sec.get("a_scales", 0) + sec["a_codes"]) + beats(sec.get("b_scales", 0))
    group_rows = arr.cols * arr.interleave
    groups = math.ceil(h.n / group_rows)
    rows_per_group = min(group_rows, h.n)
    load = beats(wire.words_for(rows_per_group * h.k, h.lane_bits))
    passes = math.ceil(h.m / arr.rows)
    compute = passes * pass_steps(arr, h)
    finish = 0
    if family != "mogami":
        outputs_per_pass = arr.rows * arr.cols * (h.nblocks if h.has_scales else 1)
        finish = math.ceil(passes * outputs_per_pass / finishers(cfg, family))
    drain = beats(math.ceil(rows_per_group * h.m / 2))
    pe = PIPELINE_DEPTH[f"pe_{family}"]
    depth = PIPELINE_DEPTH["load"] + PIPELINE_DEPTH["decode"] + pe + PIPELINE_DEPTH["drain"] + \
        (PIPELINE_DEPTH["finish"] if family != "mogami" else 0)
    return a_load + load + groups * max(load, compute, finish, drain) + drain + depth


def gemm_cycles(cfg: BoardConfig, family: str, fmt, m: int, n: int, k: int, block: int, op: Op) -> Tuple[int, int]:
    """(MACs, cycles) of one GEMM through the host tiler (lowbit.backends.emulation.plan_tiles) at
    the build's limits; N split into one share per compute unit, the calls spread over the units
    (longest first onto the least loaded)."""
    from lowbit.backends.emulation import plan_tiles, unit_share_n

    limits = build_of(cfg.name, family).limits
    cus = cfg.compute_units
    max_n = unit_share_n(n, cus)  # the board backends' rule
    total = [call_cycles(cfg, family, hdr) for _, _, calls in plan_tiles(fmt, m, n, k, block, op, limits, max_n)
             for _, hdr in calls]
    lanes = sorted(total, reverse=True)
    load = [0] * cus
    for t in lanes:  # longest first onto the least loaded unit
        load[load.index(min(load))] += t
    return m * n * k, max(load)


# ------------------------------------------------------------------------------------------------
# ResNet-20 (CIFAR-10) training step, batch 128: every conv's three GEMMs as the lowering builds them
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gemm:
    layer: str
    op: Op
    m: int
    n: int
    k: int
    block: int


def resnet20_gemms(batch: int = 128) -> List[Gemm]:
    """(lowbit.backends.lowering) forward: W [Co, Ci*9] x cols [N*Ho*Wo, Ci*9], block 9; backward
    data: W' [Ci, Co*9] x E cols [N*H*W, Co*9], block 9 (not for the first conv: the image needs no
    gradient); weight gradient: E [Co, N*Ho*Wo] x A cols [Ci*9, N*Ho*Wo], block Ho*Wo."""
    convs = [("conv1", 3, 16, 32, 32, 1)]
    size, planes = 32, 16
    for stage, out_planes in enumerate((16, 32, 64), start=1):
        for blk in range(3):
            for j in (1, 2):
                stride = 2 if (stage > 1 and blk == 0 and j == 1) else 1
                cin = planes if j == 1 else out_planes
                convs.append((f"layer{stage}.{blk}.conv{j}", cin, out_planes, size, size, stride))
                if stride == 2:
                    size //= 2
            planes = out_planes
    out = []
    h_in = 32
    for name, ci, co, _, _, stride in convs:
        ho = h_in // stride
        out.append(Gemm(name, Op.FORWARD, co, batch * ho * ho, ci * 9, 9))
        if name != "conv1":
            out.append(Gemm(name, Op.BACKWARD_DATA, ci, batch * h_in * h_in, co * 9, 9))
        out.append(Gemm(name, Op.WEIGHT_GRAD, co, ci * 9, batch * ho * ho, ho * ho))
        h_in = ho
    return out


def _fmt(family: str):
    return {"mls": MLS(2, 1), "pot": PoT(), "mogami": Mogami("fp32")}[family]


def summary(cfg: BoardConfig, family: str, gemms: Iterable[Gemm] = None) -> dict:
    """The benchmark's JSON object for (board, family)."""
    gemms = list(gemms if gemms is not None else resnet20_gemms())
    fmt = _fmt(family)
    macs = cycles = 0
    for g in gemms:
        block = g.block if family == "mls" else g.k
        mm, cc = gemm_cycles(cfg, family, fmt, g.m, g.n, g.k, block, g.op)
        macs, cycles = macs + mm, cycles + cc
    sustained = macs / cycles
    res, part = resources(cfg, family), cfg.part
    return {"board": cfg.name, "arith": family, "clock_mhz": cfg.clock_mhz,
            "peak_macs_per_cycle": cfg.peak_macs_per_cycle(family),
            "resnet20_macs_per_cycle": round(sustained, 1),
            "resnet20_gmacs": round(sustained * cfg.clock_mhz / 1000.0, 2),
            "bram36_used": res["bram36_used"], "bram36_available": part.bram36,
            "uram_used": res["uram_used"], "uram_available": part.uram,
            "dsp_used": res["dsp_used"], "dsp_available": part.dsp,
            "lut_estimate": res["lut_estimate"], "lut_available": part.lut,
            "lut_source": res["lut_source"], "resnet20_macs": macs, "resnet20_cycles": cycles, "model": True}


def all_summaries() -> List[dict]:
    gemms = resnet20_gemms()
    return [summary(cfg, fam, gemms) for cfg in BOARDS.values() for fam in cfg.families]
