"""The MLS paper's energy figures reproduced from our counts (docs/energy.md explains each one)."""
import pytest
import torch

from lowbit import models
from lowbit.energy import conv3x3_ratio, count_training_step, estimate, get_table
from lowbit.energy.model import TABLE5_PRINTED, table5


@pytest.fixture(scope="module")
def resnet18_counts():
    torch.manual_seed(0)
    return count_training_step(models.get("resnet18"), (3, 224, 224), fmt="mls:2,4")


@pytest.fixture(scope="module")
def resnet34_estimate():
    torch.manual_seed(0)
    return estimate(models.get("resnet34"), (3, 224, 224), "mls:2,4", "mls65", fp32_layers="linear")


def test_table1_resnet20_forward_conv_macs():
    c = count_training_step(models.get("resnet20"), (3, 32, 32))
    # 3x3 convs: 16*32*32*3*9 + 6*(16*32*32*16*9) + ... written out per stage
    stem = 16 * 32 * 32 * 3 * 9
    stage = lambda co, hw, ci_first: co * hw * hw * 9 * (ci_first + 5 * co)  # noqa: E731
    assert c.macs("fwd", "conv") == stem + stage(16, 32, 16) + stage(32, 16, 16) + stage(64, 8, 32) == 40_550_400
    assert f"{c.macs('fwd', 'conv'):.2e}" == "4.06e+07"  # the paper prints 4.05E+07 (truncated)


def test_table1_resnet18_forward_conv_macs_and_ew_adds(resnet18_counts):
    c = resnet18_counts
    stem = 64 * 112 * 112 * 3 * 49
    layer1 = 4 * 64 * 56 * 56 * 64 * 9
    later = 128 * 28 * 28 * 9 * (64 + 3 * 128) + 128 * 28 * 28 * 64  # incl. the 1x1 projection
    assert c.macs("fwd", "conv") == stem + layer1 + 3 * later == 1_813_561_344
    # Table 1 prints 1.88E9: 3.5% above the architecture's count (docs/energy.md)
    assert abs(c.macs("fwd", "conv") / 1.88e9 - 1) < 0.04
    f = c.frame
    ew = f[(f.part == "ewadd") & (f.op == "fp32_add")].groupby("phase")["count"].sum()
    assert f"{ew['fwd']:.2e}" == "7.53e+05" and f"{ew['bwd']:.2e}" == "9.28e+05"  # Table 1 exactly


def test_eq9_ratio_from_table4_and_from_counts():
    assert round(conv3x3_ratio("mls65"), 2) == 11.48
    assert round(conv3x3_ratio("mls65", local_acc=9), 2) == 11.38
    # the same ratio from the counted forward GEMM of a real 3x3 conv layer
    c = estimate(torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1),
                                     torch.nn.Conv2d(8, 8, 3, padding=1)), (8, 6, 6), "mls:2,4", "mls65")
    low, fp = c.frame, c.baseline_frame
    sel = lambda f: f[(f.layer == "1") & (f.part == "conv") & (f.phase == "fwd")]["uj"].sum()  # noqa: E731
    assert sel(fp) / sel(low) == pytest.approx(conv3x3_ratio("mls65"), rel=1e-12)


def test_table5_resnet34_breakdown(resnet34_estimate):
    t = table5(resnet34_estimate)
    printed_fp = sum(v[0] for k, v in TABLE5_PRINTED.items() if k != "Sum (printed)")
    printed_low = sum(v[1] for k, v in TABLE5_PRINTED.items() if k != "Sum (printed)")
    # the printed rows sum to 31921 / 3304 = 9.66x, not the printed 32000 / 3130 = 10.2x
    assert round(printed_fp) == 31921 and round(printed_low) == 3304
    assert round(printed_fp / printed_low, 2) == 9.66
    # ours: conv fp32 energy within 4% of the paper (our MACs 1.075E10 vs its 1.12E10)
    assert abs(t.loc["Conv", "uj_base"] / TABLE5_PRINTED["Conv"][0] - 1) < 0.04
    assert round(t.loc["Sum", "ratio"], 2) == 10.08  # docs/energy.md: why not 10.2 or 9.66
    assert t.loc["BN", "ratio"] == t.loc["SGD Update", "ratio"] == t.loc["FC", "ratio"] == 1.0
    assert t.loc["DQ", "uj_base"] == 0 and t.loc["DQ", "uj"] > 0


def test_table5_with_the_papers_tree_add_rule(resnet34_estimate):
    """Charging Ci*Co*W*H fp32 tree adds to all three convs (the paper's rule) gives ~9.46x."""
    est = resnet34_estimate
    conv = est.frame[est.frame.part == "conv"]
    tree = conv[conv.op == "tree_add"].groupby("phase")["count"].sum()
    macs = conv[conv.op == "lowbit_mul"]["count"].sum()
    paper_tree = 2 * tree["fwd"] + tree["bwd_data"]  # the weight gradient priced like the forward
    assert f"{paper_tree:.2e}" == "1.24e+09" and tree["wgrad"] < tree["fwd"] / 19
    pj = get_table("mls65").pj
    conv_paper_uj = (macs * (pj("lowbit_mul") + pj("int_add")) + paper_tree * pj("tree_add")) * 1e-6
    assert conv_paper_uj == pytest.approx(2688.6, abs=0.1)
    ratio = est.baseline_uj() / (est.total_uj() - conv["uj"].sum() + conv_paper_uj)
    assert round(ratio, 2) == 9.46


def test_pot_linear_layer_saving_against_95_8_percent():
    torch.manual_seed(0)
    est = estimate(models.get("resnet20"), (3, 32, 32), "pot:4", "horowitz45", fp32_layers="none")
    # per MAC, from the table the estimate used: fp32 mul + add against the MF-MAC's XOR, INT4 add and
    # shifted integer accumulate; the paper's "up to 95.8%" is below that per-MAC bound
    pj = get_table("horowitz45").pj
    mac_saving = 1 - (pj("xor") + pj("int4_add") + pj("int_add")) / (pj("fp32_mul") + pj("fp32_add"))
    assert mac_saving == pytest.approx(0.9743, abs=1e-4)
    assert 0.95 < est.saving() < mac_saving  # quantization overhead takes a little back


def test_whole_network_ratio_against_fp8_training():
    """The MLS paper: 1.9-2.3x more efficient than FP8 training (Sun et al. 2019), Table 4 energies."""
    torch.manual_seed(0)
    est = estimate(models.get("resnet18"), (3, 224, 224), "mls:2,4", "mls65", fp32_layers="linear", baseline="fp8")
    assert set(est.baseline.frame[est.baseline.frame.part == "conv"].op) == {"fp8_mul", "fp32_add"}
    assert round(est.ratio, 2) == 2.32
