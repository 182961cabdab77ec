"""The RTL datapaths (hls/rtl/): equal to the HLS MAC policies under Verilator (==), and their yosys
synthesis equal to the committed hw_cost.json. Built fresh in a temporary folder every run.

Without verilator / yosys the tests skip with the install command, except under CI=true, where a
missing tool fails (make install puts both there)."""
import os
import shutil
from pathlib import Path

import pytest

from lowbit.kernel import hw_cost, rtl


def need(tool: str) -> None:
    try:
        rtl.require(tool)
    except rtl.ToolMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run this test: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    need("verilator")
    need("g++")
    exe = rtl.build_equivalence(tmp_path_factory.mktemp("equiv"))
    return {r.name: r for r in rtl.run_equivalence(exe, seed=20261203)}


# Measured parts whose equivalence check has another name.
PART_CHECKS = {"fp32/add": "fp32 add", "fp32/add-dsp": "fp32-dsp add"}


def simulated_name(d: rtl.Datapath) -> str:
    """The equivalence check of a measured unit (a -lut variant is the same RTL as its base)."""
    name = d.name.replace("-lut", "")
    return f"{name} lanes={d.macs}" if d.kind == "mac" else PART_CHECKS.get(name, name)


# Checks of pieces that are measured only inside a larger unit.
EXTRA_CHECKS = ("scaled_to_f32", "fp32 add", "fp32 mul", "fp32-ftz add", "fp32-ftz mul", "mogami:bf16/mul",
                "mls:4,7 lanes=16", "mls:2,4-pack/guard",
                # Mogami MACs whose accumulator is driven to subnormal, zero, Inf and NaN sums
                "mogami:fp32/edges", "mogami:fp32-dsp/edges", "mogami:bf16-dsp/edges")


@pytest.mark.parametrize("name", sorted({simulated_name(d) for d in rtl.DATAPATHS} | set(EXTRA_CHECKS)))
def test_rtl_equals_hls_policy(equivalence, name):
    assert name in equivalence, f"no equivalence check ran for {name}"
    r = equivalence[name]
    assert r.passed, f"{name}: {r.detail}"
    assert int(r.detail) >= 1000


EXHAUSTIVE = {  # every operand pair at least once: (check, pairs)
    "pot:4 lanes=1": 32 * 32, "pot:4 lanes=16": 32 * 32,
    "mls:2,1 lanes=1": 16 * 16, "mls:2,1 lanes=16": 16 * 16,
    "mls:2,4 lanes=1": 128 * 128, "mls:2,4 lanes=3": 128 * 128, "mls:2,4 lanes=4": 128 * 128,
    "mls:2,4 lanes=16": 128 * 128,
    "mls:2,4-pack lanes=2": 128 ** 3,  # every (a1, a2, b) code triple of a PE pair
    "mls:2,4-pack/guard": 32 ** 3,  # every significand triple of the packed product
}


@pytest.mark.parametrize("name,pairs", sorted(EXHAUSTIVE.items()))
def test_exhaustive_checks_cover_every_pair(equivalence, name, pairs):
    assert int(equivalence[name].detail) >= pairs


@pytest.mark.parametrize("name", ["mls:4,7 lanes=1", "mls:4,7/finish", "fp32 add", "fp32 mul",
                                  "mogami:fp32/mul", "mogami:fp32 lanes=1", "fp32 lanes=1", "fp32-dsp add",
                                  "mogami:fp32-dsp lanes=1", "mogami:fp32-dsp/edges", "mls:2,4/finish-dsp"])
def test_wide_datapaths_see_millions_of_random_operands(equivalence, name):
    assert int(equivalence[name].detail) >= 1_000_000


