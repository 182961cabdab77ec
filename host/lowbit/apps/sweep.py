"""`lowbit sweep`: accuracy grids with one seed/recipe per cell.

* ``lowbit sweep`` (``--grid table3``, default): the shape of the MLS paper's Table 3 — rows
  (#group, Mg, Ex), columns Mx = 4/3/2/1 — on digits by default, or on CIFAR-10 ResNet-20 with
  ``--data cifar10:PATH --model resnet20 --device cuda --epochs 160``.
* ``lowbit sweep --grid methods``: fp32, MLS <2,1> / <2,4> / <1,1>, PoT with and without the
  ALS-POTQ techniques (WBC, PRC), Mogami — the results table of docs/results.md.

A run that produces NaN/Inf, or ends no better than chance (test accuracy below 1.5x the
chance level: training collapsed), counts as diverged, "Div." as in the paper; a cell reports the
mean ± stdev of its other seeds and how many diverged. ``--render FILE.json`` re-prints a saved sweep.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Optional

from lowbit.apps.train import NonFiniteError, TrainConfig, fit, load_dataset

COLLAPSE_FACTOR = 1.5  # a final accuracy below 1.5x chance counts as diverged
MX_COLUMNS = (4, 3, 2, 1)
# (#group, Mg, Ex) as printed in the paper's Table 3; "1" = one group per tensor (no group scaling).
TABLE3_ROWS = (
    ("1", None, 0), ("c", 0, 0), ("n", 0, 0), ("nc", 0, 0), ("nc", 1, 0),
    ("1", None, 1), ("1", None, 2), ("nc", 1, 1), ("nc", 1, 2),
)
PAPER_TABLE3 = {  # ResNet-20 / CIFAR-10 accuracy (%) as printed, Mx = 4 / 3 / 2 / 1; None = Div.
    ("1", None, 0): (90.02, 85.68, None, None),
    ("c", 0, 0): (91.54, 88.35, 82.29, None),
    ("n", 0, 0): (91.78, 89.62, 80.71, None),
    ("nc", 0, 0): (92.14, 91.64, 88.97, 76.98),
    ("nc", 1, 0): (92.37, 91.73, 90.39, 82.61),
    ("1", None, 1): (91.67, 90.11, 84.72, 70.4),
    ("1", None, 2): (92.32, 92.34, 91.58, 90.32),
    ("nc", 1, 1): (92.52, 92.16, 91.48, 89.97),
    ("nc", 1, 2): (92.37, 92.65, 92.05, 91.97),
}


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    format: str
    options: dict = field(default_factory=dict)


METHODS = (
    Method("fp32", "fp32", "fp32"),
    Method("mls21", "MLS <2,1>", "mls:2,1"),
    Method("mls24", "MLS <2,4>", "mls:2,4"),
    Method("mls11", "MLS <1,1>", "mls:1,1"),
    Method("pot", "PoT 4-bit (plain)", "pot:4"),
    Method("pot-wbc", "PoT 4-bit + WBC", "pot:4", {"wbc": True}),
    Method("pot-prc", "PoT 4-bit + PRC 0.75", "pot:4", {"prc": 0.75}),
    Method("pot-wbc-prc", "PoT 4-bit + WBC + PRC 0.75", "pot:4", {"wbc": True, "prc": 0.75}),
    Method("mogami", "Mogami fp32", "mogami:fp32"),
    Method("mogami-bf16", "Mogami bf16", "mogami:bf16"),
)


def pick_methods(text: Optional[str]) -> tuple:
    if not text:
        return METHODS
    by_key = {m.key: m for m in METHODS}
    unknown = [k for k in text.split(",") if k not in by_key]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {', '.join(by_key)}")
    return tuple(by_key[k] for k in text.split(","))


def table3_format(group: str, mg: Optional[int], ex: int, mx: int) -> str:
    """The lowbit format string of one Table 3 cell (<Eg,Mg> = <8,Mg>; group "1" = none)."""
    if group == "1":
        return f"mls:{ex},{mx},g=8,1,group=none"  # one group: the group scale is exactly 1, Mg is moot
    return f"mls:{ex},{mx},g=8,{mg},group={group}"


def run_cell(base: TrainConfig, dataset, fmt: str, options: dict, seed: int) -> dict:
    cfg = replace(base, format=fmt, convert_options=dict(options), seed=seed)
    t0 = time.perf_counter()
    try:
        final = fit(cfg, dataset=dataset).final
        acc, loss, diverged = final["test_acc"], final["test_loss"], False
    except NonFiniteError as exc:
        acc, loss, diverged = None, None, True
        print(f"lowbit sweep: {fmt} {options or ''} seed {seed} diverged: {exc}", file=sys.stderr)
    collapsed = acc is not None and acc < COLLAPSE_FACTOR * 100.0 / dataset.num_classes
    return dict(format=fmt, options=options, seed=seed, test_acc=acc, test_loss=loss, diverged=diverged or collapsed,
                nonfinite=diverged, seconds=time.perf_counter() - t0)


def _diverged(cell: dict, num_classes: int = 10) -> bool:
    acc = cell["test_acc"]
    return cell["diverged"] or acc is None or acc < COLLAPSE_FACTOR * 100.0 / num_classes


def summarise(cells: list, num_classes: int = 10) -> dict:
    """Mean / stdev over the seeds that did not diverge, and how many did."""
    flags = [_diverged(c, num_classes) for c in cells]
    accs = [c["test_acc"] for c, bad in zip(cells, flags) if not bad]
    return dict(mean=statistics.fmean(accs) if accs else None,
                std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                diverged=sum(flags), runs=len(cells),
                seconds=sum(c["seconds"] for c in cells))


def fmt_acc(s: dict) -> str:
    if s["mean"] is None:
        return "Div."
    text = f"{s['mean']:.2f}"
    if s["runs"] - s["diverged"] > 1:
        text += f" ± {s['std']:.2f}"
    if s["diverged"]:
        text += f" ({s['diverged']}/{s['runs']} Div.)"
    return text


def _worker_cell(base: TrainConfig, fmt: str, options: dict, seed: int) -> dict:
    """One cell in a worker process: one torch thread, the data set loaded there."""
    import torch

    torch.set_num_threads(1)
    return run_cell(base, load_dataset(base), fmt, options, seed)


def run_cells(base: TrainConfig, dataset, specs: list, jobs: int = 1, log=None) -> list:
    """Run (fmt, options, seed) cells, in ``jobs`` processes when > 1; results in input order."""
    def done(i: int, cell: dict) -> dict:
        if log:
            acc = "Div." if cell["test_acc"] is None else f"{cell['test_acc']:.2f}"
            opts = f" {cell['options']}" if cell["options"] else ""
            log(f"  [{i + 1}/{len(specs)}] {cell['format']}{opts} seed {cell['seed']}: {acc} ({cell['seconds']:.0f}s)")
        return cell

    if jobs <= 1:
        return [done(i, run_cell(base, dataset, *spec)) for i, spec in enumerate(specs)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results: list = [None] * len(specs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_worker_cell, base, *spec): i for i, spec in enumerate(specs)}
        for future in as_completed(futures):
            results[futures[future]] = done(futures[future], future.result())
    return results


def sweep_table3(base: TrainConfig, dataset, seeds: list, mx_columns=MX_COLUMNS, rows=TABLE3_ROWS,
                 log=None, jobs: int = 1) -> list:
    keys = [(row, mx) for row in rows for mx in mx_columns]
    specs = [(table3_format(*row, mx), {}, seed) for row, mx in keys for seed in seeds]
    done = run_cells(base, dataset, specs, jobs, log)
    results = []
    for i, (row, mx) in enumerate(keys):
        cells = done[i * len(seeds):(i + 1) * len(seeds)]
        entry = dict(row=list(row), mx=mx, format=table3_format(*row, mx), cells=cells, **summarise(cells))
        results.append(entry)
        if log:
            log(f"{_row_label(row):<14} Mx={mx}: {fmt_acc(entry)}  ({entry['seconds']:.0f}s)")
    return results


def sweep_methods(base: TrainConfig, dataset, seeds: list, methods=METHODS, log=None, jobs: int = 1) -> list:
    specs = [(m.format, m.options, seed) for m in methods for seed in seeds]
    done = run_cells(base, dataset, specs, jobs, log)
    results = []
    for i, method in enumerate(methods):
        cells = done[i * len(seeds):(i + 1) * len(seeds)]
        entry = dict(key=method.key, label=method.label, format=method.format, options=method.options, cells=cells,
                     **summarise(cells))
        results.append(entry)
        if log:
            log(f"{method.label:<28} {fmt_acc(entry)}  ({entry['seconds']:.0f}s)")
    return results


def _row_label(row) -> str:
    group, mg, ex = row
    return f"{group}, {'None' if mg is None else mg}, {ex}"


def table3_markdown(results: list, mx_columns=MX_COLUMNS, with_paper: bool = True) -> str:
    by_key = {(tuple(r["row"]), r["mx"]): r for r in results}
    rows = list(dict.fromkeys(tuple(r["row"]) for r in results))
    head = "| #group, Mg, Ex | " + " | ".join(f"Mx={mx}" for mx in mx_columns) + " |"
    if with_paper:
        head += " paper (ResNet-20, CIFAR-10) |"
    lines = [head, "|" + "---|" * (len(mx_columns) + 1 + with_paper)]
    for row in rows:
        cells = [fmt_acc(by_key[(row, mx)]) if (row, mx) in by_key else "" for mx in mx_columns]
        line = f"| {_row_label(row)} | " + " | ".join(cells) + " |"
        if with_paper:
            paper = PAPER_TABLE3.get(row)
            line += " " + (" / ".join("Div." if v is None else f"{v:g}" for v in paper) if paper else "") + " |"
        lines.append(line)
    return "\n".join(lines)


def paired_gap(entry: dict, base: dict) -> Optional[tuple]:
    """Mean and standard error of (method - fp32) over the seeds both ran without diverging: a
    seed fixes the init and data order, so pairing removes most of the seed-to-seed spread."""
    ref = {c["seed"]: c["test_acc"] for c in base["cells"] if not _diverged(c)}
    diffs = [c["test_acc"] - ref[c["seed"]] for c in entry["cells"] if not _diverged(c) and c["seed"] in ref]
    if not diffs:
        return None
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), se


def methods_markdown(results: list) -> str:
    base = next((r for r in results if r["format"] == "fp32"), None)
    lines = ["| method | format | test acc (%), mean ± stdev | vs fp32, paired mean ± s.e. | time (all seeds) |",
             "|---|---|---|---|---|"]
    for r in results:
        gap = paired_gap(r, base) if base is not None and r is not base else None
        gap_text = "" if gap is None else f"{gap[0]:+.2f} ± {gap[1]:.2f}"
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        fmt = r["format"] + (f" ({opts})" if opts else "")
        lines.append(f"| {r['label']} | `{fmt}` | {fmt_acc(r)} | {gap_text} | {r['seconds']:.0f}s |")
    return "\n".join(lines)


def lm_markdown(results: list) -> str:
    """A language model's table: validation bits per character (test_loss / ln 2), mean ± s.e.
    over seeds, and the paired gap to fp32 (mean ± s.e.), in bpc and relative."""
    import math

    base = next((r for r in results if r["format"] == "fp32"), None)
    bpc = lambda c: c["test_loss"] / math.log(2)  # noqa: E731
    ref = {c["seed"]: bpc(c) for c in base["cells"] if not _diverged(c)} if base else {}
    lines = ["| method | format | val loss (nats/char) | val bits/char, mean ± s.e. | vs fp32 (bpc), paired | vs fp32 (%) "
             "| time (all seeds) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        ok = [c for c in r["cells"] if not _diverged(c) and c.get("test_loss") is not None]
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        fmt = r["format"] + (f" ({opts})" if opts else "")
        if not ok:
            lines.append(f"| {r['label']} | `{fmt}` | Div. | Div. | | | {r['seconds']:.0f}s |")
            continue
        loss, bits = _mean_se([c["test_loss"] for c in ok]), _mean_se([bpc(c) for c in ok])
        diffs = [bpc(c) - ref[c["seed"]] for c in ok if c["seed"] in ref] if r is not base else []
        gap = _mean_se(diffs) if diffs else None
        rel = _mean_se([100.0 * (bpc(c) / ref[c["seed"]] - 1.0) for c in ok if c["seed"] in ref]) if diffs else None
        div = f" ({len(r['cells']) - len(ok)}/{len(r['cells'])} Div.)" if len(ok) < len(r["cells"]) else ""
        lines.append(f"| {r['label']} | `{fmt}` | {loss[0]:.4f} ± {loss[1]:.4f} | {bits[0]:.4f} ± {bits[1]:.4f}{div} | "
                     + ("" if gap is None else f"{gap[0]:+.4f} ± {gap[1]:.4f}") + " | "
                     + ("" if rel is None else f"{rel[0]:+.2f} ± {rel[1]:.2f}") + f" | {r['seconds']:.0f}s |")
    return "\n".join(lines)


def _mean_se(values: list) -> tuple:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.fmean(values), se


def _methods_table(results: list, data: str) -> str:
    return lm_markdown(results) if str(data).startswith("pydoc") else methods_markdown(results)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="table3", choices=("table3", "methods"))
    p.add_argument("--data", default="digits", help="digits | pydoc | cifar10:PATH | imagenet:PATH")
    p.add_argument("--model", help="default: the data set's model (digits_cnn, resnet20, ...)")
    p.add_argument("--epochs", type=int, default=6, help="per cell (default 6: a quick digits sweep)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seeds", default="0", help="comma-separated seeds; cells report mean ± stdev")
    p.add_argument("--mx", default="4,3,2,1", help="table3 columns (Mx values)")
    p.add_argument("--methods", help="methods grid: comma-separated keys (default all: "
                   + ",".join(m.key for m in METHODS) + ")")
    p.add_argument("--rows", help="table3 rows to run, e.g. 'nc,1,2;1,None,0' (default: all nine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--all-layers", action="store_true", help="quantize the first and last layers too")
    p.add_argument("--backend", default="software", choices=("software", "emulation", "board"))
    p.add_argument("--limit-train", type=int)
    p.add_argument("--limit-test", type=int)
    p.add_argument("--download", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads when --jobs 1 (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="cells in parallel processes (one torch thread each)")
    p.add_argument("--json", help="write every cell (accuracy, seconds) to this file")
    p.add_argument("--render", metavar="FILE.json", help="print the table of a saved sweep and exit")
    return p


def parse_rows(text: Optional[str]) -> tuple:
    if not text:
        return TABLE3_ROWS
    rows = []
    for part in text.split(";"):
        items = [v.strip() for v in part.split(",")]
        if len(items) != 3:
            raise ValueError(f"--rows item {part!r}: expected GROUP,MG,EX such as nc,1,2 or 1,None,0")
        group, mg, ex = items
        if group not in ("1", "n", "c", "nc"):
            raise ValueError(f"--rows group {group!r}: expected 1, n, c or nc")
        rows.append((group, None if mg.lower() == "none" else int(mg), int(ex)))
    return tuple(rows)


SAVED_KEYS = ("grid", "data", "model", "epochs", "batch_size", "lr", "seeds", "results")


def load_saved(path: str) -> dict:
    """A sweep saved with --json, checked enough to render; a ValueError says what is wrong."""
    what = "a file written by lowbit sweep --json"
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"--render {path}: no such file; give {what}") from None
    except IsADirectoryError:
        raise ValueError(f"--render {path}: is a folder; give {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"--render {path}: not JSON ({str(exc)[:200]}); give {what}") from None
    missing = [k for k in SAVED_KEYS if k not in saved] if isinstance(saved, dict) else list(SAVED_KEYS)
    if missing:
        raise ValueError(f"--render {path}: not a saved sweep (no {', '.join(missing)}); give {what}")
    if saved["grid"] not in ("table3", "methods") or not isinstance(saved["results"], list):
        raise ValueError(f"--render {path}: grid {str(saved['grid'])[:40]!r} or its results are not a saved sweep's")
    return saved


def render(path: str) -> str:
    """The markdown table of a sweep saved with --json (cells re-summarised with today's rules)."""
    saved = load_saved(path)
    try:
        return _render(saved)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # hand-edited or from another program
        raise ValueError(f"--render {path}: a result entry is malformed ({type(exc).__name__}: {str(exc)[:120]}); "
                         "give a file written by lowbit sweep --json") from None


def _render(saved: dict) -> str:
    for entry in saved["results"]:
        entry.update(summarise(entry["cells"]))
    head = (f"{saved['grid']} on {saved['data']} / {saved['model']}, {saved['epochs']} epochs, batch "
            f"{saved['batch_size']}, lr {saved['lr']}, seeds {saved['seeds']}")
    mx_columns = tuple(dict.fromkeys(e["mx"] for e in saved["results"])) if saved["grid"] == "table3" else None
    table = table3_markdown(saved["results"], mx_columns) if mx_columns else _methods_table(saved["results"],
                                                                                           saved["data"])
    return head + "\n\n" + table


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK) or os.path.isdir(path):
        raise ValueError(f"--json {path}: cannot write there (is {folder} an existing, writable folder?)")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.render:
        try:
            print(render(args.render))
        except (ValueError, OSError) as exc:
            print(f"lowbit sweep: error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.json:
            _check_writable(args.json)  # before the sweep runs, not after hours of it
        seeds = [int(s) for s in args.seeds.split(",")]
        mx_columns = tuple(int(m) for m in args.mx.split(","))
        rows = parse_rows(args.rows)
        methods = pick_methods(args.methods)
        base = TrainConfig(model=args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, device=args.device, backend=args.backend, limit_train=args.limit_train,
                           limit_test=args.limit_test, download=args.download, progress=False,
                           threads=args.threads, skip_first_last=not args.all_layers).resolved()
        dataset = load_dataset(base)
    except (ValueError, OSError, RuntimeError, ImportError) as exc:
        print(f"lowbit sweep: error: {exc}", file=sys.stderr)
        return 2
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    print(f"lowbit sweep: {args.grid} on {base.data} / {base.model}, {base.epochs} epochs per cell, "
          f"batch {base.batch_size}, lr {base.lr}, seeds {seeds}, backend {base.backend}", flush=True)
    t0 = time.perf_counter()
    if args.grid == "table3":
        results = sweep_table3(base, dataset, seeds, mx_columns, rows, log, args.jobs)
        text = table3_markdown(results, mx_columns)
    else:
        results = sweep_methods(base, dataset, seeds, methods, log=log, jobs=args.jobs)
        text = _methods_table(results, base.data)
    print(text)
    print(f"total {time.perf_counter() - t0:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"grid": args.grid, "data": base.data, "model": base.model, "epochs": base.epochs,
                       "batch_size": base.batch_size, "lr": base.lr, "seeds": seeds, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
