"""Compile the package's C/C++ sources once per source hash and load them through cffi."""
from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import cffi

PACKAGE_ROOT = Path(__file__).resolve().parent
_loaded: dict = {}
# One build or dlopen at a time in a process: threads that first use a backend together must not
# compile the same library twice (processes are kept apart by the atomic rename below).
_LOAD_LOCK = threading.Lock()
# A build compiles in <cache>/.build-<pid>@<host>_<name>-XXXX and renames the checked library into
# place; a folder left by a killed build is removed by a later build.
BUILD_PREFIX = ".build-"
_BUILD_DIR = re.compile(r"^\.build-(\d+)@([^_]*)_")
STALE_DEAD_OWNER_S = 60.0  # a dead owner's folder (same host): gone after a minute
STALE_ANY_S = 24 * 3600.0  # any build folder: a day (owners on other hosts cannot be asked)
# Older versions built in tempfile's tmpXXXXXXXX folders holding only the <name>-<hash>.so
_LEGACY_DIR, _TARGET = re.compile(r"^tmp[a-z0-9_]{8}$"), re.compile(r"^[A-Za-z0-9_]+-[0-9a-f]{16}\.so$")


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
                 cplus: bool = True, rebuild: bool = False) -> Path:
    """Compile ``sources`` into ``<cache>/<name>-<hash>.so`` unless a complete library is there
    already (``rebuild``: compile anyway). A cached file that is empty or truncated (a killed
    build of an older version, a full disk) is rebuilt; the new file replaces it atomically."""
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
    if target.exists() and not rebuild:
        problem = library_problem(target)
        if problem is None:
            return target
        warnings.warn(f"lowbit: the cached {target} {problem}; rebuilding it", RuntimeWarning, stacklevel=2)
    remove_stale_builds()
    _compile_into(target, name, [compiler, *args, *map(str, sources)])
    return target


def _compile_into(target: Path, name: str, cmd: list) -> None:
    """Run ``cmd -o <file>`` in a fresh build folder, check the file, rename it to ``target``."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{os.getpid()}@{_host()}_{name}-", dir=cache_dir()))
    try:
        tmp_out = tmp / target.name
        cmd = [*cmd, "-o", str(tmp_out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building {name} failed:\n$ {' '.join(cmd)}\n{proc.stderr[-4000:]}")
        problem = library_problem(tmp_out)
        if problem is not None:
            raise RuntimeError(f"building {name}: the compiler's output {problem} (disk full?); "
                               f"free space in {cache_dir()} or set $LOWBIT_CACHE elsewhere")
        os.replace(tmp_out, target)  # atomic: a concurrent build or load never sees half a file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"


def _elf_extent(data: bytes) -> int:
    """Bytes an ELF file must have: its program and section header tables and every segment's data."""
    if len(data) < 52:  # the smaller (ELF32) file header
        return 52
    wide, little = data[4] == 2, data[5] == 1
    end = "<" if little else ">"
    head = end + ("16sHHIQQQIHHHHHH" if wide else "16sHHIIIIIHHHHHH")
    if len(data) < struct.calcsize(head):
        return struct.calcsize(head)
    fields = struct.unpack_from(head, data)
    phoff, shoff, phentsize, phnum, shentsize, shnum = fields[5], fields[6], fields[9], fields[10], fields[11], fields[12]
    extent = max(phoff + phentsize * phnum, shoff + shentsize * shnum)
    if extent > len(data):
        return extent
    phdr = end + ("IIQQQQQQ" if wide else "IIIIIIII")
    for i in range(phnum):
        f = struct.unpack_from(phdr, data, phoff + i * phentsize)
        offset, filesz = (f[2], f[5]) if wide else (f[1], f[4])
        extent = max(extent, offset + filesz)
    return extent


def library_problem(path: Path) -> "str | None":
    """None when ``path`` is a complete shared library, else what is wrong with it (a 0-byte or
    truncated file, not a shared library)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if not data:
        return "is empty (0 bytes)"
    if data[:4] != b"\x7fELF":
        return None if sys.platform == "darwin" else f"is not an ELF shared library ({len(data)} bytes)"
    need = _elf_extent(data)
    if need > len(data):
        return f"is truncated ({len(data)} of at least {need} bytes)"
    return None


def remove_stale_builds(now: "float | None" = None) -> list:
    """Remove build folders of killed builds from the cache: a dead owner's on this host after
    STALE_DEAD_OWNER_S, any after STALE_ANY_S. Returns the folders removed."""
    now = time.time() if now is None else now
    removed = []
    for entry in cache_dir().iterdir():
        try:
            age = now - entry.stat().st_mtime
            if not (entry.name.startswith(BUILD_PREFIX) or _legacy_build_dir(entry)) or not entry.is_dir():
                continue
        except OSError:
            continue  # its build finished meanwhile
        owner = _BUILD_DIR.match(entry.name)
        dead_here = owner is not None and owner.group(2) == _host() and not _alive(int(owner.group(1)))
        if (dead_here and age > STALE_DEAD_OWNER_S) or age > STALE_ANY_S:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _legacy_build_dir(entry: Path) -> bool:
    return bool(_LEGACY_DIR.match(entry.name)) and entry.is_dir() and all(
        _TARGET.match(f.name) for f in entry.iterdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def load(name: str, cdef: str, sources: Sequence[Path], **kwargs):
    """Build (cached) and dlopen a shared library; returns (ffi, lib). Cached per process."""
    key = (name, cdef, tuple(map(str, sources)), repr(sorted(kwargs.items())))
    found = _loaded.get(key)
    if found is not None:
        return found
    with _LOAD_LOCK:
        if key not in _loaded:
            _loaded[key] = _build_and_open(name, cdef, sources, kwargs)
    return _loaded[key]


def _build_and_open(name: str, cdef: str, sources: Sequence[Path], kwargs: dict):
    path = build_shared(name, sources, **kwargs)
    ffi = cffi.FFI()
    ffi.cdef(cdef)
    try:
        lib = ffi.dlopen(str(path))
    except OSError as err:  # complete but unloadable (corrupt bytes): build it once more
        warnings.warn(f"lowbit: the cached {path} does not load ({err}); rebuilding it", RuntimeWarning)
        lib = ffi.dlopen(str(build_shared(name, sources, rebuild=True, **kwargs)))
    return ffi, lib
