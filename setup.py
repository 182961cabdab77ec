"""Build hook: the HLS sources (hls/, at the repository root) go into the wheel as lowbit/hls/, so an
installed lowbit compiles its emulation kernel without a source checkout. Everything else is in
pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
HLS_PARTS = ("include", "csim", "emu", "kernels")  # what the emulation build and `lowbit build` read


class BuildPyWithHls(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads hls/ in place
            return
        target = Path(self.build_lib) / "lowbit" / "hls"
        for part in HLS_PARTS:
            shutil.copytree(ROOT / "hls" / part, target / part, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.o", "*.so"))


setup(cmdclass={"build_py": BuildPyWithHls})
