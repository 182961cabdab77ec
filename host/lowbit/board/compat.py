"""The pynq API surface lowbit relies on, and where pynq 3.0/3.1 (PYNQ-Z2 images) and 4.0 differ.

Used identically in 3.0, 3.1 and 4.0: ``pynq.Overlay(bit, download=..., device=...)``, ``DefaultIP``
(``read``/``write``, ``bindto``), ``pynq.allocate(shape, dtype, target=device)``, ``PynqBuffer``
(``physical_address``, ``flush``, ``invalidate``), the simple-mode DMA channel
(``transfer(array, start, nbytes)``, ``idle``, ``error``, ``running``, ``wait``, ``start``,
``transferred``) and the ``Device`` hooks (``read_registers``/``write_registers``,
``get_bitfile_metadata``). Differences handled here:

* the runtime metadata parser moved from ``pynq.metadata.runtime_metadata_parser`` (3.0/3.1) to
  the ``pynqmetadata`` package (``pynqmetadata.views.runtime``, 3.1+/4.0);
* the DMA driver requires ``description["device"]`` from 4.0 on (3.x takes the active device);
  ``pynq.Overlay`` always fills it in, so only hand-built descriptions care;
* 4.0 no longer imports XRT in ``pynq.buffer`` off-target, so ``import pynq`` works on a PC;
* Alveo support left pynq in 3.1: lowbit drives Alveo through ``pyxrt`` directly (board/alveo.py).
"""
from __future__ import annotations

import importlib
from typing import Tuple


def pynq_version() -> Tuple[int, ...]:
    try:
        import pynq
    except ImportError as err:
        raise ImportError("the PYNQ board backend needs pynq: pip install 'lowbit[board]' (on a PYNQ image it is "
                          "preinstalled; run from its Python environment)") from err

    parts = []
    for piece in str(getattr(pynq, "__version__", "0")).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_supported() -> Tuple[int, ...]:
    version = pynq_version()
    if not (3, 0) <= version[:2] < (5, 0):
        raise RuntimeError(f"pynq {'.'.join(map(str, version))} is not supported: lowbit needs pynq 3.0 to 4.x "
                           "(pip install 'lowbit[board]' installs a supported one)")
    return version


def runtime_metadata_parser():
    """The class that turns a .hwh into ip_dict/mem_dict (pynqmetadata in 4.0, in-tree in 3.0)."""
    for module, name in (("pynqmetadata.views.runtime", "RuntimeMetadataParser"),
                         ("pynq.metadata.runtime_metadata_parser", "RuntimeMetadataParser")):
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError:
            continue
    raise ImportError("neither pynqmetadata (pynq 4.0) nor pynq.metadata (pynq 3.0) provides RuntimeMetadataParser; "
                      "reinstall pynq: pip install 'lowbit[board]'")

