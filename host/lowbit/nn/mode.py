"""``with lowbit.nn.quantized_matmuls(fmt):`` converts the matmul-family calls of user code.

A ``TorchFunctionMode`` (torch's hook for every torch function call made while it is active)
routes, inside the ``with`` block:

* torch.matmul / mm / bmm / mv, ``a @ b``, Tensor.matmul / mm / bmm / mv  -> qmatmul
* torch.addmm / baddbmm / addbmm (the product quantized, the scaled add in fp32)
* F.linear -> QLinear's three GEMMs (weight operand "W")
* F.scaled_dot_product_attention -> Q.K^T and P.V quantized, softmax fp32
* F.multi_head_attention_forward (what nn.MultiheadAttention calls) -> every GEMM quantized

Products it cannot route (einsum, tensordot, dot, inner, outer, bilinear, multi_dot, matrix
powers) raise instead of running fp32 unseen. Convolutions pass through: convert() quantizes conv
layers. Integer-valued calls pass through; complex-valued ones raise. The GEMMs that ran are
counted per routed function in ``mode.ran`` (a Counter per kind, like a layer's spec.ran).
Quantized layers inside the block are not converted twice: their backend calls run with torch
function handling disabled.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lowbit.nn.attention import mha_forward, qlinear, qmatmul, qsdpa
from lowbit.nn.spec import LayerSpec

_T = torch.Tensor
_MATMUL = {torch.matmul, _T.matmul, _T.__matmul__, torch.mm, _T.mm, torch.bmm, _T.bmm, torch.mv, _T.mv}
_RMATMUL = {_T.__rmatmul__}
_ADD_PRODUCT = {torch.addmm: "addmm", _T.addmm: "addmm", torch.baddbmm: "baddbmm", _T.baddbmm: "baddbmm",
                torch.addbmm: "addbmm", _T.addbmm: "addbmm"}
_REFUSED = {torch.einsum: "einsum", torch.tensordot: "tensordot", torch.dot: "dot", _T.dot: "dot",
            torch.inner: "inner", _T.inner: "inner", torch.outer: "outer", _T.outer: "outer", torch.ger: "ger",
            F.bilinear: "bilinear", torch.linalg.multi_dot: "multi_dot", torch.chain_matmul: "chain_matmul",
            torch.matrix_power: "matrix_power", _T.matrix_power: "matrix_power", torch.vdot: "vdot"}


def _floating(*tensors) -> bool:
    return all(not isinstance(t, torch.Tensor) or t.is_floating_point() or t.is_complex() for t in tensors)


class quantized_matmuls(TorchFunctionMode):  # noqa: N801 (used as a context manager, like torch's modes)
    """Quantize the matmul-family calls made inside ``with`` (module docstring). Options as for
    convert(): backend, rounding, eval_rounding, block, prc, generator, mogami_backward ("approx").
    ``training``: which rounding applies (True: spec.rounding; False: eval_rounding)."""

    def __init__(self, fmt, backend="software", *, training: bool = True, **options) -> None:
        super().__init__()
        self._specs: Dict[str, LayerSpec] = {}
        self._make = lambda kind: LayerSpec.make(fmt, backend, name=f"quantized_matmuls:{kind}", **options)
        self._make("matmul")  # bad options raise here, not at the first call
        self.training = training

    def spec(self, kind: str) -> LayerSpec:
        if kind not in self._specs:
            self._specs[kind] = self._make(kind)
        spec = self._specs[kind]
        spec.training = self.training
        return spec

    @property
    def ran(self) -> Dict[str, object]:
        return {kind: spec.ran for kind, spec in self._specs.items()}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _REFUSED:
            raise ValueError(f"quantized_matmuls: torch {_REFUSED[func]} is a product this mode does not convert; "
                             "write it with torch.matmul (converted here) or run it outside the with block")
        if func in _MATMUL or func in _RMATMUL:
            a, b = args[0], args[1]
            if func in _RMATMUL:
                a, b = b, a
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and _floating(a, b):
                return qmatmul(a, b, self.spec("matmul"))
        if func in _ADD_PRODUCT:
            return self._add_product(_ADD_PRODUCT[func], *args, **kwargs)
        if func is F.linear:
            return qlinear(*_args(("input", "weight", "bias"), args, kwargs, bias=None), self.spec("linear"))
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            rest = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"), args[3:]), **kwargs)
            return qsdpa(q, k, v, self.spec("attention"), **rest)
        if func is F.multi_head_attention_forward:
            return mha_forward(*args, **kwargs, spec=self.spec("attention"))
        return func(*args, **kwargs)

    def _add_product(self, name, input, m1, m2, *, beta=1, alpha=1, out=None):
        if out is not None:
            raise ValueError(f"quantized_matmuls: torch.{name}(..., out=) is not supported; assign the result")
        product = qmatmul(m1, m2, self.spec("matmul"))
        if name == "addbmm":
            product = product.sum(dim=0)
        return beta * input + alpha * product if beta != 0 else alpha * product


def _args(names, args, kwargs, **defaults):
    values = dict(defaults, **dict(zip(names, args)), **kwargs)
    return [values[n] for n in names]
