"""Measured joules per training step next to the energy model's estimate.

    lowbit measure --model resnet20 --batch 128 --steps 300 [--device cuda]
        [--format mls:2,1] [--table mls65] [--idle 2] [--out DIR]

Trains ``--model`` (fp32, torch) on a fixed pool of seeded synthetic batches, records every sensor
``auto_sensors()`` finds (NVML on a GPU, RAPL on a CPU, rails on a board) plus a ModelSensor, marks
each step after synchronising the device, and prints the mean joules per step: total, and above
the idle power measured for ``--idle`` seconds first. The model's figure is arithmetic energy only
(no memory traffic, no static power) on the chosen ASIC table, so it is a floor, not a prediction
of a GPU's draw.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from lowbit import models
from lowbit.numerics import formats
from lowbit.energy import estimate
from lowbit.power.recorder import Recorder
from lowbit.power.sensors import ModelSensor, auto_sensors


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(model_name="resnet20", batch=128, steps=300, warmup=20, device="auto", fmt="mls:2,1",
        table=None, idle=2.0, interval=0.02, out=None) -> dict:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    torch.manual_seed(0)
    info = models.info(model_name)
    model = models.get(model_name).to(device)
    shape = info.input_shape
    tables = {} if table is None else {"table": table}  # None: lowbit.energy.estimate's default, as everywhere
    est_fp32 = estimate(model, shape, "fp32", batch=batch, **tables)
    est_low = estimate(model, shape, formats.parse(fmt), batch=batch, **tables)
    gen = torch.Generator().manual_seed(0)
    pool = [(torch.randn(batch, *shape, generator=gen).to(device),
             torch.randint(0, info.num_classes, (batch,), generator=gen).to(device)) for _ in range(8)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step(i):
        x, y = pool[i % len(pool)]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for i in range(warmup):
        step(i)
    _sync(device)
    sensors = auto_sensors() + [ModelSensor(est_fp32.joules_per_step(), name="model_fp32")]
    rec = Recorder(sensors, interval=interval)
    with rec:
        time.sleep(idle)
        rec.mark("idle")
        for i in range(steps):
            loss = step(i)
            _sync(device)
            rec.mark("step")
    per = rec.energy_per_mark("step")
    idle_row = rec.energy_per_mark("idle").iloc[0]
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": model_name, "batch": batch, "steps": steps, "final_loss": float(loss.detach()),
        "seconds_per_step": float(per.seconds.mean()),
        "model_fp32_j_per_step": est_fp32.joules_per_step(),
        f"model_{fmt}_j_per_step": est_low.joules_per_step(),
        "table": est_fp32.table.name, "sensors": {},
    }
    for s in rec.measured():
        joules = per[f"{s.name}_J"]
        idle_w = float(idle_row[f"{s.name}_J"] / idle_row.seconds)
        dynamic = joules - idle_w * per.seconds
        result["sensors"][s.name] = {
            "j_per_step": float(joules.mean()), "mean_w": float(joules.sum() / per.seconds.sum()),
            "idle_w": idle_w, "above_idle_j_per_step": float(dynamic.mean()),
            "measured_over_model_fp32": float(joules.mean() / est_fp32.joules_per_step()),
        }
    if out:
        _save(rec, result, out)
    return result


def _save(rec, result, out) -> None:
    from lowbit.power.plots import plot_power

    os.makedirs(out, exist_ok=True)
    rec.to_csv(os.path.join(out, "power.csv"))
    rec.energy_per_mark().to_csv(os.path.join(out, "energy_per_step.csv"), index=False)
    plot_power(rec, os.path.join(out, "power.png"), title=f"{result['model']} batch {result['batch']} on {result['device']}")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(result, f, indent=2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lowbit measure", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20", choices=models.names())
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--format", default="mls:2,1", help="the low-bit format whose modelled energy is printed too")
    p.add_argument("--table", default=None, help="energy table (default: lowbit energy's, mls65)")
    p.add_argument("--idle", type=float, default=2.0, help="seconds of idle power measured first")
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--out", default=None, help="folder for power.csv, energy_per_step.csv, power.png, summary.json")
    a = p.parse_args(argv)
    if a.batch < 1 or a.steps < 1 or a.idle <= 0:
        p.error("--batch and --steps must be >= 1 and --idle > 0")
    r = run(a.model, a.batch, a.steps, a.warmup, a.device, a.format, a.table, a.idle, a.interval, a.out)
    print(f"{r['model']} batch {r['batch']} on {r['device']}: {r['steps']} steps, "
          f"{1000 * r['seconds_per_step']:.2f} ms/step, final loss {r['final_loss']:.3f}")
    print(f"energy model ({r['table']}, arithmetic only): fp32 {r['model_fp32_j_per_step']:.3e} J/step, "
          f"{a.format} {r[f'model_{a.format}_j_per_step']:.3e} J/step")
    if not r["sensors"]:
        print("no power sensor measured anything here (see the warning above)")
    for name, s in r["sensors"].items():
        print(f"{name}: {s['j_per_step']:.4f} J/step (mean), mean {s['mean_w']:.1f} W, idle {s['idle_w']:.1f} W, "
              f"{s['above_idle_j_per_step']:.4f} J/step above idle; measured / modelled fp32 = "
              f"{s['measured_over_model_fp32']:.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
