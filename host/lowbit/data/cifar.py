"""CIFAR-10 from the standard python archive (cifar-10-python.tar.gz) or its extracted folder."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .augment import random_crop_flip
from .splits import Dataset, TensorSplit

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(path: "str | Path") -> Path:
    """The archive file or the extracted batches folder that ``path`` names or contains."""
    path = Path(path).expanduser()
    for candidate in (path, path / FOLDER, path / ARCHIVE):
        if candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz")):
            return candidate
        if candidate.is_dir() and (candidate / TEST_BATCH).is_file():
            return candidate
    raise FileNotFoundError(
        f"CIFAR-10 not found at {str(path)!r}: expected {ARCHIVE} or an extracted {FOLDER}/ folder there. "
        f"Pass --download to fetch it from {URL}, or point --data cifar10:PATH at an existing copy."
    )


def download(root: "str | Path", md5: str = MD5) -> Path:
    import urllib.request

    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    target = root / ARCHIVE
    partial = target.with_suffix(".part")
    print(f"downloading {URL} -> {target}")
    urllib.request.urlretrieve(URL, partial)
    check_md5(partial, md5)
    partial.replace(target)
    return target


def check_md5(archive: Path, md5: str) -> None:
    actual = md5sum(archive)
    if actual != md5:
        raise ValueError(
            f"checksum mismatch for {archive}: md5 {actual}, expected {md5} (the official {ARCHIVE}). "
            "The file is corrupt or incomplete: delete it and download again (--download)."
        )


def _read_batches(source: Path, names: list) -> tuple:
    blobs = {}
    if source.is_dir():
        for name in names:
            blobs[name] = (source / name).read_bytes()
    else:
        with tarfile.open(source, "r:gz") as tar:
            for name in names:
                member = tar.extractfile(f"{FOLDER}/{name}")
                if member is None:
                    raise ValueError(f"{source} has no {FOLDER}/{name}: not a CIFAR-10 python archive")
                blobs[name] = member.read()
    xs, ys = [], []
    for name in names:
        batch = pickle.load(io.BytesIO(blobs[name]), encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _normalise(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (t - mean) / std


def load_cifar10(path: "str | Path", *, download_if_missing: bool = False, md5: str = MD5) -> Dataset:
    """Load CIFAR-10; the archive's md5 is checked (an extracted folder is trusted as is)."""
    try:
        source = locate(path)
    except FileNotFoundError:
        if not download_if_missing:
            raise
        source = download(path, md5)
    if source.is_file():
        check_md5(source, md5)
    x_tr, y_tr = _read_batches(source, TRAIN_BATCHES)
    x_te, y_te = _read_batches(source, [TEST_BATCH])
    train = TensorSplit(_normalise(x_tr), torch.from_numpy(y_tr), random_crop_flip)
    test = TensorSplit(_normalise(x_te), torch.from_numpy(y_te))
    return Dataset("cifar10", train, test, 10, (3, 32, 32), list(CLASSES))
