"""QTensor: a quantized tensor held as integer codes plus its scales."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np
import torch

from lowbit.numerics.formats import FP32, MLS, Format, Mogami, PoT, parse

_UNSIGNED = {torch.int16: np.uint16, torch.int32: np.uint32}


@dataclass(frozen=True)
class QTensor:
    """Integer codes of a quantized tensor.

    * ``codes``: same shape as the source tensor. MLS and PoT: int16,
      ``sign << (code_bits - 1) | exp << mx | man`` (PoT: ``sign << 4 | exp``).
      Mogami / fp32: the IEEE bit pattern (int32 for fp32, int16 for bf16).
    * ``scale_codes``: MLS only, int16 ``eg_code << mg | mg_bit``, one per group. Layout:
      4-D source [N, C, H, W] -> [N|1, C|1] (grouping nc / n / c / none); 2-D source
      [R, L] -> [R|1, ceil(L/block)|1].
    * ``tensor_scale``: 0-d fp32 tensor, St (MLS), 2^s (PoT), 1 otherwise.
    * ``block``: group length along the last dim for 2-D sources, else None.
    """

    fmt: Format
    codes: torch.Tensor
    scale_codes: Optional[torch.Tensor]
    tensor_scale: torch.Tensor
    dtype: torch.dtype
    block: Optional[int] = None
    # Dequantized values when the quantizer produced them in the same pass (a cache for the
    # software backend's fast path); must equal what dequantize() computes from the codes.
    values: Optional[torch.Tensor] = field(default=None, compare=False, repr=False)

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    @property
    def device(self) -> torch.device:
        return self.codes.device

    @property
    def sign(self) -> torch.Tensor:
        return (self.codes.to(torch.int32) >> (self.fmt.code_bits - 1)) & 1

    @property
    def exp(self) -> torch.Tensor:
        f = self.fmt
        if isinstance(f, MLS):
            return (self.codes.to(torch.int32) >> f.mx) & ((1 << f.ex) - 1)
        if isinstance(f, PoT):
            return self.codes.to(torch.int32) & f.max_code
        raise AttributeError(f"{f} has no exponent codes")

    @property
    def man(self) -> torch.Tensor:
        f = self.fmt
        if isinstance(f, MLS):
            return self.codes.to(torch.int32) & ((1 << f.mx) - 1)
        raise AttributeError(f"{f} has no mantissa codes")

    def magnitude_int(self) -> torch.Tensor:
        """MLS element magnitude as an integer in units of 2^(exmin - mx) (int32)."""
        f = self.fmt
        if not isinstance(f, MLS):
            raise AttributeError("magnitude_int is defined for MLS only")
        e, m = self.exp, self.man
        normal = ((1 << f.mx) + m) << (e - 1).clamp(min=0)
        return torch.where(e == 0, m, normal)

    def group_scale(self) -> torch.Tensor:
        """MLS group-scale values as fp32, in ``scale_codes`` layout."""
        f = self.fmt
        c = self.scale_codes.to(torch.int32)
        eg_code, mbit = c >> f.mg, c & ((1 << f.mg) - 1)
        frac = 1.0 + mbit.to(torch.float32) / (1 << f.mg)
        return torch.ldexp(frac, -eg_code.to(torch.float32))

    def expand_groups(self, per_group: torch.Tensor) -> torch.Tensor:
        """Broadcast a tensor in ``scale_codes`` layout to the source shape."""
        if self.codes.dim() == 4:
            return per_group[:, :, None, None].expand(self.shape)
        if per_group.shape[1] == 1:  # one scale per row (or per tensor): no blocks to spread
            return per_group.expand(self.shape)
        full = per_group.repeat_interleave(self.block, dim=1)[:, : self.shape[1]]
        return full.expand(self.shape)

    def dequantize(self) -> torch.Tensor:
        if self.values is not None:
            return self.values
        return self.decode()

    def decode(self) -> torch.Tensor:
        """Values computed from the codes alone (ignores the ``values`` cache)."""
        f = self.fmt
        if isinstance(f, FP32) or (isinstance(f, Mogami) and f.dtype == "fp32"):
            return self.codes.view(torch.float32).to(self.dtype)
        if isinstance(f, Mogami):
            return self.codes.view(torch.bfloat16).to(self.dtype)
        sign = 1.0 - 2.0 * self.sign.to(torch.float32)
        if isinstance(f, PoT):
            e = self.exp
            mag = torch.where(e == 0, torch.zeros_like(e, dtype=torch.float32),
                              torch.ldexp(torch.ones_like(e, dtype=torch.float32), (e - f.max_code).float()))
            return (sign * mag * self.tensor_scale).to(self.dtype)
        mag = torch.ldexp(self.magnitude_int().to(torch.float32),
                          torch.tensor(float(f.exmin - f.mx), device=self.device))
        scale = self.expand_groups(self.group_scale())
        return (sign * mag * scale * self.tensor_scale).to(self.dtype)

    # ------------------------------------------------------------------ wire format

    def pack(self) -> bytes:
        """This tensor as one GEMM operand's wire sections (``lowbit.kernel.wire``), little-endian.

        MLS: scale codes [rows][nblocks] in 16-bit lanes, then the codes [rows][K] in
        ``wire.elem_lane_bits`` lanes; PoT / Mogami: the codes only. Each section starts on a
        fresh 64-bit word, unused lanes are 0. A 4-D [N, C, H, W] tensor is the operand
        [N, C*H*W] with block H*W (its (n, c) groups are the blocks).
        """
        out = np.empty(self.packed_nbytes(), dtype=np.uint8)
        self.pack_into(out)
        return out.tobytes()

    def packed_nbytes(self) -> int:
        """Length of ``pack()``: whole 64-bit words."""
        from lowbit.kernel import wire

        rows, k, block = _operand_geometry(self.fmt, tuple(self.shape), self.block)
        scales = rows * -(-k // block) if isinstance(self.fmt, MLS) else 0
        return 8 * (wire.words_for(scales, wire.SCALE_LANE_BITS) + wire.words_for(rows * k, wire.elem_lane_bits(self.fmt)))

    def pack_into(self, dest, offset: int = 0) -> int:
        """Write ``pack()``'s bytes into ``dest`` (a writable buffer: numpy array, bytearray, DMA
        buffer) from byte ``offset``, without an intermediate copy; returns the bytes written."""
        from lowbit.kernel import wire

        rows, k, block = _operand_geometry(self.fmt, tuple(self.shape), self.block)
        nbytes = self.packed_nbytes()
        flat = np.asarray(dest) if isinstance(dest, np.ndarray) else np.frombuffer(dest, dtype=np.uint8)
        span = flat.reshape(-1).view(np.uint8)[offset:offset + nbytes]
        if span.size != nbytes:
            raise ValueError(f"destination holds {flat.nbytes - offset} bytes after offset {offset}; need {nbytes}")
        pos = 0
        if isinstance(self.fmt, MLS):
            nb = -(-k // block)
            scales = np.broadcast_to(self.scale_codes.detach().cpu().numpy().view("<u2"), (rows, nb))
            _check_scale_width(scales, self.fmt, "scale_codes hold")
            pos = _write_lanes(span, pos, scales, wire.SCALE_LANE_BITS)
        codes = self.codes.detach().cpu().contiguous().numpy().reshape(-1).view(_UNSIGNED[self.codes.dtype])
        lane = wire.elem_lane_bits(self.fmt)
        code_bits = self.fmt.code_bits if isinstance(self.fmt, (MLS, PoT)) else lane
        _write_codes(span[pos:], codes, lane, code_bits, self.fmt)
        return nbytes

    @classmethod
    def unpack(cls, data: bytes, fmt, shape, *, block: Optional[int] = None,
               tensor_scale: "float | torch.Tensor | None" = None, dtype: torch.dtype = torch.float32) -> "QTensor":
        """Inverse of ``pack``: the tensor from its wire sections (``values`` left to decode)."""
        from lowbit.kernel import wire

        fmt, shape = parse(fmt), tuple(int(d) for d in shape)
        rows, k, blk = _operand_geometry(fmt, shape, block)
        lane = wire.elem_lane_bits(fmt)
        nb = -(-k // blk) if isinstance(fmt, MLS) else 0
        scale_words, code_words = wire.words_for(rows * nb, wire.SCALE_LANE_BITS), wire.words_for(rows * k, lane)
        if len(data) != 8 * (scale_words + code_words):
            raise ValueError(f"{len(data)} bytes do not hold a {fmt} operand of shape {shape}: expected "
                             f"{8 * (scale_words + code_words)} ({scale_words} scale + {code_words} code words)")
        words = np.frombuffer(data, dtype="<u8")
        codes = wire.unpack_lanes(words[scale_words:], lane, rows * k)
        if isinstance(fmt, (MLS, PoT)) and bool((codes >> fmt.code_bits).any()):
            raise ValueError(f"lanes hold values wider than {fmt.code_bits} bits: not a {fmt} operand")
        code_dtype = np.int32 if lane == 32 else np.int16
        codes_t = torch.from_numpy(codes.astype(code_dtype.__name__.replace("int", "uint"), copy=False)
                                   .view(code_dtype).reshape(shape).copy())
        scale_codes = None
        if isinstance(fmt, MLS):
            grid = wire.unpack_lanes(words[:scale_words], wire.SCALE_LANE_BITS, rows * nb).reshape(rows, nb)
            _check_scale_width(grid, fmt, "scale lanes hold")
            scale_codes = torch.from_numpy(_group_layout(grid, fmt.group).astype(np.int16))
        if tensor_scale is None:
            tensor_scale = 1.0
        ts = torch.as_tensor(tensor_scale, dtype=torch.float32).reshape(())
        keep_block = blk if isinstance(fmt, MLS) and len(shape) == 2 else None
        return cls(fmt, codes_t, scale_codes, ts, dtype, keep_block)


def _operand_geometry(fmt, shape: Tuple[int, ...], block: Optional[int]) -> Tuple[int, int, int]:
    """(rows, K, block) of a tensor sent as a GEMM operand."""
    if isinstance(fmt, FP32):
        raise ValueError("fp32 tensors are not sent to the kernel; quantize to mls, pot or mogami first")
    if len(shape) == 4:
        n, c, h, w = shape
        if block is not None and block != h * w:
            raise ValueError(f"a 4-D operand's block is H*W = {h * w}, got block={block}")
        return n, c * h * w, h * w
    if len(shape) != 2:
        raise ValueError(f"a wire operand is 2-D [rows, K] or 4-D [N, C, H, W]; got shape {shape}")
    if isinstance(fmt, MLS) and (block is None or block < 1):
        raise ValueError(f"an MLS 2-D operand needs its block (group length along K), got {block!r}")
    return shape[0], shape[1], block if block is not None else shape[1]


def _check_scale_width(lanes: np.ndarray, fmt: MLS, what: str) -> None:
    """Group-scale codes are ``eg + mg`` bits; a wider lane would decode differently in software
    (a signed int16) and in the kernel (its low bits), so it is refused."""
    wide = int(np.count_nonzero(lanes >> fmt.scale_bits))
    if wide:
        raise ValueError(f"{wide} {what} values wider than the {fmt.scale_bits}-bit group-scale codes of {fmt} "
                         f"(eg={fmt.eg}, mg={fmt.mg}): wrong format or corrupt data")


def _group_layout(grid: np.ndarray, group: str) -> np.ndarray:
    """[rows, nblocks] scale codes -> the QTensor layout of ``group``, checking it is consistent."""
    keep_rows, keep_blocks = group in ("nc", "n"), group in ("nc", "c")
    out = grid[:, :1] if not keep_blocks else grid
    out = out[:1] if not keep_rows else out
    if not np.array_equal(np.broadcast_to(out, grid.shape), grid):
        raise ValueError(f"scale codes vary across groups that group={group!r} shares; wrong format or corrupt data")
    return np.ascontiguousarray(out)


def _write_lanes(span: np.ndarray, pos: int, values: np.ndarray, lane_bits: int) -> int:
    """Write unsigned ``values`` as 8/16/32-bit lanes from byte ``pos``, zero-padded to a word."""
    from lowbit.kernel import wire

    nbytes = 8 * wire.words_for(values.size, lane_bits)
    lanes = span[pos:pos + nbytes].view({8: np.uint8, 16: "<u2", 32: "<u4"}[lane_bits])
    lanes[:values.size].reshape(values.shape)[...] = values
    lanes[values.size:] = 0
    return pos + nbytes


def _write_codes(span: np.ndarray, codes: np.ndarray, lane_bits: int, code_bits: int, fmt) -> None:
    """Element codes -> lanes (fused native pass on CPU; numpy otherwise), checking their width."""
    from lowbit.kernel import wire

    nbytes = 8 * wire.words_for(codes.size, lane_bits)
    used = (codes.size * lane_bits + 7) // 8
    span[used:nbytes] = 0
    if lane_bits == 32:
        span[:used].view("<u4")[...] = codes
        return
    from lowbit.numerics.quant.native import library, native_available

    if native_available():
        ffi, lib = library()
        bad = lib.lowbit_pack_codes(ffi.from_buffer("uint16_t[]", codes), codes.size, lane_bits, code_bits,
                                    ffi.from_buffer("uint8_t[]", span, require_writable=True))
    else:
        bad = int(np.count_nonzero(codes >> code_bits)) if code_bits < 16 else 0
        if lane_bits >= 8:
            span[:used].view({8: np.uint8, 16: "<u2"}[lane_bits])[...] = codes
        else:
            half = codes.size // 2
            np.left_shift(codes[1::2], 4, out=span[:half], casting="unsafe")
            span[:half] |= codes[0:2 * half:2].astype(np.uint8)
            if codes.size & 1:
                span[half] = codes[-1]
    if bad:
        raise ValueError(f"{bad} codes exceed {code_bits} bits: not a valid {fmt} tensor")
