"""The board runtime: PYNQ (Zynq) and Alveo backends, DMA buffers, faults, and a simulated board.

``open_simulated(board="zcu104")`` gives the full PYNQ path (unmodified pynq DMA driver and
Overlay) on a simulated device whose IP is the emulation kernel: what CI runs.
"""
from __future__ import annotations

from pathlib import Path

from lowbit.board.errors import BoardError, BoardTimeout, BufferAllocationError, DmaError, KernelError, TruncatedOutput

# The simulated boards' overlays (a .hwh, a placeholder .bit, manifest.json), package data written
# by tests/board/fixtures/make_fixture.py.
OVERLAYS = Path(__file__).resolve().parent / "overlays"


def simulated_overlay(board: str = "zcu104") -> Path:
    """The .bit (with its .hwh and manifest.json) of the simulated ``board``'s overlay."""
    bit = OVERLAYS / board / "lowbit_gemm.bit"
    if not bit.is_file():
        boards = ", ".join(sorted(p.parent.name for p in OVERLAYS.glob("*/lowbit_gemm.bit")))
        raise FileNotFoundError(f"no simulated overlay for board {board!r}; boards: {boards}")
    return bit


def open_simulated(board: str = "zcu104", *, bitstream=None, kernel=None, timeout_s: float = 10.0,
                   threaded: bool = True, **device_kwargs):
    """A ``PynqBackend`` on a ``SimulatedBoard`` loaded with the fixture overlay for ``board``; by
    default the kernel runs in a worker thread, so packing call i+1 really overlaps call i."""
    from lowbit.board.overlay import open_pynq
    from lowbit.board.sim import SimulatedBoard

    bit = Path(bitstream) if bitstream is not None else simulated_overlay(board)
    if not bit.exists():
        raise FileNotFoundError(f"no simulated overlay at {bit} (boards: zcu104, pynq-z2); pass bitstream=")
    device = SimulatedBoard(kernel=kernel, threaded=threaded, **device_kwargs)
    return open_pynq(bit, device=device, timeout_s=timeout_s)


__all__ = ["open_simulated", "simulated_overlay", "BoardError", "BoardTimeout", "BufferAllocationError", "DmaError", "KernelError",
           "TruncatedOutput"]
