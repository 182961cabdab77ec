"""A numpy model of the HLS GEMM kernel on codes: the same integer math and fp32 summation order.

It is bit-exact with ``hls/include/lowbit/gemm.hpp`` (tests compare with ``==``):

* MLS: element magnitude ``sig << sh`` (notes A.3b), block partial sums exact in int64; group
  scaling ``P * (2^Mg + ma)(2^Mg + mb)`` (shifts and adds in the kernel), converted to fp32 by
  ``scaled_to_f32`` (one round-to-nearest-even of the integer, then an exponent shift; results
  below the smallest normal flush to +0); blocks summed in fp32, ascending, from +0.0.
* PoT: ``sum (+-) 2^(ca + cb - 2)`` exact, then ``scaled_to_f32(acc, -28)``.
* Mogami: ``mogami_mul_bits`` per product, fp32 accumulation in ascending k from +0.0.

``run_stream`` models the whole AXI-Stream top (header checks, truncation, the status word);
``write_golden`` writes the exact input and output byte streams the C++ testbenches replay.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch

from lowbit.kernel import wire
from lowbit.numerics import reference as R
from lowbit.numerics.formats import MLS, MLS_MAX_EX, MLS_MAX_MX, mls_element_in_range, mls_scale_in_range
from lowbit.kernel.boards import BOARDS, EMULATION, Build, build_of
from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Arith, Header, Op, Status

SCALE_BUF = EMULATION.limits.scale_buf  # KernelConfig::SCALE_BUF of the emulation build
A_ELEMS = EMULATION.limits.a_elems  # KernelConfig::A_ELEMS
POT_SHIFT = 28


# ------------------------------------------------------------------------------------------------
# Arithmetic
# ------------------------------------------------------------------------------------------------
def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bit length of non-negative int64 values (exact, unlike log2 on floats)."""
    _, e = np.frexp(x.astype(np.float64))
    e = e.astype(np.int64)
    too_big = (e > 0) & (x < (np.int64(1) << np.clip(e - 1, 0, 62)))  # float64 rounded x up
    return np.where(x == 0, 0, e - too_big)


def round_to_f32(t: np.ndarray) -> np.ndarray:
    """int64 -> fp32, round to nearest, ties to even (what ``(float)int64`` does in C)."""
    t = np.asarray(t, dtype=np.int64)
    mag = np.abs(t)
    shift = np.maximum(_bit_length(mag) - 24, 0)
    q = mag >> shift
    rem = mag - (q << shift)
    half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
    up = (shift > 0) & ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    q = q + up
    val = np.ldexp(q.astype(np.float32), shift.astype(np.int32)).astype(np.float32)
    return np.where(t < 0, -val, val).astype(np.float32)


def scaled_to_f32(t: np.ndarray, e) -> np.ndarray:
    """``t * 2^e`` (e <= 0) exactly as the kernel's ``scaled_to_f32``."""
    f = round_to_f32(t)
    bits = f.view(np.uint32).astype(np.int64)
    field = ((bits >> 23) & 0xFF) + np.asarray(e, dtype=np.int64)
    out = (bits & 0x807FFFFF) | (np.clip(field, 0, 255) << 23)
    out = np.where((np.asarray(t) == 0) | (field <= 0), 0, out)
    return out.astype(np.uint32).view(np.float32)


def mls_decode(codes: np.ndarray, ex: int, mx: int) -> np.ndarray:
    """Signed integer view (units of 2^(Exmin - Mx)) of MLS element codes."""
    c = np.asarray(codes, dtype=np.int64)
    e = (c >> mx) & ((1 << ex) - 1)
    m = c & ((1 << mx) - 1)
    mag = np.where(e == 0, m, (m | (1 << mx)) << np.maximum(e - 1, 0))
    sign = (c >> (ex + mx)) & 1
    return np.where(sign == 1, -mag, mag)


