"""DMA buffers allocated once and reused; a slot grows (never shrinks) when a call needs more."""
from __future__ import annotations

from typing import Optional

import numpy as np

from lowbit.board.errors import BufferAllocationError

GROWTH = 1.5  # headroom on growth, so a slowly growing workload reallocates rarely


class BufferSlot:
    """One contiguous uint64 buffer from ``pynq.allocate`` on ``device``."""

    def __init__(self, device, label: str):
        self.device = device
        self.label = label
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
        import pynq

        try:
            fresh = pynq.allocate(shape=(words,), dtype=np.uint64, target=self.device)
        except (RuntimeError, MemoryError, OSError) as err:
            raise BufferAllocationError(
                f"could not allocate the {self.label} DMA buffer of {words * 8} bytes ({err}). Contiguous (CMA) "
                "memory is exhausted: free other pynq buffers (del them / restart other notebooks' kernels), "
                "use smaller batches, or enlarge the CMA pool (kernel cmdline cma=...). The previous buffer "
                "is kept; the next call can proceed.") from err
        self.release()
        self.buffer = fresh
        self.allocations += 1

    def release(self) -> None:
        if self.buffer is not None:
            self.buffer.freebuffer()
            self.buffer = None
