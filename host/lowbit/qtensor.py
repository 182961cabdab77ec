"""QTensor: a quantized tensor held as integer codes plus its scales."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .formats import FP32, MLS, Format, Mogami, PoT


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