def pot_decode(codes: np.ndarray) -> np.ndarray:
    """Signed 2^(c-1) (0 for c = 0), so that a product is +-2^(ca + cb - 2)."""
    c = np.asarray(codes, dtype=np.int64)
    e = c & 0xF
    mag = np.where(e == 0, 0, np.int64(1) << np.maximum(e - 1, 0))
    return np.where((c >> 4) & 1 == 1, -mag, mag)


def mogami_mul_bits(a: np.ndarray, b: np.ndarray, bits: int) -> np.ndarray:
    """The kernel's Mogami product of bit patterns (fp32, or bf16 in the low 16 bits), as uint32:
    the rule is ``lowbit.numerics.reference.mogami_mul``, the kernel adds nothing to it."""
    return R.mogami_mul(a, b, "fp32" if bits == 32 else "bf16").astype(np.uint32)


def _as_f32(bits32: np.ndarray, bits: int) -> np.ndarray:
    u = np.asarray(bits32, dtype=np.uint32)
    return (u << np.uint32(16) if bits == 16 else u).view(np.float32)


# ------------------------------------------------------------------------------------------------
# One kernel call on decoded sections
# ------------------------------------------------------------------------------------------------
def mls_partials(a_codes: np.ndarray, b_codes: np.ndarray, block: int, ex: int, mx: int) -> np.ndarray:
    """Exact block partial sums P [M, N, nblocks] (int64)."""
    a, b = mls_decode(a_codes, ex, mx), mls_decode(b_codes, ex, mx)
    k = a.shape[1]
    return np.stack([a[:, s:s + block] @ b[:, s:s + block].T for s in range(0, k, block)], axis=2)


def mls_block_values(p: np.ndarray, sa: np.ndarray, sb: np.ndarray, ex: int, mx: int, eg: int,
                     mg: int) -> np.ndarray:
    """fp32 value of each block [M, N, nb]: the shift-add group scaling and one rounding."""
    sa, sb = sa.astype(np.int64)[:, None, :], sb.astype(np.int64)[None, :, :]
    mmask, emask = (1 << mg) - 1, (1 << eg) - 1
    fa, fb = (1 << mg) + (sa & mmask), (1 << mg) + (sb & mmask)
    e = 2 * ((1 - (1 << ex)) - mx) - 2 * mg - ((sa >> mg) & emask) - ((sb >> mg) & emask)
    return scaled_to_f32(p * fa * fb, e)


def pot_partials(a_codes: np.ndarray, b_codes: np.ndarray) -> np.ndarray:
    """Exact MF-MAC accumulators [M, N] (int64, units of 2^-28)."""
    return pot_decode(a_codes) @ pot_decode(b_codes).T


def fp32_sum(parts: np.ndarray, axis: int) -> np.ndarray:
    """Sequential fp32 sum from +0.0, ascending along ``axis``."""
    parts = np.moveaxis(np.asarray(parts, dtype=np.float32), axis, 0)
    out = np.zeros(parts.shape[1:], dtype=np.float32)
    for part in parts:
        out = (out + part).astype(np.float32)
    return out


