"""`lowbit check`: what this installation can run (compiler, ap_int headers, emulation kernel,
pynq, devices, Xilinx tools). Exit status 0 when the emulation backend works, else 1."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from typing import Callable, List


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True  # needed for the emulation backend


def _run(name: str, fn: Callable[[], str], required: bool = True) -> Check:
    try:
        return Check(name, True, fn(), required)
    except Exception as exc:  # report every failure as a line, never a traceback
        return Check(name, False, f"{type(exc).__name__}: {exc}", required)


def _compiler() -> str:
    from lowbit.runtime.native import find_compiler

    return find_compiler()


def _headers() -> str:
    from lowbit.kernel.headers import ap_types_dir

    return str(ap_types_dir())


def _kernel(build: bool) -> Callable[[], str]:
    def fn() -> str:
        if not build:
            return "skipped (--no-build)"
        from lowbit.backends.emulation import kernel_lib, run_axis_stream
        from lowbit.kernel.wire import Status, status_word

        kernel_lib()
        res = run_axis_stream([0, 0, 0, 0])  # bad magic: must answer with a status word, not hang
        if res.status != Status.BAD_MAGIC or int(res.out_words[-1]) != status_word(Status.BAD_MAGIC):
            raise RuntimeError(f"kernel answered {res.status!r} to a malformed header")
        return "built and answers a malformed header with BAD_MAGIC"
    return fn


def _pynq() -> str:
    import pynq

    return f"pynq {getattr(pynq, '__version__', '?')}"


def _devices() -> str:
    import warnings

    import pynq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynq warns when XRT is not sourced; reported below instead
        devices = list(pynq.Device.devices)
    if not devices:
        raise RuntimeError("no PYNQ/XRT device found (fine without a board: use backend='emulation')")
    return ", ".join(getattr(d, "name", type(d).__name__) for d in devices)


def _tool(name: str) -> Callable[[], str]:
    def fn() -> str:
        path = shutil.which(name)
        if path is None:
            raise RuntimeError(f"{name} not on PATH (needed only by `lowbit build`)")
        return path
    return fn


def run_checks(build: bool = True) -> List[Check]:
    return [
        _run("C++ compiler", _compiler),
        _run("ap_int headers", _headers),
        _run("emulation kernel", _kernel(build)),
        _run("pynq", _pynq, required=False),
        _run("board devices", _devices, required=False),
        *(_run(tool, _tool(tool), required=False) for tool in ("vitis_hls", "vivado", "v++")),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lowbit check", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-build", action="store_true", help="do not compile the emulation kernel")
    args = p.parse_args(argv)
    checks = run_checks(build=not args.no_build)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            mark = "ok  " if c.ok else ("FAIL" if c.required else "--  ")
            print(f"{mark} {c.name:18s} {c.detail}")
    return 0 if all(c.ok for c in checks if c.required) else 1


if __name__ == "__main__":
    sys.exit(main())
