"""The emulated HLS kernel's speed, side by side in one process.

1. MAC/s of one 256x256x256 GEMM per arithmetic: the emulation backend (C++ kernel via cffi,
   including stream packing and unpacking) next to the numpy reference model of the same kernel,
   interleaved rounds, medians, ratio emulation / reference.
2. One digits training epoch (digits CNN, mls:2,1) on the emulation backend against the software
   backend, interleaved epochs, medians and the ratio.

    python benchmarks/emulation.py [--rounds 5] [--epochs 2] [--skip-train]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lowbit.kernel import reference as reference_kernel
from lowbit.backends.emulation import EmulationBackend
from lowbit.numerics.quant import quantize

FORMATS = ("mls:2,1", "mls:2,4", "pot:4", "mogami:fp32", "mogami:bf16")
SIZE = 256


def gemm_operands(fmt: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    kw = {"block": 9} if fmt.startswith("mls") else {}
    a, b = torch.randn(SIZE, SIZE, generator=g), torch.randn(SIZE, SIZE, generator=g)
    return quantize(a, fmt, generator=g, **kw), quantize(b, fmt, generator=g, **kw)


def bench_gemm(rounds: int) -> list:
    emu = EmulationBackend()
    ops = {fmt: gemm_operands(fmt) for fmt in FORMATS}
    for qa, qb in ops.values():  # warm-up: first touch of the kernel's on-chip buffers
        emu.gemm(qa, qb)
    times = {(fmt, who): [] for fmt in FORMATS for who in ("emulation", "reference")}
    for _ in range(rounds):
        for fmt, (qa, qb) in ops.items():
            for who, fn in (("emulation", emu.gemm), ("reference", reference_kernel.gemm)):
                t0 = time.perf_counter()
                out = fn(qa, qb)
                times[(fmt, who)].append(time.perf_counter() - t0)
            assert torch.equal(out, emu.gemm(qa, qb)), f"{fmt}: emulation and reference disagree"
    rows = []
    macs = SIZE ** 3
    for fmt in FORMATS:
        te, tr = (statistics.median(times[(fmt, w)]) for w in ("emulation", "reference"))
        rows.append({"format": fmt, "emulation_MMAC_s": macs / te / 1e6, "reference_MMAC_s": macs / tr / 1e6,
                     "ratio_emulation_over_reference": tr / te})
    return rows


def bench_epoch(epochs: int) -> dict:
    from lowbit import data
    from lowbit.apps.train import TrainConfig, fit

    ds = data.load("digits")
    times = {"software": [], "emulation": []}
    acc = {}
    for _ in range(epochs):
        for backend in ("software", "emulation"):
            t0 = time.perf_counter()
            cfg = TrainConfig(model="digits_cnn", format="mls:2,1", backend=backend, epochs=1, seed=0,
                              progress=False)
            result = fit(cfg, dataset=ds)
            times[backend].append(time.perf_counter() - t0)
            acc[backend] = result.final.get("test_acc")
    sw, em = (statistics.median(times[b]) for b in ("software", "emulation"))
    return {"epoch_s_software": sw, "epoch_s_emulation": em, "ratio_emulation_over_software": em / sw,
            "test_acc_after_1_epoch": acc}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2, help="interleaved training epochs per backend")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args()
    print(f"GEMM {SIZE}x{SIZE}x{SIZE}, median of {args.rounds} interleaved rounds")
    print(f"{'format':14s} {'emulation MMAC/s':>17s} {'reference MMAC/s':>17s} {'emu/ref speed':>14s}")
    rows = bench_gemm(args.rounds)
    for r in rows:
        print(f"{r['format']:14s} {r['emulation_MMAC_s']:17.1f} {r['reference_MMAC_s']:17.1f} "
              f"{r['ratio_emulation_over_reference']:13.2f}x")
    report = {"gemm": rows}
    if not args.skip_train:
        ep = bench_epoch(args.epochs)
        print(f"digits epoch (mls:2,1): software {ep['epoch_s_software']:.1f} s, emulation "
              f"{ep['epoch_s_emulation']:.1f} s, ratio {ep['ratio_emulation_over_software']:.2f}x")
        report["epoch"] = ep
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
