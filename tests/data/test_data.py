import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

import lowbit.data as data
from lowbit.data import cifar
from lowbit.data.augment import random_crop_flip


def test_digits_split_is_real_seeded_and_normalised():
    a = data.load("digits")
    b = data.load("digits")
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert a.train.x.shape == (1437, 1, 8, 8) and a.train.x.dtype == torch.float32
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert abs(float(a.train.x.mean())) < 1e-5 and abs(float(a.train.x.std()) - 1) < 1e-5
    assert sorted(torch.bincount(a.test.y).tolist())[0] >= 35  # stratified: every class ~36 test samples
    other = data.load_digits(split_seed=1)
    assert not torch.equal(a.test.y, other.test.y)


def test_batches_are_seeded_by_seed_and_epoch():
    d = data.load("digits")
    first = [y for _, y in d.train.batches(64, shuffle=True, seed=0, epoch=1)]
    again = [y for _, y in d.train.batches(64, shuffle=True, seed=0, epoch=1)]
    other = [y for _, y in d.train.batches(64, shuffle=True, seed=0, epoch=2)]
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert sorted(torch.cat(first).tolist()) == sorted(d.train.y.tolist())
    assert len(first) == d.train.num_batches(64) == 23


def test_random_crop_flip_values():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    assert out.shape == x.shape
    gen = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 5, (2,), generator=gen)
    dx = torch.randint(0, 5, (2,), generator=gen)
    flip = torch.rand(2, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        crop = padded[i, :, dy[i] : dy[i] + 5, dx[i] : dx[i] + 5]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}


def write_fake_cifar(root, n=6):
    """A tiny archive with the official layout: cifar-10-batches-py/{data_batch_1..5,test_batch}."""
    path = root / cifar.ARCHIVE
    batches = {name: _batch(n, i) for i, name in enumerate(cifar.TRAIN_BATCHES + [cifar.TEST_BATCH])}
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            blob = pickle.dumps(batch)
            info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path, batches


def test_cifar_archive_loads_with_its_checksum(tmp_path):
    path, batches = write_fake_cifar(tmp_path)
    ds = data.load_cifar10(tmp_path, md5=cifar.md5sum(path))
    assert len(ds.train) == 30 and len(ds.test) == 6 and ds.input_shape == (3, 32, 32)
    raw = batches["data_batch_2"][b"data"][1].reshape(3, 32, 32)
    expected = (torch.tensor(raw, dtype=torch.float32) / 255 - torch.tensor(cifar.MEAN).view(3, 1, 1)) / torch.tensor(
        cifar.STD
    ).view(3, 1, 1)
    assert torch.allclose(ds.train.x[7], expected, atol=1e-6)
    assert ds.train.y.tolist()[6:12] == batches["data_batch_2"][b"labels"]
    assert ds.test.y.tolist() == batches["test_batch"][b"labels"]
    assert ds.train.augment is random_crop_flip and ds.test.augment is None


def test_cifar_extracted_folder_loads(tmp_path):
    path, batches = write_fake_cifar(tmp_path)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    ds = data.load(f"cifar10:{tmp_path / 'x'}")
    assert ds.test.y.tolist() == batches["test_batch"][b"labels"]


def test_cifar_checksum_mismatch_says_what_to_do(tmp_path):
    path, _ = write_fake_cifar(tmp_path)
    with pytest.raises(ValueError, match=r"checksum mismatch .*expected c58f30108f718f92721af3b95e74349a.*--download"):
        data.load(f"cifar10:{path}")


def test_cifar_missing_path_mentions_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found .*--download"):
        data.load(f"cifar10:{tmp_path / 'nowhere'}")


def write_fake_imagefolder(root, classes=("cat", "dog"), per_class=3, size=(20, 14)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_imagefolder_loads_shapes_labels_and_is_seeded(tmp_path):
    pytest.importorskip("PIL")
    write_fake_imagefolder(tmp_path)
    ds = data.load(f"imagenet:{tmp_path}", image_size=8)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2 and len(ds.train) == 6
    (x, y), = list(ds.test.batches(6))
    assert x.shape == (6, 3, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1]
    a = next(ds.train.batches(4, shuffle=True, seed=1, augment=True))[0]
    b = next(ds.train.batches(4, shuffle=True, seed=1, augment=True))[0]
    assert torch.equal(a, b)


def test_imagefolder_missing_and_empty_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"imagenet:{tmp_path / 'none'}")
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        data.load(f"imagenet:{tmp_path}")


@pytest.mark.parametrize("spec", ["mnist", "cifar10", "imagenet:", "digits:/x"])
def test_bad_specs(spec):
    with pytest.raises(ValueError, match="accepted: digits"):
        data.parse_spec(spec)
