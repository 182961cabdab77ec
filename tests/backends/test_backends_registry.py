"""get_backend: names, shared instances, pass-through, lazy optional backends, errors."""
import sys
import types

import pytest

import lowbit
from lowbit.backends import Backend, get_backend
from lowbit.backends.software import SoftwareBackend


def test_software_by_name_is_shared():
    b = get_backend("software")
    assert isinstance(b, SoftwareBackend) and b is get_backend(" Software ")
    assert lowbit.get_backend("software") is b


def test_instance_passes_through():
    mine = SoftwareBackend()
    assert get_backend(mine) is mine


@pytest.mark.parametrize("bad", ["fpga", "", "soft"])
def test_unknown_name_lists_choices(bad):
    with pytest.raises(ValueError, match="choose one of software, emulation, board"):
        get_backend(bad)


def test_wrong_type_says_what_is_accepted():
    with pytest.raises(ValueError, match="Backend instance"):
        get_backend(3)


def test_emulation_and_board_load_lazily(monkeypatch):
    import lowbit.backends as reg

    class Fake(Backend):
        name = "fake"

        def capabilities(self):
            return None

        def gemm(self, a, b, *, op=None):
            return None

    monkeypatch.setitem(sys.modules, "lowbit.backends.emulation", types.SimpleNamespace(EmulationBackend=Fake))
    calls = []
    monkeypatch.setitem(sys.modules, "lowbit.board.device",
                        types.SimpleNamespace(open_device=lambda how: calls.append(how) or Fake()))
    monkeypatch.setattr(reg, "_instances", {})
    assert isinstance(get_backend("emulation"), Fake)
    assert isinstance(get_backend("board"), Fake) and calls == ["board"]  # a board or an error, never a fallback
    assert isinstance(get_backend("auto"), Fake) and calls == ["board", "auto"]
