"""The Alveo backend through ``pyxrt`` (XRT's Python binding; PYNQ dropped Alveo in 3.1).

The m_axi kernel ``lowbit_gemm_mm(in, out, in_words, out_capacity, result)`` reads the same word
stream the AXI-Stream top receives and writes the same output words; ``result[0]`` is the status,
``result[1]`` the words written. Buffers live in the memory bank of each argument
(``kernel.group_id``), are allocated once per slot and grow when needed; while the card runs
call i the host packs call i+1 into the other slot. Tiling and summation order are the emulation
backend's, so results are bit-identical.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lowbit.kernel import wire
from lowbit.backends.base import Backend, Capabilities
from lowbit.backends.emulation import check_operands, tensor_scale_product
from lowbit.numerics.formats import MLS
from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Op, Status
from lowbit.board import packing
from lowbit.board.buffers import BufferSlot
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


class AlveoBackend(Backend):
    name = "alveo"

    def __init__(self, xclbin, *, device_index: int = 0, kernel_name: str = wire.ALVEO_KERNEL,
                 timeout_s: float = 10.0, board: str = "<alveo>", limits: Optional[packing.KernelLimits] = None):
        self.xrt = _pyxrt()
        self.limits = limits or packing.KernelLimits()
        self.board, self.timeout_s = board, float(timeout_s)
        self.xdevice = self.xrt.device(device_index)
        self.uuid = self.xdevice.load_xclbin(str(xclbin))
        self.kernel = self.xrt.kernel(self.xdevice, self.uuid, kernel_name, self.xrt.kernel.cu_access_mode.shared)
        self.inputs = [BankSlot(self, ARG_IN, f"input {i}") for i in range(2)]
        self.outputs = [BankSlot(self, ARG_OUT, f"output {i}") for i in range(2)]
        self.results = [BankSlot(self, ARG_RESULT, f"result {i}") for i in range(2)]
        self.calls_run = 0

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, ("mls", "pot", "mogami"), True, ("cpu", "cuda"),
                            f"lowbit m_axi GEMM kernel on {self.board} through XRT (pyxrt)")

    def gemm(self, a: QTensor, b: QTensor, *, op: Op = Op.FORWARD) -> torch.Tensor:
        check_operands(a, b)
        block = a.block if isinstance(a.fmt, MLS) else a.shape[1]
        out = np.zeros((a.shape[0], b.shape[0]), dtype=np.float32)
        tiles = list(packing.plan_calls(a.fmt, packing.board_operand(a), packing.board_operand(b), block, op,
                                        self.limits))
        calls = [(hdr, at, bt) for _, _, group in tiles for hdr, at, bt in group]
        parts = self._run_pipelined(calls)
        index = 0
        for ms, ns, group in tiles:
            acc = None
            for _ in group:
                acc = parts[index] if acc is None else (acc + parts[index]).astype(np.float32)
                index += 1
            out[ms, ns] = acc
        out *= tensor_scale_product(a, b)
        return torch.from_numpy(out).to(device=a.device)

    def _run_pipelined(self, calls: list) -> list:
        parts = []
        sizes = [self._pack(calls[0], 0)] if calls else []
        for i, (hdr, _, _) in enumerate(calls):
            run = self._launch(hdr, i % 2, sizes[i])
            if i + 1 < len(calls):
                sizes.append(self._pack(calls[i + 1], (i + 1) % 2))  # overlaps the card's work on call i
            parts.append(self._finish(run, hdr, i % 2, f"call {i + 1}/{len(calls)}"))
        return parts

    def _pack(self, call, slot: int) -> int:
        hdr, at, bt = call
        words = self.inputs[slot].ensure(packing.stream_words(hdr))
        n = packing.pack_call(words, hdr, at, bt)
        self.inputs[slot].sync("TO_DEVICE", n)
        return n

    def _launch(self, hdr, slot: int, in_words: int):
        out_cap = packing.output_words(hdr)
        self.outputs[slot].ensure(out_cap)
        self.results[slot].ensure(1)
        return self.kernel(self.inputs[slot].handle, self.outputs[slot].handle, in_words, out_cap,
                           self.results[slot].handle)

    def _finish(self, run, hdr, slot: int, call: str) -> np.ndarray:
        where = f"{call} (header m={hdr.m} n={hdr.n} k={hdr.k} block={hdr.block} {hdr.arith.name})"
        state = run.wait(int(self.timeout_s * 1000))
        if state != self.xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            self._abort(run)
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


def _status_name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return str(code)


def open_alveo(xclbin, **kwargs) -> AlveoBackend:
    from lowbit.board.manifest import find_file, read_manifest

    path = find_file(Path(xclbin), ".xclbin")
    manifest = read_manifest(path)
    kwargs.setdefault("board", str(manifest.get("board", "<alveo>")))
    kwargs.setdefault("limits", packing.KernelLimits.from_manifest(manifest))
    return AlveoBackend(path, **kwargs)
