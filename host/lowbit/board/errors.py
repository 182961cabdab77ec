"""Errors of the board runtime; each message names what happened and what to do."""
from __future__ import annotations


class BoardError(RuntimeError):
    """Base class: something went wrong talking to the accelerator."""


class DmaError(BoardError):
    """The AXI DMA raised an error bit (PG021 DMASR: internal, slave or decode error)."""


class BoardTimeout(BoardError):
    """A transfer did not finish within the timeout (e.g. the IP never asserted TLAST)."""


class KernelError(BoardError):
    """The kernel's STATUS word reports a malformed request (bad magic, version, dims, format)."""


class TruncatedOutput(BoardError):
    """The output stream ended (TLAST) before the expected number of words."""


class BufferAllocationError(BoardError):
    """The contiguous (CMA) memory for the DMA buffers could not be allocated."""


class NoBoardError(BoardError):
    """A board was asked for and there is none here (or no bitstream for it)."""


NO_BOARD_HELP = ("run this on the board itself, reach a board over the network with "
                 "open_device('remote:HOST[:PORT]') / `lowbit train --remote HOST` (start `lowbit serve` on the board), "
                 "or use the emulation backend (`--backend emulation`, open_device('emulation'))")
