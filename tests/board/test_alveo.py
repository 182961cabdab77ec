"""The Alveo backend against a fake ``pyxrt`` that checks the calls and runs the m_axi kernel."""
import enum
import sys
import types

import numpy as np
import pytest
import torch

from lowbit.kernel import wire
from lowbit.backends.emulation import run_mm
from lowbit.board import BoardTimeout, KernelError

BANKS = {0: 1, 1: 2, 4: 2}  # argument index -> memory bank (in: HBM/DDR bank 1, out + result: bank 2)


class SyncDir(enum.IntEnum):
    XCL_BO_SYNC_BO_TO_DEVICE = 0
    XCL_BO_SYNC_BO_FROM_DEVICE = 1


class CmdState(enum.IntEnum):
    ERT_CMD_STATE_COMPLETED = 4
    ERT_CMD_STATE_TIMEOUT = 10


def make_fake_pyxrt(log, hang=False, corrupt=False):
    class bo:
        normal = 0

        def __init__(self, device, size, flags, group):
            assert isinstance(device, FakeDevice) and flags == bo.normal and size % 8 == 0
            self.size, self.group = size, group
            self.host = bytearray(size)  # the mapped host copy
            self.card = bytearray(size)  # device memory, reached only through sync
            log.append(("bo", size, group))

        def map(self):
            return memoryview(self.host)

        def sync(self, direction, size, offset):
            assert 0 <= offset and offset + size <= self.size
            src, dst = (self.host, self.card) if direction == SyncDir.XCL_BO_SYNC_BO_TO_DEVICE else (self.card, self.host)
            dst[offset:offset + size] = src[offset:offset + size]
            log.append(("sync", SyncDir(direction).name, size))

    class run:
        def __init__(self, state):
            self.state = state

        def wait(self, timeout_ms):
            assert timeout_ms > 0
            log.append(("wait", timeout_ms))
            return self.state

        def abort(self):
            log.append(("abort",))

    class kernel:
        class cu_access_mode(enum.IntEnum):
            exclusive = 0
            shared = 1

        def __init__(self, device, uuid, name, mode):
            assert uuid == device.uuid and name == wire.ALVEO_KERNEL and mode == kernel.cu_access_mode.shared
            log.append(("kernel", name))

        def group_id(self, arg):
            return BANKS[arg]

        def __call__(self, in_bo, out_bo, in_words, out_capacity, result_bo):
            for arg, buf in ((0, in_bo), (1, out_bo), (4, result_bo)):
                assert buf.group == BANKS[arg], f"argument {arg} is in bank {buf.group}, not {BANKS[arg]}"
            assert isinstance(in_words, int) and isinstance(out_capacity, int)
            log.append(("run", in_words, out_capacity))
            assert in_bo.host[: in_words * 8] == in_bo.card[: in_words * 8], "input not synced to the card"
            if hang:
                return run(CmdState.ERT_CMD_STATE_TIMEOUT)
            words = np.frombuffer(bytes(in_bo.card[: in_words * 8]), dtype=np.uint64).copy()
            if corrupt:
                words[0] ^= np.uint64(1)
            out, status = run_mm(words)
            out = out[:out_capacity]
            out_bo.card[: out.nbytes] = out.tobytes()
            result_bo.card[:8] = np.array([int(status), len(out)], dtype=np.uint32).tobytes()
            return run(CmdState.ERT_CMD_STATE_COMPLETED)

    class FakeDevice:
        def __init__(self, index):
            assert index == 0
            self.uuid = None

        def load_xclbin(self, path):
            assert path.endswith(".xclbin")
            self.uuid = "uuid-" + path
            log.append(("load_xclbin", path))
            return self.uuid

    return types.SimpleNamespace(device=FakeDevice, bo=bo, kernel=kernel, xclBOSyncDirection=SyncDir,
                                 ert_cmd_state=CmdState)


@pytest.fixture
def xclbin(tmp_path):
    from lowbit.apps.build import write_manifest

    folder = tmp_path / "u250"
    folder.mkdir()
    (folder / "lowbit_gemm.xclbin").write_bytes(b"xclbin2\0 (a stand-in: the fake pyxrt never parses it)")
    write_manifest(folder, "u250", ["lowbit_gemm.xclbin"], tool_version="fake", commit="test")
    return folder / "lowbit_gemm.xclbin"


def open_fake(monkeypatch, xclbin, **fake_kwargs):
    from lowbit.board.device import open_device

    log = []
    monkeypatch.setitem(sys.modules, "pyxrt", make_fake_pyxrt(log, **fake_kwargs))
    return open_device("alveo", xclbin=xclbin, timeout_s=0.5), log


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4", "mogami:bf16"])
def test_alveo_equals_emulation(monkeypatch, xclbin, operands, emulation, fmt):
    backend, log = open_fake(monkeypatch, xclbin)
    assert backend.name == "alveo" and backend.board == "u250"
    a, b = operands(fmt, 2 * wire.MAX_M + 1, 9, 40)
    assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))
    runs = [e for e in log if e[0] == "run"]
    assert len(runs) == 3 and backend.calls_run == 3
    assert ("sync", "XCL_BO_SYNC_BO_FROM_DEVICE", 8) in log  # the result words come back after each run