def _break(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_a_wrong_datapath_is_caught(tmp_path, monkeypatch):
    """The checks can fail: the PoT lane with the INT4 add off by one (ca + cb - 1); the PE pair
    with its packed products two places too close (2 SIGW - 1: a low product reaches the high one); the DSP
    adder without the sticky bit of its alignment product; the Mogami MAC's adder (fp32_add_mac) taking a
    near-case left shift of 1 through its product, which drops the difference's leading bit (the
    same Mogami product into the all-LUT adder still passes)."""
    need("verilator")
    need("g++")
    bad = tmp_path / "rtl"
    shutil.copytree(rtl.RTL_DIR, bad)
    _break(bad / "pot.v", "- 5'd2;", "- 5'd1;")
    _break(bad / "mls.v", "localparam G = 2 * SIGW + 1;", "localparam G = 2 * SIGW - 1;")
    _break(bad / "fp32_dsp.v", "prod[50:24] | {26'd0, |prod[23:0]};\n    wire [27:0] sum_far",
           "prod[50:24];\n    wire [27:0] sum_far")
    _break(bad / "fp32_dsp.v", "(diff != 0) & (lshift_near >= 5'd2)", "(diff != 0) & (lshift_near >= 5'd1)")
    monkeypatch.setattr(rtl, "RTL_DIR", bad)
    monkeypatch.setattr(rtl, "HARNESS", bad / "sim" / "equiv.cpp")
    results = {r.name: r for r in rtl.run_equivalence(rtl.build_equivalence(tmp_path / "b"), seed=1, scale=0.01)}
    assert not results["pot:4 lanes=1"].passed and not results["pot:4 lanes=16"].passed
    assert not results["mls:2,4-pack lanes=2"].passed and not results["mls:2,4-pack lanes=6"].passed
    assert not results["fp32-dsp add"].passed and not results["mls:2,4/finish-dsp"].passed
    assert not results["mogami:fp32-dsp lanes=1"].passed and not results["mogami:fp32-dsp/edges"].passed
    assert results["mogami:fp32 lanes=1"].passed and results["mogami:fp32/edges"].passed
    assert results["mls:2,1 lanes=1"].passed and results["mls:2,4 lanes=3"].passed and results["fp32 add"].passed


# ------------------------------------------------------------------------------------------------
# Synthesis
# ------------------------------------------------------------------------------------------------
COMPARED = ("luts", "ffs", "carry", "dsps", "macs", "kind")
# Re-synthesised in every run (both families): the units the kernel model reads and the baselines
# of the ratios, about a minute on 2 cores. LOWBIT_RTL_FULL=1 re-synthesises every row (~3 min on
# 2 idle cores). Every row is also tied to the RTL it measured by its digest (below).
CHECKED = (("pot:4", 1), ("pot:4", 4), ("mls:2,1", 4), ("mls:2,4", 1), ("mls:2,4", 4), ("mogami:fp32", 1),
           ("fp32", 1), ("fp32-ftz", 1), ("int8", 1), ("mls:2,4-pack", 6), ("mogami:fp32-dsp", 1),
           ("mls:2,4/finish-dsp", 0))


def test_committed_rows_were_measured_from_this_rtl():
    digest = rtl.rtl_digest()
    stale = sorted({r["datapath"] for r in hw_cost.load() if r["rtl"] != digest})
    assert not stale, (f"hw_cost.json rows {stale} were measured from other RTL than hls/rtl/ now holds: "
                       f"run `python benchmarks/hw_cost.py --write`")


@pytest.fixture(scope="module")
def fresh_rows():
    need("yosys")
    committed = hw_cost.load()
    version = rtl.yosys_version()
    versions = {r["yosys"] for r in committed}
    if versions != {version}:
        pytest.fail(f"hw_cost.json was measured with yosys {', '.join(sorted(versions))}, this is {version}: "
                    f"cell counts are only reproducible with the same version; install it or regenerate "
                    f"with `python benchmarks/hw_cost.py --write`")
    full = os.environ.get("LOWBIT_RTL_FULL") == "1"
    units = [d for d in rtl.DATAPATHS if full or (d.name, d.macs) in CHECKED]
    assert full or len(units) == len(CHECKED)
    return rtl.measure(units)


def test_committed_hw_cost_equals_a_fresh_synthesis(fresh_rows):
    committed = {(r["datapath"], r["macs"], r["family"]): r for r in hw_cost.load()}
    assert {(d.name, d.macs, f) for d in rtl.DATAPATHS for f in rtl.FAMILIES} == set(committed)
    for r in fresh_rows:
        key = (r["datapath"], r["macs"], r["family"])
        c = committed[key]
        assert {k: c[k] for k in COMPARED} == {k: r[k] for k in COMPARED}, key


def test_every_datapath_maps_to_real_cells(fresh_rows):
    for r in fresh_rows:
        assert r["luts"] + r["dsps"] > 0, r
        if r["kind"] == "mac":  # the accumulator: flip-flops, or a DSP's own P register
            assert r["ffs"] >= 8 or r["dsps"] >= 1, r
        if r["datapath"].endswith("-lut"):
            assert r["dsps"] == 0


def test_missing_yosys_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", str(Path("/nonexistent")))
    with pytest.raises(rtl.ToolMissing, match="yosys not found on PATH.*apt-get install yosys"):
        rtl.synthesise(rtl.DATAPATHS[0], "xc7")
    with pytest.raises(rtl.ToolMissing, match="verilator not found on PATH.*apt-get install verilator"):
        rtl.build_equivalence(Path("/nonexistent"))
