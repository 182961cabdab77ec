"""The RTL datapaths in ``hls/rtl/``: what they are, and the two tools that check and measure them.

* :data:`DATAPATHS`: each MAC datapath, block finisher and baseline the project measures, as a
  Verilog top module with parameters (one row per measured unit).
* :func:`synthesise`: yosys ``synth_xilinx`` on one unit for one family; cell counts parsed from
  ``stat -json`` (LUT, FF, CARRY, DSP).
* :func:`build_equivalence` / :func:`run_equivalence`: the Verilated datapaths against the HLS MAC
  policies (``hls/include/lowbit/mac.hpp``, the ap_int path) in one C++ program, compared with ``==``.

Nothing is cached: every call builds in a fresh temporary folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from lowbit.kernel.headers import REPO_ROOT, ap_types_dir, hls_include_dir

RTL_DIR = REPO_ROOT / "hls" / "rtl"
SOURCES = ("tree.v", "fp32.v", "fp32_dsp.v", "mls.v", "pot.v", "mogami.v", "finish.v", "baseline.v")
FAMILIES = ("xc7", "xcup")

INSTALL = {
    "yosys": "apt-get install yosys (Debian 12 ships 0.23; `make install` does it when run as root)",
    "verilator": "apt-get install verilator (Debian 12 ships 5.006; `make install` does it when run as root)",
    "g++": "apt-get install g++",
}


class ToolMissing(RuntimeError):
    """A synthesis or simulation tool is not on PATH (the message says how to install it)."""


def require_sources() -> None:
    if not (RTL_DIR / SOURCES[0]).is_file():
        raise FileNotFoundError(f"RTL sources not found under {RTL_DIR}: the RTL checks and measurement run "
                                f"from a source checkout of lowbit")


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} not found on PATH: the RTL cost measurement needs it; install it with "
                          f"`{INSTALL[tool]}`")
    return path


def yosys_version() -> str:
    out = subprocess.run([require("yosys"), "-V"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Yosys (\S+)", out)
    return m.group(1) if m else out.strip()


# ------------------------------------------------------------------------------------------------
# What is measured
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Datapath:
    """One measured unit: ``name`` (format spec, or baseline), ``kind`` ("mac" | "part"),
    ``macs`` it performs per cycle (0 for a part), Verilog ``top`` and its ``params``."""

    name: str
    kind: str
    macs: int
    top: str
    params: Tuple[Tuple[str, int], ...] = ()
    nodsp: bool = False
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.name} lanes={self.macs}" if self.kind == "mac" else self.name


def _mls(ex: int, mx: int, lanes: int, nodsp: bool = False) -> Datapath:
    name = f"mls:{ex},{mx}" + ("-lut" if nodsp else "")
    return Datapath(name, "mac", lanes, "mls_code_pe", (("EX", ex), ("MX", mx), ("S", lanes)), nodsp,
                    f"MLS <{ex},{mx}> PE: {lanes} products into one exact accumulator")


def _mls_pack(ex: int, mx: int, lanes: int) -> Datapath:
    return Datapath(f"mls:{ex},{mx}-pack", "mac", 2 * lanes, "mls_pack_pe", (("EX", ex), ("MX", mx), ("S", lanes)),
                    note=f"MLS <{ex},{mx}> PE pair (two rows, one column): {lanes} multipliers for "
                         f"{2 * lanes} products, two exact accumulators")


def _mls_rt(lanes: int, nodsp: bool = False) -> Datapath:
    return Datapath("mls:4,7" + ("-lut" if nodsp else ""), "mac", lanes, "mls_pe",
                    (("S", lanes), ("SIGW", 8), ("SHW", 4), ("PW", 44)), nodsp,
                    f"MLS run-time envelope <4,7> PE on decoded elements: {lanes} products, 58-bit accumulator")


def _pot(lanes: int) -> Datapath:
    what = "own 43-bit accumulator" if lanes == 1 else "an adder tree into one 43-bit accumulator"
    return Datapath("pot:4", "mac", lanes, "pot_pe", (("S", lanes),), note=f"PoT MF-MAC, {lanes} lane(s), {what}")


DATAPATHS: Tuple[Datapath, ...] = (
    _pot(1), _pot(4), _pot(16),
    _mls(2, 1, 1), _mls(2, 1, 4), _mls(2, 1, 16),
    _mls(2, 4, 1), _mls(2, 4, 3), _mls(2, 4, 4), _mls(2, 4, 16),
    _mls(2, 4, 1, nodsp=True), _mls(2, 4, 3, nodsp=True), _mls(2, 4, 4, nodsp=True),
    _mls_pack(2, 4, 1), _mls_pack(2, 4, 3),
    _mls_rt(1), _mls_rt(4), _mls_rt(1, nodsp=True),
    Datapath("mogami:fp32", "mac", 1, "mogami_mac", (("BITS", 32),), note="Mogami product + fp32 add"),
    Datapath("mogami:bf16", "mac", 1, "mogami_mac", (("BITS", 16),), note="bf16 Mogami product + fp32 add"),
    Datapath("mogami:fp32-dsp", "mac", 1, "mogami_mac", (("BITS", 32), ("DSP_ADD", 1)),
             note="Mogami product + fp32 add with its shifts on a DSP"),
    Datapath("mogami:bf16-dsp", "mac", 1, "mogami_mac", (("BITS", 16), ("DSP_ADD", 1)),
             note="bf16 Mogami product + fp32 add with its shifts on a DSP"),
    Datapath("fp32", "mac", 1, "fp32_mac", note="IEEE fp32 multiply + add (DSPs where yosys maps them)"),
    Datapath("fp32-lut", "mac", 1, "fp32_mac", nodsp=True, note="IEEE fp32 multiply + add, LUTs only"),
    Datapath("fp32-ftz", "mac", 1, "fp32_mac", (("FTZ", 1),),
             note="fp32 multiply + add, subnormals flushed (as FPGA floating-point cores)"),
    Datapath("int8", "mac", 1, "int8_mac", note="INT8 x INT8 + 32-bit accumulator"),
    Datapath("int8-lut", "mac", 1, "int8_mac", nodsp=True, note="INT8 MAC, LUTs only"),
    Datapath("mls:4,7/decode", "part", 0, "mls_rt_decode", note="run-time MLS element decoder (array edge)"),
    Datapath("mls:4,7/scale", "part", 0, "mls_scale", (("W", 58),), note="group scaling by shift-and-add"),
    Datapath("mls:2,1/finish", "part", 0, "mls_finish", (("EX", 2), ("MX", 1)),
             note="block finisher: scale, int->fp32 RNE, exponent add, fp32 add"),
    Datapath("mls:2,1/finish-dsp", "part", 0, "mls_finish", (("EX", 2), ("MX", 1), ("DSP_ADD", 1)),
             note="block finisher, fp32 add with its shifts on a DSP"),
    Datapath("mls:2,4/finish", "part", 0, "mls_finish", (("EX", 2), ("MX", 4)), note="block finisher"),
    Datapath("mls:2,4/finish-dsp", "part", 0, "mls_finish", (("EX", 2), ("MX", 4), ("DSP_ADD", 1)),
             note="block finisher, fp32 add with its shifts on a DSP"),
    Datapath("mls:4,7/finish", "part", 0, "mls_rt_finish", note="block finisher, run-time format"),
    Datapath("pot:4/finish", "part", 0, "pot_finish", note="block finisher: int43->fp32 RNE, 2^-28, fp32 add"),
    Datapath("pot:4/finish-dsp", "part", 0, "pot_finish", (("DSP_ADD", 1),),
             note="block finisher, fp32 add with its shifts on a DSP"),
    Datapath("fp32/add", "part", 0, "fp32_add", note="IEEE fp32 adder alone, all LUTs"),
    Datapath("fp32/add-dsp", "part", 0, "fp32_add_dsp", note="IEEE fp32 adder, alignment/normalisation shift on one DSP"),
    Datapath("mogami:fp32/mul", "part", 0, "mogami_mul", (("BITS", 32),), note="Mogami product alone"),
)


def datapath(name: str, macs: Optional[int] = None) -> Datapath:
    found = [d for d in DATAPATHS if d.name == name and (macs is None or d.macs == macs)]
    if not found:
        known = sorted({d.key for d in DATAPATHS})
        raise KeyError(f"no datapath {name!r}" + (f" with {macs} lanes" if macs is not None else "")
                       + f"; known: {', '.join(known)}")
    return found[0]


# ------------------------------------------------------------------------------------------------
# Synthesis
# ------------------------------------------------------------------------------------------------
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")
CARRY_CELLS = ("CARRY4", "CARRY8")
DSP_CELLS = ("DSP48E1", "DSP48E2")


@dataclass(frozen=True)
class Cells:
    luts: int
    ffs: int
    carry: int
    dsps: int
    other: Tuple[Tuple[str, int], ...] = ()


def count_cells(cells: Dict[str, int]) -> Cells:
    """LUT1..LUT6 (LUT6_2 counts as one), flip-flops, carry chains, DSPs; the rest kept by name."""
    luts = sum(n for c, n in cells.items() if re.fullmatch(r"LUT[1-6](_2)?", c))
    ffs = sum(cells.get(c, 0) for c in FF_CELLS)
    carry = sum(cells.get(c, 0) for c in CARRY_CELLS)
    dsps = sum(cells.get(c, 0) for c in DSP_CELLS)
    known = set(FF_CELLS + CARRY_CELLS + DSP_CELLS)
    other = tuple(sorted((c, n) for c, n in cells.items()
                         if c not in known and not re.fullmatch(r"LUT[1-6](_2)?", c)))
    return Cells(luts, ffs, carry, dsps, other)


def synth_script(d: Datapath, family: str, stat_json: Path) -> str:
    files = " ".join(str(RTL_DIR / f) for f in SOURCES)
    chparam = " ".join(f"-set {k} {v}" for k, v in d.params)
    flags = "-flatten -noiopad -noclkbuf" + (" -nodsp" if d.nodsp else "")
    lines = [f"read_verilog -defer {files}"]
    if chparam:
        lines.append(f"chparam {chparam} {d.top}")
    lines += [f"hierarchy -top {d.top}", f"synth_xilinx -family {family} -top {d.top} {flags}",
              f"tee -q -o {stat_json} stat -json"]
    return "\n".join(lines) + "\n"


def synthesise(d: Datapath, family: str) -> Cells:
    """Cell counts of ``d`` after yosys ``synth_xilinx -family <family>`` (fresh temp folder)."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} not measured; choose one of {', '.join(FAMILIES)}")
    yosys = require("yosys")
    require_sources()
    with tempfile.TemporaryDirectory(prefix="lowbit-synth-") as tmp:
        stat = Path(tmp) / "stat.json"
        script = Path(tmp) / "run.ys"
        script.write_text(synth_script(d, family, stat))
        proc = subprocess.run([yosys, "-q", "-s", str(script)], capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0 or not stat.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"yosys failed on {d.key} ({family}): " + " | ".join(tail))
        data = json.loads(stat.read_text())
    cells = data["design"]["num_cells_by_type"]
    return count_cells({k: int(v) for k, v in cells.items()})


