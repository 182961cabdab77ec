"""Measured hardware cost of the MAC datapaths: yosys ``synth_xilinx`` cell counts of the RTL in
``hls/rtl/`` (docs/rtl.md), committed as ``hw_cost.json`` beside this file.

One row per (datapath, family): ``datapath`` (a format spec such as ``"pot:4"``, ``"mls:2,1"``,
``"mogami:fp32"``, a baseline ``"fp32"``, ``"fp32-ftz"``, ``"int8"`` (``-lut``: synthesised without
DSPs), or a part such as ``"mls:4,7/finish"``), ``kind`` ("mac" | "part"), ``family`` ("xc7" |
"xcup"), ``macs`` (MACs the unit performs per cycle; 0 for a part), ``luts``, ``ffs``, ``carry``,
``dsps``, ``luts_per_mac`` (None for a part), ``yosys`` (the version that measured it), ``rtl`` (digest
of the Verilog it measured, ``lowbit.kernel.rtl.rtl_digest``), ``note``.

    >>> from lowbit.kernel import hw_cost
    >>> hw_cost.per_mac("pot:4", "xcup", lanes=4).luts          # LUTs per MAC of a 4-lane PoT PE
    >>> hw_cost.lookup("mls:2,4", "xc7")["dsps"]                 # the one-lane row

Regenerate with ``python benchmarks/hw_cost.py --write`` (needs yosys; tests check the file
against a fresh synthesis).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PATH = Path(__file__).with_name("hw_cost.json")
FAMILIES = ("xc7", "xcup")
KEYS = ("datapath", "kind", "family", "macs", "luts", "ffs", "carry", "dsps", "luts_per_mac", "yosys", "rtl",
        "note")
BASELINE = "fp32"  # the ratios' reference: the IEEE fp32 MAC (DSP multiplier)


@dataclass(frozen=True)
class PerMac:
    """Resources per MAC of one PE datapath (its row divided by the MACs it performs per cycle)."""

    datapath: str
    family: str
    lanes: int
    luts: float
    ffs: float
    carry: float
    dsps: float


def _check_row(r: Dict, where: str) -> Dict:
    missing = [k for k in KEYS if k not in r]
    if missing:
        raise ValueError(f"{where}: row {r.get('datapath', '?')!r} lacks {', '.join(missing)}; "
                         f"regenerate it with `python benchmarks/hw_cost.py --write`")
    if r["family"] not in FAMILIES:
        raise ValueError(f"{where}: family {r['family']!r} is not one of {', '.join(FAMILIES)}")
    return r


def load(path: Optional[Path] = None) -> List[Dict]:
    """Every row of ``hw_cost.json`` (or of ``path``), validated."""
    if path is None:
        return [dict(r) for r in _load_default()]
    return _read(Path(path))


def _read(p: Path) -> List[Dict]:
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: generate it with `python benchmarks/hw_cost.py --write`")
    rows = json.loads(p.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{p}: expected a JSON list of rows")
    return [_check_row(r, str(p)) for r in rows]


@lru_cache(maxsize=1)
def _load_default() -> tuple:
    return tuple(_read(PATH))


def lookup(datapath: str, family: str, lanes: Optional[int] = None, rows: Optional[Sequence[Dict]] = None) -> Dict:
    """The row of ``datapath`` on ``family``; ``lanes`` picks a PE width (default: one lane, or the
    part itself)."""
    rows = load() if rows is None else rows
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} not measured; choose one of {', '.join(FAMILIES)}")
    found = [r for r in rows if r["datapath"] == datapath and r["family"] == family]
    if not found:
        known = sorted({r["datapath"] for r in rows})
        raise KeyError(f"no measured datapath {datapath!r} on {family}; measured: {', '.join(known)}")
    if found[0]["kind"] == "part":
        return dict(found[0])
    want = 1 if lanes is None else lanes
    for r in found:
        if r["macs"] == want:
            return dict(r)
    widths = sorted(r["macs"] for r in found)
    raise KeyError(f"{datapath} on {family} measured with lanes {widths}, not {want}")


def per_mac(datapath: str, family: str, lanes: Optional[int] = None) -> PerMac:
    """LUT/FF/CARRY/DSP per MAC of a PE datapath (``lanes`` products per cycle, default 1)."""
    r = lookup(datapath, family, lanes)
    if r["kind"] != "mac":
        raise ValueError(f"{datapath} is a part (macs = 0); per-MAC cost is defined for MAC datapaths only")
    n = r["macs"]
    return PerMac(datapath, family, n, r["luts"] / n, r["ffs"] / n, r["carry"] / n, r["dsps"] / n)


def ratio_to_baseline(r: Dict, rows: Optional[Sequence[Dict]] = None, baseline: str = BASELINE) -> Optional[float]:
    """fp32-MAC LUTs divided by this row's LUTs per MAC (how many of these MACs fit in the LUTs of
    one fp32 MAC); None for a part, inf for a MAC that maps wholly into DSPs."""
    if r["kind"] != "mac":
        return None
    base = lookup(baseline, r["family"], 1, rows)
    return base["luts"] / r["luts_per_mac"] if r["luts_per_mac"] else math.inf


def format_ratio(v: Optional[float]) -> str:
    return "-" if v is None else "DSP only" if math.isinf(v) else f"{v:.1f}"


# ------------------------------------------------------------------------------------------------
# The docs table (docs/hardware.md, between the hw_cost markers)
# ------------------------------------------------------------------------------------------------
BEGIN, END = "<!-- hw_cost:begin -->", "<!-- hw_cost:end -->"


def markdown(rows: Optional[Sequence[Dict]] = None) -> str:
    """The measured resource table, one line per datapath, both families side by side."""
    rows = load() if rows is None else list(rows)
    version = sorted({r["yosys"] for r in rows})
    head = (f"Measured with yosys {', '.join(version)} `synth_xilinx -flatten` (xc7 = 7-series, xcup = "
            "UltraScale+), generated from `host/lowbit/kernel/hw_cost.json` by "
            "`python benchmarks/hw_cost.py --write`. LUT/MAC: LUTs divided by the MACs the unit performs "
            "per cycle; x fp32: the IEEE fp32 MAC's LUTs over this LUT/MAC (DSPs listed apart).\n\n"
            "| datapath | MACs/cycle | xc7 LUT | FF | CARRY4 | DSP | LUT/MAC | x fp32 | xcup LUT | CARRY8 | DSP | LUT/MAC | x fp32 |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    keys = []
    for r in rows:
        k = (r["datapath"], r["macs"])
        if k not in keys:
            keys.append(k)
    for name, macs in keys:
        cells = [name, str(macs) if macs else "part"]
        for fam in FAMILIES:
            r = next((x for x in rows if x["datapath"] == name and x["macs"] == macs and x["family"] == fam), None)
            if r is None:
                cells += ["-"] * (6 if fam == "xc7" else 5)
                continue
            ratio = ratio_to_baseline(r, rows)
            per = "-" if r["luts_per_mac"] is None else f"{r['luts_per_mac']:g}"
            rat = format_ratio(ratio)
            if fam == "xc7":
                cells += [str(r["luts"]), str(r["ffs"]), str(r["carry"]), str(r["dsps"]), per, rat]
            else:
                cells += [str(r["luts"]), str(r["carry"]), str(r["dsps"]), per, rat]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def splice(text: str, block: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with the part between the ``begin`` / ``end`` markers replaced by ``block``."""
    if begin not in text or end not in text:
        raise ValueError(f"markers {begin} / {end} not found")
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    return f"{pre}{begin}\n{block}{end}{post}"


