"""Every multiply of a model with every layer kind runs in the format: training on each backend,
the power-of-two audit, an honest summary, strict / re-convert, deterministic eval."""
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from lowbit.backends.software import SoftwareBackend
from lowbit.nn import (QGRU, QLSTM, QRNN, Matmul, QConv1d, QConv2d, QConvTranspose1d, QConvTranspose2d, QLinear,
                       QMatmul, QMultiheadAttention, convert, quantized_matmuls, summary)


class EveryLayer(nn.Module):
    """Conv1d, reflect-padded Conv2d, depthwise and grouped Conv2d, ConvTranspose2d / 1d, an LSTM,
    a Transformer encoder layer (MHA), a user matmul module, SDPA in user code, Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv1d(2, 4, 3, padding=1)
        self.conv = nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.grouped = nn.Conv2d(4, 4, 1, groups=2)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.up1d = nn.ConvTranspose1d(4, 4, 3, stride=1, padding=1, groups=2)
        self.rnn = nn.LSTM(16, 16, batch_first=True)
        self.encoder = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.mix = Matmul()
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # x [N, 2, 16]
        s = self.up1d(torch.relu(self.stem(x)))  # [N, 4, 16]
        s = s + self.rnn(s)[0]  # 4 steps of 16 features
        img = self.conv(s[:, :1].reshape(-1, 1, 4, 4))  # [N, 4, 4, 4]
        img = self.up(self.grouped(torch.relu(self.depthwise(img))))  # [N, 2, 8, 8]
        tokens = self.encoder(img.reshape(img.shape[0], 16, 8))  # [N, 16, 8]
        q = tokens.reshape(tokens.shape[0], 2, 16, 4)
        att = F.scaled_dot_product_attention(q, q, q).reshape_as(tokens)  # user-code attention
        mixed = self.mix(att.transpose(1, 2), att).mean(dim=2)  # [N, 8]
        return self.head(mixed + s.mean(dim=(1, 2)).unsqueeze(1))


TWIN_TYPES = {"stem": QConv1d, "conv": QConv2d, "depthwise": QConv2d, "grouped": QConv2d,
              "up": QConvTranspose2d, "up1d": QConvTranspose1d, "rnn": QLSTM, "encoder.self_attn": QMultiheadAttention,
              "encoder.linear1": QLinear, "encoder.linear2": QLinear, "mix": QMatmul, "head": QLinear}


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 2, 16, generator=g), torch.tensor([0, 1, 2, 1])


def _train(backend, fmt, steps=2, seed=0, **options):
    torch.manual_seed(seed)
    model = convert(EveryLayer(), fmt, backend=backend, skip_first_last=False,
                    generator=torch.Generator().manual_seed(7), **options)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    losses = []
    for _ in range(steps):
        with quantized_matmuls(fmt, backend=backend, generator=torch.Generator().manual_seed(3)):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def test_convert_finds_every_multiply():
    q = convert(EveryLayer(), "pot:4", skip_first_last=False)
    for name, kind in TWIN_TYPES.items():
        assert type(q.get_submodule(name)) is kind, name
    assert type(q.encoder.self_attn.out_proj) is not QLinear  # called functionally by its attention


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4", "mogami:fp32", "fp32"])
def test_every_layer_kind_trains_on_software(fmt):
    model, losses = _train("software", fmt)
    assert all(torch.isfinite(torch.tensor(losses)))
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), (fmt, name)


def test_fp32_twins_match_torch():
    """fp32 'quantization' is the identity: every twin computes what torch computes."""
    x, y = _data()
    torch.manual_seed(0)
    plain = EveryLayer()
    q = convert(plain, "fp32", skip_first_last=False)
    ref = F.cross_entropy(plain(x), y)
    ref.backward()
    with quantized_matmuls("fp32"):
        out = F.cross_entropy(q(x), y)
    out.backward()
    assert abs(out.item() - ref.item()) < 1e-5
    for (name, p), (_, r) in zip(q.named_parameters(), plain.named_parameters()):
        assert (p.grad - r.grad).abs().max() <= 1e-4 * (1 + r.grad.abs().max()), name


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4"])
def test_emulation_and_board_train_every_layer_kind_identically(fmt):
    pytest.importorskip("pynq")  # the [board] extra (installed by make install)
    from lowbit.backends.emulation import EmulationBackend
    from lowbit.board import open_simulated

    board = open_simulated("zcu104", timeout_s=60.0)
    try:
        on_board, board_losses = _train(board, fmt)
    finally:
        board.close()
    emulated, emulated_losses = _train(EmulationBackend(), fmt)
    assert board_losses == emulated_losses
    for (name, p), (_, e) in zip(on_board.state_dict().items(), emulated.state_dict().items()):
        assert torch.equal(p, e), name


_OPS = {
    "grouped conv": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (2, 4, 6, 6)),
    "depthwise conv": (lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2, stride=2, groups=4), (2, 4, 9, 8)),
    "reflect conv": (lambda: nn.Conv2d(4, 4, 4, padding="same", padding_mode="reflect"), (2, 4, 7, 6)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, padding=1, groups=2), (2, 4, 11)),
    "conv transpose": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
                       (2, 4, 5, 5)),
    "conv transpose 1d": (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1), (2, 4, 7)),
    "attention": (lambda: nn.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8)),
    "matmul": (Matmul, (2, 3, 5, 5)),
}


def _op_grads(name, fmt, backend):
    make, shape = _OPS[name]
    torch.manual_seed(0)
    module = convert(nn.Sequential(make()), fmt, backend=backend, skip_first_last=False, rounding="nearest")[0]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out = module(x, x, x)[0] if name == "attention" else module(x, x) if name == "matmul" else module(x)
    grads = torch.autograd.grad(out, [x] + list(module.parameters()), torch.linspace(-1, 1, out.numel()).view_as(out))
    return [out] + list(grads)


# attention with MLS is left out: its GEMMs are chained, MLS's fp32 inter-group sums differ in the
# last bit between the engines, and the next quantizer can round such a value to the other side of a
# tie; the matmul case checks MLS at the GEMM level.
@pytest.mark.parametrize("name,fmt", [(n, f) for n in _OPS for f in ("mls:2,1", "pot:4", "mogami:fp32")
                                      if (n, f) != ("attention", "mls:2,1")])
def test_each_new_op_agrees_on_software_and_emulation(name, fmt):
    """Same codes on both engines: results differ only by the fp32 summation order (PoT: exact
    products and exact integer sums up to the tensor scale)."""
    from lowbit.backends.emulation import EmulationBackend

    soft, emu = _op_grads(name, fmt, "software"), _op_grads(name, fmt, EmulationBackend())
    for i, (s, e) in enumerate(zip(soft, emu)):
        assert (s - e).abs().max() <= 1e-5 * s.abs().max() + 1e-30, (name, fmt, i)


# ---- the audit: no conv / matmul with an operand off the power-of-two grid ---------------------

_GEMM_OPS = ("convolution", "convolution_backward", "mm", "bmm", "addmm", "baddbmm", "addbmm", "_scaled_dot_product",
             "linear", "matmul", "dot", "mv")


class _Audit(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls, self.off_grid = Counter(), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name.startswith(_GEMM_OPS):
            self.calls[name] += 1
            for t in _multiplied(name, args):
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and not _on_pot_grid(t):
                    self.off_grid.append((name, tuple(t.shape)))
        return func(*args, **(kwargs or {}))


def _multiplied(name, args):
    """The operands an op multiplies. convolution_backward reads its input only for the weight
    gradient and its weight only for the input gradient (torch.nn.grad passes an uninitialised
    expanded placeholder for the one it does not need)."""
    if name == "convolution_backward":
        grad, inp, weight, mask = args[0], args[1], args[2], args[10]
        return [grad] + ([inp] if mask[1] else []) + ([weight] if mask[0] else [])
    return args


def _on_pot_grid(t: torch.Tensor) -> bool:
    mant, _ = torch.frexp(t.detach())
    return bool(((mant.abs() == 0.5) | (t == 0)).all())


def test_audit_pot4_step_multiplies_powers_of_two_only():
    torch.manual_seed(0)
    model = convert(EveryLayer(), "pot:4", skip_first_last=False)
    x, y = _data()
    audit = _Audit()
    with audit, quantized_matmuls("pot:4"):
        F.cross_entropy(model(x), y).backward()
    assert audit.calls["convolution"] > 0 and audit.calls["bmm"] > 0 and audit.calls["mm"] > 0
    assert audit.off_grid == []


def test_audit_finds_an_fp32_multiply():
    """The audit can fail: an unconverted layer's fp32 operands are off the grid."""
    torch.manual_seed(0)
    model = convert(EveryLayer(), "pot:4", skip_first_last=False, overrides={"grouped": None})
    x, y = _data()
    audit = _Audit()
    with audit, quantized_matmuls("pot:4"):
        F.cross_entropy(model(x), y).backward()
    assert audit.off_grid


