"""The command-line error rule, over every registered command (`lowbit.cli.COMMANDS`, including
commands added later): a user error is one line on stderr and exit 2; an unexpected internal error
is one short line with a hint to rerun with --debug, which prints the traceback."""
import argparse
import errno
import subprocess
import sys

import pytest

from lowbit import cli

COMMANDS = sorted(cli.COMMANDS)


class _Bug(Exception):
    """Stands for any exception lowbit did not expect."""


def _raise_from_parsing(monkeypatch, exc):
    def parse_known_args(self, *args, **kwargs):
        raise exc

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)


def _stderr_lines(capsys) -> list:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_prints_its_help_and_exits_0(name, capsys):
    """Every command, the former ``python -m lowbit.X`` entry points included, answers --help as
    ``lowbit <name>`` (its own usage, not the module's) and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lowbit {name} ") and "--help" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_reports_a_bad_option_in_one_line(name, capsys):
    assert cli.main([name, "--no-such-option"]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"lowbit {name}: error: ") and f"lowbit {name} --help" in lines[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_reports_an_internal_error_with_the_debug_hint(name, capsys, monkeypatch):
    _raise_from_parsing(monkeypatch, _Bug("something lowbit did not expect\nsecond line"))
    assert cli.main([name]) == 1
    lines = _stderr_lines(capsys)
    assert lines == [f"lowbit {name}: internal error: _Bug: something lowbit did not expect; "
                     "rerun with --debug for the traceback"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_prints_the_traceback_with_debug(name, capsys, monkeypatch):
    _raise_from_parsing(monkeypatch, _Bug("boom"))
    assert cli.main([name, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_Bug: boom" in err
    assert err.strip().splitlines()[-1] == f"lowbit {name}: internal error: _Bug: boom"


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("exc,text", [
    (cli.UserError("--thing 3: expected 1 or 2"), "error: --thing 3: expected 1 or 2"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/last.pt"),
     "error: No space left on device: '/data/run/last.pt'"),
], ids=["UserError", "ENOSPC"])
def test_every_command_reports_user_and_environment_errors_in_one_line(name, exc, text, capsys, monkeypatch):
    _raise_from_parsing(monkeypatch, exc)
    assert cli.main([name]) == 2
    assert _stderr_lines(capsys) == [f"lowbit {name}: {text}"]


def test_a_long_message_is_clipped(capsys, monkeypatch):
    _raise_from_parsing(monkeypatch, _Bug("x" * 100_000))
    assert cli.main([COMMANDS[0]]) == 1
    (line,) = _stderr_lines(capsys)
    assert len(line) < 500 and "(100000 characters)" in line


def test_the_console_script_follows_the_rule():
    proc = subprocess.run([sys.executable, "-m", "lowbit.cli", "train", "--lr", "fast"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lowbit train: error: argument --lr: invalid float value: 'fast' (see lowbit train --help)"]


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    _raise_from_parsing(monkeypatch, KeyboardInterrupt())
    assert cli.main(["train"]) == 130
    assert _stderr_lines(capsys) == ["lowbit train: interrupted"]