# ------------------------------------------------------------------------------------------------
# docs/energy.md: the papers' per-op energy ratios beside the measured LUT ratios
# ------------------------------------------------------------------------------------------------
ENERGY_BEGIN, ENERGY_END = "<!-- hw_cost_energy:begin -->", "<!-- hw_cost_energy:end -->"
# The ops one MAC costs in the energy model (docs/energy.md's counting rules, per product; group
# scaling and the fp32 tree add are per group, not per MAC, and left out on both sides).
MAC_OPS = {
    "fp32": ("fp32_mul", "fp32_add"),
    "mls:2,1": ("lowbit_mul", "int_add"),
    "mls:2,4": ("lowbit_mul", "int_add"),
    "mls:4,7": ("lowbit_mul", "int_add"),
    "pot:4": ("xor", "int4_add", "int_add"),
    "mogami:fp32": ("mogami_add", "fp32_add"),
    "int8": ("lowbit_mul", "int_add"),
}
ENERGY_TABLES = ("mls65", "horowitz45")


def energy_ratio(datapath: str, table: str) -> float:
    """fp32 MAC energy / this MAC's energy in a per-op energy table (lowbit.energy)."""
    from lowbit.energy.tables import get_table

    t = get_table(table)
    return sum(t.pj(op) for op in MAC_OPS["fp32"]) / sum(t.pj(op) for op in MAC_OPS[datapath])


def energy_markdown(rows: Optional[Sequence[Dict]] = None) -> str:
    rows = load() if rows is None else list(rows)
    out = ["| MAC | ops per MAC (energy model) | energy ratio mls65 | energy ratio horowitz45 "
           "| LUT ratio xc7, 1 lane / 4 lanes | LUT ratio xcup, 1 / 4 | DSP per MAC (xc7) |",
           "|---|---|---|---|---|---|---|"]
    for name in MAC_OPS:
        if name == "fp32":
            continue
        lut = []
        for fam in FAMILIES:
            parts = []
            for lanes in (1, 4):
                try:
                    parts.append(format_ratio(ratio_to_baseline(lookup(name, fam, lanes, rows), rows)))
                except KeyError:
                    parts.append("-")
            lut.append(" / ".join(parts))
        dsp = lookup(name, "xc7", 1, rows)["dsps"]
        e = [f"{energy_ratio(name, t):.1f}" for t in ENERGY_TABLES]
        out.append(f"| {name} | {' + '.join(MAC_OPS[name])} | {e[0]} | {e[1]} | {lut[0]} | {lut[1]} | {dsp:g} |")
    return "\n".join(out) + "\n"


def splice_energy(text: str, block: str) -> str:
    return splice(text, block, ENERGY_BEGIN, ENERGY_END)