def mogami_gemm(a_codes: np.ndarray, b_codes: np.ndarray, bits: int) -> np.ndarray:
    out = np.zeros((a_codes.shape[0], b_codes.shape[0]), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # saturated products may sum to +-inf
        for k in range(a_codes.shape[1]):
            prod = mogami_mul_bits(a_codes[:, k][:, None], b_codes[:, k][None, :], bits)
            out = (out + _as_f32(prod, bits)).astype(np.float32)
    return out


def gemm_call(hdr: Header, a, b) -> np.ndarray:
    """C [M, N] fp32 of one kernel call; ``a``/``b`` have ``codes`` [R, K] and ``scales`` [R, nb]."""
    if hdr.arith == Arith.MLS:
        p = mls_partials(a.codes, b.codes, hdr.block, hdr.ex, hdr.mx)
        v = mls_block_values(p, a.scales, b.scales, hdr.ex, hdr.mx, hdr.eg, hdr.mg)
        return fp32_sum(v, axis=2)
    if hdr.arith == Arith.POT:
        return fp32_sum(scaled_to_f32(pot_partials(a.codes, b.codes), -POT_SHIFT)[None], axis=0)
    bits = 32 if hdr.arith == Arith.MOGAMI_FP32 else 16
    return fp32_sum(mogami_gemm(a.codes, b.codes, bits)[None], axis=0)


def gemm(a: QTensor, b: QTensor, *, op: Op = Op.FORWARD, limits=None) -> torch.Tensor:
    """The whole host + kernel GEMM (tiling of ``lowbit.backends.emulation``) in numpy."""
    from lowbit.backends.emulation import FULL, tiled_gemm

    return tiled_gemm(a, b, op, gemm_call, limits or FULL)


# ------------------------------------------------------------------------------------------------
# The whole top on a word stream
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Sections:
    a: object
    b: object


def check_header(h: dict, build: Build = EMULATION) -> Status:
    """The kernel's header check for the kernel ``build`` (hls gemm.hpp check_header)."""
    if h["magic"] != wire.MAGIC:
        return Status.BAD_MAGIC
    if h["version"] != wire.WIRE_VERSION:
        return Status.BAD_VERSION
    if h["arith"] > Arith.MOGAMI_BF16 or h["op"] > Op.WEIGHT_GRAD:
        return Status.BAD_FORMAT
    mls = h["arith"] == Arith.MLS
    if mls and not (mls_element_in_range(h["ex"], h["mx"]) and mls_scale_in_range(h["eg"], h["mg"])):
        return Status.BAD_FORMAT
    if not build.carries(Arith(h["arith"]), h["ex"], h["mx"]):
        return Status.BAD_FORMAT  # a well-formed header for an arithmetic this bitstream was not built with
    if not (1 <= h["m"] <= wire.MAX_M and 1 <= h["n"] <= wire.MAX_N and 1 <= h["k"] <= wire.MAX_K):
        return Status.BAD_DIMS
    if h["k"] > build.limits.k_max:
        return Status.BAD_DIMS
    if not 1 <= h["block"] <= wire.MAX_K or (not mls and h["block"] != h["k"]):
        return Status.BAD_DIMS
    nb = -(-h["k"] // h["block"])
    if mls and max(h["m"], h["n"]) * nb > build.limits.scale_buf:
        return Status.BAD_DIMS
    if not build.limits.a_fits(h["m"], h["k"]):
        return Status.BAD_DIMS
    return Status.OK


def _raw_header(words: np.ndarray) -> dict:
    return {name: (int(words[w]) >> lo) & ((1 << width) - 1) for name, (w, lo, width) in wire.HEADER_FIELDS.items()}


class _Cursor:
    def __init__(self, words: np.ndarray, pos: int):
        self.words, self.pos = words, pos

    def take(self, count: int, lane_bits: int) -> Tuple[np.ndarray, int]:
        """Up to ``count`` lanes of a section and how many words were available for it."""
        need = wire.words_for(count, lane_bits)
        got = self.words[self.pos:self.pos + need]
        self.pos += len(got)
        return wire.unpack_lanes(got, lane_bits, min(count, len(got) * (64 // lane_bits))), len(got)


def run_stream(words: np.ndarray, build: Build = EMULATION) -> Tuple[np.ndarray, Status]:
    """(output words, status) of the AXI-Stream top of kernel ``build`` for input ``words`` (TLAST
    on the last)."""
    words = np.ascontiguousarray(words, dtype=np.uint64)
    if len(words) < wire.HEADER_WORDS:
        return _finish([], Status.TRUNCATED)
    h = _raw_header(words)
    status = check_header(h, build)
    if status != Status.OK:
        return _finish([], status)
    hdr = Header.from_words(words[: wire.HEADER_WORDS])
    announced = wire.HEADER_WORDS + sum(hdr.section_words().values())
    # The kernel's router reads exactly the announced words: after an early end it supplies zero
    # words (the call still runs and reports TRUNCATED), a longer stream is drained (BAD_DIMS).
    status = Status.TRUNCATED if len(words) < announced else Status.BAD_DIMS if len(words) > announced else Status.OK
    words = np.concatenate([words[:announced], np.zeros(max(announced - len(words), 0), dtype=np.uint64)])
    nb = hdr.nblocks if hdr.has_scales else 0
    cur = _Cursor(words, wire.HEADER_WORDS)
    sa, _ = cur.take(hdr.m * nb, wire.SCALE_LANE_BITS)
    ac, _ = cur.take(hdr.m * hdr.k, hdr.lane_bits)
    sb, _ = cur.take(hdr.n * nb, wire.SCALE_LANE_BITS)
    bc, _ = cur.take(hdr.n * hdr.k, hdr.lane_bits)
    a = _operand(ac.reshape(hdr.m, hdr.k), sa, hdr.m, nb)
    b = _operand(bc.reshape(hdr.n, hdr.k), sb, hdr.n, nb)
    return _finish(list(np.ascontiguousarray(gemm_call(hdr, a, b).T).reshape(-1)), status)


@dataclass(frozen=True)
class _Op:
    codes: np.ndarray
    scales: np.ndarray


def _operand(codes, scales, rows, nb) -> _Op:
    return _Op(codes.astype(np.uint32), np.asarray(scales, dtype=np.uint16).reshape(rows, nb))


def _finish(values: List, status: Status) -> Tuple[np.ndarray, Status]:
    body = wire.pack_lanes(np.asarray(values, dtype=np.float32).view(np.uint32), wire.OUT_LANE_BITS) \
        if values else np.zeros(0, dtype=np.uint64)
    return np.concatenate([body, np.array([wire.status_word(status)], dtype=np.uint64)]), status


# ------------------------------------------------------------------------------------------------
# Golden vectors
# ------------------------------------------------------------------------------------------------
def write_golden(directory: Path, name: str, words: np.ndarray, build: Build = EMULATION) -> Tuple[Path, Path]:
    """Write ``<name>.in.bin`` / ``<name>.out.bin`` (little-endian uint64 words) for the testbenches
    of kernel ``build`` (what it answers to a header it does not carry or that exceeds its buffers
    is part of the expectation)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out, _ = run_stream(words, build)
    pin, pout = directory / f"{name}.in.bin", directory / f"{name}.out.bin"
    pin.write_bytes(np.ascontiguousarray(words, dtype="<u8").tobytes())
    pout.write_bytes(np.ascontiguousarray(out, dtype="<u8").tobytes())
    return pin, pout


def _case_words(rng, op, fmt, m, n, k, block, *, fill="random", zero_rows=()) -> np.ndarray:
    """A well-formed stream with random (or extreme) codes of ``fmt``."""
    from lowbit.backends.emulation import Operand, build_stream

    hdr = Header.for_gemm(op, fmt, m, n, k, block)
    nb = hdr.nblocks if hdr.has_scales else 0

    def codes(rows):
        if isinstance(fmt, MLS) and fill == "max":
            mag = ((1 << fmt.ex) - 1) << fmt.mx | ((1 << fmt.mx) - 1)
            sign = rng.integers(0, 2, (rows, k)) << (fmt.code_bits - 1)
            return (mag | sign).astype(np.uint32)
        if fill == "max":  # PoT: largest exponent, random signs
            return (15 | (rng.integers(0, 2, (rows, k)) << 4)).astype(np.uint32)
        if hdr.arith in (Arith.MOGAMI_FP32, Arith.MOGAMI_BF16):
            vals = (rng.standard_normal((rows, k)) * 2.0 ** rng.integers(-20, 20, (rows, k))).astype(np.float32)
            vals[rng.random((rows, k)) < 0.1] = 0.0
            bits = vals.view(np.uint32)
            return bits >> 16 if hdr.arith == Arith.MOGAMI_BF16 else bits
        return rng.integers(0, 1 << fmt.code_bits, (rows, k)).astype(np.uint32)

    def scales(rows):
        if not nb:
            return np.zeros((rows, 0), dtype=np.uint16)
        if fill == "max":
            return np.zeros((rows, nb), dtype=np.uint16) | ((1 << fmt.mg) - 1)
        return rng.integers(0, 1 << (fmt.eg + fmt.mg), (rows, nb)).astype(np.uint16)

    ac, bc = codes(m), codes(n)
    for r in zero_rows:
        ac[r % m] = 0
        bc[r % n, : min(block, k)] = 0  # an all-zero block
    return build_stream(hdr, Operand(ac, scales(m)), Operand(bc, scales(n)))


def _patch_header(words: np.ndarray, **fields) -> np.ndarray:
    words = words.copy()
    for name, value in fields.items():
        w, lo, width = wire.HEADER_FIELDS[name]
        mask = ((1 << width) - 1) << lo
        words[w] = np.uint64((int(words[w]) & ~mask) | ((value << lo) & mask))
    return words


def golden_cases(seed: int = 4) -> List[Tuple[str, np.ndarray]]:
    """The testbench cases: (name, input words), deterministic for a seed."""
    from lowbit.numerics.formats import Mogami, PoT, parse

    rng = np.random.default_rng(seed)
    F, B, W = Op.FORWARD, Op.BACKWARD_DATA, Op.WEIGHT_GRAD
    cases = []
    for spec in ("mls:2,1", "mls:2,4", "mls:0,4", "mls:1,1", "mls:2,1,g=8,0,group=nc", "mls:2,4,g=8,0,group=nc"):
        fmt = parse(spec)
        tag = spec.replace("mls:", "mls").replace(",g=8,", "g8").replace(",group=nc", "").replace(",", "")
        cases += [
            (f"{tag}_fwd_divides", _case_words(rng, F, fmt, 16, 32, 144, 9)),
            (f"{tag}_fwd_ragged", _case_words(rng, F, fmt, 13, 7, 50, 9, zero_rows=(2, 5))),
            (f"{tag}_bwd_data", _case_words(rng, B, fmt, 5, 11, 63, 9)),
            (f"{tag}_wgrad", _case_words(rng, W, fmt, 6, 9, 4 * 49, 49)),
            (f"{tag}_saturated", _case_words(rng, F, fmt, 3, 5, 27, 9, fill="max")),
        ]
    cases += [
        ("mls44_widest_accumulation",
         _case_words(rng, W, MLS(MLS_MAX_EX, MLS_MAX_MX), 1, 2, wire.MAX_K, wire.MAX_K, fill="max")),
        ("mls21_wgrad_long_block", _case_words(rng, W, parse("mls:2,1"), 2, 3, 1024, 1024, fill="max")),
        ("mls21_max_m", _case_words(rng, F, parse("mls:2,1"), wire.MAX_M, 3, 18, 9)),
        ("mls24_block_longer_than_k", _case_words(rng, F, parse("mls:2,4"), 5, 4, 5, 9)),
        ("pot_fwd_divides", _case_words(rng, F, PoT(), 16, 16, 64, 64)),
        ("pot_ragged_zero_rows", _case_words(rng, W, PoT(), 7, 9, 37, 37, zero_rows=(1, 3))),
        ("pot_largest_accumulation", _case_words(rng, F, PoT(), 2, 3, wire.MAX_K, wire.MAX_K, fill="max")),
        ("mogami_fp32", _case_words(rng, F, Mogami("fp32"), 9, 5, 33, 33, zero_rows=(0,))),
        ("mogami_bf16", _case_words(rng, B, Mogami("bf16"), 6, 7, 41, 41)),
    ]
    good = _case_words(rng, F, parse("mls:2,1"), 4, 6, 27, 9)
    cases += [
        ("bad_magic", _patch_header(good, magic=0x12345678)),
        ("bad_version", _patch_header(good, version=wire.WIRE_VERSION + 1)),
        ("bad_dims_zero_m", _patch_header(good, m=0)),
        ("bad_dims_absurd_k", _patch_header(good, k=0xFFFFFFF0)),
        ("bad_dims_absurd_n", _patch_header(good, n=0x7FFFFFFF)),
        ("bad_dims_block", _patch_header(good, block=0)),
        ("bad_dims_block_over_max_k", _patch_header(good, block=wire.MAX_K + 1)),
        ("bad_format_ex", _patch_header(good, ex=MLS_MAX_EX + 1)),
        ("bad_format_arith", _patch_header(good, arith=9)),
        ("truncated_header", good[:2]),
        ("truncated_a", good[:6]),
        ("truncated_b", good[:-2]),
        ("longer_than_header", np.concatenate([good, np.zeros(3, dtype=np.uint64)])),
    ]
    # Array edges, fixed: one-row and one-column tiles, K a multiple of neither S nor the block.
    cases += [
        ("edge_mls21_one_row", _case_words(rng, F, parse("mls:2,1"), 1, 17, 38, 9)),
        ("edge_mls21_one_col", _case_words(rng, B, parse("mls:2,1"), 17, 1, 38, 9)),
        ("edge_mls24_k_not_simd_nor_block", _case_words(rng, W, parse("mls:2,4"), 16, 16, 27, 6)),
        ("edge_mls21_rows_cols_plus_one", _case_words(rng, F, parse("mls:2,1"), 33, 17, 45, 9)),
        ("edge_pot_rows_cols_plus_one", _case_words(rng, F, PoT(), 17, 33, 31, 31)),
        ("edge_pot_one_by_one", _case_words(rng, F, PoT(), 1, 1, 3, 3)),
        ("edge_mogami_fp32_one_row", _case_words(rng, F, Mogami("fp32"), 1, 9, 7, 7)),
        ("edge_mogami_bf16_cols_plus_one", _case_words(rng, W, Mogami("bf16"), 9, 17, 13, 13)),
    ]
    # ... and of every PE array in the board record: M one past its rows, N one past its column group
    # (C x INTERLEAVE rows of B), K = 3S + 2 with blocks of S + 1 (every block after the first starts
    # inside a SIMD word), so each build's testbench meets its own array's edges.
    fmt_of = {"mls": parse("mls:2,4"), "pot": PoT(), "mogami": Mogami("fp32")}
    shapes = sorted({(f, a.rows, a.cols * a.interleave, a.simd) for cfg in BOARDS.values() for f, a in cfg.arrays})
    for family, rows, group, simd in shapes:
        k = 3 * simd + 2
        block = simd + 1 if family == "mls" else k
        cases.append((f"edge_{family}_r{rows}_g{group}_s{simd}",
                      _case_words(rng, F, fmt_of[family], rows + 1, group + 1, k, block)))
    return cases


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="lowbit golden",
                                description="write the golden vectors of the HLS testbenches")
    p.add_argument("--golden", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--board", default=None, help="expectations of this board's build (default: the emulation's)")
    p.add_argument("--arith", default="mls", help="with --board: the family the bitstream carries")
    args = p.parse_args(argv)
    build = build_of(args.board, args.arith) if args.board else EMULATION
    names = []
    for name, words in golden_cases(args.seed):
        write_golden(args.golden, name, words, build)
        names.append(name)
    (args.golden / "cases.txt").write_text("\n".join(names) + "\n")
    print(f"wrote {len(names)} cases to {args.golden}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
