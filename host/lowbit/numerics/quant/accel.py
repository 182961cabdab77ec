"""Accelerated element passes: torch.compile on CUDA and the fused Triton kernels, with the checks
that make them safe to use (same bits as eager torch ops, or the torch path)."""
from __future__ import annotations

import os
import warnings

import torch


_compiled: dict = {}


def maybe_compiled(name: str, fn, device: torch.device):
    """``fn`` through torch.compile on CUDA (one fused kernel instead of dozens of passes);
    eager elsewhere or with LOWBIT_COMPILE=0. Both are the same arithmetic (tests compare)."""
    mode = os.environ.get("LOWBIT_COMPILE", "1")  # "0": never, "1": on CUDA, "force": everywhere
    if mode == "0" or (device.type != "cuda" and mode != "force"):
        return fn
    if name not in _compiled:
        try:
            _compiled[name] = torch.compile(fn, dynamic=True)
        except Exception:  # no compiler backend: eager is the same arithmetic, only slower
            _compiled[name] = fn
    compiled = _compiled[name]

    def run(*args):
        try:
            return compiled(*args)
        except Exception as err:  # a failed compile must not stop training: fall back, say so once
            if compiled is not fn:
                warnings.warn(f"lowbit: torch.compile of the {name} quantizer failed ({err!r}); using eager ops")
                _compiled[name] = fn
            return fn(*args)

    return run


TRITON_DEVICE_TYPES = ("cuda",)  # where the fused Triton element pass is used (tests add "cpu" + interpreter)
triton_state: dict = {}


def _triton_kernels():
    """``lowbit.numerics.quant.triton``, or None when triton does not import here (checked once)."""
    if "module" not in triton_state:
        try:
            from lowbit.numerics.quant import triton as quant_triton
        except Exception:  # no triton (or a broken install): the torch path is the same arithmetic
            quant_triton = None
        triton_state["module"] = quant_triton
    return triton_state["module"]


def run_triton(name: str, key, xf: torch.Tensor, launch, torch_elements):
    """``launch(quant_triton)`` -> (codes, values) from one fused Triton kernel, or None for the torch
    path: not on CUDA, LOWBIT_TRITON=0, no triton, more elements than int32 counters cover, or a
    failed launch (warned once per quantizer; that quantizer then stays on the torch path).

    The first call per ``key`` (format, rounding) is checked against ``torch_elements()`` (eager torch
    ops) bit for bit: a kernel that compiles but computes differently on this GPU is caught there,
    warned about, and replaced by the torch path."""
    if (xf.device.type not in TRITON_DEVICE_TYPES or os.environ.get("LOWBIT_TRITON", "1") == "0"
            or name in triton_state.setdefault("failed", set())):
        return None
    kernels = _triton_kernels()
    if kernels is None or xf.numel() > kernels.MAX_ELEMENTS:
        return None
    try:
        codes, values = launch(kernels)
    except Exception as err:  # a kernel that does not build must not stop training
        _triton_failed(name, f"failed ({err!r})")
        return None
    checked = triton_state.setdefault("checked", set())
    if key not in checked:
        want_codes, want_values = torch_elements()
        if not (torch.equal(codes, want_codes) and torch.equal(values.view(torch.int32), want_values.view(torch.int32))):
            _triton_failed(name, "gave other codes or values than torch ops on its first call")
            return want_codes, want_values
        checked.add(key)
    return codes, values


def _triton_failed(name: str, what: str) -> None:
    triton_state["failed"].add(name)
    warnings.warn(f"lowbit: the Triton {name} quantizer {what}; using torch ops from now on")
