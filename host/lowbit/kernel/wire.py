"""The DMA wire protocol of the block-scaled GEMM kernel: the single source of truth.

``lowbit wire --emit-hpp`` writes ``hls/include/lowbit/wire.hpp`` from this file;
``tests/kernel/test_wire.py`` fails when the two drift.

The kernel computes, for operands A [M, K] and B [N, K] (both stored row-major along K)::

    C[m, n] = SUM_b  Sa[m, b] * Sb[n, b] * SUM_{k in block b} A[m, k] * B[n, k]

without the tensor scales (the host multiplies C by St_a * St_b). Stream layout, in 64-bit
words, lane 0 in the least-significant bits, little-endian bytes:

    in : HEADER_WORDS header words
         A scale codes  [M][nblocks]  16-bit lanes   (MLS only; nblocks = ceil(K / block))
         A codes        [M][K]        elem_lane_bits lanes, packed contiguously
         B scale codes  [N][nblocks]  16-bit lanes   (MLS only)
         B codes        [N][K]        elem_lane_bits lanes
         each section starts on a fresh word; unused lanes of a section's last word are 0
    out: C^T [N][M] fp32 (n-major: the kernel keeps A on chip and streams B row by row),
         two per word (lane 0 = lower index), then one STATUS word, which carries TLAST.
         On a malformed header the kernel drains its input and sends the STATUS word alone.

One call is limited to M <= MAX_M, K <= MAX_K, N <= MAX_N (A is buffered on chip); the host
tiles larger GEMMs and adds the K-tiles' fp32 outputs in ascending K order.
"""
from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lowbit.numerics import formats
from lowbit.numerics.formats import FP32, MLS, Format, Mogami, PoT

WORD_BITS = 64
WORD_BYTES = 8
MAGIC = 0x4C4F5742  # "LOWB" read as little-endian ASCII "BWOL"; fixed, checked by the kernel
WIRE_VERSION = 1
HEADER_WORDS = 4
SCALE_LANE_BITS = 16
OUT_LANE_BITS = 32
MAX_M = 128  # rows of A held on chip
MAX_K = 8192  # reduction length held on chip (also the largest block)
MAX_N = 65535  # rows of B streamed through
IP_ID = 0x10B1  # identifies the lowbit GEMM IP in the ID register (upper 16 bits)
VLNV = "lowbit.org:hls:lowbit_gemm:1.0"
ALVEO_KERNEL = "lowbit_gemm_mm"


class Op(enum.IntEnum):
    """Which convolution of training the GEMM is (informational: one engine runs all)."""

    FORWARD = 0
    BACKWARD_DATA = 1
    WEIGHT_GRAD = 2


class Arith(enum.IntEnum):
    MLS = 0
    POT = 1
    MOGAMI_FP32 = 2
    MOGAMI_BF16 = 3


class Status(enum.IntEnum):
    OK = 0
    BAD_MAGIC = 1
    BAD_VERSION = 2
    BAD_DIMS = 3
    BAD_FORMAT = 4
    TRUNCATED = 5


# s_axilite registers of the AXI-Stream top (byte offsets). CTRL follows Vitis HLS ap_ctrl_hs.
class Reg(enum.IntEnum):
    CTRL = 0x00
    GIE = 0x04
    IER = 0x08
    ISR = 0x0C
    STATUS = 0x10
    ID_VERSION = 0x18  # IP_ID << 16 | WIRE_VERSION
    CYCLES = 0x20  # beats consumed by the last run (a progress/debug counter)


CTRL_START = 1 << 0
CTRL_DONE = 1 << 1
CTRL_IDLE = 1 << 2
CTRL_READY = 1 << 3

# Header word fields: (word, low bit, width).
HEADER_FIELDS = {
    "magic": (0, 0, 32),
    "version": (0, 32, 16),
    "op": (0, 48, 8),
    "arith": (0, 56, 8),
    "m": (1, 0, 32),
    "n": (1, 32, 32),
    "k": (2, 0, 32),
    "block": (2, 32, 32),
    "ex": (3, 0, 4),
    "mx": (3, 4, 4),
    "eg": (3, 8, 4),
    "mg": (3, 12, 4),
}


def arith_of(fmt: Format) -> Arith:
    if isinstance(fmt, MLS):
        return Arith.MLS
    if isinstance(fmt, PoT):
        return Arith.POT
    if isinstance(fmt, Mogami):
        return Arith.MOGAMI_FP32 if fmt.dtype == "fp32" else Arith.MOGAMI_BF16
    raise ValueError(f"format {fmt} has no kernel arithmetic; the kernel runs mls, pot and mogami")


