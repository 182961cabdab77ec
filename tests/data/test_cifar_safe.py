"""CIFAR-10 batch files are pickles: read them with an unpickler that admits only what the real
python archive holds, so that a crafted batch handed to `--data cifar10:DIR` runs nothing."""
import os
import pickle
import struct

import numpy as np
import pytest

from lowbit.apps import train
from lowbit.data import cifar


class _Python2Pickler(pickle._Pickler):
    """Writes like the Python 2 cPickle that made cifar-10-python.tar.gz: protocol 2, every str and
    bytes object as a Python 2 string (BINSTRING), globals as numpy.core.multiarray._reconstruct."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_string(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_python2_string
    dispatch[str] = save_python2_string


def _python2_pickle(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _real_format_batch(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"batch_label": "training batch 1 of 5", "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)]}


def _write_folder(folder, batches):
    folder.mkdir(parents=True, exist_ok=True)
    for name in cifar.TRAIN_BATCHES + [cifar.TEST_BATCH]:
        (folder / name).write_bytes(batches.get(name) or _python2_pickle(_real_format_batch(seed=len(name))))
    return folder


class _RunsAShellCommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_real_format_cifar_batch_loads(tmp_path):
    batch = _real_format_batch(n=7, seed=3)
    blob = _python2_pickle(batch)
    assert b"U\x06labels" in blob and b"cnumpy.core.multiarray\n_reconstruct" in blob  # the archive's own opcodes
    data, labels = cifar.read_batch(blob, "data_batch_1")
    assert data.dtype == np.uint8 and np.array_equal(data, batch["data"])
    assert labels.tolist() == batch["labels"]
    folder = _write_folder(tmp_path / cifar.FOLDER, {"data_batch_1": blob})
    ds = cifar.load_cifar10(folder)
    assert len(ds.train) == 7 + 4 * 5 and ds.train.y[:7].tolist() == batch["labels"]


def test_the_crafted_batch_would_run_code_with_plain_pickle(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps({b"data": _RunsAShellCommand(marker)}), encoding="bytes")
    assert marker.exists()


def test_crafted_cifar_batch_is_refused_without_running_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _RunsAShellCommand(marker), b"labels": [0]})
    folder = _write_folder(tmp_path / cifar.FOLDER, {"data_batch_1": evil})
    with pytest.raises(ValueError, match=r"data_batch_1 is not a CIFAR-10 batch: it asks for posix.system"):
        cifar.load_cifar10(folder)
    assert not marker.exists()
    argv = ["--data", f"cifar10:{tmp_path}", "--model", "resnet20", "--epochs", "1", "--quiet"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing from it was run" in err
    assert not marker.exists()


@pytest.mark.parametrize("content,why", [
    ({b"data": np.zeros((2, 3072), dtype=np.float64), b"labels": [0, 1]}, "dtype"),
    ({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 10]}, "class numbers"),
    ({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, "N x 3072"),
    ([1, 2, 3], "N x 3072"),
])
def test_wrong_content_cifar_batch_is_refused(content, why):
    with pytest.raises(ValueError, match=why):
        cifar.read_batch(pickle.dumps(content), "data_batch_1")


def test_truncated_cifar_batch_is_refused():
    blob = _python2_pickle(_real_format_batch())
    with pytest.raises(ValueError, match="not a CIFAR-10 batch"):
        cifar.read_batch(blob[: len(blob) // 2], "data_batch_1")
