"""ImageNet (or any ImageFolder tree): ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg.

Minimal on purpose: decode with PIL, resize the shorter side, random crop + flip for training,
centre crop for evaluation, ImageNet mean/std. Single process."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lowbit.data.splits import Dataset, Split

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("ImageNet loading needs Pillow: pip install pillow") from None
    return Image


def scan(folder: Path, classes: Optional[list] = None) -> tuple:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist (expected <root>/train and <root>/val)")
    classes = classes or sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    samples = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in EXTENSIONS)
        samples += [(p, label) for p in files]
    if not samples:
        raise ValueError(f"{folder} has class folders but no images with extensions {EXTENSIONS}")
    return classes, samples


class ImageFolderSplit(Split):
    def __init__(self, samples: list, image_size: int, train: bool) -> None:
        self.samples, self.image_size, self.train = samples, int(image_size), train
        self.resize = int(round(self.image_size * 256 / 224))

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, n: int) -> "ImageFolderSplit":
        return ImageFolderSplit(self.samples[:n], self.image_size, self.train)

    def _image(self, path: Path, generator: Optional[torch.Generator]) -> torch.Tensor:
        Image = _pil()
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = self.resize / min(w, h)
            img = img.resize((max(self.resize, round(w * scale)), max(self.resize, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            s = self.image_size
            if generator is not None:
                left = int(torch.randint(0, w - s + 1, (1,), generator=generator))
                top = int(torch.randint(0, h - s + 1, (1,), generator=generator))
            else:
                left, top = (w - s) // 2, (h - s) // 2
            img = img.crop((left, top, left + s, top + s))
            if generator is not None and float(torch.rand(1, generator=generator)) < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).permute(2, 0, 1)
        return (t - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)

    def load(self, index: torch.Tensor, generator) -> tuple:
        gen = generator if self.train else None
        xs = [self._image(self.samples[int(i)][0], gen) for i in index]
        ys = [self.samples[int(i)][1] for i in index]
        return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def load_imagenet(root: "str | Path", image_size: int = 224) -> Dataset:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet root {str(root)!r} does not exist (expected {root}/train/<class>/...)")
    _pil()
    classes, train = scan(root / "train")
    _, val = scan(root / "val", classes)
    return Dataset(
        "imagenet",
        ImageFolderSplit(train, image_size, True),
        ImageFolderSplit(val, image_size, False),
        len(classes),
        (3, image_size, image_size),
        classes,
    )
