"""CIFAR-10 from the standard python archive (cifar-10-python.tar.gz) or its extracted folder."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from lowbit.data.augment import random_crop_flip
from lowbit.data.splits import Dataset, TensorSplit

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
        data, labels = read_batch(blobs[name], f"{source}/{name}" if source.is_dir() else f"{source}:{FOLDER}/{name}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


class _NdarrayClass:
    """Stands in for numpy.ndarray in a batch pickle: usable only as _reconstruct's first argument."""


def _reconstruct(cls, shape, typecode):
    if cls is not _NdarrayClass or tuple(shape) != (0,):  # numpy pickles every array as an empty one, then its state
        raise pickle.UnpicklingError("numpy _reconstruct is admitted only as numpy pickles an ndarray")
    return np.ndarray.__new__(np.ndarray, shape, typecode)


def _uint8_dtype(name, align=False, copy=True):
    if name not in ("u1", b"u1"):
        raise pickle.UnpicklingError(f"dtype {name!r} (CIFAR-10 images are uint8 only)")
    return np.dtype("u1", align, copy)


class BatchUnpickler(pickle.Unpickler):
    """Admits only what the python CIFAR-10 archive holds: dicts, lists, strings, bytes, ints and
    uint8 numpy arrays (numpy's _reconstruct, ndarray and a uint8 dtype). Any other global, such as
    os.system, is refused before it is imported."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): _NdarrayClass,
        ("numpy", "dtype"): _uint8_dtype,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds") from None


def read_batch(blob: bytes, shown: str) -> tuple:
    """(uint8 images [N, 3072], int64 labels [N]) of one batch file, or a ValueError saying why not."""
    hint = "nothing from it was run; use the official archive (--download) or a clean copy of it"
    try:
        batch = BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # a refused global, a truncated or non-pickle file
        raise ValueError(f"{shown} is not a CIFAR-10 batch: {exc}; {hint}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise ValueError(f"{shown} is not a CIFAR-10 batch: no uint8 b'data' array of N x 3072 pixels; {hint}")
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(type(v) is int and 0 <= v < len(CLASSES) for v in labels)):
        raise ValueError(f"{shown} is not a CIFAR-10 batch: b'labels' is not a list of {len(data)} class "
                         f"numbers 0..{len(CLASSES) - 1}; {hint}")
    return data, np.asarray(labels, dtype=np.int64)


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
