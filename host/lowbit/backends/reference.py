"""A backend that runs ``gemm`` in the numpy model of the kernel (for bit-exact comparisons)."""
from __future__ import annotations

from ..reference_kernel import gemm
from ..wire import Op
from .base import Backend, Capabilities


class ReferenceBackend(Backend):
    name = "reference"

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, ("mls", "pot", "mogami"), True, ("cpu",), "numpy kernel model")

    def gemm(self, a, b, *, op=Op.FORWARD):
        return gemm(a, b, op=op)
