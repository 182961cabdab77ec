"""The build scripts against the sources, without the Xilinx tools."""
import json
import re
from pathlib import Path

import pytest

from lowbit.apps import build
from lowbit.kernel import wire

ROOT = Path(__file__).resolve().parents[2]
TCL = ROOT / "tcl"


def _cpp_signature(top: str) -> str:
    src = (ROOT / "hls" / "kernels" / top / f"{top}.cpp").read_text()
    m = re.search(rf"void {top}\(([^)]*)\)\s*{{", src)
    assert m, f"top {top} not defined in its .cpp"
    return m.group(1)


def _params(signature: str):
    return [re.split(r"[\s&*]+", p.strip())[-1] for p in signature.split(",")]


def test_hls_script_files_exist_and_tops_match():
    text = (TCL / "hls.tcl").read_text()
    paths = re.findall(r"\b(hls/[\w/.]+\.(?:cpp|hpp|h))\b", text)
    assert len(paths) >= 7
    for rel in paths:
        assert (ROOT / rel).is_file(), rel
    for top in ("lowbit_gemm_axis", "lowbit_gemm_mm"):
        assert f"top {top}" in text
        _cpp_signature(top)
    for header in (ROOT / "hls" / "include" / "lowbit").glob("*.hpp"):
        assert f"hls/include/lowbit/{header.name}" in text, f"{header.name} not added to the HLS project"
    vendor, library, name, version = wire.VLNV.split(":")
    assert f"set VENDOR {vendor}" in text and f"set LIBRARY {library}" in text and f"set VERSION {version}" in text
    assert f"ipname {name}" in text
    assert "hls/csim" not in text  # the g++ shims stay off the Vitis include path


def test_block_design_matches_ip_ports_and_parts():
    text = (TCL / "bd_zynq.tcl").read_text()
    params = _params(_cpp_signature("lowbit_gemm_axis"))
    src = (ROOT / "hls" / "kernels" / "lowbit_gemm_axis" / "lowbit_gemm_axis.cpp").read_text()
    assert re.search(r"set IP_IN (\w+)", text).group(1) == params[0]
    assert re.search(r"set IP_OUT (\w+)", text).group(1) == params[1]
    bundle = re.search(r"port\s*=\s*return\s+bundle\s*=\s*(\w+)", src).group(1)
    assert re.search(r"set IP_CTRL (\w+)", text).group(1) == f"s_axi_{bundle}"
    for port in ("in_stream", "out_stream"):
        assert re.search(rf"mode\s*=\s*axis\s+port\s*=\s*{port}\b", src)
    assert f"set IP_VLNV {wire.VLNV}" in text
    assert "pynq-z2 [dict create part xc7z020clg400-1" in text
    assert "zcu104 [dict create part xczu7ev-ffvc1156-2-e" in text
    assert "CONFIG.c_include_sg {0}" in text
    for width in ("c_m_axis_mm2s_tdata_width {64}", "c_s_axis_s2mm_tdata_width {64}"):
        assert width in text
    assert build.BOARDS["pynq-z2"].part == "xc7z020clg400-1" and build.BOARDS["zcu104"].part == "xczu7ev-ffvc1156-2-e"


def test_axilite_offsets_are_the_wire_registers():
    src = (ROOT / "hls" / "kernels" / "lowbit_gemm_axis" / "lowbit_gemm_axis.cpp").read_text()
    for reg, port in ((wire.Reg.STATUS, "status"), (wire.Reg.ID_VERSION, "id_version"), (wire.Reg.CYCLES, "cycles")):
        assert re.search(rf"port\s*=\s*{port}\s+offset\s*=\s*0x{int(reg):X}\b", src, re.I), port
        assert port in _params(_cpp_signature("lowbit_gemm_axis"))


