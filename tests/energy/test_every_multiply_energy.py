"""The energy model counts what runs: the low-bit/fp32 split is convert()'s plan, what stays fp32
is priced fp32, a converted model's baseline is its fp32 original."""
import math

import pytest
import torch
from torch import nn

import lowbit
from lowbit.energy import count_training_step, estimate


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.vol = nn.Conv3d(1, 1, 1)  # no quantized twin: fp32
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # [N, 3, 4, 4]
        z = self.up(self.depthwise(torch.relu(self.stem(x))))  # [N, 4, 8, 8]
        z = self.vol(z.reshape(z.shape[0], 1, 4, 8, 8)).reshape(z.shape[0], 32, 8)
        z, _ = self.rnn(z)
        z = self.attn(z, z, z, need_weights=False)[0]
        return self.head(z.mean(dim=1))


def _layer_ops(counts, layer):
    """The ops of a layer's GEMMs (not its quantizers, bias or optimizer update)."""
    f = counts.frame
    f = f[(f.layer == layer) & f.part.isin(["conv", "fc", "matmul", "rnn"])]
    return f.groupby("op")["count"].sum().to_dict()


def test_split_follows_convert_and_fp32_stays_fp32():
    torch.manual_seed(0)
    model = Mixed()
    counts = count_training_step(model, (3, 4, 4), batch=2, fmt="pot:4", fp32_layers="none")
    for name in ("stem", "depthwise", "up", "rnn", "attn", "head"):
        assert "xor" in _layer_ops(counts, name) and "fp32_mul" not in _layer_ops(counts, name), name
    ops = _layer_ops(counts, "vol")
    assert ops.get("fp32_mul", 0) > 0 and "xor" not in ops
    plan = lowbit.nn.plan(model, "pot:4", skip_first_last=False)
    assert plan["vol"] is None and str(plan["rnn"]) == "pot:4" and str(plan["attn"]) == "pot:4"


def test_transposed_conv_and_attention_macs():
    torch.manual_seed(0)
    counts = count_training_step(Mixed(), (3, 4, 4), batch=2, fmt="fp32")
    f = counts.frame
    up = f[(f.layer == "up") & (f.phase == "fwd") & (f.op == "fp32_mul")]["count"].sum()
    assert up == 2 * 4 * 4 * 4 * 4 * 4  # input elements x Cout x taps
    attn = f[(f.layer == "attn") & (f.phase == "fwd") & (f.op == "fp32_mul")]["count"].sum()
    n, length, e = 2, 32, 8
    assert attn == 4 * n * length * e * e + 2 * n * length * length * e  # q, k, v, out proj; QK^T, PV
    rnn = f[(f.layer == "rnn") & (f.phase == "fwd") & (f.op == "fp32_mul")]["count"].sum()
    assert rnn == n * length * (8 + 8) * 4 * 8


@pytest.mark.parametrize("fmt", ["pot:4", "mls:2,4"])
def test_converted_model_has_the_plain_models_ratio(fmt):
    torch.manual_seed(0)
    plain = Mixed()
    q = lowbit.convert(plain, fmt)
    a, b = estimate(plain, (3, 4, 4), fmt, batch=2), estimate(q, (3, 4, 4), "fp32", batch=2)
    assert a.ratio > 1.2  # the Conv3d and the first and last layers stay fp32
    assert math.isclose(a.ratio, b.ratio, rel_tol=1e-12)
    assert math.isclose(b.baseline_uj(), estimate(plain, (3, 4, 4), "fp32", batch=2).total_uj(), rel_tol=1e-12)
