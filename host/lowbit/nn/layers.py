"""QConv2d / QLinear: torch layers whose three GEMMs run in a low-bit format on a backend.

Weights stay fp32 master weights and the state_dict is the torch layer's, so checkpoints,
load_state_dict and DistributedDataParallel work unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..backends.base import ConvGeometry
from ..formats import Mogami
from .functional import QConv2dFunction, QLinearFunction, QLinearMogamiFunction
from .spec import LayerSpec


# torch.compile: the quantized GEMMs (native quantizer, cffi kernels, QTensor dataclasses) stay
# eager behind a clean graph break; everything around them (BN, activations, bias) compiles.
@torch.compiler.disable
def _apply_conv(x, weight, spec, geometry):
    return QConv2dFunction.apply(x, weight, spec, geometry)


@torch.compiler.disable
def _apply_linear(fn, x, weight, spec):
    return fn.apply(x, weight, spec)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _QuantMixin:
    spec: LayerSpec

    def _init_spec(self, fmt, backend, spec_kwargs) -> None:
        self.spec = LayerSpec.make(fmt, backend, **spec_kwargs)

    @property
    def fmt(self):
        return self.spec.fmt

    @property
    def backend(self):
        return self.spec.backend

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fmt={self.spec.describe()}, backend={self.spec.backend.name}"


class QConv2d(_QuantMixin, nn.Conv2d):
    """nn.Conv2d with forward W*A, backward-data E*W and weight-gradient E*A in ``fmt``.

    Extra keyword arguments: backend ("software" | "emulation" | "board" | Backend), rounding
    ("nearest" | "stochastic" | {"W","A","E": mode}), mogami_backward ("approx" | "exact"),
    wbc / prc (ALS-POTQ, pot formats), generator (torch.Generator for stochastic rounding).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, fmt="mls:2,1",
                 backend="software", **spec_kwargs):
        if groups != 1:
            raise ValueError(f"QConv2d supports groups=1 only (got groups={groups}); keep grouped/depthwise "
                             "convolutions in fp32 with convert(..., overrides={name: None})")
        if padding_mode != "zeros":
            raise ValueError(f"QConv2d supports padding_mode='zeros' only (got {padding_mode!r}); pad the input "
                             "explicitly (F.pad) before the layer instead")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self._init_spec(fmt, backend, spec_kwargs)
        self.geometry = self._geometry()

    def _geometry(self) -> ConvGeometry:
        if self.padding == "valid":
            pad = (0, 0)
        elif self.padding == "same":
            pad = []
            for d, k in zip(self.dilation, self.kernel_size):
                total = d * (k - 1)
                if total % 2:
                    raise ValueError(f"padding='same' with kernel {self.kernel_size} and dilation {self.dilation} "
                                     "needs asymmetric padding, which QConv2d does not support; pad explicitly")
                pad.append(total // 2)
            pad = tuple(pad)
        else:
            pad = _pair(self.padding)
        return ConvGeometry(_pair(self.stride), pad, _pair(self.dilation))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, fmt, backend="software", **spec_kwargs) -> "QConv2d":
        """A QConv2d sharing ``conv``'s parameters (no copy)."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, device="meta", fmt=fmt, backend=backend,
                **spec_kwargs)
        _adopt(q, conv)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _apply_conv(x, self.weight, self.spec, self.geometry)
        if self.bias is not None:
            z = z + self.bias.view(1, -1, 1, 1)
        return z


class QLinear(_QuantMixin, nn.Linear):
    """nn.Linear with its three GEMMs in ``fmt`` (see QLinearFunction for the grouping)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, fmt="mls:2,1",
                 backend="software", **spec_kwargs):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_spec(fmt, backend, spec_kwargs)

    @classmethod
    def from_linear(cls, lin: nn.Linear, fmt, backend="software", **spec_kwargs) -> "QLinear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, device="meta", fmt=fmt, backend=backend,
                **spec_kwargs)
        _adopt(q, lin)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        fn = QLinearMogamiFunction if isinstance(self.spec.fmt, Mogami) else QLinearFunction
        z = _apply_linear(fn, x2, self.weight, self.spec)
        if self.bias is not None:
            z = z + self.bias
        return z.reshape(*lead, self.out_features)


def _adopt(q: nn.Module, src: nn.Module) -> None:
    """Take over ``src``'s parameters (shared, not copied) and train/eval mode."""
    q.weight = src.weight
    q.bias = src.bias
    q.train(src.training)


def quantized_layers(model: nn.Module):
    """(name, layer) for every QConv2d / QLinear in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (QConv2d, QLinear))]


def set_generator(model: nn.Module, generator: Optional[torch.Generator]) -> None:
    """Use ``generator`` for the stochastic rounding of every quantized layer."""
    for _, m in quantized_layers(model):
        m.spec.generator = generator
