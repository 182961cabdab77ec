"""The Alveo backend against a fake ``pyxrt`` that checks the calls and runs the m_axi kernel."""
import enum
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit.kernel import wire
from lowbit.backends.emulation import run_mm
from lowbit.board import BoardTimeout, KernelError

REPO = Path(__file__).resolve().parents[2]
ARGS = {"in": 0, "out": 1, "result": 4}  # buffer arguments of lowbit_gemm_mm(in, out, in_words, out_capacity, result)


def cfg_layout(cfg: Path) -> dict:
    """{CU name: {argument index: memory group}} as a v++ link with ``cfg`` lays the xclbin out:
    the CUs the nk= line names, each buffer argument in the bank its sp= line gives (one group id
    per distinct bank, as XRT numbers memories)."""
    text = cfg.read_text()
    nk = re.search(r"^nk=(\w+):(\d+):([\w.]+)$", text, re.M)
    cus = nk.group(3).split(".")
    assert len(cus) == int(nk.group(2))
    banks, layout = {}, {cu: {} for cu in cus}
    for cu, arg, bank in re.findall(r"^sp=(\w+)\.(\w+):(\S+)$", text, re.M):
        layout[cu][ARGS[arg]] = banks.setdefault(bank, len(banks))
    return layout


U250 = cfg_layout(REPO / "tcl" / "alveo_u250.cfg")
# the m_axi top's ports move whole beats of this width (the fake checks each buffer holds them)
PORT_BITS = int(re.search(r"typedef ap_uint<(\d+)> lowbit_beat;",
                          (REPO / "hls" / "kernels" / "lowbit_gemm_mm" / "lowbit_gemm_mm.h").read_text()).group(1))


class SyncDir(enum.IntEnum):
    XCL_BO_SYNC_BO_TO_DEVICE = 0
    XCL_BO_SYNC_BO_FROM_DEVICE = 1


class CmdState(enum.IntEnum):
    ERT_CMD_STATE_COMPLETED = 4
    ERT_CMD_STATE_TIMEOUT = 10


