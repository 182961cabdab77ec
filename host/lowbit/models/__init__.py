"""Model zoo (plain torch): ``lowbit.models.get(name, num_classes=..., in_channels=...)``.

Each entry knows its default classes, input channels and input shape (``info(name)``), which the
energy model and the data loaders use to agree on sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from lowbit.models.char_transformer import CharTransformer
from lowbit.models.digits_cnn import DigitsCNN
from lowbit.models.resnet_cifar import CifarResNet
from lowbit.models.resnet_imagenet import ImageNetResNet
from lowbit.models.vgg import VGG


@dataclass(frozen=True)
class ModelInfo:
    name: str
    build: Callable[..., nn.Module]
    num_classes: int
    input_shape: tuple  # (C, H, W) of one sample; (T,) token ids for a language model
    description: str
    input_dtype: torch.dtype = torch.float32  # torch.long for token ids


_REGISTRY = {
    info.name: info
    for info in (
        ModelInfo("digits_cnn", DigitsCNN, 10, (1, 8, 8), "3-conv CNN for sklearn's 8x8 digits"),
        ModelInfo("resnet20", partial(CifarResNet, 20), 10, (3, 32, 32), "CIFAR ResNet-20, option A shortcuts"),
        ModelInfo("resnet32", partial(CifarResNet, 32), 10, (3, 32, 32), "CIFAR ResNet-32, option A shortcuts"),
        ModelInfo("resnet56", partial(CifarResNet, 56), 10, (3, 32, 32), "CIFAR ResNet-56, option A shortcuts"),
        ModelInfo("resnet18", partial(ImageNetResNet, 18), 1000, (3, 224, 224), "ImageNet ResNet-18"),
        ModelInfo("resnet34", partial(ImageNetResNet, 34), 1000, (3, 224, 224), "ImageNet ResNet-34"),
        ModelInfo("vgg16", VGG, 10, (3, 32, 32), "VGG-16 with BN for CIFAR"),
        ModelInfo("char_transformer", CharTransformer, 103, (64,),
                  "2-layer decoder-only Transformer, character LM (pydoc text); in_channels = context", torch.long),
    )
}


def names() -> list[str]:
    return list(_REGISTRY)


def info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(_REGISTRY)}") from None


def get(name: str, num_classes: int | None = None, in_channels: int | None = None) -> nn.Module:
    """Build a freshly initialised model (seed torch first for a reproducible init)."""
    entry = info(name)
    classes = entry.num_classes if num_classes is None else int(num_classes)
    channels = entry.input_shape[0] if in_channels is None else int(in_channels)
    if classes < 1 or channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {classes} and {channels}")
    return entry.build(num_classes=classes, in_channels=channels)


__all__ = ["get", "info", "names", "ModelInfo", "CifarResNet", "ImageNetResNet", "VGG", "DigitsCNN", "CharTransformer"]
