"""``open_device``: one entry point to the accelerators, returning a ``lowbit.backends.Backend``.

    open_device("pynq", bitstream="bitstreams/zcu104/lowbit_gemm.bit")     # Zynq board, PYNQ
    open_device("alveo", xclbin="bitstreams/u250/lowbit_gemm.xclbin")     # Alveo card, XRT (pyxrt)
    open_device("remote:192.168.2.99")       # a board on the network (`lowbit serve` or PYNQ 4.0's remote service)
    open_device("board")                     # the board this runs on (PYNQ, else Alveo); an error if there is none
    open_device("emulation")                                              # the HLS C++ on the CPU
    open_device("auto")         # a PYNQ board, else an Alveo card, else emulation (and says so on stderr)

Only "auto" ever falls back: asking for a board where there is none is an error that says why and
what to do.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Optional

from . import wire
from .backends.base import Backend
from .board.errors import BoardError

KINDS = ("pynq", "alveo", "board", "emulation", "auto", "remote:HOST[:PORT]")
# Where "board" and "auto" look for bitstreams/<board>/ folders: $LOWBIT_BITSTREAMS, else ./bitstreams.
REPO_BITSTREAMS = Path(os.environ.get("LOWBIT_BITSTREAMS") or "bitstreams")


class ManifestMismatch(RuntimeError):
    """The bitstream's manifest.json does not describe a build for this host library."""


class NoBoardError(BoardError):
    """A board was asked for and there is none here (or no bitstream for it)."""


NO_BOARD_HELP = ("run this on the board itself, reach a board over the network with "
                 "open_device('remote:HOST[:PORT]') / `lowbit train --remote HOST` (start `lowbit serve` on the board), "
                 "or use the emulation backend (`--backend emulation`, open_device('emulation'))")


def _hint(board: str) -> str:
    return (f"build one with `lowbit build --board {board}` or download the release bitstream for wire "
            f"version {wire.WIRE_VERSION} into bitstreams/{board}/")


def read_manifest(path: Path) -> dict:
    """The manifest.json beside a bitstream (``lowbit.build`` writes it), checked: wire version,
    files' sha256 (``lowbit.build.verify_manifest``), and that it describes our IP."""
    from .build import verify_manifest

    folder = path.parent if path.suffix else path
    if not (folder / "manifest.json").is_file():
        raise ManifestMismatch(f"no manifest.json beside {path}: lowbit cannot tell which wire protocol it speaks; "
                               + _hint(folder.name or "<board>"))
    try:
        manifest = verify_manifest(folder)
    except (ValueError, KeyError, TypeError) as err:  # JSON errors are ValueErrors too
        raise ManifestMismatch(f"{err}; or download the release bitstream for wire version {wire.WIRE_VERSION} "
                               f"into bitstreams/{folder.name}/") from err
    board = str(manifest.get("board", folder.name))
    if manifest.get("vlnv", wire.VLNV) != wire.VLNV:
        raise ManifestMismatch(f"{folder / 'manifest.json'} describes IP {manifest.get('vlnv')}, expected {wire.VLNV}; "
                               + _hint(board))
    expected_id = (wire.IP_ID << 16) | wire.WIRE_VERSION
    if manifest.get("id_version", expected_id) != expected_id:
        found = manifest["id_version"]
        found = f"0x{found:08x}" if isinstance(found, int) else f"{found!r:.40}"
        raise ManifestMismatch(f"{folder / 'manifest.json'} says ID_VERSION {found}, this host "
                               f"expects 0x{expected_id:08x}; " + _hint(board))
    return manifest


def _find_file(path: Path, suffix: str) -> Path:
    if path.is_dir():
        found = sorted(path.glob(f"*{suffix}"))
        if len(found) != 1:
            raise FileNotFoundError(f"expected one {suffix} file in {path}, found {len(found)}; pass the file itself")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; " + _hint(path.parent.name or "<board>"))
    return path


def open_pynq(bitstream, *, device=None, download: Optional[bool] = None, timeout_s: float = 10.0,
              ip_name: Optional[str] = None, dma_name: Optional[str] = None) -> Backend:
    """Load the overlay (drivers registered first), check versions, return a ``PynqBackend``."""
    from .board import compat

    compat.check_supported()
    import lowbit_drivers  # noqa: F401  must be imported before the Overlay binds drivers
    import pynq

    from .board.packing import KernelLimits
    from .board.pynq_backend import PynqBackend

    bit = _find_file(Path(bitstream), ".bit")
    manifest = read_manifest(bit)
    if device is None and not _pynq_board_present():
        raise NoBoardError("open_device('pynq'): this machine is not a PYNQ board (pynq finds no Zynq device); "
                           + NO_BOARD_HELP)
    if download is None:
        download = not getattr(device, "simulated", False)
    overlay = pynq.Overlay(str(bit), download=download, device=device)
    limits = KernelLimits.from_manifest(manifest)
    if not limits.same_as_emulation:
        warnings.warn(f"{bit.parent / 'manifest.json'}: the kernel holds A_ELEMS={limits.a_elems}, "
                      f"SCALE_BUF={limits.scale_buf}; the emulation backend holds more, so its K-tiles differ and "
                      "results agree with it up to the fp32 rounding of the K-tile sums, not bit for bit")
    return PynqBackend(overlay, ip_name=ip_name, dma_name=dma_name, board=str(manifest.get("board", bit.parent.name)),
                       timeout_s=timeout_s, limits=limits)


