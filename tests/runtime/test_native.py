import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lowbit.runtime import native as _build


def test_native_builds_are_cached_per_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path))
    src = tmp_path / "one.c"
    src.write_text("int one(void) { return 1; }\n")
    monkeypatch.setattr(_build, "_cpu_flags", lambda: "flags : avx2")
    first = _build.build_shared("one", [src], flags=["-march=native"], cplus=False)
    assert _build.build_shared("one", [src], flags=["-march=native"], cplus=False) == first  # cached
    monkeypatch.setattr(_build, "_cpu_flags", lambda: "flags : avx512f")
    assert _build.build_shared("one", [src], flags=["-march=native"], cplus=False) != first


def test_missing_compiler_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(RuntimeError, match="apt-get install g\\+\\+"):
        _build.find_compiler(cplus=False)


ONE = "int one(void) { return 1; }\n"


def _one(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "one.c"
    src.write_text(ONE)
    return src


def _call_one(src) -> int:
    _build._loaded.clear()
    _, lib = _build.load("one", "int one(void);", [src], cplus=False)
    return lib.one()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_an_empty_or_truncated_cached_library_is_rebuilt(tmp_path, monkeypatch, damage):
    src = _one(tmp_path, monkeypatch)
    target = _build.build_shared("one", [src], cplus=False)
    good = target.read_bytes()
    target.write_bytes(b"" if damage == "empty" else good[: len(good) // 2])
    assert _build.library_problem(target) is not None
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        assert _build.build_shared("one", [src], cplus=False) == target
    assert _build.library_problem(target) is None and len(target.read_bytes()) == len(good)
    target.write_bytes(good[:-1])
    with pytest.warns(RuntimeWarning, match="truncated"):
        assert _call_one(src) == 1


def test_library_problem_names_what_is_wrong(tmp_path):
    f = tmp_path / "x.so"
    for data, says in [(b"", "empty"), (b"\x7fELF\x02", "truncated"), (b"#!/bin/sh\n", "not an ELF")]:
        f.write_bytes(data)
        assert says in _build.library_problem(f)


def test_a_build_that_writes_an_incomplete_library_fails_and_keeps_nothing(tmp_path, monkeypatch):
    src = _one(tmp_path, monkeypatch)
    real_run = _build.subprocess.run

    def disk_full(cmd, **kwargs):  # the compiler "succeeds" but the disk took half the file
        proc = real_run(cmd, **kwargs)
        out = Path(cmd[cmd.index("-o") + 1])
        out.write_bytes(out.read_bytes()[:100])
        return proc

    monkeypatch.setattr(_build.subprocess, "run", disk_full)
    with pytest.raises(RuntimeError, match="disk full"):
        _build.build_shared("one", [src], cplus=False)
    assert list(_build.cache_dir().iterdir()) == []  # no library, no build folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_build_leaves_no_library_and_its_folder_is_removed(tmp_path, monkeypatch):
    src = _one(tmp_path, monkeypatch)
    slow_cc = tmp_path / "slow-cc"
    slow_cc.write_text("#!/bin/sh\nsleep 60\n")
    slow_cc.chmod(0o755)
    env = {**os.environ, "CC": str(slow_cc), "LOWBIT_CACHE": str(_build.cache_dir())}
    code = ("import importlib.util as u\n"  # _build alone: no torch import, so the test is quick
            f"spec = u.spec_from_file_location('_build', {_build.__file__!r})\n"
            "b = u.module_from_spec(spec); spec.loader.exec_module(b)\n"
            f"b.build_shared('one', [{str(src)!r}], cplus=False)")
    build = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 60
        while not list(_build.cache_dir().glob(_build.BUILD_PREFIX + "*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = list(_build.cache_dir().glob(_build.BUILD_PREFIX + "*"))
        assert left, "the build never started"
        assert _build.remove_stale_builds(now=time.time() + 3600) == []  # its owner is alive: kept
    finally:
        build.kill()  # like an OOM kill or Ctrl-\: no cleanup runs
        build.wait()
    assert list(_build.cache_dir().glob("*.so")) == []  # never half a library under the real name
    assert _build.remove_stale_builds() == []  # a minute's grace
    assert _build.remove_stale_builds(now=time.time() + 2 * _build.STALE_DEAD_OWNER_S) == left


def test_stale_build_folders_are_removed_by_the_next_build(tmp_path, monkeypatch):
    src = _one(tmp_path, monkeypatch)
    cache = _build.cache_dir()
    old = time.time() - 2 * _build.STALE_DEAD_OWNER_S
    folders = {
        "dead": cache / f".build-{_dead_pid()}@{_build._host()}_one-abc",
        "live": cache / f".build-{os.getpid()}@{_build._host()}_one-def",
        "other_host": cache / f".build-{_dead_pid()}@elsewhere_one-ghi",
        "legacy": cache / "tmpab12cd34",
        "not_ours": cache / "tmpzz99zz99",
    }
    for path in folders.values():
        path.mkdir()
        (path / "one-0123456789abcdef.so").write_bytes(b"half")
        os.utime(path, (old, old))
    (folders["not_ours"] / "notes.txt").write_text("a user's file")
    ancient = time.time() - 2 * _build.STALE_ANY_S
    for key in ("legacy", "not_ours"):
        os.utime(folders[key], (ancient, ancient))
    assert _call_one(src) == 1
    assert {k for k, p in folders.items() if p.exists()} == {"live", "other_host", "not_ours"}


def test_a_complete_library_that_does_not_load_is_rebuilt_once(tmp_path, monkeypatch):
    src = _one(tmp_path, monkeypatch)
    assert _call_one(src) == 1
    real_dlopen, calls = _build.cffi.FFI.dlopen, []

    def dlopen_fails_once(self, path, *args):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(f"cannot load library '{path}': invalid ELF header")
        return real_dlopen(self, path, *args)

    monkeypatch.setattr(_build.cffi.FFI, "dlopen", dlopen_fails_once)
    with pytest.warns(RuntimeWarning, match="does not load .*rebuilding it"):
        assert _call_one(src) == 1
    assert len(calls) == 2


def test_threads_that_load_a_library_together_build_it_once(tmp_path, monkeypatch):
    src = _one(tmp_path, monkeypatch)
    real, builds = _build.build_shared, []

    def slow_build(*args, **kwargs):
        builds.append(args[0])
        time.sleep(0.3)  # the window in which an unlocked second thread would start its own build
        return real(*args, **kwargs)

    monkeypatch.setattr(_build, "build_shared", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(_build.load("one_threads", "int one(void);", [src],
                                                                          cplus=False)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == ["one_threads"]
    assert len(results) == 4 and all(r is results[0] for r in results)
    assert results[0][1].one() == 1