def test_alveo_buffers_live_in_each_arguments_bank_and_are_reused(monkeypatch, xclbin, operands):
    backend, log = open_fake(monkeypatch, xclbin)
    a, b = operands("pot:4", 4, 5, 16)
    for _ in range(3):
        backend.gemm(a, b)
    groups = sorted(e[2] for e in log if e[0] == "bo")
    assert groups == [1, 2, 2]  # one input, one output, one result buffer, allocated once


def test_alveo_kernel_error_and_timeout(monkeypatch, xclbin, operands):
    backend, log = open_fake(monkeypatch, xclbin, corrupt=True)
    a, b = operands("pot:4", 4, 5, 16)
    with pytest.raises(KernelError, match="STATUS=BAD_MAGIC"):
        backend.gemm(a, b)
    backend, log = open_fake(monkeypatch, xclbin, hang=True)
    with pytest.raises(BoardTimeout, match="aborted"):
        backend.gemm(a, b)
    assert ("abort",) in log


def test_missing_pyxrt_says_what_to_install(monkeypatch, xclbin):
    from lowbit.board.device import open_device

    monkeypatch.setitem(sys.modules, "pyxrt", None)
    with pytest.raises(ImportError, match="source /opt/xilinx/xrt/setup.sh"):
        open_device("alveo", xclbin=xclbin)


def test_auto_picks_an_alveo_card_with_a_bitstream_folder(monkeypatch, xclbin, capsys):
    import lowbit.board.device as device

    monkeypatch.setattr(device, "REPO_BITSTREAMS", xclbin.parent.parent)
    monkeypatch.setattr(device, "pynq_board_present", lambda: False)
    monkeypatch.setitem(sys.modules, "pyxrt", make_fake_pyxrt([]))
    backend = device.open_device("auto")
    assert backend.name == "alveo"
    assert f"Alveo card with {xclbin}" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, m, n, k", [("pot:4", 1, 4, 24576), ("mogami:bf16", 3, 1, 20000)])
def test_alveo_thin_tiles_equal_emulation_and_results_are_the_callers(monkeypatch, xclbin, operands, emulation,
                                                                      fmt, m, n, k):
    backend, _ = open_fake(monkeypatch, xclbin)
    a, b = operands(fmt, m, n, k, seed=k)
    c = backend.gemm(a, b)
    kept = c.clone()
    assert torch.equal(c, emulation.gemm(a, b))  # three K-tiles through two reused output buffers
    backend.gemm(*operands(fmt, m, n, k, seed=k + 1))
    assert torch.equal(c, kept)
    assert not any(np.shares_memory(c.numpy(), s.buffer) for s in backend.outputs if s.buffer is not None)


def test_alveo_packs_the_next_call_while_the_card_runs(monkeypatch, xclbin, operands, double_buffered):
    backend, log = open_fake(monkeypatch, xclbin)
    a, b = operands("pot:4", 3 * wire.MAX_M, 4, 32, seed=5)
    backend.trace = []
    backend.gemm(a, b)
    stages = backend.trace
    double_buffered(stages)
    events = [e[0] if e[0] != "sync" else e[1] for e in log]
    first_wait = events.index("wait")
    assert events[:first_wait].count("run") == 1 and events[:first_wait].count("XCL_BO_SYNC_BO_TO_DEVICE") == 2
    assert backend.inputs[0].handle is not backend.inputs[1].handle


def test_alveo_allocation_failure_keeps_the_previous_buffer(monkeypatch, xclbin, operands, emulation):
    """The grow-only slot rule (lowbit.board.buffers) on the card: a failed growth raises a clear
    error, keeps the buffer the slot had, and the next call with memory available succeeds."""
    from lowbit.board import BufferAllocationError

    backend, _ = open_fake(monkeypatch, xclbin)
    backend.gemm(*operands("pot:4", 4, 5, 16))
    kept = backend.inputs[0].handle
    real_bo = backend.xrt.bo

    class no_memory(real_bo):
        def __init__(self, *args):
            raise RuntimeError("bad_alloc")

    monkeypatch.setattr(backend.xrt, "bo", no_memory)
    a, b = operands("pot:4", 64, 5, 1024)  # needs a larger input buffer than the first gemm's
    with pytest.raises(BufferAllocationError, match=r"input 0 buffer .* in bank 1 \(bad_alloc\)"):
        backend.gemm(a, b)
    assert backend.inputs[0].handle is kept and backend.inputs[0].allocations == 1
    monkeypatch.setattr(backend.xrt, "bo", real_bo)
    assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))
    assert backend.inputs[0].allocations == 2 and backend.inputs[0].handle is not kept
