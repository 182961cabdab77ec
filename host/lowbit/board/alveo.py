"""The Alveo backend through ``pyxrt`` (XRT's Python binding; PYNQ dropped Alveo in 3.1).

The m_axi kernel ``lowbit_gemm_mm(in, out, in_words, out_capacity, result)`` reads the same word
stream the AXI-Stream top receives and writes the same output words; ``result[0]`` is the status,
``result[1]`` the words written. Buffers live in the memory bank of each argument
(``kernel.group_id``), are allocated once per slot and grow when needed (``buffers.BufferSlot``).
The plan, the double-buffered call loop and the sum are ``lowbit.board.calls.PipelinedBoard``'s (the
emulation's tiling and order, so results are bit-identical); this backend supplies the XRT transfer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from lowbit.kernel import wire
from lowbit.backends.base import Capabilities
from lowbit.kernel.wire import Status
from lowbit.board import packing
from lowbit.board.buffers import BufferSlot
from lowbit.board.calls import SLOTS, Call, PipelinedBoard
from lowbit.board.errors import BoardError, BoardTimeout, BufferAllocationError, KernelError, TruncatedOutput

ARG_IN, ARG_OUT, ARG_IN_WORDS, ARG_OUT_CAP, ARG_RESULT = range(5)


def _pyxrt():
    try:
        import pyxrt
    except ImportError as err:
        raise ImportError("the Alveo backend needs XRT's Python binding pyxrt: install XRT "
                          "(https://xilinx.github.io/XRT) and `source /opt/xilinx/xrt/setup.sh`") from err
    return pyxrt


class BankSlot(BufferSlot):
    """An XRT buffer object in the memory bank of kernel argument ``arg``; ``buffer`` is its host mapping."""

    def __init__(self, backend: "AlveoBackend", arg: int, label: str):
        super().__init__(label)
        self.backend, self.arg = backend, arg

    def _allocate(self, words: int):
        xrt, b = self.backend.xrt, self.backend
        try:
            bo = xrt.bo(b.xdevice, words * wire.WORD_BYTES, xrt.bo.normal, b.kernel.group_id(self.arg))
        except (RuntimeError, MemoryError) as err:
            raise BufferAllocationError(f"could not allocate the {self.label} buffer of {words * 8} bytes in bank "
                                        f"{b.kernel.group_id(self.arg)} ({err}); free other XRT buffers or use "
                                        "smaller batches. The previous buffer is kept.") from err
        return bo, np.frombuffer(bo.map(), dtype=np.uint64, count=words)

    def sync(self, direction: str, words: int) -> None:
        xrt = self.backend.xrt
        flag = getattr(xrt.xclBOSyncDirection, f"XCL_BO_SYNC_BO_{direction}")
        self.handle.sync(flag, words * wire.WORD_BYTES, 0)


class AlveoBackend(PipelinedBoard):
    name = "alveo"

    def __init__(self, xclbin, *, device_index: int = 0, kernel_name: str = wire.ALVEO_KERNEL,
                 timeout_s: float = 10.0, board: str = "<alveo>", limits: Optional[packing.KernelLimits] = None):
        self.xrt = _pyxrt()
        self.limits = limits or packing.KernelLimits()
        self.board, self.timeout_s = board, float(timeout_s)
        self.xdevice = self.xrt.device(device_index)
        self.uuid = self.xdevice.load_xclbin(str(xclbin))
        self.kernel = self.xrt.kernel(self.xdevice, self.uuid, kernel_name, self.xrt.kernel.cu_access_mode.shared)
        self.inputs = [BankSlot(self, ARG_IN, f"input {i}") for i in range(SLOTS)]
        self.outputs = [BankSlot(self, ARG_OUT, f"output {i}") for i in range(SLOTS)]
        self.results = [BankSlot(self, ARG_RESULT, f"result {i}") for i in range(SLOTS)]
        self.calls_run = 0

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, ("mls", "pot", "mogami"), True, ("cpu", "cuda"),
                            f"lowbit m_axi GEMM kernel on {self.board} through XRT (pyxrt)")

    # -- the transfer step of the shared GEMM (lowbit.board.calls)
    def _to_device(self, call: Call) -> None:
        self.inputs[call.slot].sync("TO_DEVICE", call.in_words)

    def _launch(self, call: Call) -> None:
        slot, out_cap = call.slot, packing.output_words(call.header)
        self.outputs[slot].ensure(out_cap)
        self.results[slot].ensure(1)
        call.run = self.kernel(self.inputs[slot].handle, self.outputs[slot].handle, call.in_words, out_cap,
                               self.results[slot].handle)

    def _finish(self, call: Call) -> np.ndarray:
        hdr, slot = call.header, call.slot
        where = (f"call {call.index + 1}/{call.count} (header m={hdr.m} n={hdr.n} k={hdr.k} block={hdr.block} "
                 f"{hdr.arith.name})")
        self._stage("wait", call)
        state = call.run.wait(int(self.timeout_s * 1000))
        if state != self.xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            self._abort(call.run)
            raise BoardTimeout(f"the Alveo kernel did not complete {where} within {self.timeout_s:g} s "
                               f"(state {state}); the run was aborted and the next call can proceed")
        self.results[slot].sync("FROM_DEVICE", 1)
        result = self.results[slot].buffer[0]
        status, written = int(result) & 0xFFFFFFFF, int(result) >> 32
        expected = packing.output_words(hdr)
        if status != Status.OK:
            known = status in Status._value2member_map_
            raise KernelError(f"the kernel rejected {where} with "
                              + (packing.rejection(Status(status), hdr, self.board) if known else f"STATUS={status}"))
        if written != expected:
            raise TruncatedOutput(f"the kernel wrote {written} output words for {where}, expected {expected}")
        self.outputs[slot].sync("FROM_DEVICE", written)
        words = self.outputs[slot].buffer
        if wire.parse_status_word(int(words[written - 1])) != Status.OK:
            raise KernelError(f"the status word of {where} is not OK")
        self._stage("unpack", call)
        self.calls_run += 1
        return packing.unpack_call(words[: written - 1], hdr.m, hdr.n)

    def _abort(self, run) -> None:
        abort = getattr(run, "abort", None)  # XRT >= 2022.1
        if abort is None:
            raise BoardError("the kernel hung and this XRT cannot abort a run; reset the card with "
                             "`xbutil reset --device <bdf>` and reload the xclbin")
        abort()

    def close(self) -> None:
        for slot in self.inputs + self.outputs + self.results:
            slot.release()


def open_alveo(xclbin, **kwargs) -> AlveoBackend:
    from lowbit.board.manifest import find_file, read_manifest

    path = find_file(Path(xclbin), ".xclbin")
    manifest = read_manifest(path)
    kwargs.setdefault("board", str(manifest.get("board", "<alveo>")))
    kwargs.setdefault("limits", packing.KernelLimits.from_manifest(manifest))
    return AlveoBackend(path, **kwargs)
