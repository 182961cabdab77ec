"""The GEMM every board backend runs: check the operands, plan the kernel calls, spread them over
the compute units, pipeline each unit's calls through its two buffer slots, sum each output
tile's K-tiles in ascending order, apply the tensor scales. Each backend supplies its units and
their transfer step (``_to_device``, ``_launch``, ``_finish``).

The plan is the host tiler's (``lowbit.backends.emulation.plan_tiles`` through
``packing.plan_calls``) with N split into one share per unit, as the cycle model
(``lowbit.kernel.model.gemm_cycles``) counts it. Splitting N and the unit a call runs on never
change a result: every output column is computed alone and the K-tile sum is the host's, in the
emulation's order, so every board's result is bit-identical to the emulation's. While a unit runs
its call i the host packs its call i+1 into the unit's other slot; every unit is started before
any is waited on."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from lowbit.backends.base import Backend
from lowbit.backends.emulation import check_operands, tensor_scale_product, unit_share_n
from lowbit.board import packing
from lowbit.board.buffers import BufferSlot
from lowbit.board.errors import BoardError
from lowbit.kernel.wire import Header, Op
from lowbit.numerics.formats import MLS
from lowbit.numerics.qtensor import QTensor

SLOTS = 2  # double buffering per unit: pack one call while the unit runs the other


@dataclass
class Call:
    """One kernel call of a tiled GEMM, the unit it runs on and where its data lives."""

    index: int
    count: int
    header: Header
    ms: slice
    ns: slice
    kslice: slice
    a_tile: object = None  # emulation.Operand slices of this call
    b_tile: object = None
    in_words: int = 0
    unit: int = 0
    slot: int = 0
    run: object = None  # the backend's handle of the call in flight

    def describe(self) -> str:
        h = self.header
        return (f"tile {self.index + 1}/{self.count} (A rows {self.ms.start}:{self.ms.stop}, B rows "
                f"{self.ns.start}:{self.ns.stop}, K {self.kslice.start}:{self.kslice.stop}; header m={h.m} "
                f"n={h.n} k={h.k} block={h.block} {h.arith.name} {h.op.name})")


class Unit:
    """One compute unit as the shared GEMM sees it: a name for messages, ``SLOTS`` input buffers,
    and the number of calls whose results it delivered. Backends add their handles."""

    def __init__(self, index: int, name: str, inputs: List[BufferSlot]):
        self.index, self.name, self.inputs = index, name, inputs
        self.calls_run = 0


class PipelinedBoard(Backend):
    """A ``Backend`` whose GEMM runs as double-buffered kernel calls on a board's compute units.

    Subclasses set ``limits`` (``packing.KernelLimits``) and ``units`` (``Unit``s, unit 0 first)
    and implement the transfer step; ``trace`` set to [] records the stages as
    (stage, call index, unit, slot)."""

    limits: packing.KernelLimits
    units: List[Unit]
    trace: Optional[List[tuple]] = None

    @property
    def calls_run(self) -> int:
        return sum(unit.calls_run for unit in self.units)

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
        """[(A-row slice, B-row slice, [Call per K-tile, ascending K])] in the host tiler's order
        (for this kernel's limits, N split into one share per unit), each B-row tile cut further
        where ``_fit_transfers`` says."""
        max_n = unit_share_n(b.shape[0], len(self.units))
        tiles = packing.plan_calls(a.fmt, packing.board_operand(a), packing.board_operand(b), block, op, self.limits,
                                   max_n=max_n)
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

    def _assign(self, calls: List[Call]) -> List[List[Call]]:
        """Each call, in plan order, onto the unit with the least work so far (MACs; ties to the
        lowest unit): equal calls go round-robin. Returns each unit's calls in plan order."""
        queues: List[List[Call]] = [[] for _ in self.units]
        load = [0] * len(self.units)
        for call in calls:
            unit = load.index(min(load))
            call.unit = unit
            queues[unit].append(call)
            h = call.header
            load[unit] += max(h.m * h.n * h.k, 1)
        return queues

    def _run_pipelined(self, calls: List[Call]) -> Dict[int, np.ndarray]:
        queues = self._assign(calls)
        results: Dict[int, np.ndarray] = {}
        in_flight: Dict[int, Call] = {}
        try:
            for queue in queues:  # every unit started before any is waited on
                if queue:
                    self._pack(queue[0], slot=0)
                    self._start(queue[0], in_flight)
            for r in range(max(map(len, queues), default=0)):
                for queue in queues:
                    if r < len(queue):
                        self._step(queue, r, results, in_flight)
        except Exception as err:  # a fault, a failed allocation, or anything else mid-GEMM
            self._settle(list(in_flight.values()), err)
            raise
        return results

    def _step(self, queue: List[Call], r: int, results: dict, in_flight: dict) -> None:
        """Pack the unit's next call while it runs call r, take call r's result, start the next."""
        call = queue[r]
        following = queue[r + 1] if r + 1 < len(queue) else None
        if following is not None:
            self._pack(following, slot=(r + 1) % SLOTS)  # overlaps the unit's work on call r
        del in_flight[call.unit]  # from here on a fault in call r is its unit's own (reset there)
        results[call.index] = self._finish(call)
        self.units[call.unit].calls_run += 1
        if following is not None:
            self._start(following, in_flight)

    def _start(self, call: Call, in_flight: dict) -> None:
        self._stage("launch", call)
        self._launch(call)
        in_flight[call.unit] = call

    def _settle(self, calls: List[Call], err: Exception) -> None:
        """After a fault (or a failed allocation) on one unit: let every other unit's call in flight
        finish, its result dropped, so no transfer is left writing into a buffer the next GEMM
        reuses; then the backend recovers what the fault left (``_recover``)."""
        for call in calls:
            try:
                self._finish(call)
            except BoardError as other:
                err.add_note(f"while settling the other units: {other}")
        self._recover()

    def _stage(self, name: str, call: Call) -> None:
        if self.trace is not None:
            self.trace.append((name, call.index, call.unit, call.slot))

    def _pack(self, call: Call, slot: int) -> None:
        call.slot = slot
        self._stage("pack", call)
        buf = self.units[call.unit].inputs[slot].ensure(packing.stream_words(call.header))
        call.in_words = packing.pack_call(buf, call.header, call.a_tile, call.b_tile)
        self._to_device(call)

    # -- the transfer step, per board
    def _to_device(self, call: Call) -> None:
        """Make the packed input of ``call`` visible to the hardware (nothing where launching does it)."""

    @abc.abstractmethod
    def _launch(self, call: Call) -> None:
        """Start ``call`` on unit ``call.unit`` from its input slot ``call.slot``; return without waiting."""

    @abc.abstractmethod
    def _finish(self, call: Call) -> np.ndarray:
        """Wait for ``call``, check what came back, return its C tile [m, n] fp32 (a fresh array)."""

    def _recover(self) -> None:
        """Bring every unit back to a clean state once no call is in flight (nothing by default)."""


