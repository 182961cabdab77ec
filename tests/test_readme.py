"""The README's Python snippet runs as written; `lowbit --version`; the package imports without torch."""
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import lowbit

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_python_snippet_runs_as_written(tmp_path):
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    env = {k: v for k, v in os.environ.items() if k != "LOWBIT_BITSTREAMS"}
    for block in blocks:
        proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=600)
        assert proc.returncode == 0, f"README snippet failed:\n{block}\n--- stderr:\n{proc.stderr[-3000:]}"
    assert "torch.Size([2, 10])" in proc.stdout
    assert "lowbit.open_device('auto'): no PYNQ board or Alveo card found; using the emulation backend" in proc.stderr


def test_version_flag_prints_the_installed_version():
    for flag in ("--version", "-V"):
        out = subprocess.run([sys.executable, "-m", "lowbit.cli", flag], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == f"lowbit {lowbit.__version__}"
    assert importlib.metadata.version("lowbit") == lowbit.__version__


def test_the_package_and_lowbit_serve_import_without_torch():
    """A PYNQ-Z2 has no torch wheel: `lowbit serve` must start from numpy + pynq + grpcio alone."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "import lowbit, lowbit.cli, lowbit.board.remote_server as s\n"
            "s.parser().parse_args(['--port', '1'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('torch') and sys.modules[m] is not None))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
