"""Board path on the simulated board: host-side cost per GEMM tile and packing throughput.

Prints, side by side in one process (medians of repeated runs):
  1. packing throughput of ``lowbit.board.packing.pack_call`` (C, straight into the DMA buffer) in
     GB/s of stream written, against a numpy memcpy of the same bytes (target >= 0.5x) and against
     the emulation backend's ``build_stream`` (pack_lanes + concatenate). The packer reads the
     QTensor's int16/int32 codes, 2-8x the bytes it writes for 4- to 16-bit lanes, so "read GB/s"
     (code bytes read per second) is shown against memcpy too;
  2. host-side stages per tile on the simulated board (pack, flush, register writes + transfer
     start, wait, invalidate + unpack) next to the kernel's own work: the emulation kernel's time
     on this CPU and the FPGA kernel's cycle estimate (docs/hardware.md) at 200 MHz (ZCU104).
The simulated board's register accesses are Python calls (~10 us each); on a Zynq an AXI-Lite
access is ~0.2-1 us, so the register line is an upper bound here.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from lowbit import quantize
from lowbit.kernel import wire
from lowbit.backends import emulation as em
from lowbit.board import open_simulated, packing
from lowbit.kernel.wire import Op

FABRIC_MHZ = 200.0
TILES = [(wire.MAX_M, 1024, 576),  # m, n, k: a 64-channel 3x3 conv's K, 1024 output pixels (fits in cache)
         (wire.MAX_M, 16384, 576)]  # a batch of 16 32x32 maps: megabytes, out of cache


def median_time(fn, repeat: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tile_operands(fmt: str, m: int, n: int, k: int):
    g = torch.Generator().manual_seed(0)
    block = 32 if fmt.startswith("mls") else None
    a = quantize(torch.randn(m, k, generator=g), fmt, rounding="nearest", block=block)
    b = quantize(torch.randn(n, k, generator=g), fmt, rounding="nearest", block=block)
    blk = block or k
    (_, _, calls) = next(em.gemm_tiles(a.fmt, packing.board_operand(a), packing.board_operand(b), blk, Op.FORWARD))
    (_, _, ref_calls) = next(em.gemm_tiles(a.fmt, em.operand_of(a), em.operand_of(b), blk, Op.FORWARD))
    return a, b, calls[0], ref_calls[0]


def kernel_cycles(h: wire.Header) -> int:
    """docs/hardware.md's estimate: A (and scales) read once, then per B row: K cycles to read it,
    per group len*ceil(M/16) MAC cycles (16 lanes; Mogami: at least 8 per k, the fp32 add latency)
    + ceil(M/16) to scale and sum + a pipeline fill D, and M/2 output beats."""
    lanes = -(-h.m // 16)
    fill = {wire.Arith.MLS: 22, wire.Arith.POT: 14}.get(h.arith, 10)
    per_k = max(lanes, 8) if h.arith in (wire.Arith.MOGAMI_FP32, wire.Arith.MOGAMI_BF16) else lanes
    nb = h.nblocks if h.has_scales else 1
    lengths = [min(h.block, h.k - b * h.block) for b in range(nb)] if h.has_scales else [h.k]
    row = h.k + sum(n * per_k + lanes + fill for n in lengths) + h.m // 2
    scales = (h.m + h.n) * nb if h.has_scales else 0
    return h.m * h.k + scales + h.n * row


def packing_table(tile) -> None:
    print(f"1) packing the first kernel call of a {tile[0]}x{tile[1]}x{tile[2]} GEMM (m x n x k) into the DMA "
          "buffer, median of 15")
    print(f"{'format':<14}{'stream KiB':>11}{'pack GB/s':>11}{'memcpy GB/s':>13}{'pack/memcpy':>13}"
          f"{'read GB/s':>11}{'read/memcpy':>13}{'build_stream GB/s':>19}{'pack/build':>12}")
    for fmt in ("mls:2,1", "mls:2,4", "pot:4", "mogami:bf16", "mogami:fp32"):
        _, _, (hdr, at, bt), (_, ref_a, ref_b) = tile_operands(fmt, *tile)
        words = packing.stream_words(hdr)
        dest = np.zeros(words, np.uint64)
        src, dst = np.random.default_rng(0).integers(0, 2**63, words, dtype=np.uint64), np.empty(words, np.uint64)
        t_pack = median_time(lambda: packing.pack_call(dest, hdr, at, bt))
        t_copy = median_time(lambda: np.copyto(dst, src))
        t_build = median_time(lambda: em.build_stream(hdr, ref_a, ref_b))
        gb = words * 8 / 1e9
        read = (at.codes.nbytes + bt.codes.nbytes + at.scales.size * 2 + bt.scales.size * 2) / 1e9
        print(f"{fmt:<14}{words * 8 / 1024:>11.1f}{gb / t_pack:>11.2f}{gb / t_copy:>13.2f}{t_copy / t_pack:>12.2f}x"
              f"{read / t_pack:>11.2f}{read / t_pack / (gb / t_copy):>12.2f}x{gb / t_build:>19.2f}{t_build / t_pack:>11.2f}x")


def stage_table() -> None:
    backend = open_simulated("zcu104", timeout_s=60.0, threaded=False)  # stages timed one by one
    dev = backend.device
    print(f"\n2) host-side stages per tile on the simulated board (fmt mls:2,1), median of 5")
    for m, n, k in ((wire.MAX_M, 256, 288), (wire.MAX_M, 1024, 576)):
        a, b, (hdr, at, bt), _ = tile_operands("mls:2,1", m, n, k)
        backend.gemm(a, b)  # buffers sized once
        timings = {name: [] for name in ("pack", "launch (flush + regs + DMA start)", "kernel+wait", "unpack")}
        for _ in range(5):
            calls = [c for _, _, g in backend._plan(a, b, a.block, Op.FORWARD) for c in g]
            call = calls[0]
            t0 = time.perf_counter(); backend._pack(call, 0)
            t1 = time.perf_counter(); regs0 = dev.counters["reg_write"] + dev.counters["reg_read"]
            run_time = [0.0]
            kernel = dev.kernel

            def timed_kernel(words, kernel=kernel):
                s = time.perf_counter()
                res = kernel(words)
                run_time[0] = time.perf_counter() - s
                return res

            dev.kernel = timed_kernel
            backend._launch(call)
            t2 = time.perf_counter()
            backend._wait(call); backend.dma.sendchannel.wait(); backend.dma.recvchannel.wait()
            t3 = time.perf_counter()
            backend._unpack(call, backend.dma.recvchannel.transferred // 8)
            t4 = time.perf_counter()
            dev.kernel = kernel
            regs = dev.counters["reg_write"] + dev.counters["reg_read"] - regs0
            timings["pack"].append(t1 - t0)
            timings["launch (flush + regs + DMA start)"].append(t2 - t1 - run_time[0])
            timings["kernel+wait"].append(t3 - t2 + run_time[0])
            timings["unpack"].append(t4 - t3)
        med = {name: statistics.median(v) for name, v in timings.items()}
        host = med["pack"] + med["launch (flush + regs + DMA start)"] + med["unpack"]
        fpga_s = kernel_cycles(hdr) / (FABRIC_MHZ * 1e6)
        print(f"  tile m={m} n={n} k={k}: stream {packing.stream_words(hdr) * 8 / 1024:.0f} KiB, "
              f"{regs} register accesses per call")
        for name, value in med.items():
            print(f"    {name:<36}{value * 1e3:>9.3f} ms")
        print(f"    host total (pack + launch + unpack) {host * 1e3:>9.3f} ms;  emulation kernel on this CPU "
              f"{med['kernel+wait'] * 1e3:.1f} ms (ratio host/kernel {host / med['kernel+wait']:.3f})")
        print(f"    FPGA kernel estimate {kernel_cycles(hdr):,} cycles = {fpga_s * 1e3:.1f} ms at {FABRIC_MHZ:.0f} MHz "
              f"(host/FPGA ratio {host / fpga_s:.4f}: the host packs the next tile well within one tile's run)")
    backend.close()


if __name__ == "__main__":
    torch.set_num_threads(1)
    for tile in TILES:
        packing_table(tile)
    stage_table()
