"""Careless input to `lowbit train`, `lowbit energy` and `lowbit sweep`: one line on stderr, exit 2,
never a traceback or a run on the wrong data."""
import errno
import json
import os
from pathlib import Path

import pytest

from lowbit import cli
from lowbit.apps import checkpoint

QUICK_TRAIN = ["--epochs", "2", "--batch-size", "64", "--limit-train", "128", "--limit-test", "64", "--quiet",
               "--threads", "1"]


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def _user_error(argv, capsys, *expected) -> str:
    assert cli.main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith(f"lowbit {argv[0]}: "), line
    for text in expected:
        assert text in line, line
    return line


@pytest.mark.parametrize("value", ["0", "-5"])
@pytest.mark.parametrize("option", ["--limit-train", "--limit-test"])
def test_train_limit_of_zero_or_less_is_refused(option, value, capsys):
    _user_error(["train", option, value, "--quiet"], capsys, f"{option} {value}: expected a number of samples >= 1")


def test_sweep_limit_of_zero_is_refused(capsys):
    _user_error(["sweep", "--limit-train", "0"], capsys, "--limit-train 0")


def test_train_out_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _user_error(["train", "--out", str(blocker / "run"), *QUICK_TRAIN], capsys, "a file is in the way")
    _user_error(["train", "--out", str(blocker), *QUICK_TRAIN], capsys, "a file is in the way")


def test_train_out_on_a_read_only_file_system(tmp_path, capsys, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)  # root ignores chmod; a read-only mount refuses everyone
    _user_error(["train", "--out", str(tmp_path / "run"), *QUICK_TRAIN], capsys,
                "cannot write the run folder (Read-only file system)", "choose a folder you can write to")


def test_train_full_disk_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_write, writes, good = checkpoint._write_durably, [], {}

    def fill_the_disk_after_the_first_save(fd, blob):  # epoch 1 saves; the disk is full at epoch 2
        writes.append(len(blob))
        if len(writes) == 1:
            return real_write(fd, blob)
        good["bytes"] = (out / "last.pt").read_bytes()
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_durably", fill_the_disk_after_the_first_save)
    _user_error(["train", "--out", str(out), *QUICK_TRAIN], capsys,
                "cannot write last.pt (No space left on device)", "a checkpoint already there is untouched")
    assert len(writes) == 2 and (out / "last.pt").read_bytes() == good["bytes"]
    assert checkpoint.load(out / "last.pt")["epoch"] == 1
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_train_full_disk_at_the_start(tmp_path, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    _user_error(["train", "--out", str(tmp_path / "run"), *QUICK_TRAIN], capsys, "No space left on device",
                "free some space")


def test_energy_model_that_is_not_a_model_factory(capsys):
    _user_error(["energy", "--model", "os:system"], capsys, "calling system() failed", "takes no arguments")
    _user_error(["energy", "--model", "os:getcwd"], capsys, "returned a str")
    _user_error(["energy", "--model", "os:sep"], capsys, "not callable")


@pytest.mark.parametrize("content,expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", 'the "pj" dict is missing'),
    ('{"pj": {"fp32_mul": "3.7x"}}', "must be a finite number >= 0 pJ"),
    ('{"pj": {"fp32_mul": [1]}}', "must be a finite number >= 0 pJ"),
    ('{"pj": {"fp32_mul": -1}}', "must be a finite number >= 0 pJ"),
    ('{"pj": {"no_such_op": 1}}', "unknown ops"),
    ('{"base": "nope", "pj": {}}', "unknown energy table"),
    ("[" * 100_000, "not valid JSON"),
], ids=["syntax", "list", "string", "list-value", "negative", "op", "base", "deep"])
def test_energy_malformed_table(tmp_path, capsys, content, expected):
    table = tmp_path / "t.json"
    table.write_text(content)
    _user_error(["energy", "--model", "digits_cnn", "--table", str(table)], capsys, expected)


