"""open_device and the manifest / version checks; pynq 3.0/3.1 vs 4.0 branches."""
import json
import shutil
import sys
import types

import pytest

from lowbit.kernel import wire
from lowbit.board import compat, simulated_overlay
from lowbit.board.device import ManifestMismatch, open_device, read_manifest

FIXTURE = str(simulated_overlay("zcu104").parent)


def copy_fixture(tmp_path, **manifest_changes):
    folder = tmp_path / "zcu104"
    shutil.copytree(FIXTURE, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(manifest_changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_open_pynq_on_a_folder_with_the_simulated_device(tmp_path, operands, emulation):
    import torch

    from lowbit.board.sim import SimulatedBoard

    backend = open_device("pynq", bitstream=copy_fixture(tmp_path), device=SimulatedBoard())
    assert backend.name == "board" and backend.board == "zcu104"
    a, b = operands("mls:2,1", 3, 4, 8)
    assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))


def test_manifest_with_another_wire_version_is_refused(tmp_path):
    folder = copy_fixture(tmp_path, wire_version=wire.WIRE_VERSION + 1)
    with pytest.raises(ManifestMismatch, match=r"wire version 2.*lowbit build --board zcu104"):
        open_device("pynq", bitstream=folder / "lowbit_gemm.bit")


def test_manifest_missing_or_foreign_ip(tmp_path):
    folder = copy_fixture(tmp_path, vlnv="xilinx.com:hls:other:1.0")
    with pytest.raises(ManifestMismatch, match="describes IP xilinx.com:hls:other"):
        read_manifest(folder / "lowbit_gemm.bit")
    (folder / "manifest.json").unlink()
    with pytest.raises(ManifestMismatch, match="no manifest.json"):
        read_manifest(folder / "lowbit_gemm.bit")


def test_argument_errors():
    with pytest.raises(ValueError, match=r"unknown device kind .fpga.; choose one of pynq, alveo, board, emulation, auto, remote:HOST\[:PORT\]"):
        open_device("fpga")
    with pytest.raises(ValueError, match="needs bitstream="):
        open_device("pynq")
    with pytest.raises(ValueError, match="needs xclbin="):
        open_device("alveo")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_device("pynq", bitstream="no/such/board.bit")


def test_auto_without_a_board_uses_emulation_and_says_so(capsys):
    backend = open_device("auto")
    assert backend.name == "emulation"
    assert "no PYNQ board or Alveo card found; using the emulation backend" in capsys.readouterr().err


def test_emulation_kind():
    assert open_device("emulation").name == "emulation"


@pytest.mark.parametrize("version,ok", [("3.0.1", True), ("3.1.2", True), ("4.0.0", True), ("2.7.0", False),
                                        ("5.0", False)])
def test_supported_pynq_versions(monkeypatch, version, ok):
    import pynq

    monkeypatch.setattr(pynq, "__version__", version)
    if ok:
        assert compat.check_supported()[:2] == tuple(int(p) for p in version.split(".")[:2])
    else:
        with pytest.raises(RuntimeError, match="needs pynq 3.0 to 4.x"):
            compat.check_supported()


def test_metadata_parser_falls_back_to_the_pynq_3_0_location(monkeypatch):
    sentinel = type("RuntimeMetadataParser", (), {})
    monkeypatch.setitem(sys.modules, "pynqmetadata.views.runtime", None)  # pynq 3.0: no such module
    monkeypatch.setitem(sys.modules, "pynq.metadata", types.ModuleType("pynq.metadata"))
    monkeypatch.setitem(sys.modules, "pynq.metadata.runtime_metadata_parser",
                        types.SimpleNamespace(RuntimeMetadataParser=sentinel))
    assert compat.runtime_metadata_parser() is sentinel
    monkeypatch.setitem(sys.modules, "pynq.metadata.runtime_metadata_parser", None)
    with pytest.raises(ImportError, match="reinstall pynq"):
        compat.runtime_metadata_parser()


