"""The emulation backend: the HLS C++ tops compiled with g++ and called through cffi.

``run_axis_stream`` feeds a word stream to the AXI-Stream top exactly as an AXI DMA would (TLAST
on the last word) and returns what the top wrote. ``EmulationBackend.gemm`` tiles a GEMM to the
kernel's limits, packs every tile into the wire stream (``lowbit.kernel.wire``), runs it and unpacks.

Tiling (documented order, repeated by ``lowbit.kernel.reference.gemm``): M in tiles of MAX_M (and
of what the A buffer holds for one block), N in tiles that fit MAX_N and the B-scale buffer, K in
tiles of whole blocks that fit MAX_K, the A-scale buffer and the A buffer (``KernelLimits``); the
K-tiles' fp32 outputs are added on the host in ascending K order (``C = C_0 + C_1 + ...``), then
multiplied by ``St_a * St_b`` (that product computed first, in fp32). How N is split (``max_n``)
never changes a result.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, List, Tuple

import numpy as np
import torch

from lowbit.kernel import wire
from lowbit.runtime.native import load
from lowbit.numerics.formats import MLS, Mogami, PoT
from lowbit.kernel.boards import BOARDS, FULL_LIMITS, Build, KernelLimits
from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Header, Op, Status
from lowbit.backends.base import Backend, Capabilities



FULL = FULL_LIMITS  # the protocol's whole MAX_M x MAX_K: the emulation default
# The buffers of each board's builds (lowbit.kernel.boards, the one record); the emulation carries
# every arithmetic family at each of them.
CONFIGS = {"full": FULL, **{name: cfg.limits for name, cfg in BOARDS.items()}}


def config_defines(limits) -> list:
    """Compiler defines that build the kernel with ``limits`` (a KernelLimits: every family, those
    buffers) or a ``boards.Build`` (what one bitstream carries)."""
    if isinstance(limits, Build):
        return [limits.define]
    k_max = [f"-DLOWBIT_K_MAX={limits.k_max}u"] if limits.k_max != wire.MAX_K else []
    return [f"-DLOWBIT_SCALE_BUF={limits.scale_buf}u", f"-DLOWBIT_A_ELEMS={limits.a_elems}u",
            f"-DLOWBIT_A_BANKS={limits.a_banks}u", *k_max]


SCALE_BUF, A_ELEMS = FULL.scale_buf, FULL.a_elems
# The kernel keeps its on-chip buffers in static storage, like the one IP on a board: one call at a
# time. (Per-thread buffers were tried: thread_local cost ~25% per call and gave no gain on 2 cores.)
_KERNEL_LOCK = threading.Lock()

_CDEF = """
int lowbit_axis_run(const uint64_t* in, uint64_t n_in, uint64_t* out, uint64_t out_cap, uint64_t* n_out,
                    int64_t* tlast_index, uint64_t* consumed, uint32_t* status, uint32_t* id_version,
                    uint32_t* beats);
void lowbit_mm_run(const uint64_t* in, uint32_t n_in, uint64_t* out, uint32_t out_cap, uint32_t* result);
int64_t lowbit_mls_block_sum(const uint16_t* a, const uint16_t* b, uint32_t len, uint32_t ex, uint32_t mx);
float lowbit_mls_block_value(int64_t p, uint16_t sa, uint16_t sb, uint32_t ex, uint32_t mx, uint32_t eg,
                             uint32_t mg);