def make_fake_pyxrt(log, hang=False, corrupt=False, layout=None):
    """pyxrt as tests need it: ``layout`` {CU: {arg: memory group}} (the u250 link by default);
    a kernel handle names one CU as "lowbit_gemm_mm:{cu}" and checks each buffer's bank."""
    layout = U250 if layout is None else layout

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
        def __init__(self, state, cu):
            self.state, self.cu = state, cu

        def wait(self, timeout_ms):
            assert timeout_ms > 0
            log.append(("wait", self.cu, timeout_ms))
            return self.state

        def abort(self):
            log.append(("abort", self.cu))

    class kernel:
        class cu_access_mode(enum.IntEnum):
            exclusive = 0
            shared = 1

        def __init__(self, device, uuid, name, mode):
            assert uuid == device.uuid and mode == kernel.cu_access_mode.shared
            found = re.fullmatch(rf"{wire.ALVEO_KERNEL}:\{{(\w+)\}}", name)
            if found is None or found.group(1) not in layout:
                raise RuntimeError(f"No compute units matching '{name}'")  # what XRT says
            self.cu = found.group(1)
            log.append(("kernel", name))

        def group_id(self, arg):
            return layout[self.cu][arg]

        def __call__(self, in_bo, out_bo, in_words, out_capacity, result_bo):
            for arg, buf in ((0, in_bo), (1, out_bo), (4, result_bo)):
                assert buf.group == layout[self.cu][arg], \
                    f"argument {arg} of {self.cu} is in bank {buf.group}, not {layout[self.cu][arg]}"
            assert isinstance(in_words, int) and isinstance(out_capacity, int)
            beat = PORT_BITS // 8  # the m_axi ports move whole beats
            assert -(-in_words * 8 // beat) * beat <= in_bo.size, "the input buffer ends mid-beat"
            assert -(-out_capacity * 8 // beat) * beat <= out_bo.size, "the output buffer ends mid-beat"
            log.append(("run", self.cu, in_words, out_capacity))
            assert in_bo.host[: in_words * 8] == in_bo.card[: in_words * 8], "input not synced to the card"
            if hang:
                return run(CmdState.ERT_CMD_STATE_TIMEOUT, self.cu)
            words = np.frombuffer(bytes(in_bo.card[: in_words * 8]), dtype=np.uint64).copy()
            if corrupt:
                words[0] ^= np.uint64(1)
            out, status = run_mm(words)
            out = out[:out_capacity]
            out_bo.card[: out.nbytes] = out.tobytes()
            result_bo.card[:8] = np.array([int(status), len(out)], dtype=np.uint32).tobytes()
            return run(CmdState.ERT_CMD_STATE_COMPLETED, self.cu)

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
    """The backend on the fake pyxrt; a ``layout`` of other CUs stands for an xclbin linked with
    them, so its manifest (written by the same build) says that many compute units."""
    from lowbit.board.device import open_device

    if fake_kwargs.get("layout"):
        manifest = xclbin.parent / "manifest.json"
        data = json.loads(manifest.read_text())
        data["compute_units"] = len(fake_kwargs["layout"])
        manifest.write_text(json.dumps(data))
    log = []
    monkeypatch.setitem(sys.modules, "pyxrt", make_fake_pyxrt(log, **fake_kwargs))
    return open_device("alveo", xclbin=xclbin, timeout_s=0.5), log


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4", "mogami:bf16"])
def test_alveo_equals_emulation(monkeypatch, xclbin, operands, emulation, fmt):
    backend, log = open_fake(monkeypatch, xclbin)
    assert backend.name == "alveo" and backend.board == "u250"
    assert [u.cu for u in backend.units] == list(U250)  # every CU of the link, in order
    cus = len(U250)
    a, b = operands(fmt, 2 * wire.MAX_M + 1, 2 * cus + 1, 40)
    assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))
    runs = [e for e in log if e[0] == "run"]
    shares = -(-(2 * cus + 1) // 3)  # B rows in shares of ceil(N / CUs) = 3
    assert len(runs) == 3 * shares and backend.calls_run == 3 * shares  # 3 row tiles x the B-row shares
    per_cu = [sum(e[1] == cu for e in runs) for cu in U250]
    assert [u.calls_run for u in backend.units] == per_cu and min(per_cu) >= 2  # every CU took its share
    assert ("sync", "XCL_BO_SYNC_BO_FROM_DEVICE", 8) in log  # the result words come back after each run


def test_alveo_opens_one_kernel_handle_per_cu_and_checks_the_manifest(monkeypatch, xclbin):
    from lowbit.board.device import open_device
    from lowbit.board.errors import BoardError

    backend, log = open_fake(monkeypatch, xclbin)
    assert [e[1] for e in log if e[0] == "kernel"] == [f"{wire.ALVEO_KERNEL}:{{{cu}}}" for cu in U250]
    assert len({id(u.kernel) for u in backend.units}) == len(U250)
    two = {cu: U250[cu] for cu in list(U250)[:2]}  # an xclbin linked with two CUs
    backend, _ = open_fake(monkeypatch, xclbin, layout=two)
    assert [u.cu for u in backend.units] == list(two)
    monkeypatch.setitem(sys.modules, "pyxrt", make_fake_pyxrt([], layout={}))
    with pytest.raises(BoardError, match=rf"no compute unit {wire.ALVEO_KERNEL}_1"):
        open_device("alveo", xclbin=xclbin)
    monkeypatch.setitem(sys.modules, "pyxrt", make_fake_pyxrt([]))  # the whole link, the 2-CU build's manifest
    with pytest.raises(BoardError, match=rf"holds {len(U250)} compute unit\(s\).*manifest.json says compute_units=2"):
        open_device("alveo", xclbin=xclbin)


def test_alveo_buffers_live_in_each_cus_banks_and_are_reused(monkeypatch, xclbin, operands):
    """Each CU's buffers in that CU's bank of each argument (here input apart from output and
    result, as a link may place them); allocated once per slot, reused by later GEMMs."""
    layout = {f"{wire.ALVEO_KERNEL}_1": {0: 1, 1: 2, 4: 2}, f"{wire.ALVEO_KERNEL}_2": {0: 3, 1: 4, 4: 4}}
    backend, log = open_fake(monkeypatch, xclbin, layout=layout)
    a, b = operands("pot:4", 4, 6, 16)  # 6 B rows: one share of 3 per CU
    for _ in range(3):
        backend.gemm(a, b)
    groups = sorted(e[2] for e in log if e[0] == "bo")
    assert groups == [1, 2, 2, 3, 4, 4]  # per CU one input, one output, one result buffer, allocated once
    assert [u.calls_run for u in backend.units] == [3, 3]


def test_alveo_kernel_error_and_timeout(monkeypatch, xclbin, operands):
    backend, log = open_fake(monkeypatch, xclbin, corrupt=True)
    a, b = operands("pot:4", 4, 5, 16)
    with pytest.raises(KernelError, match="STATUS=BAD_MAGIC"):
        backend.gemm(a, b)
    backend, log = open_fake(monkeypatch, xclbin, hang=True)
    calls = -(-5 // -(-5 // len(U250)))  # 5 B rows in shares of ceil(5 / CUs), one call each, all in flight
    with pytest.raises(BoardTimeout, match=rf"call 1/{calls} on CU {wire.ALVEO_KERNEL}_1 .*aborted"):
        backend.gemm(a, b)
    assert [e for e in log if e[0] == "abort"] == [("abort", cu) for cu in list(U250)[:calls]]  # each CU's run in flight


def test_alveo_fault_on_one_cu_names_it_and_lets_the_others_finish(monkeypatch, xclbin, operands, emulation):
    """A bad status on CU 3: the error names it; the other CUs' runs in flight are waited for (not
    dropped while they write their buffers), and the next GEMM runs on every CU and is exact."""
    backend, log = open_fake(monkeypatch, xclbin)
    real = backend.units[2].kernel.__call__
    cu3 = backend.units[2].kernel

    class BadOnce:
        def group_id(self, arg):
            return cu3.group_id(arg)

        def __call__(self, in_bo, *args):
            in_bo.host[0] ^= 1  # the magic word is corrupted (on both sides: the fake checks the sync)
            in_bo.card[0] ^= 1
            backend.units[2].kernel = cu3
            return real(in_bo, *args)

    backend.units[2].kernel = BadOnce()
    a, b = operands("pot:4", 4, 16, 32)
    calls = -(-16 // -(-16 // len(U250)))
    with pytest.raises(KernelError, match=rf"rejected call 3/{calls} on CU {wire.ALVEO_KERNEL}_3 .*STATUS=BAD_MAGIC"):
        backend.gemm(a, b)
    waited = [e[1] for e in log if e[0] == "wait"]
    assert sorted(waited) == sorted(U250)  # every CU's run was waited for before the error came back
    assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))


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
    assert not any(np.shares_memory(c.numpy(), s.buffer) for u in backend.units for s in u.outputs
                   if s.buffer is not None)


def test_alveo_packs_the_next_call_while_the_card_runs(monkeypatch, xclbin, operands, double_buffered):
    backend, log = open_fake(monkeypatch, xclbin)
    a, b = operands("pot:4", 3 * wire.MAX_M, len(U250), 32, seed=5)  # 3 row tiles x one B row per CU: three per CU
    backend.trace = []
    backend.gemm(a, b)
    stages = backend.trace
    double_buffered(stages, units=len(U250))
    events = [e[0] if e[0] != "sync" else e[1] for e in log]
    first_wait = events.index("wait")
    # every CU started, and CU 1's second call packed and synced, before the first wait
    assert events[:first_wait].count("run") == len(U250)
    assert events[:first_wait].count("XCL_BO_SYNC_BO_TO_DEVICE") == len(U250) + 1
    assert all(u.inputs[0].handle is not u.inputs[1].handle for u in backend.units)


def test_alveo_allocation_failure_keeps_the_previous_buffer(monkeypatch, xclbin, operands, emulation):
    """The grow-only slot rule (lowbit.board.buffers) on the card: a failed growth raises a clear
    error, keeps the buffer the slot had, and the next call with memory available succeeds."""
    from lowbit.board import BufferAllocationError

    backend, _ = open_fake(monkeypatch, xclbin)
    backend.gemm(*operands("pot:4", 4, 5, 16))
    cu1 = backend.units[0]
    kept = cu1.inputs[0].handle
    real_bo = backend.xrt.bo

    class no_memory(real_bo):
        def __init__(self, *args):
            raise RuntimeError("bad_alloc")

    monkeypatch.setattr(backend.xrt, "bo", no_memory)
    a, b = operands("pot:4", 64, 5, 1024)  # needs a larger input buffer than the first gemm's
    with pytest.raises(BufferAllocationError, match=rf"{wire.ALVEO_KERNEL}_1 input 0 buffer .* in bank 0 \(bad_alloc\)"):
        backend.gemm(a, b)
    assert cu1.inputs[0].handle is kept and cu1.inputs[0].allocations == 1
    monkeypatch.setattr(backend.xrt, "bo", real_bo)
    assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))
    assert cu1.inputs[0].allocations == 2 and cu1.inputs[0].handle is not kept

