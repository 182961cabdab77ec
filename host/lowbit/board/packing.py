"""Host-side data stages: pack one kernel call's input stream straight into a DMA buffer and
unpack C^T from the output buffer. The stream layout is the one ``lowbit.kernel.wire`` specifies and the
kernel reads (each section contiguous, starting on a fresh word, lane 0 lowest); the tiling and
operand preparation are the emulation backend's (``lowbit.backends.emulation.gemm_tiles``), so the
board and the emulation run identical kernel calls in an identical order."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from lowbit.kernel import wire
from lowbit.runtime.native import load
import lowbit.backends.emulation as emulation
from lowbit.backends.emulation import Operand
from lowbit.numerics.formats import MLS, PoT
from lowbit.kernel.boards import FAMILY_ARITHS, KernelLimits
from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Arith, Header, Op, Status


def plan_calls(fmt, a: Operand, b: Operand, block: int, op: Op, limits: KernelLimits = KernelLimits(),
               max_n: int = wire.MAX_N):
    """(m-slice, n-slice, [(header, a_tile, b_tile) per K-tile, ascending]) for a kernel with
    ``limits``, B-row tiles of at most ``max_n`` rows: ``emulation.gemm_tiles`` itself, so the board
    and an emulation with the same limits run the same calls (a copy of that tiler here kept
    128-row M-tiles where the A buffer holds fewer rows of one block)."""
    return emulation.gemm_tiles(fmt, a, b, block, op, limits, max_n=max_n)


def rejection(status: Status, header: Header, board: str) -> str:
    """What a non-OK status means for the user; BAD_FORMAT names the bitstream to build."""
    if status == Status.BAD_FORMAT and header.arith in FAMILY_OF:
        family = FAMILY_OF[header.arith]
        what = f"{family} <{header.ex},{header.mx}>" if family == "mls" else header.arith.name.lower()
        return (f"STATUS=BAD_FORMAT: this bitstream does not carry {what} (a bitstream carries one arithmetic "
                f"family, see its manifest's arith/mls_max); build one with `lowbit build --board {board} "
                f"--arith {family}`")
    return f"STATUS={status.name}"


FAMILY_OF = {a: fam for fam, ariths in FAMILY_ARITHS.items() for a in ariths}


@functools.lru_cache(maxsize=256)
def stream_words(header: Header) -> int:
    """Input words of one call: header, then A scales, A codes, B scales, B codes."""
    return header.input_words()


_CDEF = """
int64_t lowbit_pack_lanes(const void* src, int src_bytes, int64_t rows, int64_t cols, int64_t stride,
                          uint32_t mask, int lane_bits, uint64_t* dst_words);
"""


_LIB = []


def _lib():
    if not _LIB:  # built once per source hash (lowbit.runtime.native), looked up once per process
        _LIB.append(load("lowbit_board_pack", _CDEF, [Path(__file__).with_name("pack.c")], cplus=False,
                         flags=["-march=native"]))
    return _LIB[0]


def _address(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


def board_operand(q: QTensor) -> Operand:
    """Like ``emulation.operand_of`` but without copies of the codes: the QTensor's own int16/int32
    codes (a view); masking to the code bits happens while packing."""
    codes = q.codes.detach().cpu().numpy()
    if codes.ndim != 2:
        raise ValueError(f"gemm operands are 2-D [rows, K]; got shape {codes.shape} (lower convs first)")
    if isinstance(q.fmt, MLS):
        if q.block is None or q.scale_codes is None:
            raise ValueError("an MLS gemm operand needs block and scale_codes (2-D quantization grouped along K)")
        nb = -(-codes.shape[1] // q.block)
        sc = q.scale_codes.detach().cpu().numpy().astype(np.uint16)
        return Operand(codes, np.broadcast_to(sc, (codes.shape[0], nb)))
    return Operand(codes, np.zeros((codes.shape[0], 0), dtype=np.uint16))


@functools.lru_cache(maxsize=256)
def code_mask(header: Header) -> int:
    bits = {Arith.POT: PoT().code_bits, Arith.MOGAMI_FP32: 32, Arith.MOGAMI_BF16: 16}.get(header.arith)
    return (1 << (bits or 1 + header.ex + header.mx)) - 1


def _put_codes(dest: np.ndarray, pos: int, codes: np.ndarray, lane_bits: int, mask: int) -> int:
    if codes.dtype.itemsize not in (2, 4) or codes.dtype.kind not in "iu":
        raise TypeError(f"codes must be 16- or 32-bit integers, got {codes.dtype}")
    if codes.shape[1] > 1 and codes.strides[1] != codes.itemsize:
        codes = np.ascontiguousarray(codes)
    rows, cols = codes.shape
    stride = codes.strides[0] // codes.itemsize if rows > 1 else cols
    ffi, lib = _lib()
    span = dest[pos:]
    need = wire.words_for(rows * cols, lane_bits)
    if len(span) < need:
        raise ValueError(f"{len(span)} words left in the buffer, {need} needed")
    written = lib.lowbit_pack_lanes(ffi.cast("void*", _address(codes)), codes.itemsize, rows, cols, stride,
                                    mask, lane_bits, ffi.cast("uint64_t*", _address(span)))
    return pos + written


def _put_scales(dest: np.ndarray, pos: int, scales: np.ndarray) -> int:
    count = scales.size
    nwords = wire.words_for(count, wire.SCALE_LANE_BITS)
    lanes = dest[pos:pos + nwords].view(np.uint16)
    lanes[:count].reshape(scales.shape)[...] = scales
    lanes[count:] = 0
    return pos + nwords


@functools.lru_cache(maxsize=256)
def _header_words(header: Header) -> np.ndarray:
    words = header.to_words()
    words.flags.writeable = False
    return words


def pack_call(dest: np.ndarray, header: Header, a: Operand, b: Operand) -> int:
    """Write one call's stream into ``dest`` (uint64 words); returns the number of words."""
    need = stream_words(header)
    if dest.dtype != np.uint64 or not dest.flags.c_contiguous:
        raise TypeError("pack_call writes into a contiguous uint64 buffer (a pynq.allocate'd DMA buffer)")
    if len(dest) < need:
        raise ValueError(f"buffer of {len(dest)} words is too small for a {need}-word stream")
    dest[:wire.HEADER_WORDS] = _header_words(header)
    pos = wire.HEADER_WORDS
    mask = code_mask(header)
    for op in (a, b):
        if header.has_scales:
            pos = _put_scales(dest, pos, op.scales)
        pos = _put_codes(dest, pos, op.codes, header.lane_bits, mask)
    return pos


def output_words(header: Header) -> int:
    """C^T values two per word, then the STATUS word."""
    return header.output_words()


def unpack_call(words: np.ndarray, m: int, n: int) -> np.ndarray:
    """C [m, n] fp32 from the kernel's C^T [n][m] output words: always a fresh array, never a view
    of ``words`` (the DMA buffer is reused two calls later; ``ascontiguousarray`` of the transpose
    was a view whenever m == 1 or n == 1)."""
    return words.view(np.float32)[: m * n].reshape(n, m).T.copy()
