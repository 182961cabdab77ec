"""PYNQ drivers for the lowbit IP. Importing this package registers them with pynq: import it
before constructing the ``pynq.Overlay`` so that ``overlay.lowbit_gemm_0`` is a ``LowbitGemm``."""
from .gemm import LowbitGemm, VersionMismatch

__all__ = ["LowbitGemm", "VersionMismatch"]
