"""lowbit: multiplication-free, ultra-low-bit training on FPGAs, emulated bit-exactly on CPU."""
from __future__ import annotations

import importlib

from lowbit.numerics import formats
from lowbit.numerics.formats import parse

__version__ = "0.1.0"

# Public names and the module that defines each; imported on first use so that the core
# (formats, quantizers) loads without the optional parts.
_LAZY = {
    "QTensor": "lowbit.numerics.qtensor",  # lazily too: `lowbit serve` on a board without torch imports this package
    "quantize": "lowbit.numerics.quant",
    "quant_error": "lowbit.numerics.stats",
    "mogami_mul": "lowbit.numerics.mogami",
    "convert": "lowbit.nn",
    "summary": "lowbit.nn",
    "open_device": "lowbit.board.device",
    "get_backend": "lowbit.backends",
}


# Subpackages reachable as attributes (lowbit.nn, lowbit.kernel.wire, ...) and the module each names.
_SUBMODULES = {
    "models": "lowbit.models",
    "data": "lowbit.data",
    "nn": "lowbit.nn",
    "backends": "lowbit.backends",
    "energy": "lowbit.energy",
    "power": "lowbit.power",
    "wire": "lowbit.kernel.wire",
    "reference": "lowbit.numerics.reference",
    "train": "lowbit.apps.train",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")


__all__ = ["formats", "parse", *_LAZY]
