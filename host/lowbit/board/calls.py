"""The GEMM every board backend runs: check the operands, plan the kernel calls, pipeline them
through two buffer slots, sum each output tile's K-tiles in ascending order, apply the tensor
scales. Each backend supplies only its transfer step (``_to_device``, ``_launch``, ``_finish``).

The plan is the emulation backend's (``lowbit.backends.emulation.gemm_tiles`` through
``packing.plan_calls``) and the sum is the emulation's, so every board's result is bit-identical
to it. While the hardware runs call i the host packs call i+1 into the other slot."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterator, List, Optional

import numpy as np
import torch

from lowbit.backends.base import Backend
from lowbit.backends.emulation import check_operands, tensor_scale_product
from lowbit.board import packing
from lowbit.board.buffers import BufferSlot
from lowbit.board.errors import BufferAllocationError
from lowbit.kernel.wire import Header, Op
from lowbit.numerics.formats import MLS
from lowbit.numerics.qtensor import QTensor

SLOTS = 2  # double buffering: pack one call while the hardware runs the other


@dataclass
class Call:
    """One kernel call of a tiled GEMM and where its data lives."""

    index: int
    count: int
    header: Header
    ms: slice
    ns: slice
    kslice: slice
    a_tile: object = None  # emulation.Operand slices of this call
    b_tile: object = None
    in_words: int = 0
    slot: int = 0
    run: object = None  # the backend's handle of the call in flight

    def describe(self) -> str:
        h = self.header
        return (f"tile {self.index + 1}/{self.count} (A rows {self.ms.start}:{self.ms.stop}, B rows "
                f"{self.ns.start}:{self.ns.stop}, K {self.kslice.start}:{self.kslice.stop}; header m={h.m} "
                f"n={h.n} k={h.k} block={h.block} {h.arith.name} {h.op.name})")


class PipelinedBoard(Backend):
    """A ``Backend`` whose GEMM runs as double-buffered kernel calls on a board.

    Subclasses set ``limits`` (``packing.KernelLimits``), ``inputs`` (``SLOTS`` ``BufferSlot``s)
    and ``calls_run``, and implement the transfer step; ``trace`` set to [] records the stages."""

    limits: packing.KernelLimits
    inputs: List[BufferSlot]
    trace: Optional[List[tuple]] = None

    def gemm(self, a: QTensor, b: QTensor, *, op: Op = Op.FORWARD) -> torch.Tensor:
        check_operands(a, b)
        block = a.block if isinstance(a.fmt, MLS) else a.shape[1]
        plan = self._plan(a, b, block, op)
        results = self._run_pipelined([call for _, _, group in plan for call in group])
        out = np.zeros((a.shape[0], b.shape[0]), dtype=np.float32)
        for ms, ns, group in plan:
            acc = None
            for call in group:
                part = results[call.index]
                acc = part if acc is None else (acc + part).astype(np.float32)
            out[ms, ns] = acc
        out *= tensor_scale_product(a, b)
        return torch.from_numpy(out).to(device=a.device)

    def _plan(self, a: QTensor, b: QTensor, block: int, op: Op) -> list:
        """[(A-row slice, B-row slice, [Call per K-tile, ascending K])] in the emulation's order
        (for this kernel's limits), each B-row tile cut further where ``_fit_transfers`` says."""
        tiles = packing.plan_calls(a.fmt, packing.board_operand(a), packing.board_operand(b), block, op, self.limits)
        groups = [(ms, sub, calls) for ms, ns, calls in tiles for sub, calls in self._fit_transfers(ns, calls)]
        count = sum(len(calls) for _, _, calls in groups)
        plan, index = [], 0
        for ms, ns, calls in groups:
            group, k0 = [], 0
            for hdr, at, bt in calls:
                group.append(Call(index, count, hdr, ms, ns, slice(k0, k0 + hdr.k), at, bt))
                index, k0 = index + 1, k0 + hdr.k
            plan.append((ms, ns, group))
        return plan

    def _fit_transfers(self, ns: slice, calls: list) -> Iterator[tuple]:
        """(B-row slice, calls) pieces of one B-row tile that each transfer can carry: all of it
        unless the board limits a transfer. Cutting B rows leaves every output element computed
        by the same K-tile calls, so results do not change."""
        yield ns, calls

    def _run_pipelined(self, calls: List[Call]) -> dict:
        results = {}
        if calls:
            self._pack(calls[0], slot=0)
        for i, call in enumerate(calls):
            self._stage("launch", call)
            self._launch(call)
            if i + 1 < len(calls):
                try:
                    self._pack(calls[i + 1], slot=(i + 1) % SLOTS)  # overlaps the hardware's work on call i
                except BufferAllocationError:
                    self._abandon(call)
                    raise
            results[call.index] = self._finish(call)
        return results

    def _stage(self, name: str, call: Call) -> None:
        if self.trace is not None:
            self.trace.append((name, call.index, call.slot))

    def _pack(self, call: Call, slot: int) -> None:
        call.slot = slot
        self._stage("pack", call)
        buf = self.inputs[slot].ensure(packing.stream_words(call.header))
        call.in_words = packing.pack_call(buf, call.header, call.a_tile, call.b_tile)
        self._to_device(call)

    # -- the transfer step, per board
    def _to_device(self, call: Call) -> None:
        """Make the packed input of ``call`` visible to the hardware (nothing where launching does it)."""

    @abc.abstractmethod
    def _launch(self, call: Call) -> None:
        """Start ``call`` on the hardware from input slot ``call.slot``; return without waiting."""

    @abc.abstractmethod
    def _finish(self, call: Call) -> np.ndarray:
        """Wait for ``call``, check what came back, return its C tile [m, n] fp32 (a fresh array)."""

    def _abandon(self, call: Call) -> None:
        """Stop ``call``, in flight when packing the next one failed, so the next gemm starts clean."""
