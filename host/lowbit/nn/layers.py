"""QConv2d / QLinear: torch layers whose three GEMMs run in a low-bit format on a backend.

Weights stay fp32 master weights and the state_dict is the torch layer's, so checkpoints,
load_state_dict and DistributedDataParallel work unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.backends.base import ConvGeometry
from lowbit.numerics.formats import Mogami
from lowbit.nn.functional import QConv2dFunction, QConvTranspose2dFunction, linear
from lowbit.nn.spec import LayerSpec


# torch.compile: the quantized GEMMs (native quantizer, cffi kernels, QTensor dataclasses) stay
# eager behind a clean graph break; everything around them (BN, activations, bias) compiles.
@torch.compiler.disable
def _apply_conv(x, weight, spec, geometry, groups=1):
    return QConv2dFunction.apply(x, weight, spec, geometry, groups)


@torch.compiler.disable
def _apply_conv_transpose(x, weight, spec, geometry, groups, out_shape):
    return QConvTranspose2dFunction.apply(x, weight, spec, geometry, groups, out_shape)


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

    def _mark_mode(self) -> None:
        self.spec.training = self.training  # eval(): deterministic rounding (spec.eval_rounding)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fmt={self.spec.describe()}, backend={self.spec.backend.name}"


class _QConvMixin(_QuantMixin):
    """Shared by the conv twins: 1-D convs run as 2-D convs of height 1; padding other than
    symmetric zeros (reflect / replicate / circular, asymmetric 'same') is applied to the input
    first (F.pad moves values, it multiplies nothing) and the conv then runs unpadded."""

    _dims = 2

    def _setup_quant(self, fmt, backend, spec_kwargs) -> None:
        self._init_spec(fmt, backend, spec_kwargs)
        if getattr(self, "transposed", False):
            if self.spec.wbc:
                raise ValueError("wbc (Weight Bias Correction) is implemented for Conv/Linear, not transposed "
                                 "convolutions; convert without wbc or keep this layer fp32 (overrides={name: None})")
            if isinstance(self.spec.fmt, Mogami) and self.spec.mogami_backward == "exact":
                raise ValueError("mogami_backward='exact' is implemented for Conv/Linear; transposed convolutions "
                                 "use 'approx' (pass overrides or mogami_backward='approx')")
        self._pre_pad, pad = self._padding_plan()
        one = lambda v: (1,) + tuple(v) if self._dims == 1 else tuple(v)  # noqa: E731
        self.geometry = ConvGeometry(one(self.stride), (0,) + pad if self._dims == 1 else pad, one(self.dilation))

    def _padding_plan(self):
        """(F.pad widths or None, symmetric zero padding the kernel does itself)."""
        if self.padding == "valid":
            return None, (0,) * self._dims
        if self.padding == "same":
            widths = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):  # F.pad: last dim first
                total = d * (k - 1)
                widths += [total // 2, total - total // 2]
            if self.padding_mode == "zeros" and all(widths[i] == widths[i + 1] for i in range(0, len(widths), 2)):
                return None, tuple(widths[::2][::-1])
            return (widths, "constant" if self.padding_mode == "zeros" else self.padding_mode), (0,) * self._dims
        pad = tuple(self.padding)
        if self.padding_mode == "zeros" or not any(pad):
            return None, pad
        widths = [p for p in reversed(pad) for _ in range(2)]
        return (widths, self.padding_mode), (0,) * self._dims

    def _as_2d(self, x: torch.Tensor, w: torch.Tensor):
        if self._pre_pad is not None:
            widths, mode = self._pre_pad
            x = F.pad(x, widths, mode=mode)
        if self._dims == 1:
            return x.unsqueeze(2), w.unsqueeze(2)
        return x, w

    def _finish(self, z: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            z = z + self.bias.view(1, -1, 1, 1)
        return z.squeeze(2) if self._dims == 1 else z

    @classmethod
    def from_conv(cls, conv, fmt, backend="software", **spec_kwargs):
        """A quantized twin sharing ``conv``'s parameters (no copy)."""
        kwargs = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                      bias=conv.bias is not None, padding_mode=conv.padding_mode)
        if getattr(conv, "transposed", False):
            kwargs["output_padding"] = conv.output_padding
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, device="meta", fmt=fmt, backend=backend,
                **kwargs, **spec_kwargs)
        _adopt(q, conv)
        return q


