"""Open a PYNQ overlay of the lowbit IP as a backend (a local board, a simulated one, or a remote one)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from lowbit.backends.base import Backend
from lowbit.board.errors import NO_BOARD_HELP, NoBoardError
from lowbit.board.manifest import find_file, manifest_units, read_manifest


def open_pynq(bitstream, *, device=None, download: Optional[bool] = None, timeout_s: float = 10.0,
              ip_name: Optional[str] = None, dma_name: Optional[str] = None) -> Backend:
    """Load the overlay (drivers registered first), check versions, return a ``PynqBackend`` driving
    every compute unit the overlay holds (or only ``ip_name``/``dma_name``)."""
    from lowbit.board import compat

    compat.check_supported()
    import lowbit_drivers  # noqa: F401  must be imported before the Overlay binds drivers
    import pynq

    from lowbit.board.packing import KernelLimits
    from lowbit.board.pynq_backend import PynqBackend

    bit = find_file(Path(bitstream), ".bit")
    manifest = read_manifest(bit)
    if device is None and not pynq_board_present():
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
                       timeout_s=timeout_s, limits=limits, compute_units=manifest_units(manifest))


def pynq_board_present() -> bool:
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
