"""Quantization error statistics, cheap enough to log per layer per epoch.

``quant_error(x, q)`` is the average relative error (ARE) of the MLS paper's Fig. 6, which the
paper does not define; lowbit defines it as

    ARE = sum_i |q_i - x_i| / sum_i |x_i|

the mean of the elementwise relative errors |q_i - x_i| / |x_i| weighted by |x_i|. Unlike the
unweighted mean it stays finite when tiny elements round up to the smallest grid value (common
in gradients), and it is one fused reduction. ``kind="elementwise"`` gives the unweighted mean
over the nonzero elements of x instead. An all-zero x gives 0 when q is also zero, else inf.
"""
from __future__ import annotations

import torch

from lowbit.numerics.qtensor import QTensor

KINDS = ("weighted", "elementwise")


def quant_error(x: torch.Tensor, q, *, kind: str = "weighted", rounding: str = "nearest",
                generator=None) -> float:
    """ARE of ``q`` (a QTensor, a tensor of dequantized values, or a format to quantize ``x`` to)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} unknown; use one of {KINDS}")
    values = _values_of(x, q, rounding, generator)
    if values.shape != x.shape:
        raise ValueError(f"shapes differ: x {tuple(x.shape)} vs quantized {tuple(values.shape)}")
    x = x.detach().float()
    err = (values.detach().float() - x).abs()
    if kind == "elementwise":
        nz = x != 0
        if not bool(nz.any()):
            return 0.0 if not bool((err > 0).any()) else float("inf")
        return float((err[nz] / x[nz].abs()).mean())
    total = x.abs().sum()
    if float(total) == 0.0:
        return 0.0 if float(err.sum()) == 0.0 else float("inf")
    return float(err.sum() / total)


def _values_of(x, q, rounding, generator) -> torch.Tensor:
    if isinstance(q, QTensor):
        return q.dequantize()
    if isinstance(q, torch.Tensor):
        return q
    from lowbit.numerics.quant import quantize

    return quantize(x, q, rounding=rounding, generator=generator).dequantize()