class _QConvForward(_QConvMixin):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._mark_mode()
        x, w = self._as_2d(x, self.weight)
        return self._finish(_apply_conv(x, w, self.spec, self.geometry, self.groups))


class _QConvTransposeForward(_QConvMixin):
    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        self._mark_mode()
        out_pad = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, self._dims,
                                       self.dilation)
        x, w = self._as_2d(x, self.weight)
        n, _, h, wd = x.shape
        kh, kw = w.shape[2:]
        g, pads = self.geometry, tuple(self.geometry.padding)
        outp = (0,) + tuple(out_pad) if self._dims == 1 else tuple(out_pad)
        size = [(s - 1) * g.stride[i] - 2 * pads[i] + g.dilation[i] * (k - 1) + outp[i] + 1
                for i, (s, k) in enumerate(((h, kh), (wd, kw)))]
        out_shape = torch.Size((n, self.out_channels, *size))
        return self._finish(_apply_conv_transpose(x, w, self.spec, self.geometry, self.groups, out_shape))


def _conv_init(torch_cls, transposed: bool):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *args, fmt="mls:2,1",
                 backend="software", **kwargs):
        spec_kwargs = pop_spec_kwargs(kwargs)
        torch_cls.__init__(self, in_channels, out_channels, kernel_size, stride, padding, *args, **kwargs)
        self._setup_quant(fmt, backend, spec_kwargs)
    return __init__


SPEC_KEYS = ("rounding", "mogami_backward", "block", "wbc", "prc", "name", "generator", "eval_rounding")


def pop_spec_kwargs(kwargs: dict) -> dict:
    """The LayerSpec keywords among a quantized layer's constructor keywords (removed from ``kwargs``)."""
    return {k: kwargs.pop(k) for k in list(kwargs) if k in SPEC_KEYS}


class QConv2d(_QConvForward, nn.Conv2d):
    """nn.Conv2d (any groups, padding, padding_mode) with forward W*A, backward-data E*W and
    weight-gradient E*A in ``fmt``; a grouped conv runs one GEMM triple per group.

    Extra keyword arguments: backend ("software" | "emulation" | "board" | Backend), rounding
    ("nearest" | "stochastic" | {"W","A","E": mode}), eval_rounding (the same, used in eval();
    default nearest), mogami_backward ("approx" | "exact"), wbc / prc (ALS-POTQ, pot formats),
    generator (torch.Generator for stochastic rounding).
    """

    __init__ = _conv_init(nn.Conv2d, False)


class QConv1d(_QConvForward, nn.Conv1d):
    """nn.Conv1d as a 2-D conv of height 1 (the same GEMMs, groups of k taps per (n|co, ci))."""

    _dims = 1
    __init__ = _conv_init(nn.Conv1d, False)


class QConvTranspose2d(_QConvTransposeForward, nn.ConvTranspose2d):
    """nn.ConvTranspose2d: its forward is the backward-data GEMM of a conv with this weight."""

    __init__ = _conv_init(nn.ConvTranspose2d, True)


class QConvTranspose1d(_QConvTransposeForward, nn.ConvTranspose1d):
    _dims = 1
    __init__ = _conv_init(nn.ConvTranspose1d, True)


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
        self._mark_mode()
        return linear(x, self.weight, self.bias, self.spec)


def _adopt(q: nn.Module, src: nn.Module) -> None:
    """Take over ``src``'s parameters (shared, not copied) and train/eval mode."""
    q.weight = src.weight
    q.bias = src.bias
    q.train(src.training)


def quantized_layers(model: nn.Module):
    """(name, layer) for every quantized twin (QConv*, QLinear, QMultiheadAttention, QMatmul...)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(getattr(m, "spec", None), LayerSpec)]


def set_generator(model: nn.Module, generator: Optional[torch.Generator]) -> None:
    """Use ``generator`` for the stochastic rounding of every quantized layer."""
    for _, m in quantized_layers(model):
        m.spec.generator = generator
