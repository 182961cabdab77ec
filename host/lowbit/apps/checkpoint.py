"""Checkpoints that survive a crash, a hostile file and a flipped bit.

* Atomic: a temp file in the same folder, fsync, os.replace; a reader sees the previous complete
  checkpoint or the new one, never a torn file. Temp files a killed writer left behind are removed
  at the next save (or ``remove_stale_temps`` at the start of a run).
* No code from the file: ``load`` uses torch's weights-only unpickler and admits nothing beyond
  its default set (tensors, numbers, strings, None, lists, tuples, dicts, OrderedDict, Counter).
  lowbit keeps the numpy RNG state as plain lists so that a checkpoint needs no other type; ``save``
  refuses a state that ``load`` would refuse.
* Checked: the state is serialised once, and its SHA-256 travels with it; ``load`` recomputes it.
* Never poisoned: ``save`` refuses a state holding a NaN or Inf tensor and names it.

RNG states (python, numpy, torch CPU and CUDA) travel with the model so that a resumed run
continues bit for bit.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

FORMAT = "lowbit-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read: the message names the file and what to do."""


class NonFiniteStateError(ValueError):
    """``save`` was handed a NaN/Inf tensor; ``where`` is its key path, e.g. ``model.bn2.running_var``."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(f"tensor {where!r} holds NaN or Inf; a checkpoint of it would not be a good one")


def save(path: "str | Path", state: dict) -> Path:
    path = Path(path)
    where = first_nonfinite(state)
    if where is not None:
        raise NonFiniteStateError(where)
    payload = _serialise(state)
    _refuse_types_load_would_refuse(payload)
    blob = _serialise({"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(payload).hexdigest(),
                       "state": torch.frombuffer(bytearray(payload), dtype=torch.uint8)})  # stored verbatim
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        _write_durably(fd, blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _write_durably(fd: int, blob: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())


def _serialise(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _refuse_types_load_would_refuse(payload: bytes) -> None:
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(payload))
    if unsafe:
        raise TypeError(f"checkpoint state holds {sorted(unsafe)}, which load() refuses (weights-only); "
                        "store plain tensors, numbers, strings, lists and dicts")


def remove_stale_temps(path: "str | Path") -> list:
    """Delete ``.NAME.PID.*.tmp`` files next to ``path`` whose writer is no longer running."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        if not _writer_alive(tmp.name[len(path.name) + 2:]):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _writer_alive(rest: str) -> bool:
    """``rest`` is 'PID.random.tmp' (older lowbit wrote 'random.tmp': no live writer to ask)."""
    pid_text = rest.split(".", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False  # our own leftovers: this process writes one checkpoint at a time
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform/filesystem; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: "str | Path", map_location: Any = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    shown = repr(str(path))
    container = _weights_only_load(path.read_bytes(), "cpu", shown)
    if not (isinstance(container, dict) and container.get("format") == FORMAT):
        raise CheckpointError(f"{shown} is not a lowbit checkpoint (it holds a {type(container).__name__}, not "
                              "what lowbit train saves: a plain state_dict or another program's file?); resume "
                              "from the last.pt of a lowbit run")
    stored = container.get("state")
    if container.get("version") != VERSION or not (isinstance(stored, torch.Tensor) and stored.dtype == torch.uint8):
        raise CheckpointError(f"checkpoint {shown} has format version {container.get('version')!r}; this lowbit "
                              f"reads version {VERSION}: use the lowbit that wrote it")
    payload = stored.numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != container.get("sha256"):
        raise CheckpointError(f"checkpoint {shown} is corrupt: its SHA-256 does not match the one stored with it "
                              "(a changed or truncated byte); restore a backup or start the run again")
    return _weights_only_load(payload, map_location, shown)


def _weights_only_load(blob: bytes, map_location, shown: str):
    try:
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors: say which file and what to do, in one line
        raise CheckpointError(f"checkpoint {shown} is unreadable ({_why(exc)}); delete it or restore a backup") from None


def _why(exc: Exception) -> str:
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
    if found:
        return (f"it asks to import {found.group(1)}, which a lowbit checkpoint never holds; "
                "nothing from it was run: do not trust this file")
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def first_nonfinite(obj, where: str = "") -> Optional[str]:
    """The key path of the first floating tensor in ``obj`` (dicts, lists, tuples) with a NaN or Inf."""
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            return where or "tensor"
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = first_nonfinite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
