import pytest

from lowbit import _build


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
