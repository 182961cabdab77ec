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
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import wire
from .kernel import boards
from .kernel.boards import BoardConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
BITSTREAMS = REPO_ROOT / "bitstreams"
MANIFEST = "manifest.json"


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        "files": {f: {"sha256": sha256_file(board_dir / f), "bytes": (board_dir / f).stat().st_size} for f in files},
        "tool_version": tool_version,
        "source_commit": commit if commit is not None else source_commit(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tmp = board_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(board_dir / MANIFEST)
    return board_dir / MANIFEST


def verify_manifest(board_dir: Path) -> dict:
    """Load a manifest and check its files' sha256 and its WIRE_VERSION; raises ValueError."""
    board_dir = Path(board_dir)
    path = board_dir / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path} not found: build the overlay with `lowbit build --board ...` first")
    manifest = _load_json_object(path)
    if manifest.get("wire_version") != wire.WIRE_VERSION:
        raise ValueError(f"{path}: overlay speaks wire version {manifest.get('wire_version')!r:.40}, this host "
                         f"{wire.WIRE_VERSION}; rebuild it with `lowbit build --board {manifest.get('board')!s:.40}`")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(e, dict) and isinstance(e.get("sha256"), str)
                                              for e in files.values()):
        raise ValueError(f'{path}: "files" must map each file name to {{"sha256": ..., "bytes": ...}} as '
                         "`lowbit build` writes it; rebuild or restore the manifest")
    for name, entry in files.items():
        f = _listed_file(board_dir, name, path)
        if not f.is_file() or sha256_file(f) != entry["sha256"]:
            raise ValueError(f"{f}: missing or its sha256 differs from {path}; rebuild or restore the file")
    return manifest


def _load_json_object(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not JSON ({err}); rebuild or restore it") from None
    if not isinstance(manifest, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(manifest), "null")
        raise ValueError(f"{path} holds a JSON {kind}, not the object `lowbit build` writes; "
                         "rebuild or restore it")
    return manifest


def _listed_file(board_dir: Path, name: str, manifest: Path) -> Path:
    """A file a manifest lists: only files inside its folder (no absolute paths, no ``..``, no link
    out of it), so a manifest a user is handed cannot point the checks at other files."""
    f = board_dir / name
    outside = (not name or Path(name).is_absolute() or ".." in Path(name).parts
               or not f.resolve().is_relative_to(board_dir.resolve()))
    if outside:
        raise ValueError(f"{manifest} lists {name!r:.80}, which is not a file inside {board_dir}; a manifest "
                         "lists only the files beside it: rebuild or restore it")
    return f


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
        return 1
    from . import reference_kernel

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
