"""A small decoder-only Transformer (character language model) built from torch's own layers.

Token and learned position embeddings, ``layers`` pre-norm nn.TransformerEncoderLayer blocks under
a causal mask (each: nn.MultiheadAttention, a GELU feed-forward), a final LayerNorm and a linear
head. Every multiply is in a module convert() quantizes: the attention's projections and its
Q.K^T / P.V matmuls (QMultiheadAttention), the feed-forward and head Linears. The logits come out
as [batch, vocab, time], so ``F.cross_entropy(logits, y)`` and ``logits.argmax(1)`` work on
[batch, time] targets as they do on class labels.
"""
from __future__ import annotations

import torch
from torch import nn


class CharTransformer(nn.Module):
    def __init__(self, num_classes: int = 103, in_channels: int = 64, *, d_model: int = 64, heads: int = 4,
                 layers: int = 2, ffn: int = 256, dropout: float = 0.0) -> None:
        """``num_classes``: the vocabulary; ``in_channels``: the context length (the registry's
        names for a model's output and input sizes)."""
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.context = int(in_channels)
        self.embed = nn.Embedding(num_classes, d_model)
        self.position = nn.Parameter(torch.zeros(self.context, d_model))
        block = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        mask = torch.ones(self.context, self.context, dtype=torch.bool).triu(1)  # True: may not attend
        self.register_buffer("causal_mask", mask, persistent=False)
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"input has {t} characters, the model's context is {self.context}")
        h = self.embed(ids) + self.position[:t]
        h = self.blocks(h, mask=self.causal_mask[:t, :t], is_causal=True)
        return self.head(self.norm(h)).transpose(1, 2)  # [batch, vocab, time]
