import subprocess
import sys

from lowbit import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_fails_with_message(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "lowbit.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: lowbit" in proc.stdout


def test_bench_rejects_unknown_name(capsys):
    assert cli.main(["bench", "no_such_benchmark"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
