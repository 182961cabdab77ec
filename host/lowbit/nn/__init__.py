"""Quantized torch layers (Alg. 2 of the MLS paper), convert(), plan() and summary(). See docs/layers.md."""
from lowbit.nn.attention import Matmul, QMatmul, QMultiheadAttention, qmatmul
from lowbit.nn.convert import convert, multiplying_modules, plan, summary
from lowbit.nn.layers import QConv1d, QConv2d, QConvTranspose1d, QConvTranspose2d, QLinear, quantized_layers, set_generator
from lowbit.nn.mode import quantized_matmuls
from lowbit.nn.recurrent import QGRU, QLSTM, QRNN
from lowbit.nn.spec import LayerSpec, default_rounding

__all__ = ["QConv1d", "QConv2d", "QConvTranspose1d", "QConvTranspose2d", "QLinear", "QMultiheadAttention",
           "QMatmul", "Matmul", "QLSTM", "QGRU", "QRNN", "qmatmul", "quantized_matmuls", "convert", "plan", "summary",
           "multiplying_modules", "quantized_layers", "set_generator", "LayerSpec", "default_rounding"]
