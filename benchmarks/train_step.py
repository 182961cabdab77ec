"""Training-step time per format vs fp32: ResNet-20 (CIFAR shapes, batch 128, synthetic data) or
the character Transformer (``--model char_transformer``: random token ids, every multiply
quantized, batch 32 x 64 characters as `lowbit train --data pydoc` runs it).

All configurations live in one process and are timed in interleaved rounds (one step of each
per round), so machine load hits them alike; the report is the median step time and its ratio
to the fp32 median (the verdict against the target), and the fastest step of each with its ratio
to fp32's fastest (on a shared machine, the least disturbed steps), and the paired ratio: the
median over rounds of each step over the fp32 step of the same round (load that drifts between
minutes moves both steps of a round). The verdict reads the median ratio. Usage:

    python benchmarks/train_step.py                      # CPU, 2 threads
    python benchmarks/train_step.py --device cuda        # adds a bf16-autocast baseline
    python benchmarks/train_step.py --formats mls:2,1 pot:4 --rounds 5
    python benchmarks/train_step.py --model char_transformer --batch 32 --threads 1 --clock cpu
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
from torch import nn

import lowbit.nn as lnn
from lowbit.runtime.memory import keep_freed_memory
from lowbit.models import get as get_model
from lowbit.models import info as model_info

DEFAULT_FORMATS = ("mls:2,1", "pot:4", "mogami:fp32")
TARGETS = {"mls": 1.25, "pot": 1.25, "mogami": 10.0}
MODEL_TARGETS = {"char_transformer": {"mls": 1.3, "pot": 1.3}}  # issue 12's target for the Transformer
CUDA_TARGETS = {"mls": 1.3}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Config:
    clock = staticmethod(time.perf_counter)

    def __init__(self, label, model, device, autocast=None):
        self.label, self.model, self.device, self.autocast = label, model.to(device), device, autocast
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.times = []

    def step(self, x, y):
        _sync(self.device)
        t0 = self.clock()
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            loss = nn.functional.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        _sync(self.device)
        return self.clock() - t0


def build_configs(args, device):
    torch.manual_seed(0)
    base = get_model(args.model)
    configs = [Config("fp32", base, device)]
    if device.type == "cuda":
        configs.append(Config("fp32+bf16-autocast", copy.deepcopy(base), device, autocast=torch.bfloat16))
    every = _is_language_model(args.model)  # the Transformer runs with every multiply quantized
    for fmt in args.formats:
        configs.append(Config(fmt, lnn.convert(base, fmt, backend="software", skip_first_last=not every), device))
    return configs


def _is_language_model(name: str) -> bool:
    return len(model_info(name).input_shape) == 1


def _batch(args, device):
    gen = torch.Generator().manual_seed(1)
    info = model_info(args.model)
    if _is_language_model(args.model):
        x = torch.randint(0, info.num_classes, (args.batch, *info.input_shape), generator=gen)
        y = torch.randint(0, info.num_classes, (args.batch, *info.input_shape), generator=gen)
    else:
        x = torch.randn(args.batch, *info.input_shape, generator=gen)
        y = torch.randint(0, info.num_classes, (args.batch,), generator=gen)
    return x.to(device), y.to(device)


def run(args) -> dict:
    device = torch.device(args.device)
    heap_kept = keep_freed_memory()  # as `lowbit train` does; LOWBIT_KEEP_FREED_MEMORY=0 to compare
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and device.type != "cpu":
        raise SystemExit("--clock cpu times CPU steps only (a CUDA step's work is on the GPU); use --clock wall")
    Config.clock = staticmethod(CLOCKS[args.clock])
    configs = build_configs(args, device)
    x, y = _batch(args, device)
    for c in configs:
        for _ in range(args.warmup):
            c.step(x, y)
    for r in range(args.rounds):
        for c in configs:
            if c.label.startswith("mogami") and r >= args.mogami_rounds:
                continue
            c.times.append(c.step(x, y))
    base, base_min = statistics.median(configs[0].times), min(configs[0].times)
    rows = []
    targets = CUDA_TARGETS if device.type == "cuda" else MODEL_TARGETS.get(args.model, TARGETS)
    for c in configs:
        med = statistics.median(c.times)
        kind = c.label.split(":")[0]
        paired = statistics.median(t / b for t, b in zip(c.times, configs[0].times))
        rows.append(dict(config=c.label, median_s=med, ratio=med / base, min_s=min(c.times),
                         min_ratio=min(c.times) / base_min, paired_ratio=paired, steps=len(c.times),
                         target=targets.get(kind)))
    return dict(device=str(device), threads=torch.get_num_threads(), batch=args.batch, model=args.model, clock=args.clock,
                torch=torch.__version__, heap_kept=heap_kept, quantizer=_quantizer_path(device), rows=rows)


def _quantizer_path(device) -> str:
    """Which element pass the MLS quantizer ran (CUDA: the Triton kernel or torch's fallbacks)."""
    import os

    from lowbit.numerics import quant

    if device.type == "cpu":
        return "native CPU kernel" if quant.native_available() else "torch ops"
    state = quant._triton_state
    if os.environ.get("LOWBIT_TRITON", "1") == "0" or state.get("module") is None:
        return "torch ops (no Triton)"
    return "torch ops (the Triton kernel failed)" if "mls" in state.get("failed", ()) else "Triton kernel"


def print_report(report: dict) -> None:
    print(f"{report['model']} batch {report['batch']} on {report['device']} "
          f"({report['threads']} threads, torch {report['torch']}, freed memory "
          f"{'kept in the heap' if report['heap_kept'] else 'returned to the OS'}; quantizer: "
          f"{report['quantizer']}): median step time ({report['clock']} clock)")
    print(f"{'config':<22}{'median s':>10}{'x fp32':>9}{'min s':>9}{'x fp32':>8}{'paired':>8}{'target':>9}{'steps':>7}")
    for r in report["rows"]:
        target = "" if r["target"] is None else f"<={r['target']:g}"
        mark = "" if r["target"] is None else ("  ok" if r["ratio"] <= r["target"] else "  MISSED")
        print(f"{r['config']:<22}{r['median_s']:>10.4f}{r['ratio']:>9.2f}{r['min_s']:>9.4f}{r['min_ratio']:>8.2f}"
              f"{r['paired_ratio']:>8.2f}{target:>9}{r['steps']:>7}{mark}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS))
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--mogami-rounds", type=int, default=3, help="timed steps for Mogami configs (slow)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: the process's CPU time (all its threads), which a step "
                        "waiting for a core held by another job does not inflate")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    report = run(args)
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
