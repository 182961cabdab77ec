"""hw_cost.json (measured with yosys, tests/hls/test_rtl.py re-measures it): the loader, the docs
tables generated from it, the kernel model reading it, and the benchmark's bad-input path."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.kernel import hw_cost, rtl

REPO = Path(__file__).resolve().parents[2]


def test_every_measured_unit_has_a_row_per_family():
    rows = hw_cost.load()
    keys = {(r["datapath"], r["macs"], r["family"]) for r in rows}
    assert len(keys) == len(rows)
    assert keys == {(d.name, d.macs, f) for d in rtl.DATAPATHS for f in rtl.FAMILIES}
    for r in rows:
        assert set(r) == set(hw_cost.KEYS)
        if r["kind"] == "mac":
            assert r["luts_per_mac"] == round(r["luts"] / r["macs"], 2)
        else:
            assert r["macs"] == 0 and r["luts_per_mac"] is None


def test_per_mac_divides_by_the_lanes():
    r = hw_cost.lookup("pot:4", "xcup", lanes=4)
    p = hw_cost.per_mac("pot:4", "xcup", lanes=4)
    assert (p.luts, p.ffs, p.dsps, p.lanes) == (r["luts"] / 4, r["ffs"] / 4, r["dsps"] / 4, 4)
    assert hw_cost.lookup("mls:2,1", "xc7")["macs"] == 1  # default: one lane


def test_lookup_errors_name_what_exists():
    with pytest.raises(KeyError, match="no measured datapath 'mls:9,9' on xc7; measured: .*pot:4"):
        hw_cost.lookup("mls:9,9", "xc7")
    with pytest.raises(ValueError, match="family 'xc6' not measured"):
        hw_cost.lookup("pot:4", "xc6")
    with pytest.raises(KeyError, match=r"lanes \[1, 4, 16\], not 3"):
        hw_cost.lookup("pot:4", "xc7", lanes=3)
    with pytest.raises(ValueError, match="is a part"):
        hw_cost.per_mac("pot:4/finish", "xc7")


def test_a_broken_file_gives_a_clear_error(tmp_path):
    bad = tmp_path / "hw_cost.json"
    bad.write_text(json.dumps([{"datapath": "pot:4"}]))
    with pytest.raises(ValueError, match="row 'pot:4' lacks .*benchmarks/hw_cost.py --write"):
        hw_cost.load(bad)
    with pytest.raises(FileNotFoundError, match="benchmarks/hw_cost.py --write"):
        hw_cost.load(tmp_path / "absent.json")


def test_low_bit_macs_are_cheaper_than_the_fp32_mac():
    """The measured claim the docs make (in LUTs, not joules)."""
    for fam in rtl.FAMILIES:
        fp32 = hw_cost.lookup("fp32", fam)["luts"]
        ftz = hw_cost.lookup("fp32-ftz", fam)["luts"]
        assert ftz < fp32
        for name in ("pot:4", "mls:2,1", "mls:2,4", "int8"):
            assert hw_cost.per_mac(name, fam, 1).luts * 3 < ftz, (name, fam)


@pytest.mark.parametrize("doc,render,splice", [
    ("hardware.md", hw_cost.markdown, hw_cost.splice),
    ("energy.md", hw_cost.energy_markdown, hw_cost.splice_energy),
])
def test_docs_tables_are_generated_from_the_json(doc, render, splice):
    text = (REPO / "docs" / doc).read_text()
    assert splice(text, render()) == text, f"docs/{doc} is stale: run `python benchmarks/hw_cost.py --write`"


def test_energy_ratios_come_from_the_energy_tables():
    from lowbit.energy.tables import get_table

    t = get_table("mls65")
    assert hw_cost.energy_ratio("mls:2,4", "mls65") == pytest.approx((2.311 + 0.512) / (0.124 + 0.065))
    assert hw_cost.energy_ratio("pot:4", "mls65") == pytest.approx(
        (t.pj("fp32_mul") + t.pj("fp32_add")) / (t.pj("xor") + t.pj("int4_add") + t.pj("int_add")))


def test_kernel_model_reads_the_measurement():
    """The kernel resource model's LUT and DSP per MAC are hw_cost.json's row of the variant it
    chose, at the PE's width (a PE pair: 2 x K-SIMD products); its finisher's are the part's row."""
    from lowbit.kernel import boards, model

    for cfg in boards.BOARDS.values():
        for family in ("pot", "mls", "mogami"):
            d = model.datapath(cfg, family)
            assert d.source.startswith("hw_cost.json"), (cfg.name, family, d.source)
            assert d.pe in model.PE_VARIANTS[family]
            fam = model.fpga_family(cfg)
            simd = cfg.array(family).simd
            lanes = 2 * simd if d.pe.endswith("-pack") else simd
            measured = {r["macs"] for r in hw_cost.load() if r["datapath"] == d.pe and r["family"] == fam}
            want = hw_cost.per_mac(d.pe, fam, lanes if lanes in measured else 1)
            assert (d.luts_per_mac, d.dsps_per_mac) == (want.luts, want.dsps), (cfg.name, family)
            if family != "mogami":
                row = hw_cost.lookup(d.finisher, fam)
                assert (d.finisher_luts, d.finisher_dsps) == (row["luts"], row["dsps"]), (cfg.name, family)


def test_benchmark_without_yosys_says_how_to_install(tmp_path):
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(REPO / "host")}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "hw_cost.py")], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: yosys not found on PATH")
    assert "apt-get install yosys" in proc.stderr


def test_benchmark_committed_json_has_the_issue_keys():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "hw_cost.py"), "--committed", "--json"],
                          capture_output=True, text=True, check=True)
    rows = json.loads(proc.stdout)
    for key in ("datapath", "family", "luts", "ffs", "dsps", "macs", "luts_per_mac"):
        assert all(key in r for r in rows)
    names = {r["datapath"] for r in rows}
    assert {"pot:4", "mls:2,1", "mls:2,4", "mls:4,7", "mogami:fp32", "fp32", "fp32-lut", "int8"} <= names
    assert {r["family"] for r in rows} == {"xc7", "xcup"}
