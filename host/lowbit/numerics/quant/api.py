"""``quantize``: argument checks and the choice of path (native CPU kernel or torch ops)."""
from __future__ import annotations

import os
from typing import Optional

import torch

from lowbit.numerics.formats import FP32, MLS, Format, Mogami, PoT, parse
from lowbit.numerics.qtensor import QTensor
from lowbit.numerics.quant.rng import draw_seed
from lowbit.numerics.quant.common import FLT_MAX, check_finite
from lowbit.numerics.quant.native import library, native_available
from lowbit.numerics.quant.mls import mls_native, mls_torch
from lowbit.numerics.quant.pot import pot_native, pot_torch
from lowbit.numerics.quant.bf16 import bits_qtensor, mogami_quantize


DEFAULT_BLOCK = 32  # group length along K for 2-D MLS operands
ROUNDINGS = ("stochastic", "nearest")


def quantize(x: torch.Tensor, fmt: "str | Format", *, rounding: str = "stochastic",
             generator: Optional[torch.Generator] = None, block: Optional[int] = None,
             clip_ratio: "float | torch.Tensor | None" = None, impl: str = "auto") -> QTensor:
    """Quantize ``x`` to ``fmt``; the result's ``values`` equal ``decode()`` bit for bit.

    ``block``: group length along the last dim of a 2-D MLS operand (default 32).
    ``clip_ratio``: PoT only, in (0, 1]: the layer scale comes from ``clip_ratio * max|x|``.
    ``impl``: "auto" (native CPU kernel when available, else torch ops), "torch" or "native".
    """
    fmt = parse(fmt)
    _check_args(x, fmt, rounding, block, clip_ratio, impl)
    if x.numel() == 0:
        raise ValueError(f"cannot quantize an empty tensor (shape {tuple(x.shape)})")
    if x.dtype == torch.float64 and bool((x.abs() > FLT_MAX).any()):
        raise ValueError(f"the float64 tensor of shape {tuple(x.shape)} holds values beyond the fp32 range "
                         f"(|x| > {FLT_MAX:.4g}); the quantizers work in fp32: rescale it first")
    seed = draw_seed(generator) if rounding == "stochastic" and not isinstance(fmt, FP32) else 0
    native = _use_native(x, impl)
    if isinstance(fmt, FP32) or (isinstance(fmt, Mogami) and (fmt.dtype == "fp32" or not native)):
        check_finite(x)  # (the native kernels count NaN/Inf in their own first pass)
    if isinstance(fmt, FP32):
        return bits_qtensor(fmt, x.detach().float().contiguous(), x.dtype)
    if isinstance(fmt, Mogami):
        return mogami_quantize(x, fmt, rounding, seed, native)
    if native:
        if isinstance(fmt, MLS):
            return mls_native(x, fmt, rounding, seed, _block_for(x, block))
        return pot_native(x, fmt, rounding, seed, _clip(clip_ratio))
    check_finite(x)
    if isinstance(fmt, MLS):
        return mls_torch(x, fmt, rounding, seed, _block_for(x, block))
    return pot_torch(x, fmt, rounding, seed, _clip(clip_ratio))


def _check_args(x, fmt, rounding, block, clip_ratio, impl) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"quantize expects a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"quantize needs values, and a meta tensor (shape {tuple(x.shape)}) has none; materialize "
                         "it first (e.g. model.to_empty(device='cpu'), then load or initialize the weights)")
    if not x.is_floating_point():
        raise ValueError(f"quantize expects a floating-point tensor, got {x.dtype} (shape {tuple(x.shape)})")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} unknown; use one of {ROUNDINGS}")
    if impl not in ("auto", "torch", "native"):
        raise ValueError(f"impl={impl!r} unknown; use 'auto', 'torch' or 'native'")
    if isinstance(fmt, MLS) and x.dim() not in (2, 4):
        raise ValueError(
            f"MLS quantizes 4-D conv tensors [N, C, H, W] (groups over dims 0, 1) or 2-D [rows, K] "
            f"(groups of `block` along K); got shape {tuple(x.shape)}: reshape it to 2-D first")
    if block is not None:
        if not (isinstance(fmt, MLS) and x.dim() == 2):
            raise ValueError(f"block= applies to 2-D MLS tensors only (got {fmt} with shape {tuple(x.shape)})")
        if int(block) != block or block < 1:
            raise ValueError(f"block must be a positive integer, got {block!r}")
    if clip_ratio is not None:
        if not isinstance(fmt, PoT):
            raise ValueError(f"clip_ratio applies to pot formats only, not {fmt}")
        r = float(clip_ratio)
        if not 0.0 < r <= 1.0:
            raise ValueError(f"clip_ratio must be in (0, 1], got {r}")


def _block_for(x: torch.Tensor, block: Optional[int]) -> Optional[int]:
    if x.dim() == 4:
        return None
    return int(block) if block is not None else DEFAULT_BLOCK


def _clip(clip_ratio) -> float:
    return 1.0 if clip_ratio is None else float(clip_ratio)


def _use_native(x: torch.Tensor, impl: str) -> bool:
    if impl == "torch":
        return False
    if impl == "native":
        if x.device.type != "cpu":
            raise ValueError(f"impl='native' runs on CPU tensors; this one is on {x.device}")
        library()
        return True
    if not x.is_cpu or os.environ.get("LOWBIT_NATIVE", "1") == "0":
        return False
    return native_available()