int64_t lowbit_pot_block_sum(const uint16_t* a, const uint16_t* b, uint32_t len);
uint32_t lowbit_mogami_mul_bits(uint32_t a, uint32_t b, uint32_t bits);
void lowbit_kernel_limits(uint32_t* out);
"""


def kernel_lib(limits: KernelLimits = FULL):
    """(ffi, lib) of the compiled kernel; built once per source hash (and limits) into the cache.

    The emulation build defines LOWBIT_FAST_CSIM (native integer types, see mac.hpp) and targets
    this CPU; the C-sim testbenches build the ap_int path of the same sources."""
    from lowbit.kernel import headers as hls_headers

    include = hls_headers.hls_include_dir()
    config = config_defines(limits)
    if isinstance(limits, Build):
        name = f"lowbit_kernel_{limits.name}"
    else:
        name = "lowbit_kernel" if limits == FULL else \
            f"lowbit_kernel_s{limits.scale_buf}_a{limits.a_elems}_b{limits.a_banks}_k{limits.k_max}"
    return load(name, _CDEF, hls_headers.kernel_sources(),
                include_dirs=[include, hls_headers.csim_include_dir(), hls_headers.HLS_DIR / "kernels"],
                system_include_dirs=[hls_headers.ap_types_dir()],
                # Several builds live in one process, each with its own static tiles: without
                # -fno-gnu-unique the dynamic linker makes the same template's statics one object
                # across libraries (STB_GNU_UNIQUE), sized by whichever build loaded first.
                flags=[hls_headers.CXX_FLAGS[0], *hls_headers.CXX_FLAGS[2:], "-DLOWBIT_FAST_CSIM", "-march=native",
                       "-fno-gnu-unique", *config])


@dataclass(frozen=True)
class AxisResult:
    out_words: np.ndarray  # uint64, every beat the top wrote
    tlast_index: int  # index of the beat carrying TLAST (-1: none)
    status: Status  # the STATUS register
    consumed: int  # input words the top read
    id_version: int = 0  # the ID_VERSION register
    beats: int = 0  # the CYCLES register (beats consumed)


def _u64(words) -> np.ndarray:
    arr = np.ascontiguousarray(words)
    if arr.dtype != np.uint64:
        if arr.dtype.kind not in "ui":
            raise TypeError(f"stream words must be unsigned 64-bit integers, got dtype {arr.dtype}")
        arr = arr.astype(np.uint64)
    return arr.reshape(-1)


def _out_capacity(words: np.ndarray) -> int:
    try:
        hdr = Header.from_words(words)
    except (ValueError, KeyError):
        return 2  # malformed header: the status word alone
    if hdr.m > wire.MAX_M or hdr.n > wire.MAX_N:
        return 2
    return hdr.output_words() + 1


def run_axis_stream(words: np.ndarray, *, limits: KernelLimits = FULL) -> AxisResult:
    """Run the AXI-Stream top on ``words`` (TLAST on the last word), as a DMA transfer would."""
    words = _u64(words)
    if words.size == 0:
        raise ValueError("an AXI DMA cannot send an empty transfer; give at least one word")
    ffi, lib = kernel_lib(limits)
    cap = max(_out_capacity(words), 2)
    out = np.zeros(cap, dtype=np.uint64)
    n_out, tlast, consumed = ffi.new("uint64_t*"), ffi.new("int64_t*"), ffi.new("uint64_t*")
    status, idv, beats = ffi.new("uint32_t*"), ffi.new("uint32_t*"), ffi.new("uint32_t*")
    with _KERNEL_LOCK:
        rc = lib.lowbit_axis_run(ffi.from_buffer("uint64_t[]", words), words.size,
                                 ffi.from_buffer("uint64_t[]", out), cap, n_out, tlast, consumed, status, idv, beats)
    if rc == -2:
        raise RuntimeError(f"kernel wrote {n_out[0]} words, more than the {cap} its header allows")
    if rc == -3:
        raise RuntimeError("kernel wrote a beat without all keep/strb bits set")
    return AxisResult(out[: n_out[0]].copy(), int(tlast[0]), Status(status[0]), int(consumed[0]),
                      int(idv[0]), int(beats[0]))


def run_mm(words: np.ndarray, *, limits: KernelLimits = FULL) -> Tuple[np.ndarray, Status]:
    """Run the m_axi (Alveo) top on ``words``; returns (output words, status)."""
    words = _u64(words)
    ffi, lib = kernel_lib(limits)
    cap = max(_out_capacity(words), 2)
    out = np.zeros(cap, dtype=np.uint64)
    result = np.zeros(2, dtype=np.uint32)
    with _KERNEL_LOCK:
        lib.lowbit_mm_run(ffi.from_buffer("uint64_t[]", words), words.size, ffi.from_buffer("uint64_t[]", out), cap,
                          ffi.from_buffer("uint32_t[]", result))
    return out[: result[1]].copy(), Status(int(result[0]))


# ------------------------------------------------------------------------------------------------
# Host side of a GEMM: operands as code matrices, tiling, stream building.
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operand:
    """A 2-D operand as the kernel sees it: lane values of codes [R, K], scale codes [R, nblocks]."""

    codes: np.ndarray  # unsigned lane values (uint8/16/32)
    scales: np.ndarray  # uint16 [R, nblocks] (MLS) or an empty [R, 0] array


def operand_of(q: QTensor) -> Operand:
    """Codes masked to the format's code bits (unsigned); group scales broadcast to [R, nblocks]."""
    if q.codes.dim() != 2:
        raise ValueError(f"gemm operands are 2-D [rows, K]; got shape {tuple(q.shape)} (lower convs first)")
    fmt = q.fmt
    raw = q.codes.detach().cpu().numpy()
    unsigned = raw.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[raw.dtype.itemsize])
    bits = fmt.code_bits
    codes = unsigned if bits >= 8 * raw.dtype.itemsize else unsigned & unsigned.dtype.type((1 << bits) - 1)
    rows, k = codes.shape
    if isinstance(fmt, MLS):
        if q.block is None or q.scale_codes is None:
            raise ValueError("an MLS gemm operand needs block and scale_codes (2-D quantization grouped along K)")
        nb = -(-k // q.block)
        sc = q.scale_codes.detach().cpu().numpy().astype(np.int64) & 0xFFFF
        scales = np.broadcast_to(sc, (rows, nb)).astype(np.uint16)
    else:
        scales = np.zeros((rows, 0), dtype=np.uint16)
    return Operand(codes, scales)


def build_stream(header: Header, a: Operand, b: Operand) -> np.ndarray:
    """The exact input stream of one kernel call."""
    parts = [header.to_words()]
    lane = header.lane_bits
    if header.has_scales:
        parts.append(wire.pack_lanes(a.scales, wire.SCALE_LANE_BITS))
    parts.append(wire.pack_lanes(a.codes, lane))
    if header.has_scales:
        parts.append(wire.pack_lanes(b.scales, wire.SCALE_LANE_BITS))
    parts.append(wire.pack_lanes(b.codes, lane))
    return np.concatenate(parts)


def unpack_output(words: np.ndarray, m: int, n: int) -> np.ndarray:
    """C [M, N] fp32 from the kernel's C^T [N][M] output words (status word excluded)."""
    vals = wire.unpack_lanes(words, wire.OUT_LANE_BITS, m * n).view(np.float32)
    return vals.reshape(n, m).T


def k_tile_size(k: int, block: int, m_rows: int, limits: KernelLimits = FULL) -> int:
    """Largest K-tile of whole blocks within K_MAX, the A-scale buffer and the A buffer."""
    k_max = min(wire.MAX_K, limits.k_max)
    if block > min(k_max, limits.a_elems // limits.a_banks):
        raise ValueError(f"block {block} is longer than the kernel's MAX_K={k_max} (its longest K-tile) "
                         f"or one pass of its A buffer ({limits.a_elems} elements in {limits.a_banks} row banks); "
                         "quantize with a smaller block (or use the software backend)")
    rows = max(m_rows, 1)
    blocks = min(k_max // block, max(limits.scale_buf // rows, 1), max(limits.a_elems // limits.a_rows(rows) // block, 1))
    return min(k, blocks * block)


def tiles(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def unit_share_n(n: int, units: int) -> int:
    """The B rows one call may carry so that a GEMM's N is split into one share per compute unit
    (the board backends and the cycle model; splitting N never changes a result)."""
    return min(wire.MAX_N, max(-(-n // max(units, 1)), 1))


def plan_tiles(fmt, m_total: int, n_total: int, k: int, block: int, op: Op, limits: KernelLimits = FULL,
               max_n: int = wire.MAX_N) -> Iterator[Tuple[slice, slice, List[Tuple[slice, Header]]]]:
    """THE host tiler (emulation, PYNQ, Alveo and the cycle model): (m-slice, n-slice, [(k-slice,
    header) per K-tile, ascending]) for every output tile of an [M, K] x [N, K] GEMM, every call
    within the kernel's header check for ``limits``.

    Splitting N (``max_n``) never changes a result: every output column is computed alone."""
    scaled = isinstance(fmt, MLS)
    m_size = min(wire.MAX_M, limits.max_rows(min(block, k))) if scaled else wire.MAX_M
    for ms in tiles(m_total, m_size):
        rows = ms.stop - ms.start
        kt = k_tile_size(k, block, rows, limits) if scaled else \
            min(k, wire.MAX_K, limits.k_max, max(limits.a_elems // limits.a_rows(rows), 1))
        nb_tile = -(-kt // block) if scaled else 1
        n_size = min(max_n, limits.scale_buf // nb_tile if scaled else wire.MAX_N)
        for ns in tiles(n_total, n_size):
            calls = []
            for ks in tiles(k, kt):
                kk = ks.stop - ks.start
                calls.append((ks, Header.for_gemm(op, fmt, rows, ns.stop - ns.start, kk, block if scaled else kk)))
            yield ms, ns, calls


def gemm_tiles(fmt, a: Operand, b: Operand, block: int, op: Op, limits: KernelLimits = FULL,
               max_n: int = wire.MAX_N) -> Iterator[Tuple[slice, slice, List]]:
    """``plan_tiles`` with the operands sliced: (m-slice, n-slice, [(header, a_tile, b_tile) per
    K-tile, ascending])."""
    scaled = isinstance(fmt, MLS)
    for ms, ns, calls in plan_tiles(fmt, a.codes.shape[0], b.codes.shape[0], a.codes.shape[1], block, op, limits,
                                    max_n):
        out = []
        for ks, hdr in calls:
            bs = slice(ks.start // block, -(-ks.stop // block)) if scaled else slice(0, 0)
            out.append((hdr, Operand(a.codes[ms, ks], a.scales[ms, bs]), Operand(b.codes[ns, ks], b.scales[ns, bs])))
        yield ms, ns, out


def check_operands(a: QTensor, b: QTensor) -> None:
    if type(a.fmt) is not type(b.fmt) or (isinstance(a.fmt, Mogami) and a.fmt != b.fmt):
        raise ValueError(f"gemm operands must share one arithmetic; got {a.fmt} and {b.fmt}")
    if isinstance(a.fmt, MLS) and (a.fmt.ex, a.fmt.mx, a.fmt.eg, a.fmt.mg) != (b.fmt.ex, b.fmt.mx, b.fmt.eg, b.fmt.mg):
        raise ValueError(f"MLS gemm operands must share element and scale formats; got {a.fmt} and {b.fmt}")
    if not isinstance(a.fmt, (MLS, PoT, Mogami)):
        raise ValueError(f"the kernel computes mls, pot and mogami; {a.fmt} is not sent to it")
    if a.codes.dim() != 2 or b.codes.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"gemm needs a [M, K] and b [N, K]; got {tuple(a.shape)} and {tuple(b.shape)}")
    if isinstance(a.fmt, MLS) and a.block != b.block:
        raise ValueError(f"MLS operands must be grouped with the same block; got {a.block} and {b.block}")


def tensor_scale_product(a: QTensor, b: QTensor) -> np.float32:
    sa = np.float32(a.tensor_scale.detach().cpu().item())
    sb = np.float32(b.tensor_scale.detach().cpu().item())
    return np.float32(sa * sb)


def tiled_gemm(a: QTensor, b: QTensor, op: Op, run_call, limits: KernelLimits = FULL) -> torch.Tensor:
    """The shared host loop: ``run_call(header, a_tile, b_tile) -> C_tile [m, n] fp32``."""
    check_operands(a, b)
    block = a.block if isinstance(a.fmt, MLS) else a.shape[1]
    oa, ob = operand_of(a), operand_of(b)
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.float32)
    for ms, ns, calls in gemm_tiles(a.fmt, oa, ob, block, op, limits):
        acc = None
        for hdr, at, bt in calls:
            part = run_call(hdr, at, bt)
            acc = part if acc is None else (acc + part).astype(np.float32)
        out[ms, ns] = acc
    out *= tensor_scale_product(a, b)
    return torch.from_numpy(out).to(device=a.device)


def _emulated_call(hdr: Header, at: Operand, bt: Operand, limits: KernelLimits = FULL) -> np.ndarray:
    res = run_axis_stream(build_stream(hdr, at, bt), limits=limits)
    if res.status != Status.OK:
        raise RuntimeError(f"kernel returned status {res.status.name} for header {hdr}")
    return unpack_output(res.out_words[:-1], hdr.m, hdr.n)


class EmulationBackend(Backend):
    """Bit-exact C-simulation of the HLS kernel (the same C++ the FPGA runs).

    ``config``: "full" (the protocol's limits) or "pynq-z2" (the smaller on-chip buffers of a
    PYNQ-Z2 build, docs/hardware.md), or a KernelLimits."""

    name = "emulation"

    def __init__(self, config="full") -> None:
        if not isinstance(config, KernelLimits) and config not in CONFIGS:
            raise ValueError(f"unknown kernel config {config!r}; choose one of {sorted(CONFIGS)} or a KernelLimits")
        self.limits = config if isinstance(config, KernelLimits) else CONFIGS[config]
        kernel_lib(self.limits)  # build now: a missing compiler or header fails here, with its message

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, ("mls", "pot", "mogami"), True, ("cpu", "cuda"),
                            "HLS C++ kernel compiled with g++, bit-exact with the FPGA arithmetic")

    def gemm(self, a: QTensor, b: QTensor, *, op: Op = Op.FORWARD) -> torch.Tensor:
        limits = self.limits
        return tiled_gemm(a, b, op, lambda hdr, at, bt: _emulated_call(hdr, at, bt, limits), limits)