def _pynq_board_present() -> bool:
    try:
        import pynq
    except ImportError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return any(type(d).__name__ == "EmbeddedDevice" for d in pynq.Device.devices)
        except Exception:  # noqa: BLE001  probing a PC without XRT may fail in many ways; none means "no board"
            return False


def _default_file(suffix: str) -> Optional[Path]:
    """The first bitstreams/<board>/ folder with a manifest.json and one ``suffix`` file."""
    if not REPO_BITSTREAMS.is_dir():
        return None
    for manifest in sorted(REPO_BITSTREAMS.glob("*/manifest.json")):
        found = sorted(manifest.parent.glob(f"*{suffix}"))
        if len(found) == 1:
            return found[0]
    return None


def _alveo_present() -> bool:
    try:
        import pyxrt

        pyxrt.device(0)
        return True
    except Exception:  # noqa: BLE001  no XRT, no card, no driver: all mean "no Alveo"
        return False


def open_device(kind: str = "auto", *, bitstream=None, xclbin=None, verbose: bool = True, **kwargs) -> Backend:
    """A backend for ``kind``: "pynq" (needs ``bitstream``), "alveo" (needs ``xclbin``), "board" (this
    machine's PYNQ board or Alveo card), "remote:HOST[:PORT]", "emulation", "auto"."""
    kind = str(kind).strip()
    if kind.lower().startswith("remote:"):
        from .board.remote import open_remote

        return open_remote(kind, bitstream=bitstream, **kwargs)
    kind = kind.lower()
    if kind not in KINDS:
        raise ValueError(f"unknown device kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "board":
        return open_board(bitstream, xclbin, **kwargs)
    if kind == "pynq":
        if bitstream is None:
            raise ValueError("open_device('pynq') needs bitstream= (a .bit with its .hwh and manifest.json beside it)")
        return open_pynq(bitstream, **kwargs)
    if kind == "alveo":
        if xclbin is None:
            raise ValueError("open_device('alveo') needs xclbin= (the lowbit .xclbin with manifest.json beside it)")
        from .board.alveo import open_alveo

        return open_alveo(xclbin, **kwargs)
    if kind == "emulation":
        from .backends.emulation import EmulationBackend

        return EmulationBackend()
    return _open_auto(bitstream, xclbin, verbose, **kwargs)


def open_board(bitstream=None, xclbin=None, **kwargs) -> Backend:
    """This machine's PYNQ board, else its Alveo card; ``NoBoardError`` (why, and what to do) if neither."""
    if _pynq_board_present():
        bit = bitstream or _default_file(".bit")
        if bit is None:
            raise NoBoardError(f"a PYNQ board is here but no bitstream: pass --bitstream PATH (bitstream=) or put one "
                               f"in {REPO_BITSTREAMS}/<board>/; " + _hint("<board>"))
        return open_pynq(bit, **kwargs)
    xcl = xclbin or _default_file(".xclbin")
    if _alveo_present():
        if xcl is None:
            raise NoBoardError(f"an Alveo card is here but no .xclbin: pass xclbin= or put one in {REPO_BITSTREAMS}/<card>/")
        from .board.alveo import open_alveo

        return open_alveo(xcl, **kwargs)
    raise NoBoardError("no board here: pynq finds no Zynq device and XRT no Alveo card; " + NO_BOARD_HELP)


def _open_auto(bitstream, xclbin, verbose: bool, **kwargs) -> Backend:
    backend, reason = _auto_choice(bitstream, xclbin, **kwargs)
    if verbose:
        print(f"lowbit.open_device('auto'): {reason}", file=sys.stderr)
    return backend


def _auto_choice(bitstream, xclbin, **kwargs):
    board = _pynq_board_present()
    bit = bitstream or _default_file(".bit")
    if board and bit is not None:
        return open_pynq(bit, **kwargs), f"PYNQ board with {bit}"
    xcl = xclbin or _default_file(".xclbin")
    if xcl is not None and _alveo_present():
        from .board.alveo import open_alveo

        return open_alveo(xcl, **kwargs), f"Alveo card with {xcl}"
    from .backends.emulation import EmulationBackend

    reason = ("a PYNQ board but no bitstream (pass bitstream= or put one in bitstreams/<board>/)" if board
              else "no PYNQ board or Alveo card found")
    return EmulationBackend(), reason + "; using the emulation backend (the HLS C++ on this CPU)"
