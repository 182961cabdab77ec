"""GEMM backends: ``get_backend("software" | "emulation" | "board" | "auto" | Backend)``.

"board" is this machine's board and an error where there is none; "auto" falls back to the
emulation backend and says so on stderr (``lowbit.open_device``).
"""
from __future__ import annotations

import importlib
from typing import Union

from lowbit.backends.base import Backend, Capabilities, ConvGeometry

NAMES = ("software", "emulation", "board", "auto")
_instances: dict = {}


def _make(name: str) -> Backend:
    if name == "software":
        from lowbit.backends.software import SoftwareBackend

        return SoftwareBackend()
    if name == "emulation":
        return importlib.import_module("lowbit.backends.emulation").EmulationBackend()
    return importlib.import_module("lowbit.board.device").open_device(name)


def get_backend(name_or_backend: Union[str, Backend] = "software") -> Backend:
    """A backend by name (one shared instance per name and process), or pass an instance through."""
    if isinstance(name_or_backend, Backend):
        return name_or_backend
    if not isinstance(name_or_backend, str):
        raise ValueError(f"backend must be one of {NAMES} or a lowbit.backends.Backend instance, "
                         f"got {type(name_or_backend).__name__}")
    name = name_or_backend.strip().lower()
    if name not in NAMES:
        raise ValueError(f"unknown backend {name_or_backend!r}; choose one of {', '.join(NAMES)} "
                         "or pass a lowbit.backends.Backend instance")
    if name not in _instances:
        _instances[name] = _make(name)
    return _instances[name]


__all__ = ["Backend", "Capabilities", "ConvGeometry", "get_backend", "NAMES"]
