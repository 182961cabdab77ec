import subprocess
import sys

import pytest

import lowbit


def test_public_names_resolve_lazily():
    for name in lowbit.__all__:
        assert getattr(lowbit, name) is not None
    assert callable(lowbit.models.get)


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'quantise'"):
        lowbit.quantise


def test_import_is_light():
    code = "import sys, lowbit; print(any(m.startswith('lowbit.board') or m == 'pynq' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
