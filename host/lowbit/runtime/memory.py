"""Keep freed tensor memory in the process heap between training steps (glibc only).

A training step frees and re-allocates the same multi-MB tensors every step. glibc's defaults
hand large freed blocks back to the kernel (munmap, heap trimming), so the next step takes one
page fault per 4 KiB to get them back: 11,000-14,000 faults, about 10% of a ResNet-20 MLS step
on CPU. ``keep_freed_memory()`` raises glibc's mmap and trim thresholds so that freed blocks
are reused instead; the process keeps its peak heap (as PyTorch's CUDA caching allocator does).
``lowbit train`` and ``benchmarks/train_step.py`` call it; LOWBIT_KEEP_FREED_MEMORY=0 turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # the most glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: trim only a free heap top above 2 GiB


def keep_freed_memory() -> bool:
    """Returns True when the allocator now keeps freed blocks; False when it is off or not glibc."""
    if os.environ.get("LOWBIT_KEEP_FREED_MEMORY", "1") == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    trim_ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(mmap_ok and trim_ok)


def _glibc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # glibc only: musl and macOS have other allocators and tunables
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return libc
