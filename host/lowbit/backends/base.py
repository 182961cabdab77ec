"""The backend interface every GEMM engine implements (software, emulation, board).

A quantized layer hands the backend quantized operands and gets fp32 results back. The
primitive is one block-scaled GEMM (docs/wire-format.md)::

    gemm(a, b) -> C [M, N],  C[m, n] = St_a * St_b * SUM_b Sa[m,b] Sb[n,b] SUM_{k in b} A[m,k] B[n,k]

``a`` and ``b`` are 2-D QTensors [M, K] and [N, K] grouped along K with the same block size.
The conv methods have a default lowering to ``gemm`` (im2col on the codes, in
``lowbit.backends.lowering``); a backend with a faster native conv overrides them.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Tuple

import torch

from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Op
from lowbit.backends.geometry import ConvGeometry


@dataclass(frozen=True)
class Capabilities:
    name: str
    kinds: Tuple[str, ...]  # format kinds it computes: "mls", "pot", "mogami", "fp32"
    exact_integer: bool  # integer partial sums are exact (the hardware's arithmetic)
    devices: Tuple[str, ...]  # torch device types it accepts tensors on
    description: str = ""


class Backend(abc.ABC):
    name = "abstract"

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        ...

    @abc.abstractmethod
    def gemm(self, a: QTensor, b: QTensor, *, op: Op = Op.FORWARD) -> torch.Tensor:
        """C = A @ B^T as fp32 [M, N], tensor scales included.

        Result ownership (every backend): the returned tensor belongs to the caller. It never
        aliases a buffer the backend reuses (DMA buffers, kernel scratch, a previous call's
        output), so no later call changes it; partial results kept between kernel calls are
        copies too."""

    def conv2d_forward(self, qw: QTensor, qa: QTensor, geom: ConvGeometry) -> torch.Tensor:
        """Z = conv2d(A, W): qw [Co, Ci, kh, kw], qa [N, Ci, H, W] -> [N, Co, Ho, Wo]."""
        from lowbit.backends import lowering

        return lowering.conv2d_forward(self, qw, qa, geom)

    def conv2d_backward_data(self, qe: QTensor, qw: QTensor, geom: ConvGeometry,
                             input_shape: torch.Size) -> torch.Tensor:
        """dA from qe [N, Co, Ho, Wo] and qw [Co, Ci, kh, kw] -> input_shape."""
        from lowbit.backends import lowering

        return lowering.conv2d_backward_data(self, qe, qw, geom, input_shape)

    def conv2d_weight_grad(self, qe: QTensor, qa: QTensor, geom: ConvGeometry,
                           weight_shape: torch.Size) -> torch.Tensor:
        """dW from qe [N, Co, Ho, Wo] and qa [N, Ci, H, W] -> weight_shape."""
        from lowbit.backends import lowering

        return lowering.conv2d_weight_grad(self, qe, qa, geom, weight_shape)

    def close(self) -> None:
        """Release buffers / devices. Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
