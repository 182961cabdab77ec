"""Compile both C-simulation testbenches with g++ and replay the golden vectors through them."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lowbit.kernel import headers as hls_headers
from lowbit.kernel import reference as reference_kernel

TOPS = ("lowbit_gemm_axis", "lowbit_gemm_mm")


def compile_tb(top: str, out_dir: Path, defines=()) -> Path:
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not installed")
    exe = out_dir / f"tb_{top}{'_small' if defines else ''}"
    cmd = [cxx, *hls_headers.CXX_FLAGS, *defines, f"-I{hls_headers.hls_include_dir()}", f"-I{hls_headers.csim_include_dir()}", "-isystem", str(hls_headers.ap_types_dir()),
           str(hls_headers.HLS_DIR / "tb" / f"tb_{top}.cpp"),
           str(hls_headers.HLS_DIR / "kernels" / top / f"{top}.cpp"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return exe


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    folder = tmp_path_factory.mktemp("golden")
    names = [reference_kernel.write_golden(folder, name, words) and name
             for name, words in reference_kernel.golden_cases(seed=4)]
    return folder, names


@pytest.fixture(scope="module")
def testbenches(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tb")
    return {top: compile_tb(top, folder) for top in TOPS}


def test_golden_cases_fit_the_smallest_board_config(golden):
    """So the csim of a PYNQ-Z2 build (smaller buffers) replays the same vectors unchanged."""
    from lowbit.backends.emulation import CONFIGS
    from lowbit.kernel.wire import Header

    small = CONFIGS["pynq-z2"]
    for name, words in reference_kernel.golden_cases(seed=4):
        if name.startswith(("bad_", "truncated_header")):
            continue
        h = Header.from_words(words[:4])
        assert h.m * h.k <= small.a_elems, name
        if h.has_scales:
            assert max(h.m, h.n) * h.nblocks <= small.scale_buf, name


def test_axis_testbench_with_pynq_z2_buffers(golden, tmp_path):
    from lowbit.backends.emulation import CONFIGS, config_defines

    folder, names = golden
    exe = compile_tb("lowbit_gemm_axis", tmp_path, config_defines(CONFIGS["pynq-z2"]))
    proc = subprocess.run([str(exe), str(folder), *names], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("top", TOPS)
def test_testbench_passes_every_golden_case(top, golden, testbenches):
    folder, names = golden
    proc = subprocess.run([str(testbenches[top]), str(folder), *names], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    passed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PASS")]
    assert passed == names


def test_golden_cases_cover_the_brief(golden):
    _, names = golden
    for tag in ("mls21", "mls24", "mls04", "mls11", "mls21g80", "pot", "mogami_fp32", "mogami_bf16",
                "_fwd_ragged", "_bwd_data", "_wgrad", "_saturated", "widest_accumulation", "bad_magic",
                "bad_version", "bad_dims_absurd_k", "truncated_b", "truncated_header", "longer_than_header"):
        assert any(tag in n for n in names), tag


def _corrupt(folder: Path, name: str, edit) -> None:
    path = folder / f"{name}.out.bin"
    words = np.fromfile(path, dtype="<u8")
    path.write_bytes(np.ascontiguousarray(edit(words), dtype="<u8").tobytes())


@pytest.mark.parametrize("top", TOPS)
@pytest.mark.parametrize("edit,message", [
    (lambda w: np.concatenate([w[:3], w[3:4] ^ np.uint64(1), w[4:]]), "word 3 expected"),
    (lambda w: np.concatenate([w[:-1], w[-2:]]), "expected"),  # one word more expected than sent
    (lambda w: np.concatenate([w[:2], w[-1:]]), ""),  # fewer words expected than sent
])
def test_testbench_fails_on_a_wrong_stream(top, edit, message, testbenches, tmp_path):
    name = "pot_fwd_divides"
    words = dict(reference_kernel.golden_cases(seed=4))[name]
    reference_kernel.write_golden(tmp_path, name, words)
    _corrupt(tmp_path, name, edit)
    proc = subprocess.run([str(testbenches[top]), str(tmp_path), name], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "FAIL" in proc.stderr and message in proc.stderr


def _board_builds():
    from lowbit.kernel import boards

    return [(name, family) for name, cfg in boards.BOARDS.items() for family in cfg.families]


@pytest.mark.parametrize("board,family", _board_builds())
def test_testbench_replays_every_case_at_every_board_build(board, family, tmp_path):
    """Each bitstream's configuration (one family, the board's buffers) compiled from the generated
    board_config.hpp replays every golden case with that build's expectations: its own family bit
    for bit, the others answered BAD_FORMAT, calls beyond its buffers BAD_DIMS."""
    from lowbit.kernel import boards
    from lowbit.kernel.wire import Status

    build = boards.build_of(board, family)
    top = "lowbit_gemm_axis" if boards.BOARDS[board].kind == "zynq" else "lowbit_gemm_mm"
    names, statuses = [], []
    for name, words in reference_kernel.golden_cases(seed=4):
        reference_kernel.write_golden(tmp_path, name, words, build)
        names.append(name)
        statuses.append(reference_kernel.run_stream(words, build)[1])
    assert statuses.count(Status.OK) >= 4 and Status.BAD_FORMAT in statuses
    exe = compile_tb(top, tmp_path, [build.define])
    proc = subprocess.run([str(exe), str(tmp_path), *names], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    passed = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PASS")]
    assert passed == names