def elem_lane_bits(fmt: Format) -> int:
    """Lane width of one element code: the smallest of 4, 8, 16, 32 that holds it."""
    if isinstance(fmt, FP32):
        raise ValueError("fp32 is not sent to the kernel")
    for lane in (4, 8, 16, 32):
        if fmt.code_bits <= lane:
            return lane
    raise AssertionError(fmt)


@dataclass(frozen=True)
class Header:
    op: Op
    arith: Arith
    m: int
    n: int
    k: int
    block: int
    ex: int = 0
    mx: int = 0
    eg: int = 0
    mg: int = 0
    magic: int = MAGIC
    version: int = WIRE_VERSION

    @classmethod
    def for_gemm(cls, op: Op, fmt: Format, m: int, n: int, k: int, block: int) -> "Header":
        arith = arith_of(fmt)
        if isinstance(fmt, MLS):
            return cls(op, arith, m, n, k, block, fmt.ex, fmt.mx, fmt.eg, fmt.mg)
        return cls(op, arith, m, n, k, k)

    def to_words(self) -> np.ndarray:
        words = [0] * HEADER_WORDS
        for name, (w, lo, width) in HEADER_FIELDS.items():
            value = int(getattr(self, name))
            if not 0 <= value < (1 << width):
                raise ValueError(f"header field {name}={value} does not fit {width} bits")
            words[w] |= value << lo
        return np.array(words, dtype=np.uint64)

    @classmethod
    def from_words(cls, words: np.ndarray) -> "Header":
        if len(words) < HEADER_WORDS:
            raise ValueError(f"stream of {len(words)} words is shorter than the {HEADER_WORDS}-word header")
        f = {name: (int(words[w]) >> lo) & ((1 << width) - 1) for name, (w, lo, width) in HEADER_FIELDS.items()}
        return cls(op=_enum_field(Op, "op", f.pop("op"), f), arith=_enum_field(Arith, "arith", f.pop("arith"), f), **f)

    @property
    def nblocks(self) -> int:
        return -(-self.k // self.block) if self.block else 0

    @property
    def has_scales(self) -> bool:
        return self.arith == Arith.MLS

    @property
    def lane_bits(self) -> int:
        if self.arith == Arith.MLS:
            return elem_lane_bits(MLS(self.ex, self.mx, self.eg, self.mg))
        return {Arith.POT: 8, Arith.MOGAMI_FP32: 32, Arith.MOGAMI_BF16: 16}[self.arith]

    def section_words(self) -> dict:
        """Words of each input section after the header, in stream order."""
        scales = self.nblocks if self.has_scales else 0  # [rows][nblocks] lanes, one contiguous section
        return {
            "a_scales": words_for(self.m * scales, SCALE_LANE_BITS),
            "a_codes": words_for(self.m * self.k, self.lane_bits),
            "b_scales": words_for(self.n * scales, SCALE_LANE_BITS),
            "b_codes": words_for(self.n * self.k, self.lane_bits),
        }

    def input_words(self) -> int:
        return HEADER_WORDS + sum(self.section_words().values())

    def output_words(self) -> int:
        return words_for(self.m * self.n, OUT_LANE_BITS) + 1


def _enum_field(kind, name: str, value: int, fields: dict):
    """``kind(value)``, or a ValueError naming the field, its legal values, and whether the words
    are a lowbit header at all."""
    try:
        return kind(value)
    except ValueError:
        legal = ", ".join(f"{m.name}={m.value}" for m in kind)
        if fields["magic"] != MAGIC:
            what = f"these words are not a lowbit header (magic 0x{fields['magic']:08x}, expected 0x{MAGIC:08x})"
        elif fields["version"] != WIRE_VERSION:
            what = f"the header is of wire version {fields['version']}, this host speaks {WIRE_VERSION}"
        else:
            what = "the header is corrupt"
        raise ValueError(f"header field {name}={value} is not one of {legal}: {what}") from None


def words_for(count: int, lane_bits: int) -> int:
    per_word = WORD_BITS // lane_bits
    return -(-count // per_word)


def pack_lanes(values: np.ndarray, lane_bits: int) -> np.ndarray:
    """Pack unsigned lane values (< 2^lane_bits) into uint64 words, lane 0 lowest."""
    v = np.ascontiguousarray(values).reshape(-1)
    per_word = WORD_BITS // lane_bits
    pad = (-len(v)) % per_word
    if lane_bits >= 8:
        dt = {8: np.uint8, 16: np.uint16, 32: np.uint32}[lane_bits]
        lanes = np.zeros(len(v) + pad, dtype=dt)
        lanes[: len(v)] = v
        return lanes.view("<u8").astype(np.uint64, copy=False)
    lanes = np.zeros(len(v) + pad, dtype=np.uint8)
    lanes[: len(v)] = v
    pairs = lanes[0::2] | (lanes[1::2] << 4)  # 4-bit lanes: even index in the low nibble
    return pairs.view("<u8").astype(np.uint64, copy=False)


def unpack_lanes(words: np.ndarray, lane_bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_lanes``: the first ``count`` lane values (uint8/16/32)."""
    raw = np.ascontiguousarray(words, dtype="<u8").view(np.uint8)
    if lane_bits >= 8:
        dt = {8: np.uint8, 16: "<u2", 32: "<u4"}[lane_bits]
        return raw.view(dt)[:count].copy()
    out = np.empty(raw.size * 2, dtype=np.uint8)
    out[0::2] = raw & 0xF
    out[1::2] = raw >> 4
    return out[:count]


def status_word(status: Status) -> int:
    """The trailing output word: status code low, MAGIC high (so a stray word is not read as OK)."""
    return (MAGIC << 32) | int(status)


def parse_status_word(word: int) -> Status:
    if (int(word) >> 32) != MAGIC:
        raise ValueError(f"output stream does not end with a status word (got 0x{int(word):016x})")
    return Status(int(word) & 0xFFFFFFFF)


def emit_hpp() -> str:
    """The C++ header the HLS kernels include; generated, never edited by hand."""
    lines = [
        "// GENERATED by `lowbit wire --emit-hpp` from host/lowbit/kernel/wire.py. Do not edit.",
        "#pragma once",
        "#include <stdint.h>",
        "",
        "namespace lowbit {",
        "namespace wire {",
        f"static const unsigned WORD_BITS = {WORD_BITS};",
        f"static const uint32_t MAGIC = 0x{MAGIC:08X}u;",
        f"static const uint32_t WIRE_VERSION = {WIRE_VERSION}u;",
        f"static const unsigned HEADER_WORDS = {HEADER_WORDS};",
        f"static const unsigned SCALE_LANE_BITS = {SCALE_LANE_BITS};",
        f"static const unsigned OUT_LANE_BITS = {OUT_LANE_BITS};",
        f"static const uint32_t MAX_M = {MAX_M}u;",
        f"static const uint32_t MAX_K = {MAX_K}u;",
        f"static const uint32_t MAX_N = {MAX_N}u;",
        f"static const uint32_t IP_ID = 0x{IP_ID:04X}u;",
        "static const uint32_t ID_VERSION = (IP_ID << 16) | WIRE_VERSION;",
        "// MLS format ranges (lowbit.numerics.formats): elements <Ex,Mx>, Ex + Mx >= 1; group scales <Eg,Mg>.",
        f"static const unsigned MLS_MAX_EX = {formats.MLS_MAX_EX}, MLS_MAX_MX = {formats.MLS_MAX_MX}, "
        f"MLS_MAX_EG = {formats.MLS_MAX_EG}, MLS_MAX_MG = {formats.MLS_MAX_MG};",
        "",
    ]
    for enum_cls in (Op, Arith, Status, Reg):
        lines.append(f"enum {enum_cls.__name__} {{")
        for member in enum_cls:
            lines.append(f"    {enum_cls.__name__.upper()}_{member.name} = 0x{int(member):X},")
        lines.append("};")
        lines.append("")
    for name in ("CTRL_START", "CTRL_DONE", "CTRL_IDLE", "CTRL_READY"):
        lines.append(f"static const uint32_t {name} = 0x{globals()[name]:X}u;")
    lines.append("")
    lines.append("// Header fields: word index, low bit, width.")
    for name, (w, lo, width) in HEADER_FIELDS.items():
        up = name.upper()
        lines.append(f"static const unsigned HDR_{up}_WORD = {w}, HDR_{up}_LO = {lo}, HDR_{up}_WIDTH = {width};")
    lines += ["", "}  // namespace wire", "}  // namespace lowbit", ""]
    return "\n".join(lines)


HPP_PATH = Path("hls/include/lowbit/wire.hpp")


def main(argv=None) -> int:
    from lowbit.kernel.headers import generated_header_main

    return generated_header_main("lowbit wire", __doc__.splitlines()[0], HPP_PATH, emit_hpp, argv)


if __name__ == "__main__":
    sys.exit(main())
