"""Buffers allocated once and reused: a slot grows (never shrinks) when a call needs more.

``BufferSlot`` is the one grow-only rule; each board supplies only its allocator: ``pynq.allocate``
(contiguous CMA memory, ``PynqSlot``) or an XRT buffer object in one memory bank (``lowbit.board.alveo``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from lowbit.board.errors import BufferAllocationError

GROWTH = 1.5  # headroom on growth, so a slowly growing workload reallocates rarely


class BufferSlot:
    """One uint64 buffer, ``buffer`` (a host view) behind ``handle`` (what the hardware call takes).

    Subclasses allocate (``_allocate``) and free (``_free``); a failed allocation keeps the previous
    buffer, so the next call can proceed."""

    def __init__(self, label: str):
        self.label = label
        self.handle = None
        self.buffer: Optional[np.ndarray] = None
        self.allocations = 0

    @property
    def capacity(self) -> int:
        return 0 if self.buffer is None else len(self.buffer)

    def ensure(self, words: int) -> np.ndarray:
        """The slot's buffer, reallocated first when it holds fewer than ``words`` words."""
        if words > self.capacity:
            self._grow(max(words, int(self.capacity * GROWTH)))
        return self.buffer

    def _grow(self, words: int) -> None:
        handle, buffer = self._allocate(words)  # raises BufferAllocationError, the old buffer untouched
        self.release()
        self.handle, self.buffer = handle, buffer
        self.allocations += 1

    def release(self) -> None:
        if self.handle is not None:
            self._free(self.handle)
        self.handle, self.buffer = None, None

    def _allocate(self, words: int) -> Tuple[object, np.ndarray]:
        raise NotImplementedError

    def _free(self, handle) -> None:
        """Nothing by default: dropping the last reference frees it."""


class PynqSlot(BufferSlot):
    """A contiguous buffer from ``pynq.allocate`` on ``device`` (the handle is the buffer itself)."""

    def __init__(self, device, label: str):
        super().__init__(label)
        self.device = device

    def _allocate(self, words: int):
        import pynq

        try:
            fresh = pynq.allocate(shape=(words,), dtype=np.uint64, target=self.device)
        except (RuntimeError, MemoryError, OSError) as err:
            raise BufferAllocationError(
                f"could not allocate the {self.label} DMA buffer of {words * 8} bytes ({err}). Contiguous (CMA) "
                "memory is exhausted: free other pynq buffers (del them / restart other notebooks' kernels), "
                "use smaller batches, or enlarge the CMA pool (kernel cmdline cma=...). The previous buffer "
                "is kept; the next call can proceed.") from err
        return fresh, fresh

    def _free(self, handle) -> None:
        handle.freebuffer()
