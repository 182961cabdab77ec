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
