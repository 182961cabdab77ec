"""`lowbit energy`: per-layer op counts and modelled energy of one training step.

    lowbit energy --model resnet34 --input 3x224x224 --format mls:2,4 [--batch 1]
                  [--table mls65|horowitz45|PATH.json] [--fp32-layers first_last|linear|none]
                  [--baseline fp32|fp8] [--json] [--plot PATH.png] [--list-tables]
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys

import torch

from lowbit.numerics import formats
from lowbit.energy.counting import FP32_LAYER_POLICIES
from lowbit.energy.model import PART_NAMES, estimate
from lowbit.energy.tables import get_table, table_names


def parse_input(text: str) -> tuple:
    """'3x224x224' -> (3, 224, 224)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"--input {text!r}: give positive sizes joined by x, e.g. 3x224x224")
    return dims


def _format(text: str):
    try:
        return formats.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit energy", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20",
                   help="a lowbit.models name (default resnet20), or package.module:factory with --input")
    p.add_argument("--input", type=parse_input, default=None, help="one sample, e.g. 3x32x32 (default: the model's)")
    p.add_argument("--format", type=_format, default=formats.parse("mls:2,4"), help="e.g. mls:2,4, pot:4, mogami:fp32")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--table", default="mls65", help=f"{' | '.join(table_names())} | PATH.json")
    p.add_argument("--fp32-layers", choices=FP32_LAYER_POLICIES, default="first_last",
                   help="layers kept fp32: first_last (default), linear (MLS Table 5), none")
    p.add_argument("--baseline", choices=("fp32", "fp8"), default="fp32",
                   help="compare with fp32 (default) or Sun et al.'s FP8 training (FP8 mul, fp32 accumulate)")
    p.add_argument("--per-image", action="store_true", help="divide by the batch size")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--plot", default=None, help="save a bar chart of energy by layer and op type")
    p.add_argument("--list-tables", action="store_true", help="print the energy tables with sources and exit")
    return p


def _model(name: str):
    """A lowbit.models name, or ``package.module:factory`` (called with no arguments)."""
    from lowbit import models

    torch.manual_seed(0)
    if ":" not in name:
        return models.get(name), models.info(name).input_shape, models.info(name).input_dtype
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"--model {name}: cannot load {attr!r} from {module_name!r} ({e})") from None
    usage = "give package.module:factory, a callable that takes no arguments and returns a torch.nn.Module"
    if not callable(factory):
        raise ValueError(f"--model {name}: {attr!r} is a {type(factory).__name__}, not callable; {usage}")
    try:
        model = factory()
    except Exception as e:  # noqa: BLE001 - the user's code: say it failed, in one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"--model {name}: calling {attr}() failed ({type(e).__name__}: {first}); {usage}") from None
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--model {name}: {attr}() returned a {type(model).__name__}; {usage}")
    return model, None, torch.float32


def _check_plot_path(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--plot {path}: the folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--plot {path}: cannot write into {folder}; choose another path")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_tables:
        for name in table_names():
            print(get_table(name).describe(), end="\n\n")
        return 0
    if args.batch < 1:
        print("lowbit energy: --batch must be >= 1", file=sys.stderr)
        return 2
    try:
        if args.plot:
            _check_plot_path(args.plot)
        table = get_table(args.table)
        model, default_shape, dtype = _model(args.model)
    except ValueError as e:
        print(f"lowbit energy: {e}", file=sys.stderr)
        return 2
    shape = args.input or default_shape
    if shape is None:
        print(f"lowbit energy: --model {args.model} needs --input (one sample's shape, e.g. 3x224x224)", file=sys.stderr)
        return 2
    try:
        example = shape if dtype.is_floating_point else torch.zeros((args.batch, *shape), dtype=dtype)  # token ids
        est = estimate(model, example, args.format, table, batch=args.batch, fp32_layers=args.fp32_layers,
                       baseline=args.baseline)
    except ValueError as e:
        print(f"lowbit energy: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # torch: the input does not fit the model
        print(f"lowbit energy: {args.model} did not run on a {args.batch}x{'x'.join(map(str, shape))} input "
              f"({str(e).splitlines()[0]}); check --input", file=sys.stderr)
        return 2
    if not all(math.isfinite(v) for v in (est.total_uj(), est.baseline_uj())):
        print(f"lowbit energy: the totals overflow to infinity with table {table.name!r}; "
              "check its pJ values (a typo such as 1e300?)", file=sys.stderr)
        return 2
    scale = args.batch if args.per_image else 1
    if args.json:
        out = est.summary()
        out["model"] = args.model
        out["layers"] = {name: {k: (float(v) / scale if k.endswith("uj") else v) for k, v in row.items()}
                         for name, row in est.by_layer().to_dict(orient="index").items()}
        print(json.dumps(out, indent=2, default=float, allow_nan=False))  # standard JSON: no Infinity/NaN
    else:
        _print_report(args, est, shape, scale)
    if args.plot:
        try:
            from lowbit.power.plots import plot_energy_breakdown

            plot_energy_breakdown(est, args.plot)
        except (ImportError, OSError) as e:
            print(f"lowbit energy: --plot {args.plot}: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                  file=sys.stderr)
            return 2
        print(f"saved {args.plot}")
    return 0


def _print_report(args, est, shape, scale) -> None:
    unit = "per image" if args.per_image else f"per step (batch {args.batch})"
    print(f"{args.model} input {'x'.join(map(str, shape))}, {est.counts.fmt} ({est.counts.mul_label}), "
          f"table {est.table.name}, energy in uJ {unit}\n")
    layers = est.by_layer()
    base = str(est.baseline.fmt)
    print(f"{'layer':28s} {'module':12s} {'fwd MACs':>14s} {base + ' uJ':>12s} {'low-bit uJ':>12s} {'ratio':>7s}")
    for name, r in layers.iterrows():
        print(f"{name:28s} {r.module:12s} {r.fwd_macs:14,d} {r.base_uj / scale:12.3f} {r.uj / scale:12.3f} {r.ratio:7.2f}")
    print(f"\n{'part':12s} {'op':14s} {base + ' count':>14s} {base + ' uJ':>11s} {'count':>14s} {'uJ':>11s}")
    for (part, op), r in est.by_part().iterrows():
        print(f"{PART_NAMES[part]:12s} {op:14s} {r.count_base / scale:14.4g} {r.uj_base / scale:11.3f} "
              f"{r['count'] / scale:14.4g} {r.uj / scale:11.3f}")
    print(f"\ntotal: {base} {est.baseline_uj() / scale:.1f} uJ, {est.counts.fmt} {est.total_uj() / scale:.1f} uJ, "
          f"ratio {est.ratio:.2f}x; linear-layer saving {100 * est.saving():.1f}%")
