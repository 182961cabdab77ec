"""ALS-POTQ ablation on sklearn's digits: pot:4 with/without Weight Bias Correction and
Parameterized Ratio Clipping, same seeds and recipe, against fp32.

    lowbit ablation --epochs 12 --seeds 0 1 2 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lowbit.data.digits import load_digits
from lowbit.models.digits_cnn import DigitsCNN
from lowbit.nn.convert import convert
from lowbit.nn.layers import quantized_layers

CONFIGS = {
    "fp32": dict(fmt="fp32"),
    "pot:4": dict(fmt="pot:4"),
    "pot:4 +wbc": dict(fmt="pot:4", wbc=True),
    "pot:4 +prc0.75": dict(fmt="pot:4", prc=0.75),
    "pot:4 +prc0.5": dict(fmt="pot:4", prc=0.5),
    "pot:4 +wbc +prc0.75": dict(fmt="pot:4", wbc=True, prc=0.75),
}


def train_one(cfg: dict, seed: int, epochs: int, data, *, all_layers: bool, lr: float, keep: bool = False) -> dict:
    torch.manual_seed(seed)
    model = DigitsCNN()
    options = {k: v for k, v in cfg.items() if k != "fmt"}
    if cfg["fmt"] != "fp32":
        model = convert(model, cfg["fmt"], skip_first_last=not all_layers, **options)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [epochs // 2, (3 * epochs) // 4], 0.1)
    for epoch in range(epochs):
        model.train()
        for x, y in data.train.batches(64, shuffle=True, seed=seed, epoch=epoch):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in data.test.batches(256):
            correct += int((model(x).argmax(1) == y).sum())
    out = dict(acc=100.0 * correct / len(data.test), final_loss=float(loss.detach()))
    if keep:
        out["model"] = model
    return out


def forward_error(model: torch.nn.Module, cfg: dict, x: torch.Tensor, *, all_layers: bool) -> float:
    """Mean over quantized layers of ||Z_q - Z|| / ||Z||: each layer's low-bit output against the
    fp32 layer on the same input (errors do not compound), trained fp32 weights, eval mode."""
    options = {k: v for k, v in cfg.items() if k != "fmt"}
    q = convert(model, cfg["fmt"], skip_first_last=not all_layers, **options).eval()
    errors = []

    def hook(layer, inputs, out):
        ref = torch.nn.functional.linear(inputs[0], layer.weight, layer.bias) if isinstance(layer, torch.nn.Linear) \
            else layer._conv_forward(inputs[0], layer.weight, layer.bias)
        errors.append(float((out - ref).norm() / ref.norm()))

    for _, layer in quantized_layers(q):
        layer.register_forward_hook(hook)
    with torch.no_grad():
        q(x)
    return statistics.mean(errors)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lowbit ablation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--all-layers", action="store_true", help="quantize the first conv and the fc too")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_digits()
    results = {}
    print(f"digits, DigitsCNN, {args.epochs} epochs, SGD lr {args.lr}, seeds {args.seeds}, "
          f"{'all layers' if args.all_layers else 'first/last fp32'}")
    print(f"{'config':<22}{'mean acc':>9}{'min':>7}{'max':>7}  per seed")
    for name in args.configs:
        t0 = time.time()
        runs = [train_one(CONFIGS[name], s, args.epochs, data, all_layers=args.all_layers, lr=args.lr)
                for s in args.seeds]
        accs = [r["acc"] for r in runs]
        results[name] = dict(accs=accs, mean=statistics.mean(accs), seconds=time.time() - t0)
        print(f"{name:<22}{statistics.mean(accs):>9.2f}{min(accs):>7.2f}{max(accs):>7.2f}  "
              + " ".join(f"{a:.2f}" for a in accs), flush=True)
    if "fp32" in args.configs:
        trained = train_one(CONFIGS["fp32"], args.seeds[0], args.epochs, data, all_layers=args.all_layers, lr=args.lr,
                            keep=True)["model"]
        x = data.test.x[:256]
        print("forward GEMM error of the quantized layers (trained fp32 weights, test batch, mean relative L2):")
        for name in args.configs:
            if name != "fp32":
                torch.manual_seed(0)
                err = forward_error(trained, CONFIGS[name], x, all_layers=args.all_layers)
                results[name]["forward_rel_error"] = err
                print(f"{name:<22}{err:>9.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