def synthesise_all(datapaths: Iterable[Datapath] = DATAPATHS, families: Sequence[str] = FAMILIES,
                   jobs: Optional[int] = None) -> List[Tuple[Datapath, str, Cells]]:
    """Every (datapath, family), ``jobs`` yosys processes at a time (default: the CPU count)."""
    work = [(d, f) for f in families for d in datapaths]
    jobs = jobs or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        cells = list(pool.map(lambda df: synthesise(*df), work))
    return [(d, f, c) for (d, f), c in zip(work, cells)]


# ------------------------------------------------------------------------------------------------
# Equivalence against the HLS policies
# ------------------------------------------------------------------------------------------------
# Verilated models of the equivalence program: prefix -> (top, parameters).
SIM_MODELS: Dict[str, Tuple[str, Tuple[Tuple[str, int], ...]]] = {
    "pot_pe1": ("pot_pe", (("S", 1),)),
    "pot_pe4": ("pot_pe", (("S", 4),)),
    "pot_pe16": ("pot_pe", (("S", 16),)),
    "mls21_pe1": ("mls_code_pe", (("EX", 2), ("MX", 1), ("S", 1))),
    "mls21_pe4": ("mls_code_pe", (("EX", 2), ("MX", 1), ("S", 4))),
    "mls21_pe16": ("mls_code_pe", (("EX", 2), ("MX", 1), ("S", 16))),
    "mls24_pe1": ("mls_code_pe", (("EX", 2), ("MX", 4), ("S", 1))),
    "mls24_pe4": ("mls_code_pe", (("EX", 2), ("MX", 4), ("S", 4))),
    "mls24_pe3": ("mls_code_pe", (("EX", 2), ("MX", 4), ("S", 3))),
    "mls24_pe16": ("mls_code_pe", (("EX", 2), ("MX", 4), ("S", 16))),
    "mls24_pack1": ("mls_pack_pe", (("EX", 2), ("MX", 4), ("S", 1))),
    "mls24_pack3": ("mls_pack_pe", (("EX", 2), ("MX", 4), ("S", 3))),
    "mlsrt_decode": ("mls_rt_decode", ()),
    "mlsrt_pe1": ("mls_pe", (("S", 1), ("SIGW", 8), ("SHW", 4), ("PW", 44))),
    "mlsrt_pe4": ("mls_pe", (("S", 4), ("SIGW", 8), ("SHW", 4), ("PW", 44))),
    "mlsrt_pe16": ("mls_pe", (("S", 16), ("SIGW", 8), ("SHW", 4), ("PW", 44))),
    "mlsrt_scale": ("mls_scale", (("W", 58),)),
    "mls21_finish": ("mls_finish", (("EX", 2), ("MX", 1))),
    "mls24_finish": ("mls_finish", (("EX", 2), ("MX", 4))),
    "mlsrt_finish": ("mls_rt_finish", ()),
    "mls21_finish_dsp": ("mls_finish", (("EX", 2), ("MX", 1), ("DSP_ADD", 1))),
    "mls24_finish_dsp": ("mls_finish", (("EX", 2), ("MX", 4), ("DSP_ADD", 1))),
    "pot_finish": ("pot_finish", ()),
    "pot_finish_dsp": ("pot_finish", (("DSP_ADD", 1),)),
    "scaled_to_f32": ("scaled_to_f32", (("W", 62), ("EW", 11))),
    "fp32_add": ("fp32_add", ()),
    "fp32_add_dsp": ("fp32_add_dsp", ()),
    "fp32_mul": ("fp32_mul", ()),
    "fp32_mac": ("fp32_mac", ()),
    "fp32_add_ftz": ("fp32_add", (("FTZ", 1),)),
    "fp32_mul_ftz": ("fp32_mul", (("FTZ", 1),)),
    "fp32_mac_ftz": ("fp32_mac", (("FTZ", 1),)),
    "mogami_mul32": ("mogami_mul", (("BITS", 32),)),
    "mogami_mul16": ("mogami_mul", (("BITS", 16),)),
    "mogami_mac32": ("mogami_mac", (("BITS", 32),)),
    "mogami_mac16": ("mogami_mac", (("BITS", 16),)),
    "mogami_mac32_dsp": ("mogami_mac", (("BITS", 32), ("DSP_ADD", 1))),
    "mogami_mac16_dsp": ("mogami_mac", (("BITS", 16), ("DSP_ADD", 1))),
    "int8_mac": ("int8_mac", ()),
}
HARNESS = RTL_DIR / "sim" / "equiv.cpp"
VERILATOR_FLAGS = ("--cc", "-O3", "-Wno-fatal", "-Wno-WIDTH", "-Wno-DECLFILENAME", "-Wno-UNUSEDSIGNAL")
# -ffp-contract=off: the golden side's `acc + a * b` is two roundings, as the RTL's fp32 MAC.
CXX = ("g++", "-std=c++17", "-ffp-contract=off", "-Wno-unknown-pragmas")
MODEL_OPT = "-O1"


