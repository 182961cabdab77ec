"""The Alveo backend through ``pyxrt`` (XRT's Python binding; PYNQ dropped Alveo in 3.1).

The m_axi kernel ``lowbit_gemm_mm(in, out, in_words, out_capacity, result)`` reads the same word
stream the AXI-Stream top receives and writes the same output words; ``result[0]`` is the status,
``result[1]`` the words written. An xclbin holds one or more compute units, each on its own
memory bank (tcl/alveo_*.cfg: ``nk=lowbit_gemm_mm:N:lowbit_gemm_mm_1...``, v++'s default names);
the backend opens one kernel handle per CU (``xrt.kernel(device, uuid, "lowbit_gemm_mm:{cu}")``),
each CU's buffers live in that CU's bank of each argument (its handle's ``group_id``), are
allocated once per slot and grow when needed (``buffers.BufferSlot``). The plan, the spread over
the CUs, each CU's double-buffered call loop and the sum are ``lowbit.board.calls.PipelinedBoard``'s
(the emulation's tiling and order, so results are bit-identical); this backend supplies the XRT
transfer.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from lowbit.kernel import wire
from lowbit.backends.base import Capabilities
from lowbit.kernel.wire import Status
from lowbit.board import packing
from lowbit.board.buffers import BufferSlot
from lowbit.board.calls import SLOTS, Call, PipelinedBoard, Unit
from lowbit.board.errors import BoardError, BoardTimeout, BufferAllocationError, KernelError, TruncatedOutput

MAX_CUS = 64  # CU names probed: <kernel>_1 .. <kernel>_64

ARG_IN, ARG_OUT, ARG_IN_WORDS, ARG_OUT_CAP, ARG_RESULT = range(5)


def _pyxrt():
    try:
        import pyxrt
    except ImportError as err:
        raise ImportError("the Alveo backend needs XRT's Python binding pyxrt: install XRT "
                          "(https://xilinx.github.io/XRT) and `source /opt/xilinx/xrt/setup.sh`") from err
    return pyxrt


BEAT_WORDS = 8  # 64-bit words in one beat of the kernel's 512-bit m_axi ports


class BankSlot(BufferSlot):
    """An XRT buffer object in the memory bank of argument ``arg`` of one CU (``kernel``, that CU's
    handle); ``buffer`` is its host mapping."""

    def __init__(self, xrt, device, kernel, arg: int, label: str):
        super().__init__(label)
        self.xrt, self.device, self.kernel, self.arg = xrt, device, kernel, arg

    def _allocate(self, words: int):
        words = -(-words // BEAT_WORDS) * BEAT_WORDS  # the kernel's m_axi ports move whole 512-bit beats
        bank = self.kernel.group_id(self.arg)
        try:
            bo = self.xrt.bo(self.device, words * wire.WORD_BYTES, self.xrt.bo.normal, bank)
        except (RuntimeError, MemoryError) as err:
            raise BufferAllocationError(f"could not allocate the {self.label} buffer of {words * 8} bytes in bank "
                                        f"{bank} ({err}); free other XRT buffers or use "
                                        "smaller batches. The previous buffer is kept.") from err
        return bo, np.frombuffer(bo.map(), dtype=np.uint64, count=words)

    def sync(self, direction: str, words: int) -> None:
        flag = getattr(self.xrt.xclBOSyncDirection, f"XCL_BO_SYNC_BO_{direction}")
        self.handle.sync(flag, words * wire.WORD_BYTES, 0)


class AlveoUnit(Unit):
    """One compute unit: its own kernel handle and, per slot, input, output and result buffers in its banks."""

    def __init__(self, index: int, cu: str, kernel, backend: "AlveoBackend"):
        def slots(arg: int, what: str):
            return [BankSlot(backend.xrt, backend.xdevice, kernel, arg, f"{cu} {what} {i}") for i in range(SLOTS)]

        super().__init__(index, f"CU {cu}", slots(ARG_IN, "input"))
        self.cu, self.kernel = cu, kernel
        self.outputs, self.results = slots(ARG_OUT, "output"), slots(ARG_RESULT, "result")

    def release(self) -> None:
        for slot in self.inputs + self.outputs + self.results:
            slot.release()


class AlveoBackend(PipelinedBoard):
    name = "alveo"

    def __init__(self, xclbin, *, device_index: int = 0, kernel_name: str = wire.ALVEO_KERNEL,
                 timeout_s: float = 10.0, board: str = "<alveo>", limits: Optional[packing.KernelLimits] = None,
                 compute_units: Optional[int] = None):
        """``compute_units``: the count the build says (manifest), checked against the xclbin's."""
        self.xrt = _pyxrt()
        self.limits = limits or packing.KernelLimits()
        self.board, self.timeout_s = board, float(timeout_s)
        self.xdevice = self.xrt.device(device_index)
        self.uuid = self.xdevice.load_xclbin(str(xclbin))
        cus = self._open_cus(kernel_name)
        if compute_units is not None and len(cus) != compute_units:
            raise BoardError(f"{xclbin} holds {len(cus)} compute unit(s) of {kernel_name} "
                             f"({', '.join(name for name, _ in cus)}) but its manifest.json says "
                             f"compute_units={compute_units}: the two files are from different builds; "
                             f"rebuild with `lowbit build --board {board}`")
        self.units: List[AlveoUnit] = [AlveoUnit(i, name, handle, self) for i, (name, handle) in enumerate(cus)]

    def _open_cus(self, kernel_name: str) -> List[Tuple[str, object]]:
        """(CU name, kernel handle on that CU alone) for <kernel>_1, <kernel>_2, ... while the xclbin
        has them (pyxrt lists no CUs, so each name is asked for; XRT refuses a name it lacks)."""
        shared = self.xrt.kernel.cu_access_mode.shared
        cus = []
        for i in range(1, MAX_CUS + 1):
            cu = f"{kernel_name}_{i}"
            try:
                cus.append((cu, self.xrt.kernel(self.xdevice, self.uuid, f"{kernel_name}:{{{cu}}}", shared)))
            except RuntimeError:
                break
        if not cus:
            raise BoardError(f"the xclbin has no compute unit {kernel_name}_1 of kernel {kernel_name} (v++ names "
                             f"them {kernel_name}_1..N, tcl/alveo_*.cfg nk=); rebuild with `lowbit build --board "
                             f"{self.board}`")
        return cus

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, ("mls", "pot", "mogami"), True, ("cpu", "cuda"),
                            f"lowbit m_axi GEMM kernel on {self.board} through XRT (pyxrt), "
                            f"{len(self.units)} compute unit(s)")

    # -- the transfer step of the shared GEMM (lowbit.board.calls)
    def _to_device(self, call: Call) -> None:
        self.units[call.unit].inputs[call.slot].sync("TO_DEVICE", call.in_words)

    def _launch(self, call: Call) -> None:
        unit, slot, out_cap = self.units[call.unit], call.slot, packing.output_words(call.header)
        unit.outputs[slot].ensure(out_cap)
        unit.results[slot].ensure(1)
        call.run = unit.kernel(unit.inputs[slot].handle, unit.outputs[slot].handle, call.in_words, out_cap,
                               unit.results[slot].handle)

    def _finish(self, call: Call) -> np.ndarray:
        unit, hdr, slot = self.units[call.unit], call.header, call.slot
        where = (f"call {call.index + 1}/{call.count} on {unit.name} (header m={hdr.m} n={hdr.n} k={hdr.k} "
                 f"block={hdr.block} {hdr.arith.name})")
        self._stage("wait", call)
        state = call.run.wait(int(self.timeout_s * 1000))
        if state != self.xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            self._abort(call.run)
            raise BoardTimeout(f"the Alveo kernel did not complete {where} within {self.timeout_s:g} s "
                               f"(state {state}); the run was aborted and the next call can proceed")
        unit.results[slot].sync("FROM_DEVICE", 1)
        result = unit.results[slot].buffer[0]
        status, written = int(result) & 0xFFFFFFFF, int(result) >> 32
        expected = packing.output_words(hdr)
        if status != Status.OK:
            known = status in Status._value2member_map_
            raise KernelError(f"the kernel rejected {where} with "
                              + (packing.rejection(Status(status), hdr, self.board) if known else f"STATUS={status}"))
        if written != expected:
            raise TruncatedOutput(f"the kernel wrote {written} output words for {where}, expected {expected}")
        unit.outputs[slot].sync("FROM_DEVICE", written)
        words = unit.outputs[slot].buffer
        if wire.parse_status_word(int(words[written - 1])) != Status.OK:
            raise KernelError(f"the status word of {where} is not OK")
        self._stage("unpack", call)
        return packing.unpack_call(words[: written - 1], hdr.m, hdr.n)

    def _abort(self, run) -> None:
        abort = getattr(run, "abort", None)  # XRT >= 2022.1
        if abort is None:
            raise BoardError("the kernel hung and this XRT cannot abort a run; reset the card with "
                             "`xbutil reset --device <bdf>` and reload the xclbin")
        abort()

    def close(self) -> None:
        for unit in self.units:
            unit.release()


def open_alveo(xclbin, **kwargs) -> AlveoBackend:
    from lowbit.board.manifest import find_file, manifest_units, read_manifest

    path = find_file(Path(xclbin), ".xclbin")
    manifest = read_manifest(path)
    kwargs.setdefault("board", str(manifest.get("board", "<alveo>")))
    kwargs.setdefault("limits", packing.KernelLimits.from_manifest(manifest))
    kwargs.setdefault("compute_units", manifest_units(manifest))
    return AlveoBackend(path, **kwargs)
