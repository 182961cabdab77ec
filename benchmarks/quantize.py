"""Quantizer throughput next to x.clone(), on one 16M-element fp32 tensor [256, 64, 32, 32].

    python benchmarks/quantize.py [--reps 7] [--shape 256 64 32 32]

Every candidate runs once per round, rounds interleaved, so machine noise hits all alike;
reported: median ms and the ratio clone_time / candidate_time (1.0 = as fast as clone,
higher is faster). Target: MLS <2,1> stochastic >= 0.5x clone on CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from lowbit import mogami_mul, quantize
from lowbit.numerics.quant import native_available


def candidates(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, with_torch_path: bool) -> dict:
    out = {
        "x.clone()": lambda: x.clone(),
        "mls:2,1 stochastic (nc)": lambda: quantize(x, "mls:2,1", rounding="stochastic", generator=gen),
        "mls:2,1 nearest (nc)": lambda: quantize(x, "mls:2,1", rounding="nearest"),
        "pot:4 stochastic": lambda: quantize(x, "pot:4", rounding="stochastic", generator=gen),
        "pot:4 nearest": lambda: quantize(x, "pot:4", rounding="nearest"),
        "mogami_mul fp32": lambda: mogami_mul(x, y),
        "x * y (fp32 multiply)": lambda: x * y,
        "mogami:bf16 stochastic": lambda: quantize(x, "mogami:bf16", rounding="stochastic", generator=gen),
    }
    if with_torch_path and native_available():
        out["mls:2,1 stochastic, torch ops"] = lambda: quantize(x, "mls:2,1", generator=gen, impl="torch")
    return out


def pack_candidates(x: torch.Tensor) -> dict:
    """QTensor.pack() of a 2-D operand next to copies of its input (int16 codes) and output bytes."""
    x2 = x.reshape(x.shape[0] * x.shape[1], -1)
    q = quantize(x2, "mls:2,1", rounding="nearest", block=32)
    packed = np.frombuffer(q.pack(), dtype=np.uint8)
    codes = q.codes.numpy()
    return {
        "codes.copy() (pack's input)": lambda: codes.copy(),
        "memcpy of the packed bytes": lambda: packed.copy(),
        "QTensor.pack() mls:2,1 (4-bit lanes)": q.pack,
    }


def run(shape, reps: int, with_torch_path: bool = False) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    y = torch.randn(shape, generator=gen)
    cands = {**candidates(x, y, gen, with_torch_path), **pack_candidates(x)}
    times = {name: [] for name in cands}
    for f in cands.values():  # warm up: builds, first-touch of caches
        f()
    for _ in range(reps):
        for name, f in cands.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def run_cuda(shape, reps: int) -> dict:
    """The torch-ops path on the GPU (CUDA's only path), timed with synchronisation."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(shape, device="cuda", generator=gen)
    y = torch.randn(shape, device="cuda", generator=gen)
    cands = {
        "x.clone() [cuda]": lambda: x.clone(),
        "mls:2,1 stochastic (nc) [cuda]": lambda: quantize(x, "mls:2,1", rounding="stochastic", generator=gen),
        "pot:4 stochastic [cuda]": lambda: quantize(x, "pot:4", rounding="stochastic", generator=gen),
        "mogami_mul fp32 [cuda]": lambda: mogami_mul(x, y),
    }
    times = {name: [] for name in cands}
    for f in cands.values():
        f()
    for _ in range(reps):
        for name, f in cands.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            f()
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--shape", type=int, nargs="+", default=[256, 64, 32, 32])
    p.add_argument("--torch-path", action="store_true", help="also time the torch-ops MLS path (CUDA's; slow on CPU)")
    args = p.parse_args(argv)
    n = 1
    for d in args.shape:
        n *= d
    print(f"tensor {args.shape} fp32 ({n / 1e6:.1f}M elements), torch threads {torch.get_num_threads()}, "
          f"native kernel {'on' if native_available() else 'OFF'}, "
          f"huge pages {'off' if os.environ.get('LOWBIT_HUGEPAGES') == '0' else 'on'}")
    med = run(args.shape, args.reps, args.torch_path)
    base = med["x.clone()"]
    print(f"{'':38s} {'median ms':>10s} {'vs clone':>9s}")
    for name, t in med.items():
        if "pack" not in name and "codes.copy" not in name:
            print(f"{name:38s} {t * 1e3:10.1f} {base / t:8.2f}x")
    pack = med["QTensor.pack() mls:2,1 (4-bit lanes)"]
    print(f"\npacking {n / 1e6:.1f}M codes {'median ms':>10s} {'pack speed vs this':>19s}")
    for name in ("codes.copy() (pack's input)", "memcpy of the packed bytes", "QTensor.pack() mls:2,1 (4-bit lanes)"):
        print(f"{name:38s} {med[name] * 1e3:10.1f} {med[name] / pack:8.2f}x")
    if torch.cuda.is_available():
        med = run_cuda(args.shape, args.reps)
        base = med["x.clone() [cuda]"]
        print(f"\n{torch.cuda.get_device_name()} {'median ms':>10s} {'vs clone':>9s}")
        for name, t in med.items():
            print(f"{name:38s} {t * 1e3:10.3f} {base / t:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
