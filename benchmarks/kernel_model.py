"""The v2 kernel's cycle and resource MODEL per (board, arithmetic family) (lowbit.kernel.model):
peak MACs/cycle, ResNet-20 training-step GEMMs at batch 128 (forward, backward-data and
weight-gradient of every conv) through the real host tiler, on-chip memory, DSP and LUT against
the part. Every figure is a model, not a Vitis report.

    python benchmarks/kernel_model.py            # table, plus the host CPU's measured GEMM throughput
    python benchmarks/kernel_model.py --json     # JSON list, one object per (board, arith)

The table's host column runs the same ResNet-20 GEMMs on the software backend (torch on this CPU,
median of --rounds) and gives the model's board throughput as a multiple of it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

KEYS = ("board", "arith", "clock_mhz", "peak_macs_per_cycle", "resnet20_macs_per_cycle", "resnet20_gmacs",
        "bram36_used", "bram36_available", "uram_used", "uram_available", "dsp_used", "dsp_available",
        "lut_estimate", "lut_available")
HOST_FORMATS = {"mls": "mls:2,1", "pot": "pot:4", "mogami": "mogami:fp32"}


def model_rows() -> list:
    from lowbit.kernel import model

    return [{k: s[k] for k in KEYS} | {"lut_source": s["lut_source"]} for s in model.all_summaries()]


def host_gmacs(family: str, rounds: int) -> float:
    """The software backend's GMAC/s over the same ResNet-20 GEMMs (medians per GEMM, summed)."""
    import torch

    from lowbit.backends.software import SoftwareBackend
    from lowbit.kernel.model import resnet20_gemms
    from lowbit.numerics.quant import quantize

    sw = SoftwareBackend()
    g = torch.Generator().manual_seed(0)
    fmt = HOST_FORMATS[family]
    macs = seconds = 0.0
    for gemm in resnet20_gemms():
        kw = {"block": gemm.block} if family == "mls" else {}
        a = quantize(torch.randn(gemm.m, gemm.k, generator=g), fmt, generator=g, **kw)
        b = quantize(torch.randn(gemm.n, gemm.k, generator=g), fmt, generator=g, **kw)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            sw.gemm(a, b, op=gemm.op)
            times.append(time.perf_counter() - t0)
        macs += gemm.m * gemm.n * gemm.k
        seconds += statistics.median(times)
    return macs / seconds / 1e9


def table(rows: list, host: dict) -> str:
    head = (f"{'board':8} {'arith':7} {'MHz':>4} {'peak':>5} {'R20 MAC/c':>9} {'R20 GMAC/s':>10} {'BRAM36':>9} "
            f"{'URAM':>8} {'DSP':>10} {'LUT':>15} {'host GMAC/s':>11} {'board/host':>10}")
    out = ["MODEL of the v2 kernel (lowbit.kernel.model), not a Vitis report; host = this CPU, software backend,"
           " measured", head]
    for r in rows:
        h = host.get(r["arith"])
        hcol = f"{h:11.2f} {r['resnet20_gmacs'] / h:9.1f}x" if h else f"{'-':>11} {'-':>10}"
        out.append(f"{r['board']:8} {r['arith']:7} {r['clock_mhz']:4.0f} {r['peak_macs_per_cycle']:5d} "
                   f"{r['resnet20_macs_per_cycle']:9.1f} {r['resnet20_gmacs']:10.2f} "
                   f"{r['bram36_used']:4d}/{r['bram36_available']:<4d} {r['uram_used']:3d}/{r['uram_available']:<4d} "
                   f"{r['dsp_used']:4d}/{r['dsp_available']:<5d} {r['lut_estimate']:7d}/{r['lut_available']:<7d} {hcol}")
    sources = sorted({r["lut_source"] for r in rows})
    out.append("LUT per MAC from: " + "; ".join(sources))
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the JSON list only (no host measurement)")
    p.add_argument("--rounds", type=int, default=1, help="host timing rounds per GEMM (median)")
    p.add_argument("--no-host", action="store_true", help="table without the host CPU measurement")
    args = p.parse_args(argv)
    rows = model_rows()
    if args.json:
        print(json.dumps([{k: r[k] for k in KEYS} for r in rows], indent=1))
        return 0
    host = {} if args.no_host else {fam: host_gmacs(fam, args.rounds) for fam in HOST_FORMATS}
    print(table(rows, host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