# ---- summary() against the GEMMs that really ran ----------------------------------------------

class _Recording(SoftwareBackend):
    """The software backend, counting each GEMM it computes by format."""

    def __init__(self):
        self.gemms = Counter()

    def gemm(self, a, b, **kw):
        self.gemms[str(a.fmt)] += 1
        return super().gemm(a, b, **kw)

    def gemm_batched(self, a, b, batch, **kw):
        self.gemms[str(a.fmt)] += batch
        return super().gemm_batched(a, b, batch, **kw)

    def conv2d_forward(self, qw, qa, geom):
        self.gemms[str(qw.fmt)] += 1
        return super().conv2d_forward(qw, qa, geom)

    def conv2d_backward_data(self, qe, qw, geom, shape):
        self.gemms[str(qe.fmt)] += 1
        return super().conv2d_backward_data(qe, qw, geom, shape)

    def conv2d_weight_grad(self, qe, qa, geom, shape):
        self.gemms[str(qe.fmt)] += 1
        return super().conv2d_weight_grad(qe, qa, geom, shape)

    def conv2d_backward(self, qe, qw, qa, geom, *, need_input=True, need_weight=True):
        self.gemms[str(qe.fmt)] += int(need_input) + int(need_weight)
        return super().conv2d_backward(qe, qw, qa, geom, need_input=need_input, need_weight=need_weight)


