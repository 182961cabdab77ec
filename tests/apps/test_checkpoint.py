"""Checkpoints from untrusted hands: no code runs, a changed byte is caught, temp files do not pile up."""
import hashlib
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lowbit.apps import checkpoint
from lowbit.apps import train


class _RunsAShellCommand:
    """What an attacker pickles: loading it runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _container(state_bytes: bytes) -> dict:
    return {"format": checkpoint.FORMAT, "version": checkpoint.VERSION,
            "sha256": hashlib.sha256(state_bytes).hexdigest(),
            "state": torch.frombuffer(bytearray(state_bytes), dtype=torch.uint8)}


def test_the_crafted_pickles_would_run_code_when_loaded_unsafely(tmp_path):
    """The attack is real: torch.load without weights_only creates the marker."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(_torch_bytes({"model": _RunsAShellCommand(marker)}))
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain-torch-file", "inside-a-valid-lowbit-container"])
def test_crafted_checkpoint_does_not_run_code(tmp_path, wrapped):
    marker = tmp_path / "pwned"
    evil = _torch_bytes({"model": _RunsAShellCommand(marker), "epoch": 1})
    path = tmp_path / "last.pt"
    path.write_bytes(_torch_bytes(_container(evil)) if wrapped else evil)
    with pytest.raises(checkpoint.CheckpointError, match="system.*nothing from it was run"):
        checkpoint.load(path)
    assert not marker.exists()


def test_crafted_checkpoint_on_resume_is_one_line_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(_torch_bytes({"model": _RunsAShellCommand(marker)}))
    assert train.main(["--out", str(out), "--resume", "--quiet", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "do not trust this file" in err
    assert not marker.exists()


def test_checkpoint_flipped_byte_inside_a_tensor_is_detected(tmp_path):
    weight = torch.arange(4096, dtype=torch.float32)
    path = checkpoint.save(tmp_path / "last.pt", {"model": {"w": weight}, "epoch": 3})
    raw = bytearray(path.read_bytes())
    at = raw.find(weight[1000:1016].numpy().tobytes())
    assert at > 0, "the tensor's bytes are stored as they are"
    raw[at + 5] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(checkpoint.CheckpointError, match="corrupt: its SHA-256 does not match"):
        checkpoint.load(path)


def test_checkpoint_truncated_file_is_a_clear_error(tmp_path):
    path = checkpoint.save(tmp_path / "last.pt", {"w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(checkpoint.CheckpointError, match="unreadable|corrupt"):
        checkpoint.load(path)


def test_checkpoint_round_trip_keeps_values_and_rng(tmp_path):
    np.random.seed(7)
    torch.manual_seed(7)
    state = {"w": torch.randn(5)}
    state["rng"] = checkpoint.rng_state()
    expected = (np.random.rand(3), torch.rand(3))
    path = checkpoint.save(tmp_path / "last.pt", state)
    loaded = checkpoint.load(path)
    assert torch.equal(loaded["w"], state["w"])
    checkpoint.set_rng_state(loaded["rng"])
    assert np.array_equal(np.random.rand(3), expected[0]) and torch.equal(torch.rand(3), expected[1])


def test_save_refuses_types_that_load_would_refuse(tmp_path):
    with pytest.raises(TypeError, match="numpy"):
        checkpoint.save(tmp_path / "last.pt", {"a": np.zeros(3)})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_save_refuses_a_nonfinite_tensor_and_names_it(tmp_path, bad):
    good = checkpoint.save(tmp_path / "last.pt", {"model": {"w": torch.ones(2)}})
    before = good.read_bytes()
    with pytest.raises(checkpoint.NonFiniteStateError, match="'model.bn.running_var'"):
        checkpoint.save(good, {"model": {"w": torch.ones(2), "bn.running_var": torch.tensor([1.0, bad])}})
    assert good.read_bytes() == before


def test_resume_of_a_plain_state_dict_or_a_list_is_a_one_line_error(tmp_path, capsys):
    from lowbit import models

    for content in (models.get("digits_cnn").state_dict(), [1, 2, 3]):
        out = tmp_path / type(content).__name__
        out.mkdir()
        torch.save(content, out / "last.pt")
        assert train.main(["--out", str(out), "--resume", "--quiet", "--epochs", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not a lowbit checkpoint" in err, err


def test_resume_of_a_lowbit_checkpoint_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    checkpoint.save(tmp_path / "last.pt", {"model": {}})
    assert train.main(["--out", str(tmp_path), "--resume", "--quiet", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not of a training run" in err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_checkpoint_temp_files_are_removed_at_the_next_save(tmp_path):
    path = tmp_path / "last.pt"
    legacy = tmp_path / ".last.pt.k2j3h4.tmp"  # older lowbit: no pid in the name
    dead = tmp_path / f".last.pt.{_dead_pid()}.abc.tmp"
    live = tmp_path / f".last.pt.{os.getppid()}.abc.tmp"  # a writer that is still running
    other = tmp_path / ".other.pt.1.abc.tmp"
    for p in (legacy, dead, live, other):
        p.write_bytes(b"partial")
    checkpoint.save(path, {"v": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", live.name, other.name])


def test_a_killed_writer_leaves_a_temp_file_that_the_next_save_removes(tmp_path):
    path = tmp_path / "last.pt"
    script = ("import os, sys, time\n"
              "from lowbit.apps import checkpoint\n"
              "checkpoint._write_durably = lambda fd, blob: time.sleep(600)\n"  # killed while writing
              f"checkpoint.save({str(path)!r}, {{'v': 1}})\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".last.pt.*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(list(tmp_path.glob(".last.pt.*.tmp"))) == 1 and not path.exists()
    checkpoint.save(path, {"v": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"] and checkpoint.load(path) == {"v": 2}
