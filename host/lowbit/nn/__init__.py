"""Quantized torch layers (Alg. 2 of the MLS paper), convert() and summary(). See docs/layers.md."""
from .convert import convert, summary
from .layers import QConv2d, QLinear, quantized_layers, set_generator
from .spec import LayerSpec, default_rounding

__all__ = ["QConv2d", "QLinear", "convert", "summary", "quantized_layers", "set_generator", "LayerSpec",
           "default_rounding"]