class WithConv3d(EveryLayer):
    def __init__(self):
        super().__init__()
        self.vol = nn.Conv3d(2, 2, 1)  # no quantized twin

    def forward(self, x):
        return super().forward(self.vol(x[..., None, None])[..., 0, 0])


def _ran_counts(table) -> Counter:
    counts = Counter()
    for row in table.rows:
        if row["ran"] in ("fp32", "not run yet"):
            continue
        for part in row["ran"].split("; "):
            fmt, _, phases = part.partition(": ")
            values = phases.split()
            counts[fmt] += sum(int(n) for n in values[1::2])
    return counts


def test_summary_reports_the_gemms_that_ran():
    rec = _Recording()
    torch.manual_seed(0)
    model = convert(WithConv3d(), "pot:4", backend=rec, skip_first_last=False, overrides={"head": "mls:2,1"})
    assert set(_ran_counts(summary(model))) == set()
    assert all(r["ran"] in ("not run yet", "fp32") for r in summary(model).rows)
    x, y = _data()
    F.cross_entropy(model(x), y).backward()
    table = summary(model)
    assert _ran_counts(table) == rec.gemms and rec.gemms["pot:4"] > 0 and rec.gemms["mls:2,1"] == 3
    rows = {r["layer"]: r for r in table.rows}
    assert rows["vol"]["format"] == "fp32 (torch; no quantized twin)" and rows["vol"]["ran"] == "fp32"
    assert set(rows) == set(TWIN_TYPES) | {"vol"}  # every multiply listed; out_proj belongs to its attention
    assert rows["encoder.self_attn"]["type"] == "QMultiheadAttention"