def test_simulated_board_under_the_pynq_3_0_api(monkeypatch, operands, emulation):
    """pynq 3.0: version string 3.0.x and the parser from pynq.metadata; the board path is unchanged."""
    import pynq
    import torch
    from pynqmetadata.views.runtime import RuntimeMetadataParser

    from lowbit.board import open_simulated

    monkeypatch.setattr(pynq, "__version__", "3.0.1")
    monkeypatch.setitem(sys.modules, "pynqmetadata.views.runtime", None)
    monkeypatch.setitem(sys.modules, "pynq.metadata", types.ModuleType("pynq.metadata"))
    monkeypatch.setitem(sys.modules, "pynq.metadata.runtime_metadata_parser",
                        types.SimpleNamespace(RuntimeMetadataParser=RuntimeMetadataParser))
    backend = open_simulated("pynq-z2")
    assert compat.pynq_version()[:2] == (3, 0)
    a, b = operands("pot:4", 5, 3, 16)
    assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))


def test_overlay_built_before_the_driver_is_registered_is_refused(monkeypatch):
    """The binding happens when the Overlay is built: a DefaultIP there means drivers came too late."""
    import pynq
    from pynq.overlay import _ip_drivers

    from lowbit.board import BoardError
    from lowbit.board.pynq_backend import PynqBackend
    from lowbit.board.sim import SimulatedBoard

    monkeypatch.delitem(_ip_drivers, wire.VLNV)
    monkeypatch.delitem(_ip_drivers, wire.VLNV.rpartition(":")[0])
    overlay = pynq.Overlay(f"{FIXTURE}/lowbit_gemm.bit", download=False, device=SimulatedBoard())
    assert type(overlay.lowbit_gemm) is pynq.DefaultIP
    with pytest.raises(BoardError, match="overlay.lowbit_gemm is a DefaultIP.*import lowbit_drivers before"):
        PynqBackend(overlay)


def test_auto_picks_a_pynq_board_with_a_bitstream_folder(monkeypatch, tmp_path, capsys):
    import lowbit.board.device as device
    from lowbit.board.sim import SimulatedBoard

    copy_fixture(tmp_path)
    monkeypatch.setattr(device, "REPO_BITSTREAMS", tmp_path)
    monkeypatch.setattr(device, "pynq_board_present", lambda: True)
    backend = device.open_device("auto", device=SimulatedBoard())
    assert backend.name == "board" and backend.board == "zcu104"
    assert "PYNQ board with" in capsys.readouterr().err


def test_auto_with_a_board_but_no_bitstream_says_so(monkeypatch, tmp_path, capsys):
    import lowbit.board.device as device

    monkeypatch.setattr(device, "REPO_BITSTREAMS", tmp_path)
    monkeypatch.setattr(device, "pynq_board_present", lambda: True)
    assert device.open_device("auto").name == "emulation"
    assert "a PYNQ board but no bitstream" in capsys.readouterr().err


def test_missing_pynq_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynq", None)
    with pytest.raises(ImportError, match=r"pip install 'lowbit\[board\]'"):
        open_device("pynq", bitstream=f"{FIXTURE}/lowbit_gemm.bit")


def test_a_file_replaced_after_the_build_is_refused(tmp_path):
    folder = copy_fixture(tmp_path)
    hwh = folder / "lowbit_gemm.hwh"
    hwh.write_text(hwh.read_text().replace("lowbit_gemm", "lowbit_gemm", 1) + "<!-- edited -->\n")
    with pytest.raises(ManifestMismatch, match="sha256 differs"):
        read_manifest(folder / "lowbit_gemm.bit")


def test_manifest_kernel_limits_reach_the_backend_with_a_warning(tmp_path):
    from lowbit.board.sim import SimulatedBoard

    folder = copy_fixture(tmp_path, kernel_limits={"a_elems": 16384, "scale_buf": 8192})
    with pytest.warns(UserWarning, match="A_ELEMS=16384.*not bit for bit"):
        backend = open_device("pynq", bitstream=folder, device=SimulatedBoard())
    assert (backend.limits.a_elems, backend.limits.scale_buf) == (16384, 8192)
