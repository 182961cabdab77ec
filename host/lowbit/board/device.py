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
from pathlib import Path
from typing import Optional

from lowbit.backends.base import Backend
from lowbit.board.errors import NO_BOARD_HELP, BoardError, NoBoardError  # noqa: F401  (re-exported)
from lowbit.board.manifest import ManifestMismatch, find_file, hint, read_manifest  # noqa: F401
from lowbit.board.overlay import open_pynq, pynq_board_present  # noqa: F401

KINDS = ("pynq", "alveo", "board", "emulation", "auto", "remote:HOST[:PORT]")
# Where "board" and "auto" look for bitstreams/<board>/ folders: $LOWBIT_BITSTREAMS, else ./bitstreams.
REPO_BITSTREAMS = Path(os.environ.get("LOWBIT_BITSTREAMS") or "bitstreams")


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
        from lowbit.board.remote import open_remote

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
        from lowbit.board.alveo import open_alveo

        return open_alveo(xclbin, **kwargs)
    if kind == "emulation":
        from lowbit.backends.emulation import EmulationBackend

        return EmulationBackend()
    return _open_auto(bitstream, xclbin, verbose, **kwargs)


def open_board(bitstream=None, xclbin=None, **kwargs) -> Backend:
    """This machine's PYNQ board, else its Alveo card; ``NoBoardError`` (why, and what to do) if neither."""
    if pynq_board_present():
        bit = bitstream or _default_file(".bit")
        if bit is None:
            raise NoBoardError(f"a PYNQ board is here but no bitstream: pass --bitstream PATH (bitstream=) or put one "
                               f"in {REPO_BITSTREAMS}/<board>/; " + hint("<board>"))
        return open_pynq(bit, **kwargs)
    xcl = xclbin or _default_file(".xclbin")
    if _alveo_present():
        if xcl is None:
            raise NoBoardError(f"an Alveo card is here but no .xclbin: pass xclbin= or put one in {REPO_BITSTREAMS}/<card>/")
        from lowbit.board.alveo import open_alveo

        return open_alveo(xcl, **kwargs)
    raise NoBoardError("no board here: pynq finds no Zynq device and XRT no Alveo card; " + NO_BOARD_HELP)


def _open_auto(bitstream, xclbin, verbose: bool, **kwargs) -> Backend:
    backend, reason = _auto_choice(bitstream, xclbin, **kwargs)
    if verbose:
        print(f"lowbit.open_device('auto'): {reason}", file=sys.stderr)
    return backend


def _auto_choice(bitstream, xclbin, **kwargs):
    board = pynq_board_present()
    bit = bitstream or _default_file(".bit")
    if board and bit is not None:
        return open_pynq(bit, **kwargs), f"PYNQ board with {bit}"
    xcl = xclbin or _default_file(".xclbin")
    if xcl is not None and _alveo_present():
        from lowbit.board.alveo import open_alveo

        return open_alveo(xcl, **kwargs), f"Alveo card with {xcl}"
    from lowbit.backends.emulation import EmulationBackend

    reason = ("a PYNQ board but no bitstream (pass bitstream= or put one in bitstreams/<board>/)" if board
              else "no PYNQ board or Alveo card found")
    return EmulationBackend(), reason + "; using the emulation backend (the HLS C++ on this CPU)"
