"""The built wheel works without the checkout: build it from the tracked files, install it into a fresh
venv (its dependencies borrowed from this environment, so nothing is downloaded), and from another
folder run an emulated GEMM, the simulated board and `lowbit check`."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys, torch, lowbit
from pathlib import Path
here = Path(lowbit.__file__).resolve()
assert str(here).startswith(sys.prefix), f"lowbit imported from {here}, not the fresh venv {sys.prefix}"
from lowbit.backends.emulation import EmulationBackend
g = torch.Generator().manual_seed(0)
a = lowbit.quantize(torch.randn(20, 96, generator=g), "mls:2,1", rounding="nearest", block=32)
b = lowbit.quantize(torch.randn(12, 96, generator=g), "mls:2,1", rounding="nearest", block=32)
emulated = EmulationBackend().gemm(a, b)
assert torch.equal(emulated, torch.load(sys.argv[1])), "the wheel's emulation differs from the checkout's"
from lowbit.kernel import headers as hls_headers
assert str(hls_headers.HLS_DIR).startswith(sys.prefix), hls_headers.HLS_DIR
from lowbit.board import open_simulated
board = open_simulated("pynq-z2")
assert torch.equal(board.gemm(a, b), emulated)
print("WHEEL-OK", here.parent)
"""


def _checkout_gemm():
    import lowbit
    from lowbit.backends.emulation import EmulationBackend

    g = torch.Generator().manual_seed(0)
    a = lowbit.quantize(torch.randn(20, 96, generator=g), "mls:2,1", rounding="nearest", block=32)
    b = lowbit.quantize(torch.randn(12, 96, generator=g), "mls:2,1", rounding="nearest", block=32)
    return EmulationBackend().gemm(a, b)


def _tracked_copy(dest: Path) -> Path:
    """The tracked files only (what a clean clone has), so a developer's build/ or caches never leak in."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    src = dest / "src"
    for rel in filter(None, (f.decode() for f in files)):
        path = ROOT / rel
        if path.is_file():
            target = src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    return src


def test_the_wheel_installs_and_emulates_outside_the_checkout(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.fail("needs a git checkout to know the tracked files")
    src = _tracked_copy(tmp_path)
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("lowbit-*.whl")
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "lowbit/hls/include/lowbit/gemm.hpp" in names and "lowbit/board/overlays/zcu104/lowbit_gemm.hwh" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "hls/")) for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    # torch, numpy, pynq, hls4ml's headers...: this environment's, without its editable lowbit (a .pth line
    # adds the folder to sys.path but does not run the .pth files inside it, such as the editable finder)
    (fresh_site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "--ignore-installed", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    torch.save(_checkout_gemm(), elsewhere / "expected.pt")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LOWBIT_AP_TYPES")}
    run = subprocess.run([str(python), "-c", SCRIPT, "expected.pt"], cwd=elsewhere, capture_output=True, text=True, env=env,
                         timeout=900)
    assert run.returncode == 0 and "WHEEL-OK" in run.stdout, run.stderr[-3000:]
    check = subprocess.run([str(venv / "bin" / "lowbit"), "check", "--no-build"], cwd=elsewhere, capture_output=True,
                           text=True, env=env, timeout=600)
    assert check.returncode == 0 and "ok   ap_int headers" in check.stdout, check.stdout + check.stderr
    env["LOWBIT_AP_TYPES"] = str(elsewhere)  # no ap_int.h there: the check says what to install
    check = subprocess.run([str(venv / "bin" / "lowbit"), "check", "--no-build"], cwd=elsewhere, capture_output=True,
                           text=True, env=env, timeout=600)
    assert check.returncode == 1 and "pip install 'lowbit[emulation]'" in check.stdout, check.stdout
