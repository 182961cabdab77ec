"""A backend that runs ``gemm`` in the numpy model of the kernel (for bit-exact comparisons)."""
from __future__ import annotations

from lowbit.kernel.reference import gemm
from lowbit.kernel.wire import Op
from lowbit.backends.base import Backend, Capabilities


class ReferenceBackend(Backend):
    name = "reference"

    def capabilities(self) -> Capabilities:
        return Capabilities(self.name, ("mls", "pot", "mogami"), True, ("cpu",), "numpy kernel model")

    def gemm(self, a, b, *, op=Op.FORWARD):
        return gemm(a, b, op=op)