def test_strict_names_every_multiply_it_cannot_quantize():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell, self.fc = nn.LSTMCell(4, 4), nn.Linear(4, 4)
            self.vol, self.bi = nn.Conv3d(1, 1, 1), nn.Bilinear(2, 2, 2)

    with pytest.raises(ValueError, match=r"strict.*cell \(LSTMCell.*vol \(Conv3d.*bi \(Bilinear"):
        convert(Net(), "pot:4", strict=True)
    q = convert(Net(), "pot:4", skip_first_last=False)  # not strict: kept fp32, listed
    assert type(q.vol) is nn.Conv3d and type(q.fc) is QLinear


def test_reconvert_changes_the_format_or_reverts_to_torch():
    q = convert(EveryLayer(), "mls:2,1", skip_first_last=False)
    again = convert(q, "pot:4", skip_first_last=False)
    for name, kind in TWIN_TYPES.items():
        m = again.get_submodule(name)
        assert type(m) is kind and str(m.spec.fmt) == "pot:4", name
    back = convert(q, "pot:4")  # first and last now stay fp32: their twins go back to torch modules
    assert type(back.stem) is nn.Conv1d and type(back.head) is nn.Linear and str(back.conv.spec.fmt) == "pot:4"
    x, _ = _data()
    with quantized_matmuls("fp32"):
        back(x)  # the reverted modules run
    assert summary(back).rows[0]["format"] == "fp32 (torch)"


def test_complex_matmul_raises_naming_the_module():
    mm = convert(nn.Sequential(nn.Linear(2, 2), Matmul(), nn.Linear(2, 2)), "pot:4")[1]
    a = torch.randn(2, 2, dtype=torch.complex64)
    with pytest.raises(ValueError, match=r"layer '1'.*complex-valued.*pot:4"):
        mm(a, a)
    with pytest.raises(ValueError, match="complex"):
        with quantized_matmuls("pot:4"):
            a @ a
    with pytest.raises(ValueError, match="einsum"):
        with quantized_matmuls("pot:4"):
            torch.einsum("ij,jk->ik", a.real, a.real)


# ---- deterministic evaluation ------------------------------------------------------------------

def test_eval_rounds_nearest_and_train_stochastic():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(16, 3), nn.Linear(3, 3))
    q = convert(net, "mls:2,1")  # W/A/E stochastic while training
    near = convert(net, "mls:2,1", rounding="nearest")
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    q.train()
    assert not torch.equal(q(x), q(x))
    q.eval()
    near.eval()
    with torch.no_grad():
        assert torch.equal(q(x), q(x)) and torch.equal(q(x), near(x))
    kept = convert(net, "mls:2,1", eval_rounding="stochastic").eval()
    with torch.no_grad():
        assert not torch.equal(kept(x), kept(x))
    assert "eval stoc/stoc/stoc" in kept[1].spec.describe()


def test_eval_runs_quantized_attention_not_torch_fused_kernel():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    q = convert(nn.Sequential(layer), "pot:4", skip_first_last=False).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        q(x)
    assert q[0].self_attn.spec.ran[("fwd", "pot:4")] > 0


@pytest.mark.parametrize("make,twin", [
    (lambda: nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True), QLSTM),
    (lambda: nn.GRU(3, 5, num_layers=2, dropout=0.0), QGRU),
    (lambda: nn.RNN(3, 5, nonlinearity="relu"), QRNN),
])
def test_recurrent_twins_in_fp32_match_torch(make, twin):
    torch.manual_seed(0)
    rnn = make()
    q = convert(nn.Sequential(rnn), "fp32", skip_first_last=False)[0]
    assert type(q) is twin and list(q.state_dict()) == list(rnn.state_dict())
    x = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ref, out = rnn(x)[0], q(x)[0]
    g = torch.linspace(-1, 1, ref.numel()).view_as(ref)
    for a, b in zip(torch.autograd.grad(ref, [x] + list(rnn.parameters()), g),
                    torch.autograd.grad(out, [x] + list(q.parameters()), g)):
        assert (a - b).abs().max() <= 1e-5
    assert (ref - out).abs().max() <= 1e-6
    steps = x.shape[1] if rnn.batch_first else x.shape[0]
    layers = rnn.num_layers * (2 if rnn.bidirectional else 1)
    assert q.spec.ran[("fwd", "fp32")] == layers * (1 + steps)  # one input GEMM, a hidden GEMM per step
