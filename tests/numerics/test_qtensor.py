"""QTensor: decode, pack()/unpack() round trips, and packing equal to the backends' streams."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit import QTensor, quantize
from lowbit.kernel import wire
from lowbit.numerics.formats import MLS, parse

FORMATS = ["mls:2,1", "mls:2,4", "mls:0,3", "mls:4,7", "mls:1,1,g=8,1,group=n", "mls:2,3,g=4,0,group=c",
           "mls:3,1,g=8,1,group=none", "pot:4", "mogami:bf16", "mogami:fp32"]


def roundtrip(q: QTensor) -> QTensor:
    data = q.pack()
    assert isinstance(data, bytes) and len(data) % 8 == 0
    return QTensor.unpack(data, q.fmt, q.shape, block=q.block, tensor_scale=q.tensor_scale, dtype=q.dtype)


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(FORMATS), rows=st.integers(1, 9), k=st.integers(1, 70), block=st.integers(1, 80),
       seed=st.integers(0, 2**31), four_d=st.booleans())
def test_pack_unpack_round_trip(fmt, rows, k, block, seed, four_d):
    g = torch.Generator().manual_seed(seed)
    if four_d:
        x = torch.randn(rows, 1 + k % 5, 1 + block % 3, 1 + seed % 3, generator=g)
        kw = {}
    else:
        x = torch.randn(rows, k, generator=g)
        kw = {"block": block} if parse(fmt).kind == "mls" else {}
    q = quantize(x, fmt, generator=g, **kw)
    u = roundtrip(q)
    assert torch.equal(u.codes, q.codes) and u.codes.dtype == q.codes.dtype
    if q.scale_codes is not None:
        assert torch.equal(u.scale_codes, q.scale_codes)
    assert u.block == q.block and u.dtype == q.dtype and float(u.tensor_scale) == float(q.tensor_scale)
    assert torch.equal(u.decode(), q.values)
    assert u.pack() == q.pack()


def test_pack_is_the_emulation_backends_stream():
    from lowbit.backends.emulation import build_stream, operand_of

    g = torch.Generator().manual_seed(0)
    for fmt, block in [("mls:2,1", 8), ("mls:2,4", 5), ("mls:4,7", 16), ("pot:4", None), ("mogami:bf16", None)]:
        kw = {"block": block} if block else {}
        a = quantize(torch.randn(3, 21, generator=g), fmt, generator=g, **kw)
        b = quantize(torch.randn(5, 21, generator=g), fmt, generator=g, **kw)
        hdr = wire.Header.for_gemm(wire.Op.FORWARD, a.fmt, 3, 5, 21, block or 21)
        stream = build_stream(hdr, operand_of(a), operand_of(b))
        assert stream.tobytes() == hdr.to_words().tobytes() + a.pack() + b.pack()
        assert len(stream) == hdr.input_words()


def test_pack_layout_by_hand():
    # <2,1> codes are 4 bits: lanes of 4 bits, element 0 in the low nibble of byte 0
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1]], dtype=torch.int16)
    scales = torch.tensor([[0x1FF, 3, 2]], dtype=torch.int16)
    q = QTensor(MLS(2, 1), codes, scales, torch.tensor(1.0), torch.float32, block=8)
    data = q.pack()
    assert data[:8] == bytes([0xFF, 0x01, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00])  # one word of scale lanes
    assert data[8:16] == bytes([0x21, 0x43, 0x65, 0x87, 0xA9, 0xCB, 0xED, 0x0F])
    assert data[16:] == bytes([0x01, 0, 0, 0, 0, 0, 0, 0])  # 17th code; the word is padded with zeros


def test_pack_rejects_bad_tensors_and_unpack_bad_data():
    q = quantize(torch.randn(2, 8), "mls:2,1", block=4)
    with pytest.raises(ValueError, match="expected"):
        QTensor.unpack(q.pack()[:-8], q.fmt, q.shape, block=4)
    with pytest.raises(ValueError, match="needs its block"):
        QTensor.unpack(q.pack(), q.fmt, q.shape)
    bad = QTensor(q.fmt, q.codes | 0x100, q.scale_codes, q.tensor_scale, q.dtype, q.block)
    with pytest.raises(ValueError, match="exceed 4 bits"):
        bad.pack()
    with pytest.raises(ValueError, match="not sent to the kernel"):
        quantize(torch.randn(2, 2), "fp32").pack()
    with pytest.raises(ValueError, match="2-D"):
        quantize(torch.randn(8), "pot:4").pack()
    rows = torch.tensor([[1.0], [0.1], [0.01]])
    n = quantize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)) * rows, "mls:2,1,g=8,1,group=n", block=4)
    data = n.pack()
    with pytest.raises(ValueError, match="group='none'"):
        QTensor.unpack(data, "mls:2,1,g=8,1,group=none", (3, 8), block=4)


def test_expand_groups_per_row_with_blocks():
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(3))
    q = quantize(x, "mls:2,1,g=8,1,group=n", block=8)
    assert q.scale_codes.shape == (4, 1)
    assert q.expand_groups(q.group_scale()).shape == (4, 40)
    assert torch.equal(q.values, q.decode())


def test_packing_speed_is_vectorised():
    # not a timing test: a 1M-element pack must not take a Python-loop's time (> 1 s)
    import time

    q = quantize(torch.randn(256, 4096), "mls:2,1", block=32)
    t0 = time.perf_counter()
    q.pack()
    assert time.perf_counter() - t0 < 1.0


def test_worked_example_of_docs_wire_format():
    x = torch.tensor([[0.9, -0.3, 0.05, 0.0, 0.6, -0.2], [0.02, 0.01, -0.015, 0.004, 0.0, 0.03]])
    q = quantize(x, "mls:2,1", rounding="nearest", block=4)
    assert q.codes.tolist() == [[7, 13, 1, 0, 7, 12], [7, 6, 15, 3, 0, 7]]
    assert q.scale_codes.tolist() == [[0, 3], [13, 11]]
    assert q.pack() == bytes.fromhex("00 00 03 00 0d 00 0b 00 d7 01 c7 67 3f 70 00 00")
    h = wire.Header.for_gemm(wire.Op.FORWARD, q.fmt, 2, 2, 6, 4)
    assert h.to_words().tobytes() == bytes.fromhex(
        "42 57 4f 4c 01 00 00 00 02 00 00 00 02 00 00 00 06 00 00 00 04 00 00 00 12 18 00 00 00 00 00 00")
    assert h.input_words() == 8 and h.output_words() == 3


def test_pack_into_buffers_at_offsets():
    q = quantize(torch.randn(5, 33), "mls:2,4", block=8)
    data = q.pack()
    assert q.packed_nbytes() == len(data)
    words = np.full(4 + len(data) // 8 + 2, 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)  # e.g. after a header
    assert q.pack_into(words, offset=32) == len(data)
    assert words.tobytes()[32:32 + len(data)] == data and int(words[-1]) == 0xFFFFFFFFFFFFFFFF
    ba = bytearray(len(data))
    q.pack_into(ba)
    assert bytes(ba) == data
    with pytest.raises(ValueError, match="need"):
        q.pack_into(np.zeros(len(data) - 8, dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4", "mls:4,7", "pot:4", "mogami:bf16", "mogami:fp32"])
def test_numpy_packing_fallback_equals_native(fmt, monkeypatch):
    import lowbit.numerics.quant.native as quant_mod

    q = quantize(torch.randn(7, 45), fmt, **({"block": 16} if fmt.startswith("mls") else {}))
    native = q.pack()
    monkeypatch.setattr(quant_mod, "native_available", lambda: False)
    assert q.pack() == native
    bad = QTensor(q.fmt, q.codes | (1 << 14), q.scale_codes, q.tensor_scale, q.dtype, q.block)
    if q.fmt.kind in ("mls", "pot"):
        with pytest.raises(ValueError, match="exceed"):
            bad.pack()


def test_unpack_rejects_scale_codes_wider_than_the_format():
    """A 0xFFFF scale lane decoded to a group scale of 3.0 in software and 0 in the kernel (issue 14)."""
    q = quantize(torch.randn(2, 8, generator=torch.Generator().manual_seed(0)), "mls:2,1", block=4)
    data = bytearray(q.pack())
    data[0:2] = b"\xff\xff"  # the first scale lane
    with pytest.raises(ValueError, match="wider than the 9-bit group-scale codes"):
        QTensor.unpack(bytes(data), q.fmt, q.shape, block=4)
    data[0:2] = (1 << 9).to_bytes(2, "little")  # one bit past eg + mg
    with pytest.raises(ValueError, match="1 scale lanes hold values wider"):
        QTensor.unpack(bytes(data), q.fmt, q.shape, block=4)
    data[0:2] = (1 << 9 - 1).to_bytes(2, "little")  # the widest valid code still reads back
    assert QTensor.unpack(bytes(data), q.fmt, q.shape, block=4).scale_codes[0, 0] == 1 << 8


def test_pack_rejects_scale_codes_wider_than_the_format():
    q = quantize(torch.randn(2, 8, generator=torch.Generator().manual_seed(0)), "mls:2,4,g=4,0", block=4)
    bad = QTensor(q.fmt, q.codes, torch.full_like(q.scale_codes, -1), q.tensor_scale, q.dtype, q.block)
    with pytest.raises(ValueError, match="scale_codes hold values wider than the 4-bit"):
        bad.pack()
