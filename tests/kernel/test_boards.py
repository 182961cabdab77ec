"""The board record: generated header in sync, parts, manifest written by `lowbit build` and read by
the runtime, and the one host tiler at every board's limits against the kernel's own header check."""
from pathlib import Path

import numpy as np
import pytest

from lowbit.apps import build
from lowbit.kernel import wire
from lowbit.backends import emulation as em
from lowbit.numerics.formats import MLS, Mogami, PoT
from lowbit.kernel import boards
from lowbit.kernel.boards import KernelLimits
from lowbit.kernel.wire import Op, Status

REPO = Path(__file__).resolve().parents[2]


def test_generated_board_header_matches_committed(tmp_path):
    out = tmp_path / "board_config.hpp"
    assert boards.main(["--emit-hpp", "--out", str(out)]) == 0
    committed = (REPO / boards.HPP_PATH).read_text()
    assert out.read_text() == committed, "board_config.hpp is stale: run `make hpp` and commit it"


def test_header_carries_every_build():
    text = boards.emit_hpp()
    for b in boards.all_builds():
        assert f"struct {b.name} {{" in text
        assert f"SCALE_BUF = {b.limits.scale_buf}u;" in text and f"A_ELEMS = {b.limits.a_elems}u;" in text
    assert "ARITH_MASK = 0xCu" in text  # mogami: fp32 + bf16
    for name, cfg in boards.BOARDS.items():
        for family in cfg.families:
            arr = cfg.array(family)
            struct = text.split(f"struct {boards.build_of(name, family).name} {{", 1)[1].split("};", 1)[0]
            assert (f"ROWS = {arr.rows}, COLS = {arr.cols}, SIMD = {arr.simd}, INTERLEAVE = {arr.interleave};"
                    in struct and f"FINISHERS = {arr.finishers};" in struct), (name, family)


def test_parts_are_the_data_sheet_figures():
    expect = {"pynq-z2": (140, 0, 220, 53_200), "zcu104": (312, 96, 1728, 230_400),
              "u50": (1344, 640, 5952, 872_000), "u250": (2688, 1280, 12_288, 1_728_000)}
    for name, (bram, uram, dsp, lut) in expect.items():
        p = boards.BOARDS[name].part
        assert (p.bram36, p.uram, p.dsp, p.lut) == (bram, uram, dsp, lut), name
    assert boards.ZCU104.clock_mhz == 200.0 and boards.ZCU104.hp_bits == 128
    assert build.BOARDS["zcu104"].clock_ns == 5.0 and build.BOARDS["pynq-z2"].clock_ns == 10.0


def test_build_carries_one_family():
    pot = boards.build_of("zcu104", "pot")
    assert pot.carries(wire.Arith.POT) and not pot.carries(wire.Arith.MLS, 2, 1)
    mls = boards.build_of("pynq-z2", "mls")
    assert mls.carries(wire.Arith.MLS, 2, 4) and not mls.carries(wire.Arith.MLS, 4, 7)
    assert all(boards.EMULATION.carries(a, 4, 7) for a in wire.Arith)
    with pytest.raises(ValueError, match="no fp32 build"):
        boards.build_of("u50", "fp32")


@pytest.mark.parametrize("board", ["pynq-z2", "zcu104", "u50"])
def test_manifest_from_the_build_writer_opens_with_the_runtime_reader(board, tmp_path):
    """`lowbit build` nests kernel_limits; the runtime read top-level keys and fell back to the full
    limits, so the host sent calls a PYNQ-Z2 kernel rejects (BAD_DIMS)."""
    from lowbit.board.device import read_manifest

    info = build.BOARDS[board]
    for f in info.outputs:
        (tmp_path / f).write_bytes(b"built " + f.encode())
    build.write_manifest(tmp_path, board, info.outputs, tool_version="test", commit="abc", arith="pot")
    manifest = read_manifest(tmp_path / info.outputs[0])
    assert KernelLimits.from_manifest(manifest) == boards.build_of(board, "pot").limits
    assert manifest["arith"] == "pot" and manifest["kernel_build"] == boards.build_of(board, "pot").name
    assert manifest["array"]["rows"] == boards.BOARDS[board].array("pot").rows
    assert manifest["compute_units"] == boards.BOARDS[board].compute_units


