"""Locate the headers the HLS C-simulation builds need.

Xilinx's Apache-2.0 ``ap_int.h`` family comes from the hls4ml wheel (installed with --no-deps,
found by path: hls4ml is never imported). The project's own sources live in ``hls/``.
"""
from __future__ import annotations

import os
import site
import sys
from pathlib import Path

INSTALL_HINT = "pip install 'lowbit[emulation]'` (or, for the headers alone, `pip install --no-deps hls4ml==1.3.0"
_SUBDIR = Path("hls4ml") / "templates" / "vivado" / "ap_types"
REPO_ROOT = Path(__file__).resolve().parents[3]
# An installed wheel carries the sources as lowbit/hls/ (setup.py); a source checkout has them at hls/.
_PACKAGED = Path(__file__).resolve().parents[1] / "hls"
HLS_DIR = _PACKAGED if (_PACKAGED / "include").is_dir() else REPO_ROOT / "hls"
CXX_FLAGS = ("-std=c++14", "-O2", "-Wno-unknown-pragmas")


def _site_dirs() -> list:
    dirs = list(sys.path)
    try:
        dirs += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:  # some embedded interpreters lack these
        pass
    return [Path(d) for d in dict.fromkeys(dirs) if d]


def ap_types_dir() -> Path:
    """The folder holding ap_int.h: $LOWBIT_AP_TYPES, else the hls4ml wheel's copy."""
    env = os.environ.get("LOWBIT_AP_TYPES")
    candidates = [Path(env)] if env else [d / _SUBDIR for d in _site_dirs()]
    for cand in candidates:
        if (cand / "ap_int.h").is_file():
            return cand
    where = f"$LOWBIT_AP_TYPES={env}" if env else "the Python path"
    raise FileNotFoundError(
        f"Xilinx ap_int headers not found in {where}: the HLS C-simulation needs them; "
        f"install them with `{INSTALL_HINT}` (or point $LOWBIT_AP_TYPES at a folder with ap_int.h)"
    )


def hls_include_dir() -> Path:
    path = HLS_DIR / "include"
    if not (path / "lowbit" / "gemm.hpp").is_file():
        raise FileNotFoundError(f"HLS sources not found under {HLS_DIR}; reinstall lowbit (the wheel ships them as lowbit/hls/) or run from a source checkout")
    return path


def csim_include_dir() -> Path:
    """hls/csim: the g++-only shims (ap_axi_sdata.h); never on the Vitis include path."""
    return HLS_DIR / "csim"


def kernel_sources() -> list:
    """The C++ translation units of both tops plus the emulation C ABI."""
    return [HLS_DIR / "emu" / "lowbit_emu.cpp",
            HLS_DIR / "kernels" / "lowbit_gemm_axis" / "lowbit_gemm_axis.cpp",
            HLS_DIR / "kernels" / "lowbit_gemm_mm" / "lowbit_gemm_mm.cpp"]


def generated_header_main(prog: str, description: str, rel_path: Path, emit, argv=None) -> int:
    """The command that writes a C++ header generated from Python (``lowbit wire``, ``lowbit boards``)."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--emit-hpp", action="store_true", help=f"write {rel_path}")
    p.add_argument("--out", type=Path, default=None, help=f"path to write (default: the repository's {rel_path})")
    args = p.parse_args(argv)
    if not args.emit_hpp:
        p.print_help()
        return 2
    out = args.out or REPO_ROOT / rel_path
    out.write_text(emit())
    print(f"wrote {out}")
    return 0
