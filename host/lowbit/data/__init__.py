"""Data sets: ``lowbit.data.load("digits" | "cifar10:PATH" | "imagenet:PATH")``.

``digits`` is scikit-learn's real 8x8 digits set (the embedded default); ``pydoc`` is the
English help text inside CPython (``pydoc_data.topics``), windows of 64 characters for a
character-level language model. CIFAR-10 reads the
standard python archive (md5 checked) and downloads only when asked. ImageNet reads an
ImageFolder tree with PIL.
"""
from __future__ import annotations

from lowbit.data.cifar import load_cifar10
from lowbit.data.digits import load_digits
from lowbit.data.imagenet import load_imagenet
from lowbit.data.splits import Dataset, Split, TensorSplit, epoch_generator
from lowbit.data.text import load_pydoc

ACCEPTED = "digits | pydoc | cifar10:PATH | imagenet:PATH"


def parse_spec(spec: str) -> tuple:
    """``"cifar10:/data"`` -> ("cifar10", "/data"); ``"digits"`` -> ("digits", None)."""
    name, _, path = str(spec).partition(":")
    name = name.strip().lower()
    if name in ("digits", "pydoc") and not path:
        return name, None
    if name in ("cifar10", "imagenet"):
        if not path:
            raise ValueError(f"--data {spec!r}: {name} needs a path, e.g. {name}:/data/{name}; accepted: {ACCEPTED}")
        return name, path
    raise ValueError(f"unknown data set {spec!r}; accepted: {ACCEPTED}")


def load(spec: str = "digits", *, download: bool = False, image_size: int = 224, split_seed: int = 0) -> Dataset:
    name, path = parse_spec(spec)
    if name == "digits":
        return load_digits(split_seed=split_seed)
    if name == "pydoc":
        return load_pydoc()
    if name == "cifar10":
        return load_cifar10(path, download_if_missing=download)
    return load_imagenet(path, image_size=image_size)


__all__ = ["load", "parse_spec", "Dataset", "Split", "TensorSplit", "epoch_generator",
           "load_digits", "load_pydoc", "load_cifar10", "load_imagenet", "ACCEPTED"]
