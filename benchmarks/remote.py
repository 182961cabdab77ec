"""What the network costs a remote board: `lowbit serve --simulated` on 127.0.0.1 in a child process
against the same simulated board in this process.

1. Per-call overhead: one-kernel-call GEMMs, local and remote in interleaved rounds; medians, the
   difference (the protocol's cost per kernel call on localhost), RPCs and bytes per call.
2. Bytes per ResNet-20 training step (CIFAR shapes, mls:2,1, first/last layer fp32 as `lowbit
   train` converts it) counted by the client's interceptor, and what a 1 GbE link (~117 MB/s of
   payload) would need for them.

    python benchmarks/remote.py [--rounds 20] [--batch 128] [--no-step]
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

GBE_BYTES_PER_S = 117e6  # 1 Gb/s less Ethernet/IP/TCP framing, about 94%


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "lowbit.board.remote_server", "--simulated", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    return proc


def per_call(local, remote, rounds: int) -> dict:
    from lowbit import quantize

    g = torch.Generator().manual_seed(0)
    a = quantize(torch.randn(32, 64, generator=g), "mls:2,1", rounding="nearest", block=32)
    b = quantize(torch.randn(32, 64, generator=g), "mls:2,1", rounding="nearest", block=32)
    for backend in (local, remote):
        backend.gemm(a, b)  # buffers allocated, caches warm
    times = {"local": [], "remote": []}
    before, calls0 = remote.traffic.snapshot(), remote.calls_run
    for _ in range(rounds):
        for name, backend in (("local", local), ("remote", remote)):
            t0 = time.perf_counter()
            backend.gemm(a, b)
            times[name].append(time.perf_counter() - t0)
    moved, kernel_calls = remote.traffic.since(before), remote.calls_run - calls0
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"local_ms": med["local"], "remote_ms": med["remote"], "overhead_ms": med["remote"] - med["local"],
            "rpcs_per_call": moved.calls / kernel_calls, "bytes_per_call": (moved.sent + moved.received) / kernel_calls}


def resnet20_step(remote, batch: int) -> dict:
    from lowbit import models
    from lowbit.nn import convert

    torch.manual_seed(0)
    model = convert(models.get("resnet20"), "mls:2,1", backend=remote)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    before, calls0 = remote.traffic.snapshot(), remote.calls_run
    t0 = time.perf_counter()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    seconds = time.perf_counter() - t0
    moved = remote.traffic.since(before)
    total = moved.sent + moved.received
    return {"batch": batch, "kernel_calls": remote.calls_run - calls0, "rpcs": moved.calls, "sent_MB": moved.sent / 1e6,
            "received_MB": moved.received / 1e6, "total_MB": total / 1e6, "gbe_s": total / GBE_BYTES_PER_S,
            "localhost_s": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--no-step", action="store_true", help="skip the ResNet-20 step")
    args = p.parse_args(argv)
    from lowbit.board import open_simulated
    from lowbit.board.device import open_device

    port = _free_port()
    server = _serve(port)
    try:
        local = open_simulated("zcu104", timeout_s=60.0)
        remote = open_device(f"remote:127.0.0.1:{port}", timeout_s=60.0)
        r = per_call(local, remote, args.rounds)
        print(f"per kernel call (32x32x64 mls:2,1, median of {args.rounds}): local {r['local_ms']:.2f} ms, remote "
              f"{r['remote_ms']:.2f} ms, overhead {r['overhead_ms']:.2f} ms; {r['rpcs_per_call']:.1f} RPCs and "
              f"{r['bytes_per_call'] / 1e3:.1f} kB per call")
        if not args.no_step:
            s = resnet20_step(remote, args.batch)
            print(f"ResNet-20 mls:2,1 training step, batch {s['batch']}: {s['kernel_calls']} kernel calls, {s['rpcs']} "
                  f"RPCs, {s['sent_MB']:.1f} MB sent + {s['received_MB']:.1f} MB received = {s['total_MB']:.1f} MB; "
                  f"1 GbE needs >= {s['gbe_s']:.2f} s for it; {s['localhost_s']:.1f} s on localhost (simulated board)")
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