@pytest.mark.parametrize("board", ["u50", "u250"])
def test_alveo_connectivity_matches_kernel_ports(board):
    from lowbit.kernel import boards

    cfg = (TCL / f"alveo_{board}.cfg").read_text()
    record = boards.BOARDS[board]
    params = _params(_cpp_signature("lowbit_gemm_mm"))
    cus = record.compute_units
    names = ".".join(f"lowbit_gemm_mm_{i + 1}" for i in range(cus))
    assert f"nk=lowbit_gemm_mm:{cus}:{names}" in cfg
    for i, bank in enumerate(record.memory_banks):  # each unit on the bank the record gives it
        for port in ("in", "out", "result"):
            assert f"sp=lowbit_gemm_mm_{i + 1}.{port}:{bank}" in cfg
    for port in re.findall(r"sp=lowbit_gemm_mm_\d+\.(\w+):", cfg):
        assert port in params
    flow = (TCL / "vpp_build.sh").read_text()
    assert f"alveo_$board.cfg" in flow and "hls/kernels/lowbit_gemm_mm/lowbit_gemm_mm.cpp" in flow
    assert "--kernel_frequency" in flow and '"$define"' in flow
    assert (ROOT / "hls/kernels/lowbit_gemm_mm/lowbit_gemm_mm.cpp").is_file()
    assert f"{board})" in flow


def test_m_axi_depth_covers_the_largest_golden_stream():
    """The depth counts port elements: 512-bit beats of 8 words (cosim sizes its memories by it)."""
    from lowbit.kernel import reference as reference_kernel

    src = (ROOT / "hls/kernels/lowbit_gemm_mm/lowbit_gemm_mm.cpp").read_text()
    header = (ROOT / "hls/kernels/lowbit_gemm_mm/lowbit_gemm_mm.h").read_text()
    assert "typedef ap_uint<512> lowbit_beat;" in header and "const lowbit_beat* in, lowbit_beat* out" in header
    depth = {port: int(d) * 8 for port, d in re.findall(r"port=(in|out)\b.*?depth=(\d+)", src)}
    cases = reference_kernel.golden_cases(seed=4)
    assert depth["in"] >= max(len(w) for _, w in cases)
    assert depth["out"] >= max(len(reference_kernel.run_stream(w)[0]) for _, w in cases)


def test_zynq_flow_takes_clock_width_and_units_from_the_record():
    from lowbit.kernel import boards

    text = (TCL / "bd_zynq.tcl").read_text()
    assert "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $clock_mhz" in text
    assert "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $clock_mhz" in text
    assert "PSU__SAXIGP${gp}__DATA_WIDTH $hp_bits" in text and "c_m_axi_mm2s_data_width $hp_bits" in text
    assert "component.xml" in text  # refuses a folder that is not the unpacked IP
    assert f"set ID_CELL {boards.ID_CELL}" in text and "C_ALL_INPUTS {1}" in text
    for name in ("zcu104", "pynq-z2"):
        cmd = build.plan(build.BOARDS[name], Path("/tmp/out"), Path("/tmp/golden"), "csim", "pot")[1]
        rec = boards.BOARDS[name]
        args = cmd[cmd.index("-tclargs") + 1:]
        assert args[0] == name and args[1].endswith("sol/impl/ip")
        assert args[3:] == [f"{rec.clock_mhz:g}", str(rec.hp_bits), str(rec.compute_units),
                            str((wire.IP_ID << 16) | wire.WIRE_VERSION)]
    assert boards.ZCU104.clock_mhz == 200 and boards.ZCU104.hp_bits == 128
    hls_cmd = build.plan(build.BOARDS["zcu104"], Path("/tmp/out"), Path("/tmp/golden"), "csim", "pot")[0]
    assert hls_cmd[-1] == "-DLOWBIT_BOARD=zcu104_pot" and hls_cmd[hls_cmd.index("-tclargs") + 3] == "5.0"


def test_kernel_sources_have_nothing_unsynthesisable():
    for path in list((ROOT / "hls" / "kernels").rglob("*.[ch]pp")) + list((ROOT / "hls" / "kernels").rglob("*.h")) \
            + list((ROOT / "hls" / "include" / "lowbit").glob("*.hpp")):
        text = re.sub(r"//.*", "", path.read_text())
        for bad in (r"\bnew\b", r"\bmalloc\b", r"\bthrow\b", r"\btry\b", r"std::vector", r"std::map", r"#include <vector>",
                    r"#include <string>", r"printf"):
            assert not re.search(bad, text), f"{path.name}: {bad}"


def test_build_stops_at_once_naming_the_missing_tool(monkeypatch, capsys):
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.main(["--board", "pynq-z2"]) == 2
    err = capsys.readouterr().err
    assert "vitis_hls" in err and "vivado" in err and "not found on PATH" in err
    assert build.main(["--board", "u50"]) == 2
    assert "v++" in capsys.readouterr().err