@pytest.mark.parametrize("value", ["Infinity", "1e999", "NaN"])
def test_energy_table_with_inf_is_refused_and_no_nonstandard_json_is_printed(tmp_path, capsys, value):
    table = tmp_path / "t.json"
    table.write_text('{"name": "x", "base": "mls65", "pj": {"fp32_mul": %s}}' % value)
    assert cli.main(["energy", "--model", "digits_cnn", "--table", str(table), "--json"]) == 2
    captured = capsys.readouterr()
    assert "Infinity" not in captured.out and "NaN" not in captured.out
    assert "must be a finite number >= 0 pJ" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_energy_totals_that_overflow_are_refused(tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"base": "mls65", "pj": {"fp32_mul": 1e308, "lowbit_mul": 1e308}}))
    assert cli.main(["energy", "--model", "digits_cnn", "--table", str(table), "--json"]) == 2
    assert "overflow" in _one_line(capsys)


def test_energy_self_referential_table_base(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"name": "a", "base": str(a), "pj": {"fp32_mul": 1.0}}))
    _user_error(["energy", "--model", "digits_cnn", "--table", str(a)], capsys, "chain loops (a.json -> a.json)")
    a.write_text(json.dumps({"name": "a", "base": str(b), "pj": {}}))
    b.write_text(json.dumps({"name": "b", "base": str(a), "pj": {}}))
    _user_error(["energy", "--model", "digits_cnn", "--table", str(a)], capsys, "a.json -> b.json -> a.json")


def test_energy_table_base_chain_that_ends_at_a_builtin_still_works(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    b.write_text(json.dumps({"name": "b", "base": "mls65", "pj": {"fp32_mul": 1.0}}))
    a.write_text(json.dumps({"name": "a", "base": str(b), "pj": {"fp32_add": 0.5}}))
    assert cli.main(["energy", "--model", "digits_cnn", "--table", str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_uj"] > 0


def test_energy_plot_into_a_missing_folder(tmp_path, capsys):
    _user_error(["energy", "--model", "digits_cnn", "--plot", str(tmp_path / "no" / "such" / "e.png")], capsys,
                "does not exist; create it")


def _saved_sweep() -> dict:
    cell = {"format": "fp32", "options": {}, "seed": 0, "test_acc": 90.0, "diverged": False, "nonfinite": False,
            "seconds": 1.0}
    return {"grid": "methods", "data": "digits", "model": "digits_cnn", "epochs": 1, "batch_size": 64, "lr": 0.1,
            "seeds": [0], "results": [{"key": "fp32", "label": "fp32", "format": "fp32", "options": {},
                                       "cells": [cell]}]}


def test_sweep_render_of_a_good_file_still_works(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_saved_sweep()))
    assert cli.main(["sweep", "--render", str(path)]) == 0
    assert "| fp32 | `fp32` | 90.00 |" in capsys.readouterr().out


@pytest.mark.parametrize("content,expected", [
    (None, "no such file"),
    ("not json at all", "not JSON"),
    ("[1, 2, 3]", "not a saved sweep"),
    (json.dumps({"grid": "methods"}), "not a saved sweep (no data, model"),
    (json.dumps({**_saved_sweep(), "grid": "other"}), "grid 'other'"),
    (json.dumps({**_saved_sweep(), "results": [{"cells": 5}]}), "a result entry is malformed"),
    (json.dumps({**_saved_sweep(), "results": [{"label": "x", "cells": [{"seed": 0}]}]}), "malformed"),
], ids=["missing", "not-json", "list", "keys", "grid", "cells", "cell"])
def test_sweep_render_of_a_missing_or_wrong_file(tmp_path, capsys, content, expected):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    _user_error(["sweep", "--render", str(path)], capsys, expected)


def test_sweep_render_of_a_folder(tmp_path, capsys):
    _user_error(["sweep", "--render", str(tmp_path)], capsys, "is a folder")


def test_sweep_json_into_a_missing_folder_is_refused_before_the_sweep(tmp_path, capsys):
    _user_error(["sweep", "--json", str(tmp_path / "no" / "s.json"), "--epochs", "50"], capsys,
                "cannot write there")
