"""Op counts of one training step, checked against hand-computed counts and torch's FLOP counter."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lowbit.numerics import formats
from lowbit.energy import Gemm, count_training_step, gemm_ops, lowbit_mul_label


class TinyRes(nn.Module):
    """conv1 -> bn -> relu -> conv2, + residual, -> fc. Input 3x8x8."""

    def __init__(self, inplace_add=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.short = nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        self.inplace_add = inplace_add

    def forward(self, x):
        x = self.relu(self.bn(self.conv1(x)))
        out = self.conv2(x)
        if self.inplace_add:
            out += self.short(x)
        else:
            out = out + self.short(x)
        return self.fc(self.relu(out).view(out.size(0), -1))


def _sum(counts, part, phase=None, op=None):
    f = counts.frame
    f = f[f.part == part]
    if phase:
        f = f[f.phase == phase]
    if op:
        f = f[f.op == op]
    return int(f["count"].sum())


@pytest.mark.parametrize("inplace_add", [False, True])
def test_tiny_model_fp32_counts_by_hand(inplace_add):
    torch.manual_seed(0)
    c = count_training_step(TinyRes(inplace_add), (3, 8, 8), batch=2, fmt="fp32", momentum=0.9, weight_decay=5e-4)
    conv1, conv2, fc = 2 * 4 * 64 * 3 * 9, 2 * 4 * 64 * 4 * 9, 2 * 256 * 10
    assert c.macs("fwd", "conv") == conv1 + conv2
    assert c.macs("bwd_data", "conv") == conv2  # the first layer's input needs no gradient (Alg. 2)
    assert c.macs("wgrad", "conv") == conv1 + conv2
    assert [c.macs(p, "fc") for p in ("fwd", "bwd_data", "wgrad")] == [fc, fc, fc]
    assert _sum(c, "conv", op="fp32_mul") == _sum(c, "conv", op="fp32_add") == 2 * conv1 + 3 * conv2
    elements = 2 * 4 * 64
    assert _sum(c, "bn", op="fp32_mul") == 9 * elements and _sum(c, "bn", op="fp32_add") == 10 * elements
    # one residual add forward; x feeds conv2 and the shortcut: one add per element backward
    assert _sum(c, "ewadd", "fwd", "fp32_add") == elements
    assert _sum(c, "ewadd", "bwd", "fp32_add") == elements
    assert _sum(c, "ewadd", op="fp32_mul") == 0
    params = 108 + 8 + 144 + 2560 + 10
    assert _sum(c, "sgd", op="fp32_mul") == _sum(c, "sgd", op="fp32_add") == 3 * params
    assert _sum(c, "bias", op="fp32_add") == 2 * 2 * 10
    assert _sum(c, "dq") == 0


def test_mls_counts_follow_eq9_and_appendix_c():
    c = count_training_step(TinyRes(), (3, 8, 8), batch=1, fmt="mls:2,4", fp32_layers="linear")
    f = c.frame
    conv2 = f[f.layer == "conv2"].groupby(["phase", "op"])["count"].sum()
    macs = 4 * 64 * 4 * 9
    assert conv2[("fwd", "lowbit_mul")] == macs
    assert conv2[("fwd", "tree_add")] == conv2[("fwd", "group_scale")] == macs // 9  # Ci*Co*H*W
    assert conv2[("fwd", "int_add")] == macs - macs // 9  # 8 local adds per 9 products
    assert conv2[("wgrad", "tree_add")] == macs // 64  # groups by sample: H_out*W_out per group
    # Appendix C: 4 mul + 2 add per quantized element of W, A, E
    dq = f[(f.layer == "conv2") & (f.part == "dq")].groupby(["phase", "op"])["count"].sum()
    assert dq[("W", "fp32_mul")] == 4 * 144 and dq[("A", "fp32_add")] == 2 * 256 and dq[("E", "fp32_mul")] == 4 * 256
    # the first conv is low-bit under "linear" and has no backward-data GEMM
    assert set(f[(f.layer == "conv1") & (f.part == "conv")].phase) == {"fwd", "wgrad"}
    assert set(f[f.layer == "fc"].op) == {"fp32_mul", "fp32_add"}
    # MLS residual adds need one extra scale-ratio multiply per element
    assert _sum(c, "ewadd", op="fp32_mul") == _sum(c, "ewadd", op="fp32_add") == 2 * 256
    assert c.mul_label == "FP7Mul"


def test_fp32_layer_policies():
    def lowbit_layers(policy):
        f = count_training_step(TinyRes(), (3, 8, 8), fmt="mls:2,1", fp32_layers=policy).frame
        return set(f[f.op == "lowbit_mul"].layer)

    assert lowbit_layers("first_last") == {"conv2"}
    assert lowbit_layers("linear") == {"conv1", "conv2"}
    assert lowbit_layers("none") == {"conv1", "conv2", "fc"}
    with pytest.raises(ValueError, match="first_last"):
        count_training_step(TinyRes(), (3, 8, 8), fp32_layers="some")


def test_gemm_rules_per_format():
    g = Gemm(macs=90, outputs=10, block=9)
    assert gemm_ops("fp32", g) == {"fp32_mul": 90, "fp32_add": 90}
    assert gemm_ops("mls:2,1", g) == {"lowbit_mul": 90, "int_add": 80, "group_scale": 10, "tree_add": 10}
    assert gemm_ops("pot:4", g) == {"xor": 90, "int4_add": 90, "int_add": 90, "group_scale": 10}
    assert gemm_ops("mogami:bf16", g) == {"mogami_add": 90, "fp32_add": 90}
    assert gemm_ops("fp8", g) == {"fp8_mul": 90, "fp32_add": 90}  # the energy-only FP8 baseline
    assert lowbit_mul_label(formats.parse("mls:2,1")) == "FP4Mul"
    assert lowbit_mul_label("mls:0,4") == "FP5Mul"
    assert lowbit_mul_label("mogami:fp32") == "IntAdd32" and lowbit_mul_label("mogami:bf16") == "IntAdd16"


@pytest.mark.parametrize("model_fn, shape", [
    (lambda: nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, groups=2), nn.ReLU(), nn.Conv2d(8, 8, (1, 3)),
                           nn.Flatten(), nn.Linear(8 * 3 * 1, 5)), (4, 8, 7)),
    (lambda: __import__("lowbit.models", fromlist=["get"]).get("resnet20"), (3, 32, 32)),
])
def test_forward_macs_match_torch_flop_counter(model_fn, shape):
    torch.manual_seed(0)
    model = model_fn().eval()
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(3, *shape))
    c = count_training_step(model, shape, batch=3)
    assert 2 * (c.macs("fwd", "conv") + c.macs("fwd", "fc")) == fc.get_total_flops()


def test_shared_module_and_functional_adds():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)

        def forward(self, x):
            y = self.conv(F.relu(x + 1.0))  # a scalar add is not an element-wise add of activations
            z = self.conv(y)
            return torch.add(y, z).sum()

    c = count_training_step(Shared(), (2, 4, 4))
    assert c.macs("fwd", "conv") == 2 * 2 * 16 * 2
    assert _sum(c, "ewadd", "fwd") == 32  # torch.add(y, z)
    assert _sum(c, "ewadd", "bwd") == 32  # y feeds the second conv and the add


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match=">= 1"):
        count_training_step(TinyRes(), (3, 8, 8), batch=0)
    with pytest.raises(ValueError, match="no parameters"):
        count_training_step(nn.ReLU(), (3,))
    with pytest.raises(ValueError, match="accepted"):
        count_training_step(TinyRes(), (3, 8, 8), fmt="int3")


def test_training_flags_are_restored():
    model = TinyRes().train()
    model.fc.eval()
    count_training_step(model, (3, 8, 8))
    assert model.training and model.conv1.training and not model.fc.training


def test_converted_model_layers_count_in_their_own_format():
    import lowbit
    from lowbit import models

    torch.manual_seed(0)
    model = models.get("resnet20")
    converted = lowbit.convert(model, "mls:2,1")  # first and last layers stay fp32
    by_hand = count_training_step(model, (3, 32, 32), fmt="mls:2,1", fp32_layers="first_last")
    auto = count_training_step(converted, (3, 32, 32))  # fmt defaults to fp32: ignored for converted models
    assert auto.total() == by_hand.total()
    pot = count_training_step(lowbit.convert(model, "pot:4", skip_first_last=False), (3, 32, 32))
    assert set(pot.frame[pot.frame.part.isin(["conv", "fc"])].op) == {"xor", "int4_add", "int_add", "group_scale"}


class TinyAttention(nn.Module):
    """Token ids -> embedding -> single-head self-attention from Linear + matmul -> LayerNorm."""

    def __init__(self, vocab=20, d=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.emb(ids)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
        return self.head(self.norm(x + torch.matmul(att, v)))


def test_token_inputs_attention_matmuls_and_layernorm():
    ids = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    c = count_training_step(TinyAttention(), ids, fmt="fp32")
    assert c.batch == 2 and c.input_shape == (5,)
    qk, av = 2 * 5 * 5 * 8, 2 * 5 * 8 * 5
    assert c.macs("fwd", "matmul") == qk + av
    assert c.macs("bwd_data", "matmul") == qk + av and c.macs("wgrad", "matmul") == qk + av
    # the embedding output is the first linear layer's input: it needs a gradient, so bwd-data is counted
    assert c.macs("fwd", "fc") == c.macs("bwd_data", "fc") == 2 * 5 * (8 * 24 + 8 * 20)
    assert _sum(c, "bn", op="fp32_mul") == 9 * 2 * 5 * 8  # LayerNorm priced like batch norm
    # x feeds qkv and the residual add; the qkv output is split in three (one chunk call)
    assert _sum(c, "ewadd", "fwd") == 80 and _sum(c, "ewadd", "bwd") == 80
