"""Data splits that yield seeded, reproducible batches.

Every epoch's order and augmentation come from a torch.Generator seeded with (seed, epoch), so a
resumed run sees exactly the batches an uninterrupted one would, without saving loader state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


class Split:
    """Base: ``len()`` samples, ``batches(...)`` yields (x float32 [B,C,H,W], y int64 [B])."""

    augment: Optional[Augment] = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: torch.Tensor, generator: Optional[torch.Generator]) -> tuple:
        raise NotImplementedError

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0, augment: bool = False
    ) -> Iterator[tuple]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        gen = epoch_generator(seed, epoch)
        order = torch.randperm(len(self), generator=gen) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            x, y = self.load(index, gen if augment else None)
            if augment and self.augment is not None:
                x = self.augment(x, gen)
            yield x, y

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)


@dataclass
class TensorSplit(Split):
    """An in-memory split: x float32 [N,C,H,W] (already normalised), y int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor
    augment: Optional[Augment] = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def load(self, index: torch.Tensor, generator) -> tuple:
        return self.x[index], self.y[index]

    def subset(self, n: int) -> "TensorSplit":
        return TensorSplit(self.x[:n], self.y[:n], self.augment)


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple  # (C, H, W)
    classes: Optional[list] = None

    def limit(self, train: Optional[int] = None, test: Optional[int] = None) -> "Dataset":
        """A copy keeping the first ``train`` / ``test`` samples (quick runs, tests)."""
        tr = self.train.subset(train) if train else self.train
        te = self.test.subset(test) if test else self.test
        return Dataset(self.name, tr, te, self.num_classes, self.input_shape, self.classes)
