"""Convolution geometry: stride, padding and dilation, and the output size they give."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class ConvGeometry:
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)

    def output_hw(self, in_hw, kernel) -> Tuple[int, int]:
        """(Ho, Wo) of a convolution over ``in_hw`` with a ``kernel`` (kh, kw), as torch computes it."""
        return tuple((in_hw[i] + 2 * self.padding[i] - self.dilation[i] * (kernel[i] - 1) - 1) // self.stride[i] + 1
                     for i in range(2))
