"""QConv2d / QLinear: Alg. 2 wiring (which quantized operands feed which GEMM), fp32 parity, errors."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

import lowbit.numerics.quant
from lowbit.nn import QConv2d, QLinear

GEOMETRIES = [
    dict(stride=1, padding=1, dilation=1),
    dict(stride=2, padding=(1, 0), dilation=1),
    dict(stride=(1, 2), padding=2, dilation=2),
    dict(stride=1, padding="same", dilation=1),
    dict(stride=1, padding="valid", dilation=1),
]


class Recorder:
    """Wraps lowbit.numerics.quant.quantize and keeps (input, result) of every call."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = lowbit.numerics.quant.quantize

        def wrapped(x, fmt, **kw):
            q = real(x, fmt, **kw)
            self.calls.append((x.detach().clone(), kw, q))
            return q

        monkeypatch.setattr(lowbit.numerics.quant, "quantize", wrapped)

    def find(self, like: torch.Tensor):
        hits = [c for c in self.calls if c[0].shape == like.shape and torch.equal(c[0], like.detach())]
        return hits


def _run_conv(layer, x, seed=0):
    torch.manual_seed(seed)
    x = x.clone().requires_grad_(True)
    z = layer(x)
    dz = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed + 1))
    z.backward(dz)
    return x, z, dz


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_fp32_conv_matches_torch(geom):
    torch.manual_seed(0)
    q = QConv2d(3, 5, 3, bias=True, fmt="fp32", **geom)
    ref = torch.nn.Conv2d(3, 5, 3, bias=True, **geom)
    ref.load_state_dict(q.state_dict())
    x = torch.randn(2, 3, 9, 8)
    xq, z, dz = _run_conv(q, x)
    xr = x.clone().requires_grad_(True)
    zr = ref(xr)
    zr.backward(dz)
    # same torch kernels on the same fp32 values; bound covers algorithm choice only
    torch.testing.assert_close(z, zr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xq.grad, xr.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4,g=8,1,group=n", "mls:1,1", "pot:4"])
@pytest.mark.parametrize("geom", GEOMETRIES[:3])
def test_three_gemms_use_the_quantized_operands(monkeypatch, fmt, geom):
    rec = Recorder(monkeypatch)
    torch.manual_seed(3)
    layer = QConv2d(4, 6, 3, bias=True, fmt=fmt, **geom)
    x = torch.randn(3, 4, 10, 9)
    xq, z, dz = _run_conv(layer, x)
    (_, _, qw), = rec.find(layer.weight)
    (_, _, qa), = rec.find(x)
    (_, kw_e, qe), = rec.find(dz)  # the error is quantized exactly once
    assert len(rec.calls) == 3
    w, a, e = qw.decode(), qa.decode(), qe.decode()  # from the codes, not the cached values
    g = layer.geometry
    kwargs = dict(stride=g.stride, padding=g.padding, dilation=g.dilation)
    # identical inputs to the identical deterministic CPU kernels: equal bit for bit
    assert torch.equal(z, F.conv2d(a, w, None, **kwargs) + layer.bias.view(1, -1, 1, 1))
    assert torch.equal(xq.grad, conv2d_input(x.shape, w, e, **kwargs))
    assert torch.equal(layer.weight.grad, conv2d_weight(a, layer.weight.shape, e, **kwargs))
    assert kw_e["rounding"] == layer.spec.rounding["E"]


def test_default_roundings_follow_the_papers():
    mls, pot = QConv2d(1, 1, 1, fmt="mls:2,1"), QConv2d(1, 1, 1, fmt="pot:4")
    assert mls.spec.rounding == dict(W="stochastic", A="stochastic", E="stochastic")
    assert pot.spec.rounding == dict(W="nearest", A="nearest", E="stochastic")
    mixed = QConv2d(1, 1, 1, fmt="mls:2,1", rounding={"W": "nearest"})
    assert mixed.spec.rounding == dict(W="nearest", A="stochastic", E="stochastic")


def test_error_quantized_once_per_backward_over_a_network(monkeypatch):
    rec = Recorder(monkeypatch)
    torch.manual_seed(0)
    net = torch.nn.Sequential(QConv2d(2, 4, 3, padding=1), torch.nn.ReLU(), QConv2d(4, 3, 3, padding=1))
    x = torch.randn(2, 2, 6, 6)
    net(x).square().sum().backward()
    assert len(rec.calls) == 2 * 2 + 2  # W and A per layer forward, one E per layer backward


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4,g=8,0,group=c", "pot:4", "fp32"])
def test_linear_gemms_and_grouping(monkeypatch, fmt):
    rec = Recorder(monkeypatch)
    torch.manual_seed(1)
    layer = QLinear(40, 24, fmt=fmt, block=16)
    x = torch.randn(20, 40, requires_grad=True)
    z = layer(x)
    dz = torch.randn_like(z)
    z.backward(dz)
    grouped = fmt.startswith("mls")

    def q_of(t):
        hits = rec.find(t)
        assert len(hits) == 1, f"tensor of shape {tuple(t.shape)} quantized {len(hits)} times"
        return hits[0][2], hits[0][1]

    qa, kwa = q_of(x)
    qw, _ = q_of(layer.weight)
    qe, kwe = q_of(dz)
    if grouped:
        assert kwa["block"] == kwe["block"] == 16
        qwt, _ = q_of(layer.weight.t())  # backward-data groups W along `out`
        qet, _ = q_of(dz.t())  # weight gradient groups E and A along the batch
        qat, _ = q_of(x.t())
        assert len(rec.calls) == 6
        wt, et, at = qwt.decode(), qet.decode(), qat.decode()
    else:
        assert len(rec.calls) == 3
        wt, et, at = qw.decode().t(), qe.decode().t(), qa.decode().t()
    assert torch.equal(z, qa.decode() @ qw.decode().t() + layer.bias)
    assert torch.equal(x.grad, qe.decode() @ wt.t())
    assert torch.equal(layer.weight.grad, et @ at.t())
    torch.testing.assert_close(layer.bias.grad, dz.sum(0))


def test_linear_accepts_leading_dims():
    layer = QLinear(8, 3, fmt="mls:2,4")
    out = layer(torch.randn(2, 5, 8))
    assert out.shape == (2, 5, 3)


def test_fp32_linear_matches_torch():
    torch.manual_seed(0)
    q, ref = QLinear(7, 4, fmt="fp32"), torch.nn.Linear(7, 4)
    ref.load_state_dict(q.state_dict())
    x1 = torch.randn(5, 7, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    q(x1).square().sum().backward()
    ref(x2).square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-6)


def test_stochastic_rounding_is_seeded():
    def grads(seed):
        torch.manual_seed(0)
        layer = QConv2d(2, 3, 3, fmt="mls:2,1")
        torch.manual_seed(seed)
        x = torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(9))
        layer(x).sum().backward()
        return layer.weight.grad

    assert torch.equal(grads(5), grads(5))
    assert not torch.equal(grads(5), grads(6))


