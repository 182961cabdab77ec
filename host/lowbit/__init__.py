"""lowbit: multiplication-free, ultra-low-bit training on FPGAs, emulated bit-exactly on CPU."""
from __future__ import annotations

import importlib

from . import formats
from .formats import parse

__version__ = "0.1.0"

# Public names and the module that defines each; imported on first use so that the core
# (formats, quantizers) loads without the optional parts.
_LAZY = {
    "QTensor": "lowbit.qtensor",  # lazily too: `lowbit serve` on a board without torch imports this package
    "quantize": "lowbit.quant",
    "quant_error": "lowbit.stats",
    "mogami_mul": "lowbit.mogami",
    "convert": "lowbit.nn",
    "summary": "lowbit.nn",
    "open_device": "lowbit.device",
    "get_backend": "lowbit.backends",
}


# Subpackages reachable as attributes (lowbit.nn, lowbit.wire, ...) and the module each names.
_SUBMODULES = {name: f"lowbit.{name}" for name in
               ("models", "data", "nn", "backends", "energy", "power", "wire", "reference", "train")}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")


__all__ = ["formats", "parse", *_LAZY]
