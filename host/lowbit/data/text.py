"""Real English text every Python ships: the help topics of ``pydoc_data.topics``, as a
character-level language-modelling set (``lowbit.data.load("pydoc")``).

Why this corpus: it is real prose and code (the Python reference's topics, ~465k characters on
3.11), it is installed with every CPython, so a fresh machine trains on it without a download,
and it is small enough for a character-level Transformer to learn in minutes on a CPU. The text
is the topics joined in key order; the vocabulary is every character in it (sorted), so it and
the split depend only on the Python version (docs/results.md names the one measured).

Samples are non-overlapping windows of ``context`` characters: x = text[i : i+T], y = the next
characters text[i+1 : i+T+1]. The last ``val_fraction`` of the text (a contiguous tail, so no
window of it overlaps training text) is the validation split.
"""
from __future__ import annotations

import torch

from lowbit.data.splits import Dataset, TensorSplit


def pydoc_text() -> str:
    from pydoc_data import topics

    return "".join(topics.topics[key] for key in sorted(topics.topics))


def _windows(ids: torch.Tensor, context: int) -> tuple:
    n = (ids.numel() - 1) // context
    x = ids[: n * context].view(n, context)
    y = ids[1: n * context + 1].view(n, context)
    return x.contiguous(), y.contiguous()


def load_pydoc(context: int = 64, val_fraction: float = 0.1) -> Dataset:
    """The pydoc topics as windows of ``context`` characters (train / validation by position)."""
    if context < 2:
        raise ValueError(f"context must be >= 2 characters, got {context}")
    if not 0.0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    text = pydoc_text()
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    cut = int(len(text) * (1.0 - val_fraction))
    train, val = _windows(ids[:cut], context), _windows(ids[cut:], context)
    return Dataset("pydoc", TensorSplit(*train), TensorSplit(*val), len(vocab), (context,), vocab)
