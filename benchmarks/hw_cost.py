"""Hardware cost MEASURED: yosys `synth_xilinx` on the RTL datapaths of hls/rtl/ (docs/rtl.md) for
7-series (xc7) and UltraScale+ (xcup): LUT, FF, CARRY, DSP per datapath and per MAC.

    python benchmarks/hw_cost.py             # synthesise now; table with each MAC's ratio to the fp32 MAC
    python benchmarks/hw_cost.py --json      # the same rows as a JSON list
    python benchmarks/hw_cost.py --committed # print host/lowbit/kernel/hw_cost.json's rows (no yosys)
    python benchmarks/hw_cost.py --write     # synthesise, rewrite hw_cost.json and the tables in docs/

Needs yosys on PATH (Debian 12: `apt-get install yosys`, what `make install` does as root).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "hardware.md"
ENERGY_DOC = REPO / "docs" / "energy.md"


def table(rows: list) -> str:
    from lowbit.kernel import hw_cost

    out = [f"{'datapath':<18} {'fam':<5} {'MACs':>4} {'LUT':>6} {'FF':>5} {'CARRY':>5} {'DSP':>4} "
           f"{'LUT/MAC':>8} {'x fp32':>7} {'x fp32-ftz':>10}"]
    for r in rows:
        per = "-" if r["luts_per_mac"] is None else f"{r['luts_per_mac']:.1f}"
        vs = [hw_cost.ratio_to_baseline(r, rows, base) for base in ("fp32", "fp32-ftz")]
        vs_s = [hw_cost.format_ratio(v) for v in vs]
        out.append(f"{r['datapath']:<18} {r['family']:<5} {r['macs'] or 'part':>4} {r['luts']:>6} {r['ffs']:>5} "
                   f"{r['carry']:>5} {r['dsps']:>4} {per:>8} {vs_s[0]:>7} {vs_s[1]:>10}")
    out.append("x fp32: LUTs of one IEEE fp32 MAC (multiplier on DSPs) / this LUT per MAC; "
               "x fp32-ftz: the same against the subnormal-flushing fp32 MAC. DSPs are not in the ratio.")
    return "\n".join(out)


def write(rows: list) -> None:
    from lowbit.kernel import hw_cost

    hw_cost.PATH.write_text(json.dumps(rows, indent=1) + "\n")
    DOC.write_text(hw_cost.splice(DOC.read_text(), hw_cost.markdown(rows)))
    ENERGY_DOC.write_text(hw_cost.splice_energy(ENERGY_DOC.read_text(), hw_cost.energy_markdown(rows)))
    print(f"wrote {hw_cost.PATH.relative_to(REPO)} ({len(rows)} rows) and the tables in "
          f"{DOC.relative_to(REPO)}, {ENERGY_DOC.relative_to(REPO)}", file=sys.stderr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    p.add_argument("--committed", action="store_true", help="the committed hw_cost.json, without synthesising")
    p.add_argument("--write", action="store_true", help="rewrite hw_cost.json and the docs/hardware.md table")
    p.add_argument("--family", choices=("xc7", "xcup"), action="append", help="only this family (repeatable)")
    p.add_argument("--jobs", type=int, default=None, help="yosys processes at a time (default: CPU count)")
    args = p.parse_args(argv)
    from lowbit.kernel import hw_cost, rtl

    try:
        if args.committed:
            rows = hw_cost.load()
        else:
            t0 = time.perf_counter()
            rows = rtl.measure(families=tuple(args.family or rtl.FAMILIES), jobs=args.jobs)
            print(f"synthesised {len(rows)} units in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    except rtl.ToolMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.family:
        rows = [r for r in rows if r["family"] in args.family]
    if args.write:
        if args.family:
            print("error: --write needs every family (drop --family)", file=sys.stderr)
            return 2
        write(rows)
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
