"""Compile the package's C/C++ sources once per source hash and load them through cffi."""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import cffi

PACKAGE_ROOT = Path(__file__).resolve().parent
_loaded: dict = {}


def cache_dir() -> Path:
    """$LOWBIT_CACHE, else ~/.cache/lowbit."""
    root = os.environ.get("LOWBIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lowbit")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_compiler(cplus: bool = True) -> str:
    names = [os.environ.get("CXX" if cplus else "CC")] + (["g++", "c++", "clang++"] if cplus else ["gcc", "cc", "clang"])
    for name in names:
        if name and shutil.which(name):
            return shutil.which(name)
    raise RuntimeError(
        f"no {'C++' if cplus else 'C'} compiler found (looked for {', '.join(n for n in names if n)}); "
        "install one (Debian/Ubuntu: apt-get install g++) or set $CXX"
    )


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def build_shared(name: str, sources: Sequence[Path], *, include_dirs: Iterable[Path] = (),
                 system_include_dirs: Iterable[Path] = (), flags: Sequence[str] = (),
                 cplus: bool = True) -> Path:
    """Compile ``sources`` into ``<cache>/<name>-<hash>.so`` unless that file exists already."""
    compiler = find_compiler(cplus)
    include_dirs, system_include_dirs = list(include_dirs), list(system_include_dirs)
    args = ["-O3", "-shared", "-fPIC", *flags]
    args += [f"-I{d}" for d in include_dirs] + [f"-isystem{d}" for d in system_include_dirs]
    digest = hashlib.sha256(" ".join([compiler, *args]).encode())
    if "-march=native" in args:  # a cache shared between machines must not hand one CPU's code to another
        digest.update(_cpu_flags().encode())
    for src in sources:
        digest.update(Path(src).read_bytes())
    for d in include_dirs:
        for header in sorted(Path(d).rglob("*.h*")):
            digest.update(header.read_bytes())
    target = cache_dir() / f"{name}-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        tmp_out = Path(tmp) / target.name
        cmd = [compiler, *args, *map(str, sources), "-o", str(tmp_out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building {name} failed:\n$ {' '.join(cmd)}\n{proc.stderr[-4000:]}")
        os.replace(tmp_out, target)  # atomic: a concurrent build never sees half a file
    return target


def load(name: str, cdef: str, sources: Sequence[Path], **kwargs):
    """Build (cached) and dlopen a shared library; returns (ffi, lib). Cached per process."""
    key = (name, cdef, tuple(map(str, sources)), repr(sorted(kwargs.items())))
    if key not in _loaded:
        path = build_shared(name, sources, **kwargs)
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        _loaded[key] = (ffi, ffi.dlopen(str(path)))
    return _loaded[key]