def test_build_plan_uses_the_scripts():
    cmds = build.plan(build.BOARDS["zcu104"], Path("/tmp/out"), Path("/tmp/golden"), "csim,csynth,export")
    assert cmds[0][:3] == ["vitis_hls", "-f", str(TCL / "hls.tcl")]
    assert "lowbit_gemm_axis" in cmds[0] and "xczu7ev-ffvc1156-2-e" in cmds[0]
    assert cmds[1][0] == "vivado" and str(TCL / "bd_zynq.tcl") in cmds[1] and "zcu104" in cmds[1]
    for cmd in cmds:
        for arg in cmd:
            if arg.startswith(str(ROOT / "tcl")):
                assert Path(arg).is_file(), arg


def test_manifest_round_trip(tmp_path):
    (tmp_path / "lowbit_gemm.bit").write_bytes(b"\x00\x01bit")
    (tmp_path / "lowbit_gemm.hwh").write_text("<hwh/>")
    path = build.write_manifest(tmp_path, "pynq-z2", ["lowbit_gemm.bit", "lowbit_gemm.hwh"],
                                tool_version="vivado v2023.2", commit="abc123")
    m = json.loads(path.read_text())
    assert m["wire_version"] == wire.WIRE_VERSION and m["vlnv"] == wire.VLNV and m["source_commit"] == "abc123"
    assert m["files"]["lowbit_gemm.bit"]["sha256"] == build.sha256_file(tmp_path / "lowbit_gemm.bit")
    assert build.verify_manifest(tmp_path)["board"] == "pynq-z2"
    (tmp_path / "lowbit_gemm.bit").write_bytes(b"changed")
    with pytest.raises(ValueError, match="sha256"):
        build.verify_manifest(tmp_path)
    m["wire_version"] = wire.WIRE_VERSION + 1
    path.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="wire version"):
        build.verify_manifest(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        build.write_manifest(tmp_path, "u50", ["lowbit_gemm.xclbin"], tool_version="v++")


def test_check_command_reports(capsys, monkeypatch):
    """Exit 0 when what emulation needs is there (the Xilinx tools are optional); 1, naming it, when not."""
    from lowbit.apps import check

    assert check.main(["--no-build"]) == 0
    out = capsys.readouterr().out
    assert "C++ compiler" in out and "ap_int headers" in out and "vitis_hls" in out
    monkeypatch.setattr(check, "_compiler", lambda: (_ for _ in ()).throw(RuntimeError("no C++ compiler found")))
    assert check.main(["--no-build"]) == 1
    assert "FAIL C++ compiler" in capsys.readouterr().out


def test_variable_bound_loops_have_tripcounts():
    """Every loop of the engine and tops whose bound comes from the header carries LOOP_TRIPCOUNT."""
    files = [ROOT / "hls/include/lowbit/gemm.hpp", ROOT / "hls/kernels/lowbit_gemm_axis/lowbit_gemm_axis.cpp"]
    for path in files:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.search(r"\bfor \(.*<\s*(h\.|k1|nb\b)|\bwhile \(!done\)", line):
                window = "\n".join(lines[i + 1:i + 3])
                assert "LOOP_TRIPCOUNT" in window, f"{path.name}:{i + 1}: {line.strip()}"


def test_m_axi_top_reads_and_writes_in_sequential_unconditional_loops():
    """UG1399 infers an m_axi burst only for sequential accesses in a pipelined loop without
    conditional access: the engine reads a stream, never the port."""
    src = (ROOT / "hls/kernels/lowbit_gemm_mm/lowbit_gemm_mm.cpp").read_text()
    assert "#pragma HLS DATAFLOW" in src and "max_read_burst_length=64" in src
    load = re.search(r"load_input:\s*for \(uint32_t i = 0; i < n; i\+\+\) \{(.*?)\n    \}", src, re.S).group(1)
    assert "if" not in re.sub(r"#pragma.*", "", load) and "beats.write(in[i]);" in load
    store = re.search(r"store_output:\s*do \{(.*?)\} while", src, re.S).group(1)
    assert "if" not in re.sub(r"#pragma.*", "", store) and "out[i++] = b.data;" in store
    body = re.sub(r"//.*", "", src.split("namespace {", 1)[1].split("void load_beats", 1)[0])
    assert "in[" not in body and "p[" not in body  # the sources read streams, not the port
