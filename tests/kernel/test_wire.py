"""The wire spec: generated header in sync, header round trip, lanes, sections, status word."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.kernel import wire
from lowbit.numerics.formats import MLS, Mogami, PoT
from lowbit.kernel.wire import Arith, Header, Op, Status

REPO = Path(__file__).resolve().parents[2]


def test_generated_hpp_matches_committed(tmp_path):
    out = tmp_path / "wire.hpp"
    assert wire.main(["--emit-hpp", "--out", str(out)]) == 0
    committed = (REPO / wire.HPP_PATH).read_text()
    assert out.read_text() == committed, "hls/include/lowbit/wire.hpp is stale: run `make hpp` and commit it"


def test_hpp_carries_every_constant():
    text = wire.emit_hpp()
    for name in ("MAGIC = 0x4C4F5742u", f"WIRE_VERSION = {wire.WIRE_VERSION}u", "STATUS_TRUNCATED = 0x5",
                 "REG_ID_VERSION = 0x18", "ARITH_MOGAMI_BF16 = 0x3", "HDR_BLOCK_WORD = 2, HDR_BLOCK_LO = 32"):
        assert name in text


headers = st.builds(Header, op=st.sampled_from(list(Op)), arith=st.sampled_from(list(Arith)),
                    m=st.integers(0, 2**32 - 1), n=st.integers(0, 2**32 - 1), k=st.integers(0, 2**32 - 1),
                    block=st.integers(0, 2**32 - 1), ex=st.integers(0, 15), mx=st.integers(0, 15),
                    eg=st.integers(0, 15), mg=st.integers(0, 15))


@settings(max_examples=200, deadline=None)
@given(h=headers)
def test_header_round_trip(h):
    words = h.to_words()
    assert words.dtype == np.uint64 and len(words) == wire.HEADER_WORDS
    assert Header.from_words(words) == h


def test_header_field_positions_by_hand():
    h = Header(Op.WEIGHT_GRAD, Arith.MLS, m=3, n=5, k=9, block=9, ex=2, mx=1, eg=8, mg=1)
    w = [int(v) for v in h.to_words()]
    assert w[0] == wire.MAGIC | (wire.WIRE_VERSION << 32) | (2 << 48) | (0 << 56)
    assert w[1] == 3 | (5 << 32) and w[2] == 9 | (9 << 32) and w[3] == 2 | (1 << 4) | (8 << 8) | (1 << 12)


def test_header_rejects_overflow_and_short_streams():
    with pytest.raises(ValueError, match="does not fit"):
        Header(Op.FORWARD, Arith.POT, m=2**32, n=1, k=1, block=1).to_words()
    with pytest.raises(ValueError, match="shorter"):
        Header.from_words(np.zeros(2, dtype=np.uint64))


def test_for_gemm_and_lane_widths():
    h = Header.for_gemm(Op.FORWARD, MLS(2, 4), 3, 4, 18, 9)
    assert (h.arith, h.ex, h.mx, h.eg, h.mg, h.block, h.nblocks) == (Arith.MLS, 2, 4, 8, 1, 9, 2)
    assert h.lane_bits == 8 and Header.for_gemm(Op.FORWARD, MLS(2, 1), 1, 1, 1, 1).lane_bits == 4
    assert Header.for_gemm(Op.FORWARD, MLS(4, 7), 1, 1, 1, 1).lane_bits == 16
    p = Header.for_gemm(Op.FORWARD, PoT(), 3, 4, 18, 9)
    assert (p.arith, p.block, p.lane_bits, p.has_scales) == (Arith.POT, 18, 8, False)
    assert Header.for_gemm(Op.FORWARD, Mogami("fp32"), 1, 1, 1, 1).lane_bits == 32
    assert wire.elem_lane_bits(Mogami("bf16")) == 16
    with pytest.raises(ValueError):
        wire.arith_of(object())


def test_section_sizes():
    h = Header.for_gemm(Op.FORWARD, MLS(2, 1), m=3, n=5, k=10, block=4)  # 3 blocks per row
    # scales: 9 and 15 lanes of 16 bits, contiguous per section; codes: 30 and 50 lanes of 4 bits
    assert h.section_words() == {"a_scales": 3, "a_codes": 2, "b_scales": 4, "b_codes": 4}
    assert h.input_words() == 4 + 13 and h.output_words() == 8 + 1


@settings(max_examples=100, deadline=None)
@given(lane=st.sampled_from([4, 8, 16, 32]), count=st.integers(0, 100), seed=st.integers(0, 2**31))
def test_lane_packing_round_trip(lane, count, seed):
    values = np.random.default_rng(seed).integers(0, 1 << lane, size=count, dtype=np.uint64)
    words = wire.pack_lanes(values, lane)
    assert len(words) == wire.words_for(count, lane)
    assert np.array_equal(wire.unpack_lanes(words, lane, count).astype(np.uint64), values)
    per = 64 // lane
    for i, v in enumerate(values[:per]):  # lane i of word 0 sits at bits [i*lane, (i+1)*lane)
        assert (int(words[0]) >> (i * lane)) & ((1 << lane) - 1) == int(v)
    if count % per:
        assert int(words[-1]) >> ((count % per) * lane) == 0  # unused lanes are zero


def test_lane_bytes_are_little_endian():
    words = wire.pack_lanes(np.array([0x1234, 0xABCD], dtype=np.uint16), 16)
    assert words.tobytes() == bytes([0x34, 0x12, 0xCD, 0xAB, 0, 0, 0, 0])


def test_status_word():
    for s in Status:
        w = wire.status_word(s)
        assert w >> 32 == wire.MAGIC and wire.parse_status_word(w) == s
    with pytest.raises(ValueError, match="status word"):
        wire.parse_status_word(0x1234)
    with pytest.raises(ValueError):
        wire.parse_status_word((wire.MAGIC << 32) | 99)


def test_registers_and_ids():
    assert [r.value for r in wire.Reg][:4] == [0x00, 0x04, 0x08, 0x0C]
    assert all(v % 4 == 0 for v in (r.value for r in wire.Reg))
    assert wire.VLNV.count(":") == 3


def test_header_with_unknown_enum_values_says_which_field_and_why():
    """from_words raised "7 is not a valid Op" (issue 14): now the field, its legal values, and
    whether the words are a lowbit header at all."""
    good = Header(Op.FORWARD, Arith.POT, m=2, n=3, k=4, block=4).to_words()
    bad_op = good.copy()
    bad_op[0] |= np.uint64(7 << 48)
    with pytest.raises(ValueError, match=r"op=7 is not one of FORWARD=0, BACKWARD_DATA=1, WEIGHT_GRAD=2: the header "
                                         r"is corrupt"):
        Header.from_words(bad_op)
    bad_arith = good.copy()
    bad_arith[0] |= np.uint64(9 << 56)
    with pytest.raises(ValueError, match=r"arith=9 is not one of MLS=0, .*MOGAMI_BF16=3"):
        Header.from_words(bad_arith)
    with pytest.raises(ValueError, match="not a lowbit header"):
        Header.from_words(np.full(4, 0xFFFF_FFFF_FFFF_FFFF, dtype=np.uint64))
    newer = good.copy()
    newer[0] = (int(newer[0]) & ~(0xFFFF << 32)) | (2 << 32) | (5 << 48)
    with pytest.raises(ValueError, match="wire version 2, this host speaks 1"):
        Header.from_words(np.array([newer[0], *good[1:]], dtype=np.uint64))