def test_manifest_with_broken_limits_says_so():
    with pytest.raises(ValueError, match="kernel_limits.*rebuild"):
        KernelLimits.from_manifest({"kernel_limits": {"a_elems": "x"}})
    assert KernelLimits.from_manifest({}) == boards.FULL_LIMITS


def _accepted(build_cfg, header) -> Status:
    """The kernel's own header check: a header-only stream comes back TRUNCATED when the header is
    accepted (the kernel then waits for data), or with the check's status."""
    return em.run_axis_stream(header.to_words(), limits=build_cfg).status


SHAPES = [(1, 3000, 700), (3000, 1, 700), (5, 7, 20000), (130, 257, 9000), (128, 70000, 144), (17, 33, 1)]


def _fmt_block(family, k):
    if family == "mls":
        return [(MLS(2, 1), min(9, k)), (MLS(2, 4), min(1024, k))]
    if family == "pot":
        return [(PoT(), k)]
    return [(Mogami("fp32"), k), (Mogami("bf16"), k)]


@pytest.mark.parametrize("board,family", [(b, f) for b, c in boards.BOARDS.items() for f in c.families])
def test_tiler_at_every_board_limits_passes_the_kernel_check(board, family):
    build_cfg = boards.build_of(board, family)
    seen = set()
    for m, n, k in SHAPES:
        for fmt, block in _fmt_block(family, k):
            covered = np.zeros((m, n), dtype=np.int64)
            for ms, ns, calls in em.plan_tiles(fmt, m, n, k, block, Op.FORWARD, build_cfg.limits):
                assert [ks.start for ks, _ in calls] == sorted(ks.start for ks, _ in calls)
                assert sum(ks.stop - ks.start for ks, _ in calls) == k
                covered[ms, ns] += 1
                for _, hdr in calls:
                    key = (hdr.arith, hdr.ex, hdr.mx, hdr.m, hdr.n, hdr.k, hdr.block)
                    if key not in seen:
                        seen.add(key)
                        assert _accepted(build_cfg, hdr) == Status.TRUNCATED, (board, hdr)
            assert (covered == 1).all()


@pytest.mark.parametrize("board", ["pynq-z2", "zcu104"])
def test_a_call_beyond_the_buffers_is_answered_bad_dims(board):
    build_cfg = boards.build_of(board, "mls")
    limits = build_cfg.limits
    k = min(wire.MAX_K, limits.a_elems // 64 + 9)
    too_big = wire.Header.for_gemm(Op.FORWARD, MLS(2, 1), 64, 4, k, 9)
    assert 64 * k > limits.a_elems
    assert _accepted(build_cfg, too_big) == Status.BAD_DIMS
    tiles = list(em.plan_tiles(MLS(2, 1), 64, 4, k, 9, Op.FORWARD, limits))
    assert len(tiles[0][2]) > 1  # the host tiler splits it instead


def test_a_bitstream_answers_another_family_with_bad_format():
    pot_build = boards.build_of("pynq-z2", "pot")
    hdr = wire.Header.for_gemm(Op.FORWARD, MLS(2, 1), 4, 4, 9, 9)
    assert _accepted(pot_build, hdr) == Status.BAD_FORMAT
    assert _accepted(boards.build_of("pynq-z2", "mls"), wire.Header.for_gemm(Op.FORWARD, MLS(4, 7), 4, 4, 9, 9)) \
        == Status.BAD_FORMAT
    assert _accepted(pot_build, wire.Header.for_gemm(Op.FORWARD, PoT(), 4, 4, 9, 9)) == Status.TRUNCATED
