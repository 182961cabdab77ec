"""The overlay fixture, the driver binding and the unmodified pynq DMA driver on the simulated board."""
import importlib.util
from pathlib import Path

import pynq
import pynq.lib.dma
import pytest

from lowbit.kernel import wire

GENERATOR = Path(__file__).parent / "fixtures" / "make_fixture.py"
FIXTURES = Path(__file__).resolve().parents[2] / "host" / "lowbit" / "board" / "overlays"


def _generator():
    spec = importlib.util.spec_from_file_location("make_fixture", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("board", ["zcu104", "pynq-z2"])
def test_fixture_is_current(board):
    for rel, text in _generator().files(board).items():
        assert (FIXTURES / rel).read_text() == text, f"{rel} is stale: run python tests/board/fixtures/make_fixture.py"


@pytest.mark.parametrize("board", ["zcu104", "pynq-z2"])
def test_overlay_binds_our_driver_and_the_stock_dma(board):
    import lowbit_drivers
    from lowbit.board import open_simulated

    backend = open_simulated(board)
    overlay = backend.overlay
    assert type(overlay.lowbit_gemm) is lowbit_drivers.LowbitGemm
    assert type(overlay.dma) is pynq.lib.dma.DMA
    assert overlay.ip_dict["lowbit_gemm"]["type"] == wire.VLNV
    assert overlay.lowbit_gemm.id_version == 0  # an HLS output register: 0 until a run wrote it
    assert overlay.lowbit_id.mmio.read(0) == (wire.IP_ID << 16) | wire.WIRE_VERSION  # the ID register
    assert overlay.lowbit_gemm.register_map.ID_VERSION.address == int(wire.Reg.ID_VERSION)
    assert backend.dma.sendchannel._align == 8 and not backend.dma.sendchannel._dre


def test_manifest_matches_wire():
    import json

    manifest = json.loads((FIXTURES / "zcu104" / "manifest.json").read_text())
    assert manifest["wire_version"] == wire.WIRE_VERSION and manifest["vlnv"] == wire.VLNV


def test_a_plain_pynq_overlay_binds_our_driver_through_the_entry_point():
    """Without importing lowbit_drivers: pynq imports it through the 'pynq.lib' entry point."""
    import subprocess
    import sys

    code = ("import sys, pynq\n"
            "from lowbit.board.sim import SimulatedBoard\n"
            "assert 'lowbit_drivers' not in sys.modules\n"
            f"ov = pynq.Overlay({str(FIXTURES / 'zcu104' / 'lowbit_gemm.bit')!r}, download=False, device=SimulatedBoard())\n"
            "print(type(ov.lowbit_gemm).__module__ + '.' + type(ov.lowbit_gemm).__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("lowbit_drivers.gemm.LowbitGemm")


@pytest.mark.parametrize("board", ["zcu104", "pynq-z2"])
def test_a_fresh_overlay_opens_from_its_id_register(board, operands):
    """The IP's ID_VERSION is an HLS s_axilite output: 0 until a run wrote it. Checking it on a fresh
    overlay (the v1 design) refuses every real board; the ID register reads the version at once."""
    from lowbit_drivers import VersionMismatch

    from lowbit.board import open_simulated

    backend = open_simulated(board)  # checks the ID register
    ip = backend.overlay.lowbit_gemm
    assert ip.id_version == 0
    with pytest.raises(VersionMismatch):
        ip.check_version(board)  # what v1 did at open
    a, b = operands("pot:4", 3, 5, 16)
    backend.gemm(a, b)
    assert ip.id_version == (wire.IP_ID << 16) | wire.WIRE_VERSION  # written by the run
    backend.device.reset_pl()
    assert ip.id_version == 0 and backend.overlay.lowbit_id.mmio.read(0) == (wire.IP_ID << 16) | wire.WIRE_VERSION


def test_an_overlay_without_the_id_register_names_the_build(tmp_path):
    import shutil

    import lowbit_drivers  # noqa: F401  registers the IP driver before the Overlay binds drivers

    from lowbit.board import simulated_overlay
    from lowbit.board.errors import BoardError
    from lowbit.board.pynq_backend import PynqBackend
    from lowbit.board.sim import SimulatedBoard
    from lowbit.kernel.boards import ID_CELL

    folder = tmp_path / "zcu104"
    shutil.copytree(Path(simulated_overlay("zcu104")).parent, folder)
    hwh = folder / "lowbit_gemm.hwh"
    hwh.write_text(hwh.read_text().replace(f'"{ID_CELL}"', '"other_gpio"').replace(f'"/{ID_CELL}"', '"/other_gpio"'))
    overlay = pynq.Overlay(str(folder / "lowbit_gemm.bit"), download=False, device=SimulatedBoard())
    with pytest.raises(BoardError, match=rf"no {ID_CELL} ID register.*lowbit build --board zcu104"):
        PynqBackend(overlay, board="zcu104")


def test_a_family_the_bitstream_lacks_comes_back_as_a_status_naming_the_build(operands):
    """A PoT bitstream (its kernel build answers other arithmetic BAD_FORMAT, never hangs): the
    host's error names the bitstream to build."""
    from lowbit.backends.emulation import run_axis_stream
    from lowbit.board import simulated_overlay
    from lowbit.board.errors import KernelError
    from lowbit.board.sim import SimulatedBoard
    from lowbit.board.device import open_pynq
    from lowbit.kernel.boards import build_of

    pot_only = build_of("zcu104", "pot")
    device = SimulatedBoard(kernel=lambda words: run_axis_stream(words, limits=pot_only))
    backend = open_pynq(str(simulated_overlay("zcu104")), device=device)
    a, b = operands("pot:4", 3, 5, 16)
    backend.gemm(a, b)  # its own family runs
    a, b = operands("mls:2,1", 3, 5, 16)
    with pytest.raises(KernelError, match=r"BAD_FORMAT: this bitstream does not carry mls <2,1>.*"
                                          r"lowbit build --board zcu104 --arith mls"):
        backend.gemm(a, b)
    a, b = operands("pot:4", 3, 5, 16)
    backend.gemm(a, b)  # and the board is still usable


def _ip_dict(**cells):
    kinds = {"ip": wire.VLNV, "dma": "xilinx.com:ip:axi_dma:7.1"}
    return {name: {"type": kinds[kind]} for name, kind in cells.items()}


def test_the_units_of_an_overlay_come_from_its_ip_dict():
    """bd_zynq.tcl builds one DMA + IP per compute unit: unit i is lowbit_gemm_<i> / dma_<i>, unit 0
    unsuffixed; every unit is found, in order, whatever the dict's order."""
    from lowbit.board.pynq_backend import unit_cells

    four = _ip_dict(lowbit_gemm_3="ip", dma_2="dma", lowbit_gemm="ip", dma_1="dma", lowbit_gemm_1="ip", dma="dma",
                    lowbit_gemm_2="ip", dma_3="dma")
    assert unit_cells(four) == [("lowbit_gemm", "dma"), ("lowbit_gemm_1", "dma_1"), ("lowbit_gemm_2", "dma_2"),
                                ("lowbit_gemm_3", "dma_3")]
    assert unit_cells(_ip_dict(lowbit_gemm="ip", dma="dma")) == [("lowbit_gemm", "dma")]


@pytest.mark.parametrize("cells, error", [
    (dict(lowbit_gemm="ip", dma="dma", lowbit_gemm_2="ip", dma_2="dma"), r"unit\(s\) 1 missing"),
    (dict(lowbit_gemm="ip", dma="dma", lowbit_gemm_1="ip"), r"unit 1 \(lowbit_gemm_1\) has no AXI DMA named dma_1"),
    (dict(gemm_a="ip", dma="dma"), r"'gemm_a' is not named lowbit_gemm / lowbit_gemm_<i>"),
    (dict(dma="dma"), "holds no lowbit GEMM IP"),
])
def test_a_misbuilt_overlay_is_refused_naming_the_unit(cells, error):
    from lowbit.board.errors import BoardError
    from lowbit.board.pynq_backend import unit_cells

    with pytest.raises(BoardError, match=error):
        unit_cells(_ip_dict(**cells))


def test_the_simulated_zcu104_wires_four_units_from_its_hwh():
    """The fixture holds the board record's units; the simulated board pairs each DMA with the IP
    its streams reach in the .hwh (not by name), and the backend drives the same pairs."""
    from lowbit.board import open_simulated, simulated_overlay
    from lowbit.board.sim import stream_paths
    from lowbit.kernel.boards import BOARDS

    hwh = simulated_overlay("zcu104").with_suffix(".hwh")
    assert BOARDS["zcu104"].compute_units == 4
    assert stream_paths(hwh) == [("dma", "lowbit_gemm"), ("dma_1", "lowbit_gemm_1"), ("dma_2", "lowbit_gemm_2"),
                                 ("dma_3", "lowbit_gemm_3")]
    backend = open_simulated("zcu104")
    assert [(p.dma.cell, p.ip.cell) for p in backend.device.paths] == stream_paths(hwh)
    assert [(u.dma, u.ip) for u in backend.units] == [
        (getattr(backend.overlay, d), getattr(backend.overlay, i)) for d, i in stream_paths(hwh)]
    assert len({u.dma.mmio.base_addr for u in backend.units} | {u.ip.mmio.base_addr for u in backend.units}) == 8
    backend.close()
    assert stream_paths(simulated_overlay("pynq-z2").with_suffix(".hwh")) == [("dma", "lowbit_gemm")]


def test_a_manifest_that_disagrees_with_the_overlay_is_refused(tmp_path):
    import json
    import shutil

    from lowbit.board import simulated_overlay
    from lowbit.board.device import open_pynq
    from lowbit.board.errors import BoardError
    from lowbit.board.sim import SimulatedBoard

    folder = tmp_path / "zcu104"
    shutil.copytree(Path(simulated_overlay("zcu104")).parent, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "compute_units": 2}))
    with pytest.raises(BoardError, match=r"holds 4 compute unit\(s\).*manifest.json says compute_units=2"):
        open_pynq(str(folder / "lowbit_gemm.bit"), device=SimulatedBoard())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "compute_units": 4}))
    assert len(open_pynq(str(folder / "lowbit_gemm.bit"), device=SimulatedBoard()).units) == 4
