"""Board path on the simulated board: host-side cost per GEMM tile and packing throughput.

Prints, side by side in one process (medians of repeated runs):
  1. packing throughput of ``lowbit.board.packing.pack_call`` (C, straight into the DMA buffer) in
     GB/s of stream written, against a numpy memcpy of the same bytes (target >= 0.5x) and against
     the emulation backend's ``build_stream`` (pack_lanes + concatenate). The packer reads the
     QTensor's int16/int32 codes, 2-8x the bytes it writes for 4- to 16-bit lanes, so "read GB/s"
     (code bytes read per second) is shown against memcpy too;
  2. host-side stages per tile on the simulated board (pack, flush, register writes + transfer
     start, wait, invalidate + unpack) next to the kernel's own work: the emulation kernel's time
     on this CPU and one ZCU104 MLS compute unit's cycles from the v2 cycle MODEL (lowbit.kernel.model,
     docs/hardware.md) at the record's 200 MHz, for the call actually timed (the tile's first N share).
The simulated board's register accesses are Python calls (~10 us each); on a Zynq an AXI-Lite
access is ~0.2-1 us, so the register line is an upper bound here.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from lowbit import quantize
from lowbit.kernel import boards, model, wire
from lowbit.backends import emulation as em
from lowbit.board import open_simulated, packing
from lowbit.kernel.wire import Op

BOARD = boards.ZCU104
FABRIC_MHZ = BOARD.clock_mhz
DMA_BYTES_PER_S = BOARD.stream_bits / 8 * FABRIC_MHZ * 1e6 * 0.8  # one AXI DMA stream at ~80% efficiency
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
    """One ZCU104 MLS compute unit's cycles for this call: the v2 cycle MODEL (lowbit.kernel.model)."""
    return model.call_cycles(BOARD, "mls", h)


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
        a, b, _, _ = tile_operands("mls:2,1", m, n, k)
        backend.gemm(a, b)  # buffers sized once
        # the call timed: on the 4-unit ZCU104 the first of the tile's N shares, not the whole tile
        hdr = backend._plan(a, b, a.block, Op.FORWARD)[0][2][0].header
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
        print(f"  call m={hdr.m} n={hdr.n} k={hdr.k} (tile n={n} split over {len(backend.units)} units): stream {packing.stream_words(hdr) * 8 / 1024:.0f} KiB, "
              f"{regs} register accesses per call")
        for name, value in med.items():
            print(f"    {name:<36}{value * 1e3:>9.3f} ms")
        print(f"    host total (pack + launch + unpack) {host * 1e3:>9.3f} ms;  emulation kernel on this CPU "
              f"{med['kernel+wait'] * 1e3:.1f} ms (ratio host/kernel {host / med['kernel+wait']:.3f})")
        print(f"    FPGA kernel estimate {kernel_cycles(hdr):,} cycles = {fpga_s * 1e3:.1f} ms at {FABRIC_MHZ:.0f} MHz "
              f"(model); host/FPGA ratio {host / fpga_s:.2f}: "
              + ("the host prepares the next call within one call's run" if host < fpga_s else
                 "the host takes longer to prepare a call than the kernel takes to run it"))
        units = len(backend.units)
        dma_s = max(packing.stream_words(hdr) * 8, hdr.m * hdr.n * 4) / DMA_BYTES_PER_S
        unit_s = max(fpga_s, dma_s)
        bound = "host" if host > unit_s / units else "kernel" if fpga_s >= dma_s else "DMA"
        print(f"    DMA (larger direction, 64-bit stream at {FABRIC_MHZ:.0f} MHz, 80%) {dma_s * 1e3:.3f} ms; "
              f"{units} units: a call every {max(unit_s / units, host) * 1e3:.3f} ms, "
              f"{hdr.m * hdr.n * hdr.k / max(unit_s / units, host) / 1e9:.2f} GMAC/s, {bound}-bound")
    backend.close()


if __name__ == "__main__":
    torch.set_num_threads(1)
    for tile in TILES:
        packing_table(tile)
    stage_table()
