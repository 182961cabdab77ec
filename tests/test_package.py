import subprocess
import sys

import pytest

import lowbit


def test_public_names_resolve_lazily():
    import importlib

    for name, module in lowbit._LAZY.items():
        assert getattr(lowbit, name) is getattr(importlib.import_module(module), name)
        assert callable(getattr(lowbit, name)), name
    for name, module in lowbit._SUBMODULES.items():
        assert getattr(lowbit, name) is importlib.import_module(module)
    assert lowbit.parse("mls:2,1") == lowbit.numerics.formats.MLS(2, 1)


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'quantise'"):
        lowbit.quantise


def test_import_is_light():
    code = "import sys, lowbit; print(any(m.startswith('lowbit.board') or m == 'pynq' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
