"""`lowbit build --board pynq-z2|zcu104|u50|u250`: HLS IP and bitstream with the Xilinx tools.

Zynq boards: golden vectors -> ``vitis_hls -f tcl/hls.tcl`` (csim, csynth, export to the IP
catalog) -> ``vivado -source tcl/bd_zynq.tcl`` (PS + AXI DMA + IP) -> .bit + .hwh.
Alveo: ``tcl/vpp_build.sh`` (v++ compile + link with tcl/alveo_<board>.cfg) -> .xclbin.
The results land in ``bitstreams/<board>/`` with ``manifest.json`` (``write_manifest``).
Without the tools on PATH the command stops at once and names the missing one.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from lowbit.kernel import wire
from lowbit.kernel import boards
from lowbit.kernel.boards import BoardConfig
from lowbit.board.manifest import MANIFEST, sha256_file, verify_manifest  # noqa: F401  (re-exported)

REPO_ROOT = Path(__file__).resolve().parents[3]
BITSTREAMS = REPO_ROOT / "bitstreams"


@dataclass(frozen=True)
class Board:
    """How ``lowbit build`` builds for a board; every kernel fact comes from ``config`` (the record
    in lowbit.kernel.boards)."""

    config: BoardConfig
    kernel: str  # HLS top built for it
    tools: tuple
    outputs: tuple  # files in bitstreams/<board>/

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def part(self) -> str:
        return self.config.part.name

    @property
    def clock_ns(self) -> float:
        return self.config.clock_ns


def _board(config: BoardConfig) -> Board:
    if config.kind == "zynq":
        return Board(config, "lowbit_gemm_axis", ("vitis_hls", "vivado"), ("lowbit_gemm.bit", "lowbit_gemm.hwh"))
    return Board(config, "lowbit_gemm_mm", ("v++",), ("lowbit_gemm.xclbin",))


BOARDS: Dict[str, Board] = {name: _board(cfg) for name, cfg in boards.BOARDS.items()}


def ip_repo(board: Board) -> Path:
    """The unpacked IP Vivado catalogues: Vitis HLS's ``<solution>/impl/ip`` (the .zip is not)."""
    return REPO_ROOT / "build" / "hls" / board.kernel / "sol" / "impl" / "ip"


def missing_tools(board: Board) -> List[str]:
    return [tool for tool in board.tools if shutil.which(tool) is None]


def tool_version(tool: str) -> str:
    """First line of ``<tool> -version`` (or 'unknown')."""
    try:
        proc = subprocess.run([tool, "-version"], capture_output=True, text=True, timeout=120)
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        return lines[0] if lines else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def source_commit(root: Path = REPO_ROOT) -> str:
    """HEAD of the checkout, with ``-dirty`` if hls/ or tcl/ differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "hls", "tcl"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_manifest(board_dir: Path, board: str, files: Sequence[str], *, tool_version: str,
                   commit: Optional[str] = None, arith: str = "mls") -> Path:
    """Write ``manifest.json`` describing the built files of ``board_dir`` (write then rename):
    what the bitstream carries (``arith``, ``mls_max``), its buffers (``kernel_limits``, read back
    by ``KernelLimits.from_manifest``) and array, all from the board record."""
    board_dir = Path(board_dir)
    info = BOARDS[board]
    build_cfg = boards.build_of(board, arith)
    array = info.config.array(arith)
    missing = [f for f in files if not (board_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"cannot write the manifest: {', '.join(missing)} missing in {board_dir}")
    manifest = {
        "board": board,
        "part": info.part,
        "kernel": info.kernel,
        "vlnv": wire.VLNV,
        "wire_version": wire.WIRE_VERSION,
        "id_version": (wire.IP_ID << 16) | wire.WIRE_VERSION,
        "arith": arith,
        "mls_max": list(build_cfg.mls_max),
        "kernel_build": build_cfg.name,
        "kernel_limits": build_cfg.limits.to_manifest(),
        "array": {"rows": array.rows, "cols": array.cols, "simd": array.simd, "interleave": array.interleave},
        "clock_mhz": info.config.clock_mhz,
        "compute_units": info.config.compute_units,  # the backends check the overlay against it
        "files": {f: {"sha256": sha256_file(board_dir / f), "bytes": (board_dir / f).stat().st_size} for f in files},
        "tool_version": tool_version,
        "source_commit": commit if commit is not None else source_commit(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tmp = board_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(board_dir / MANIFEST)
    return board_dir / MANIFEST


def kernel_limits(board: str):
    """The on-chip buffers built for ``board`` (the board record)."""
    return boards.limits_of(board)


def plan(board: Board, out_dir: Path, golden: Path, steps: str, arith: str = "mls") -> List[List[str]]:
    """The commands of the build, in order."""
    build_cfg = boards.build_of(board.name, arith)
    if board.kind == "alveo":
        return [["bash", str(REPO_ROOT / "tcl" / "vpp_build.sh"), board.name, str(out_dir), "hw", build_cfg.define,
                 f"{board.config.clock_mhz:g}"]]
    return [
        ["vitis_hls", "-f", str(REPO_ROOT / "tcl" / "hls.tcl"), "-tclargs", board.kernel, board.part,
         str(board.clock_ns), steps, str(golden), build_cfg.define],
        ["vivado", "-mode", "batch", "-source", str(REPO_ROOT / "tcl" / "bd_zynq.tcl"), "-tclargs", board.name,
         str(ip_repo(board)), str(out_dir), f"{board.config.clock_mhz:g}", str(board.config.hp_bits),
         str(board.config.compute_units), str((wire.IP_ID << 16) | wire.WIRE_VERSION)],
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lowbit build", description=__doc__.splitlines()[0])
    p.add_argument("--board", required=True, choices=sorted(BOARDS))
    p.add_argument("--arith", default="mls", choices=boards.FAMILIES,
                   help="the arithmetic family the bitstream carries (one per bitstream)")
    p.add_argument("--out", type=Path, default=None, help="default: bitstreams/<board>")
    p.add_argument("--steps", default="csim,csynth,export", help="Vitis HLS steps (add cosim for RTL co-simulation)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    board = BOARDS[args.board]
    out_dir = args.out or BITSTREAMS / board.name
    golden = REPO_ROOT / "build" / "golden"
    commands = plan(board, out_dir, golden, args.steps, args.arith)
    if args.dry_run:
        for cmd in commands:
            print("$ " + " ".join(cmd))
        return 0
    missing = missing_tools(board)
    if missing:
        print(f"lowbit build: {', '.join(missing)} not found on PATH; {args.board} needs "
              f"{' and '.join(board.tools)} (source <Vitis install>/settings64.sh first). "
              "Without the Xilinx tools, use the emulation backend.", file=sys.stderr)
        return 2  # the environment lacks a tool: a user error under the CLI rule
    from lowbit.kernel import reference as reference_kernel

    reference_kernel.main(["--golden", str(golden), "--board", board.name, "--arith", args.arith])
    for cmd in commands:
        print("$ " + " ".join(cmd), flush=True)
        if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
            print(f"lowbit build: {cmd[0]} failed; see its log above", file=sys.stderr)
            return 1
    version = tool_version(board.tools[-1])
    path = write_manifest(out_dir, board.name, board.outputs, tool_version=version, arith=args.arith)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
