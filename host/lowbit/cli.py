"""`lowbit <command>`: each command lives in its own module and defines ``main(argv)``."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback

COMMANDS = {
    "train": ("lowbit.apps.train", "train a model (digits by default) in a low-bit format"),
    "sweep": ("lowbit.apps.sweep", "the MLS paper's Table 3 sweep (grouping x Mg x Ex x Mx)"),
    "demo": ("lowbit.apps.demo", "the README's main job: digits at fp32 and MLS <2,1> on emulated hardware"),
    "energy": ("lowbit.apps.energy", "per-layer op counts and modelled training energy"),
    "bench": ("lowbit.apps.bench", "run the benchmarks in benchmarks/"),
    "build": ("lowbit.apps.build", "build HLS IP / bitstreams with the Xilinx tools"),
    "check": ("lowbit.apps.check", "check the installation: compiler, headers, pynq, devices"),
    "serve": ("lowbit.board.remote_server", "serve this board (or a simulated one) to remote:HOST[:PORT] clients"),
    "wire": ("lowbit.kernel.wire", "write hls/include/lowbit/wire.hpp from the wire protocol (--emit-hpp)"),
    "boards": ("lowbit.kernel.boards", "write hls/include/lowbit/board_config.hpp from the board records (--emit-hpp)"),
    "golden": ("lowbit.kernel.reference", "write golden DMA streams for the C-simulation testbenches"),
    "ablation": ("lowbit.apps.ablation", "the ALS-POTQ ablation (WBC / PRC) on digits"),
    "measure": ("lowbit.apps.measure", "measure a training run's power with the available sensors"),
}


class UserError(Exception):
    """A mistake in the user's input or environment: printed as one line, exit status 2."""


USER_ERROR = 2
INTERNAL_ERROR = 1
INTERRUPTED = 130
DEBUG_FLAG = "--debug"


def main(argv=None) -> int:
    """Dispatch to a command. The error rule holds for every command, in one place: a user error
    (UserError, a bad option, an OSError from the environment) prints one line and exits 2; anything
    else is a bug: a short message and a hint to rerun with --debug, which prints the traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("LOWBIT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    if argv[:1] in (["--version"], ["-V"]):
        from lowbit import __version__

        print(f"lowbit {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        return _usage(argv)
    name = argv[0]
    try:
        with _one_line_argparse_errors():
            module = importlib.import_module(COMMANDS[name][0])
            return int(module.main(argv[1:]) or 0)
    except KeyboardInterrupt:
        _report(name, "interrupted", debug)
        return INTERRUPTED
    except UserError as exc:
        _report(name, f"error: {exc}", debug)
        return USER_ERROR
    except OSError as exc:  # the disk, the file system, permissions: the user's environment, not a bug
        _report(name, f"error: {_os_error_text(exc)}", debug)
        return USER_ERROR
    except Exception as exc:  # noqa: BLE001 - the last resort for bugs: short, with the way to the traceback
        hint = "" if debug else f"; rerun with {DEBUG_FLAG} for the traceback"
        _report(name, f"internal error: {type(exc).__name__}: {_first_line(exc)}{hint}", debug)
        return INTERNAL_ERROR


def _usage(argv: list) -> int:
    print("usage: lowbit <command> [options] [--debug] | lowbit --version\n\ncommands:")
    for name, (_, help_text) in COMMANDS.items():
        print(f"  {name:8s} {help_text}")
    if argv and argv[0] not in ("-h", "--help"):
        print(f"\nlowbit: unknown command {_clip(argv[0])!r}", file=sys.stderr)
        return USER_ERROR
    return 0


def _report(name: str, text: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"lowbit {name}: {text}", file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return _clip(lines[0] if lines else "(no message)")


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _os_error_text(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {str(exc.filename)!r}"
    return _first_line(exc)


@contextlib.contextmanager
def _one_line_argparse_errors():
    """argparse prints the whole usage before its error; here a bad option is one line and exit 2
    for every command's parser, without each command having to subclass ArgumentParser."""
    original = argparse.ArgumentParser.error

    def error(parser, message):
        raise UserError(f"{_clip(message)} (see {parser.prog} --help)")

    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


if __name__ == "__main__":
    sys.exit(main())