def _verilator_root() -> Path:
    out = subprocess.run([require("verilator"), "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return Path(out)


def _run(cmd: Sequence[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise RuntimeError(f"{what} failed: " + "\n".join(tail))


def build_equivalence(out_dir: Path, jobs: Optional[int] = None) -> Path:
    """Verilate every model, compile them with the harness and the HLS headers; the program's path."""
    require("verilator")
    require("g++")
    require_sources()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = _verilator_root()
    sources = [str(RTL_DIR / f) for f in SOURCES]
    jobs = jobs or os.cpu_count() or 1

    def verilate(item):
        prefix, (top, params) = item
        mdir = out_dir / prefix
        cmd = ["verilator", *VERILATOR_FLAGS, "--prefix", f"V{prefix}", "--top-module", top, "--Mdir", str(mdir),
               *[f"-G{k}={v}" for k, v in params], *sources]
        _run(cmd, out_dir, f"verilator ({prefix})")
        return mdir

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        mdirs = list(pool.map(verilate, SIM_MODELS.items()))
    include = ["-I", str(root / "include"), "-I", str(root / "include" / "vltstd"),
               *[a for m in mdirs for a in ("-I", str(m))],
               "-I", str(hls_include_dir()), "-I", str(ap_types_dir())]
    # Unity builds: the generated C++ of all models in `jobs` translation units (the headers are
    # parsed once per unit, not once per file: 5x less compile time).
    generated = [p for m in mdirs for p in sorted(m.glob("*.cpp"))]
    (out_dir / "obj").mkdir(parents=True, exist_ok=True)
    units = []
    for i in range(jobs):
        unity = out_dir / f"models_{i}.cpp"
        unity.write_text("".join(f'#include "{p}"\n' for p in generated[i::jobs]))
        units.append((unity, out_dir / "obj" / f"models_{i}.o", MODEL_OPT))
    units += [(root / "include" / "verilated.cpp", out_dir / "obj" / "verilated.o", MODEL_OPT),
              (root / "include" / "verilated_threads.cpp", out_dir / "obj" / "verilated_threads.o", MODEL_OPT),
              (HARNESS, out_dir / "obj" / "equiv.o", "-O2")]

    def compile_unit(unit):
        src, obj, opt = unit
        _run([*CXX, opt, *include, "-c", str(src), "-o", str(obj)], out_dir, f"g++ {src.name}")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(compile_unit, units))
    exe = out_dir / "equiv"
    _run([*CXX, *[str(u[1]) for u in units], "-o", str(exe), "-pthread"], out_dir, "link")
    return exe


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str  # the number of comparisons, or the first mismatch


def run_equivalence(exe: Path, seed: int = 1, scale: float = 1.0, timeout: float = 900) -> List[CheckResult]:
    proc = subprocess.run([str(exe), str(seed), str(scale)], capture_output=True, text=True, timeout=timeout)
    results = []
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] in ("PASS", "FAIL"):
            results.append(CheckResult(parts[1], parts[0] == "PASS", parts[2]))
    if proc.returncode != 0 and all(r.passed for r in results):
        raise RuntimeError(f"equivalence program exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return results


def check_equivalence(seed: int = 1, scale: float = 1.0) -> List[CheckResult]:
    """Build in a fresh temporary folder and run: the results of every check."""
    with tempfile.TemporaryDirectory(prefix="lowbit-equiv-") as tmp:
        return run_equivalence(build_equivalence(Path(tmp)), seed, scale)


# ------------------------------------------------------------------------------------------------
# Rows of hw_cost.json
# ------------------------------------------------------------------------------------------------
def rtl_digest() -> str:
    """SHA-256 (first 16 hex digits) of the Verilog sources, in SOURCES order: a row measured from
    other RTL is stale."""
    h = hashlib.sha256()
    for f in SOURCES:
        h.update(f.encode() + b"\0" + (RTL_DIR / f).read_bytes())
    return h.hexdigest()[:16]


def row(d: Datapath, family: str, cells: Cells, version: str, digest: str) -> Dict[str, object]:
    """One measured unit as a hw_cost.json row."""
    return {
        "datapath": d.name, "kind": d.kind, "family": family, "macs": d.macs,
        "luts": cells.luts, "ffs": cells.ffs, "carry": cells.carry, "dsps": cells.dsps,
        "luts_per_mac": round(cells.luts / d.macs, 2) if d.macs else None,
        "yosys": version, "rtl": digest, "note": d.note,
    }


def measure(datapaths: Iterable[Datapath] = DATAPATHS, families: Sequence[str] = FAMILIES,
            jobs: Optional[int] = None) -> List[Dict[str, object]]:
    """Synthesise every (datapath, family) now and return the hw_cost.json rows."""
    version, digest = yosys_version(), rtl_digest()
    return [row(d, f, c, version, digest) for d, f, c in synthesise_all(datapaths, families, jobs)]
