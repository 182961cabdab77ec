"""Host-side data stages: pack one kernel call's input stream straight into a DMA buffer and
unpack C^T from the output buffer. The stream layout is the one ``lowbit.wire`` specifies and the
kernel reads (each section contiguous, starting on a fresh word, lane 0 lowest); the tiling and
operand preparation are the emulation backend's (``lowbit.backends.emulation.gemm_tiles``), so the
board and the emulation run identical kernel calls in an identical order."""
from __future__ import annotations

import numpy as np

from .. import wire
from ..backends.emulation import Operand
from ..wire import Header

_LANE_DTYPE = {8: np.uint8, 16: np.uint16, 32: np.uint32}


def stream_words(header: Header) -> int:
    """Input words of one call: header, then A scales, A codes, B scales, B codes."""
    scales = header.nblocks if header.has_scales else 0
    return (wire.HEADER_WORDS + wire.words_for(header.m * scales, wire.SCALE_LANE_BITS)
            + wire.words_for(header.m * header.k, header.lane_bits)
            + wire.words_for(header.n * scales, wire.SCALE_LANE_BITS)
            + wire.words_for(header.n * header.k, header.lane_bits))


def _put_lanes(dest: np.ndarray, pos: int, values: np.ndarray, lane_bits: int) -> int:
    """Write a 2-D array's lanes row-major from word ``pos``; returns the next free word."""
    rows, cols = values.shape
    count = rows * cols
    nwords = wire.words_for(count, lane_bits)
    span = dest[pos:pos + nwords]
    if lane_bits >= 8:
        lanes = span.view(_LANE_DTYPE[lane_bits])
        lanes[:count].reshape(rows, cols)[...] = values
        lanes[count:] = 0
        return pos + nwords
    flat = np.empty(count + (count & 1), np.uint8)  # 4-bit lanes: even element in the low nibble
    flat[:count].reshape(rows, cols)[...] = values
    flat[count:] = 0
    nbytes, half = span.view(np.uint8), (count + 1) // 2
    np.left_shift(flat[1::2], 4, out=nbytes[:half])
    nbytes[:half] |= flat[0::2]
    nbytes[half:] = 0
    return pos + nwords


def pack_call(dest: np.ndarray, header: Header, a: Operand, b: Operand) -> int:
    """Write one call's stream into ``dest`` (uint64 words); returns the number of words."""
    need = stream_words(header)
    if len(dest) < need:
        raise ValueError(f"buffer of {len(dest)} words is too small for a {need}-word stream")
    dest[:wire.HEADER_WORDS] = header.to_words()
    pos = wire.HEADER_WORDS
    for op in (a, b):
        if header.has_scales:
            pos = _put_lanes(dest, pos, op.scales, wire.SCALE_LANE_BITS)
        pos = _put_lanes(dest, pos, op.codes, header.lane_bits)
    return pos


def output_words(header: Header) -> int:
    """C^T values two per word, then the STATUS word."""
    return wire.words_for(header.m * header.n, wire.OUT_LANE_BITS) + 1


def unpack_call(words: np.ndarray, m: int, n: int) -> np.ndarray:
    """C [m, n] fp32 (a copy) from the kernel's C^T [n][m] output words."""
    return np.ascontiguousarray(words.view(np.float32)[: m * n].reshape(n, m).T)