# ---- errors ---------------------------------------------------------------------------

def test_unsupported_conv_options_raise():
    with pytest.raises(ValueError, match="groups"):  # torch's own check, kept
        QConv2d(4, 4, 3, groups=3)
    with pytest.raises(ValueError, match="rounding for E"):
        QConv2d(4, 4, 3, rounding={"E": "up"})
    with pytest.raises(ValueError, match="unknown number format"):
        QConv2d(4, 4, 3, fmt="mls2,1")
    with pytest.raises(ValueError, match="mogami_backward"):
        QConv2d(4, 4, 3, fmt="mogami:fp32", mogami_backward="true")
    with pytest.raises(ValueError, match="pot formats"):
        QConv2d(4, 4, 3, fmt="mls:2,1", wbc=True)
    with pytest.raises(ValueError, match="unknown backend"):
        QLinear(4, 4, backend="fpga")


def test_nonfinite_gradient_names_layer_and_operand():
    layer = QConv2d(2, 2, 3, padding=1, fmt="mls:2,1")
    layer.spec.name = "block1.conv2"
    z = layer(torch.randn(1, 2, 4, 4))
    dz = torch.zeros_like(z)
    dz[0, 1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"layer 'block1.conv2', operand E \(error dL/dZ\).*NaN"):
        z.backward(dz)


def test_nonfinite_activation_names_operand_a():
    layer = QLinear(3, 2, fmt="pot:4")
    with pytest.raises(ValueError, match=r"operand A \(activation\).*Inf"):
        layer(torch.tensor([[1.0, float("inf"), 0.0]]))


def test_state_dict_is_the_torch_layers():
    q = QConv2d(3, 4, 3, fmt="mls:2,1")
    t = torch.nn.Conv2d(3, 4, 3)
    assert list(q.state_dict()) == list(t.state_dict())
    t.load_state_dict(q.state_dict())
    q2 = QConv2d(3, 4, 3, fmt="pot:4")
    q2.load_state_dict(t.state_dict())
    assert torch.equal(q2.weight, q.weight)
