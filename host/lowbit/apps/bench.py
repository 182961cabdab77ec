"""`lowbit bench [NAME ...]`: run the side-by-side benchmarks in benchmarks/ (each prints ratios)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[3]  # host/lowbit -> the repository, when this is a source checkout
# The checkout's benchmarks/ when lowbit runs from one, else ./benchmarks (an installed wheel has none).
BENCH_DIR = _CHECKOUT / "benchmarks" if (_CHECKOUT / "pyproject.toml").is_file() else Path("benchmarks")


def available() -> list:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.name.startswith("_"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lowbit bench", description=__doc__)
    p.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    args = p.parse_args(argv)
    if not BENCH_DIR.is_dir():
        print(f"lowbit bench: no benchmarks/ folder at {BENCH_DIR.resolve()}: the benchmarks live in the source "
              "checkout (git clone, then run lowbit bench there)", file=sys.stderr)
        return 2
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"lowbit bench: unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        print(f"== benchmarks/{name}.py", flush=True)
        failed |= subprocess.call([sys.executable, str(BENCH_DIR / f"{name}.py")])
    return 1 if failed else 0
