"""`lowbit <command>`: each command lives in its own module and defines ``main(argv)``."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("lowbit.train", "train a model (digits by default) in a low-bit format"),
    "sweep": ("lowbit.sweep", "the MLS paper's Table 3 sweep (grouping x Mg x Ex x Mx)"),
    "demo": ("lowbit.demo", "the README's main job: digits at fp32 and MLS <2,1> on emulated hardware"),
    "energy": ("lowbit.energy.cli", "per-layer op counts and modelled training energy"),
    "bench": ("lowbit.bench", "run the benchmarks in benchmarks/"),
    "build": ("lowbit.build", "build HLS IP / bitstreams with the Xilinx tools"),
    "check": ("lowbit.check", "check the installation: compiler, headers, pynq, devices"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: lowbit <command> [options]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:8s} {help_text}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nlowbit: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
