"""Per-layer quantization settings and the quantize call every operand goes through."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import torch

from lowbit.backends import Backend, get_backend
from lowbit.numerics.formats import MLS, Format, Mogami, PoT, parse
from lowbit.numerics.qtensor import QTensor
from lowbit.numerics import quant  # quant.quantize looked up per call (tests wrap it)
from lowbit.numerics.quant import ROUNDINGS

OPERANDS = ("W", "A", "E")
MOGAMI_BACKWARD = ("approx", "exact")


def default_rounding(fmt: Format) -> Dict[str, str]:
    """MLS: stochastic for W, A and E (Alg. 1 applies SRound in every DQ call of Alg. 2).
    PoT: nearest (linear domain) for W and A, unbiased stochastic for E (docs/layers.md).
    Mogami bf16 / fp32: nearest (only bf16 rounds at all)."""
    if isinstance(fmt, MLS):
        return dict(W="stochastic", A="stochastic", E="stochastic")
    if isinstance(fmt, PoT):
        return dict(W="nearest", A="nearest", E="stochastic")
    return dict(W="nearest", A="nearest", E="nearest")


def _resolve_rounding(fmt: Format, rounding, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    out = dict(default_rounding(fmt) if base is None else base)
    if rounding is None:
        return out
    if isinstance(rounding, str):
        rounding = {op: rounding for op in OPERANDS}
    if not isinstance(rounding, dict) or set(rounding) - set(OPERANDS):
        raise ValueError(f"rounding must be one of {ROUNDINGS} or a dict over operands {OPERANDS}, got {rounding!r}")
    for op, mode in rounding.items():
        if mode not in ROUNDINGS:
            raise ValueError(f"rounding for {op} must be one of {ROUNDINGS}, got {mode!r}")
        out[op] = mode
    return out


@dataclass
class LayerSpec:
    """What one quantized layer computes with. ``name`` is filled in by convert()."""

    fmt: Format
    backend: Backend
    rounding: Dict[str, str]
    mogami_backward: str = "approx"
    block: int = 32  # QLinear group length along each GEMM's reduction dim (MLS)
    wbc: bool = False  # PoT Weight Bias Correction (docs/layers.md)
    eval_rounding: Dict[str, str] = field(default_factory=lambda: dict.fromkeys(OPERANDS, "nearest"))
    training: bool = True  # set by the layer on every call: eval() rounds with eval_rounding
    prc: Optional[float] = None  # PoT Parameterized Ratio Clipping: clip ratio alpha in (0, 1]
    name: str = ""
    generator: Optional[torch.Generator] = field(default=None, repr=False)
    # backend calls that ran, by (GEMM phase, format): what summary() reports
    ran: Counter = field(default_factory=Counter, repr=False, compare=False)

    @classmethod
    def make(cls, fmt, backend="software", rounding=None, mogami_backward="approx", block=32,
             wbc=False, prc=None, name="", generator=None, eval_rounding=None) -> "LayerSpec":
        fmt = parse(fmt)
        if mogami_backward not in MOGAMI_BACKWARD:
            raise ValueError(f"mogami_backward must be one of {MOGAMI_BACKWARD}, got {mogami_backward!r}")
        if not (isinstance(block, int) and block >= 1):
            raise ValueError(f"block must be a positive int (group length along the reduction dim), got {block!r}")
        if (wbc or prc is not None) and not isinstance(fmt, PoT):
            raise ValueError(f"wbc / prc are ALS-POTQ techniques for pot formats; the format here is {fmt}")
        if prc is not None and not (0.0 < float(prc) <= 1.0):
            raise ValueError(f"prc is the clip ratio alpha in (0, 1], got {prc!r}")
        evaluation = _resolve_rounding(fmt, eval_rounding, dict.fromkeys(OPERANDS, "nearest"))
        return cls(fmt, get_backend(backend), _resolve_rounding(fmt, rounding), mogami_backward, block,
                   bool(wbc), eval_rounding=evaluation, prc=None if prc is None else float(prc), name=name,
                   generator=generator)

    def record(self, phase: str, calls: int = 1) -> None:
        """Count ``calls`` backend GEMM calls of ``phase`` (fwd | bwd_data | wgrad) in this format."""
        self.ran[(phase, str(self.fmt))] += calls

    def run(self, phase: str, method: str, *args, **kwargs):
        """backend.<method>(*args): one recorded GEMM call of ``phase``."""
        self.record(phase)
        with torch._C.DisableTorchFunction():  # a TorchFunctionMode around the model sees none of it
            return getattr(self.backend, method)(*args, **kwargs)

    @property
    def label(self) -> str:
        return self.name or "<unnamed layer>"

    def describe(self) -> str:
        parts = [str(self.fmt)]
        if isinstance(self.fmt, (MLS, PoT)):
            parts.append("W/A/E " + "/".join(self.rounding[o][:4] for o in OPERANDS))
            if any(self.eval_rounding[o] != "nearest" for o in OPERANDS):
                parts.append("eval " + "/".join(self.eval_rounding[o][:4] for o in OPERANDS))
        if isinstance(self.fmt, Mogami):
            parts.append(f"bwd {self.mogami_backward}")
        if self.wbc:
            parts.append("wbc")
        if self.prc is not None:
            parts.append(f"prc {self.prc:g}")
        return ", ".join(parts)

    def quantize(self, x: torch.Tensor, operand: str, *, block: Optional[int] = None) -> QTensor:
        """quantize(x) with this layer's format and the operand's rounding; errors name the layer.
        ``block`` applies to 2-D MLS operands; PRC's clip ratio to PoT weights and activations."""
        kwargs = {}
        if isinstance(self.fmt, MLS) and x.dim() == 2:
            kwargs["block"] = min(block or self.block, x.shape[1])  # one group when K < block
        if self.prc is not None and operand in ("W", "A"):
            kwargs["clip_ratio"] = self.prc
        try:
            rounding = (self.rounding if self.training else self.eval_rounding)[operand]
            with torch._C.DisableTorchFunction():
                return quant.quantize(x, self.fmt, rounding=rounding, generator=self.generator, **kwargs)
        except ValueError as err:
            raise ValueError(f"layer {self.label!r}, operand {operand} ({_OPERAND_NAMES[operand]}): {err}") from err


_OPERAND_NAMES = dict(W="weight", A="activation", E="error dL/dZ")


def pow2_round(x: torch.Tensor) -> torch.Tensor:
    """Nearest power of two (linear domain, sign kept, zero stays zero): scaling by it is a shift."""
    mant, exp = torch.frexp(x)  # |mant| in [0.5, 1)
    up = mant.abs() >= 0.75
    mag = torch.ldexp(torch.full_like(x, 0.5), exp + up.to(exp.dtype))
    return torch.where(x == 0, torch.zeros_like(x), torch.copysign(mag, x))


SpecLike = Union[LayerSpec, str, Format]
