"""Mogami layers (every product an integer add; exact vs approx backward) and ALS-POTQ WBC / PRC."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input

import lowbit.numerics.quant
from lowbit.backends.software import SoftwareBackend
from lowbit.numerics.mogami import mogami_mul
from lowbit.nn import QConv2d, QLinear
from lowbit.nn.spec import pow2_round


def seq_sum(products, dim):
    acc = torch.zeros_like(products.select(dim, 0))
    for i in range(products.shape[dim]):
        acc = acc + products.select(dim, i)
    return acc


@pytest.fixture
def record(monkeypatch):
    calls = []
    real = lowbit.numerics.quant.quantize

    def wrapped(x, fmt, **kw):
        q = real(x, fmt, **kw)
        calls.append((x.detach().clone(), kw, q))
        return q

    monkeypatch.setattr(lowbit.numerics.quant, "quantize", wrapped)
    return calls


def _find(calls, t):
    (hit,) = [c for c in calls if c[0].shape == t.shape and torch.equal(c[0], t.detach())]
    return hit


@pytest.mark.parametrize("mode", ["approx", "exact"])
def test_mogami_conv_backward_mode_selects_the_kernels(record, mode):
    torch.manual_seed(0)
    layer = QConv2d(3, 4, 3, padding=1, bias=False, fmt="mogami:fp32", mogami_backward=mode)
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    z = layer(x)
    dz = torch.randn_like(z)
    z.backward(dz)
    qw, qa, qe = _find(record, layer.weight)[2], _find(record, x)[2], _find(record, dz)[2]
    be, g = SoftwareBackend(), layer.geometry
    assert torch.equal(z, be.conv2d_forward(qw, qa, g))
    if mode == "exact":
        dx, dw = be.mogami_conv2d_backward_data_exact(qe, qw, qa, g), be.mogami_conv2d_weight_grad_exact(qe, qa, qw, g)
        approx = be.conv2d_backward_data(qe, qw, g, x.shape)
        assert not torch.equal(dx, approx)
    else:
        dx, dw = be.conv2d_backward_data(qe, qw, g, x.shape), be.conv2d_weight_grad(qe, qa, g, layer.weight.shape)
    assert torch.equal(x.grad, dx) and torch.equal(layer.weight.grad, dw)


def test_mogami_linear_products_are_integer_adds():
    torch.manual_seed(1)
    layer = QLinear(9, 4, bias=False, fmt="mogami:fp32")
    x = torch.randn(5, 9, requires_grad=True)
    z = layer(x)
    ref = seq_sum(mogami_mul(x.detach()[:, None, :], layer.weight.detach()[None, :, :]), 2)
    assert torch.equal(z, ref)
    dz = torch.randn_like(z)
    z.backward(dz)
    # approx backward: dA = E (x) W summed over `out` in order, dW = E (x) A summed over the batch
    assert torch.equal(x.grad, seq_sum(mogami_mul(dz[:, :, None], layer.weight.detach()[None]), 1))
    assert torch.equal(layer.weight.grad, seq_sum(mogami_mul(dz[:, :, None], x.detach()[:, None, :]), 0))


def test_mogami_bf16_rounds_operands_to_bf16():
    torch.manual_seed(2)
    layer = QLinear(6, 3, bias=False, fmt="mogami:bf16")
    x = torch.randn(4, 6)
    z = layer(x)
    xb, wb = x.bfloat16(), layer.weight.detach().bfloat16()
    ref = seq_sum(mogami_mul(xb[:, None, :], wb[None, :, :]).float(), 2)
    assert torch.equal(z, ref)


def test_exact_backward_needs_a_backend_that_has_it():
    class Plain(SoftwareBackend):
        mogami_conv2d_backward_data_exact = None

    layer = QConv2d(2, 2, 1, fmt="mogami:fp32", mogami_backward="exact", backend=Plain())
    layer.spec.name = "c1"
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    with pytest.raises(ValueError, match="layer 'c1': backend 'software' has no exact Mogami backward"):
        layer(x).sum().backward()


# ---- ALS-POTQ -----------------------------------------------------------------------------

def test_pow2_round():
    x = torch.tensor([0.0, 1.0, 1.49, 1.51, -3.0, 0.74, 0.76, -0.0001])
    expect = torch.tensor([0.0, 1.0, 1.0, 2.0, -4.0, 0.5, 1.0, -2.0 ** -13])
    assert torch.equal(pow2_round(x), expect)


def test_wbc_conv_is_a_conv_with_the_corrected_weight(record):
    torch.manual_seed(3)
    layer = QConv2d(3, 5, 3, padding=1, stride=2, bias=False, fmt="pot:4", wbc=True)
    with torch.no_grad():
        layer.weight.add_(torch.linspace(-0.2, 0.2, 5).view(5, 1, 1, 1))  # channels with different means
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    z = layer(x)
    dz = torch.randn_like(z)
    z.backward(dz)
    w = layer.weight.detach()
    qw, qa, qe = _find(record, w)[2], _find(record, x)[2], _find(record, dz)[2]
    delta = w.flatten(1).mean(1) - qw.decode().flatten(1).mean(1)
    w_eff = qw.decode() + pow2_round(delta).view(-1, 1, 1, 1)
    g = layer.geometry
    kw = dict(stride=g.stride, padding=g.padding, dilation=g.dilation)
    # the same real numbers summed in a different grouping: bound a few ulps of the |terms| sum
    bound = 1e-5 * (F.conv2d(qa.decode().abs(), w_eff.abs(), None, **kw) + 1)
    assert ((z - F.conv2d(qa.decode(), w_eff, None, **kw)).abs() <= bound).all()
    ref_dx = conv2d_input(x.shape, w_eff, qe.decode(), **kw)
    torch.testing.assert_close(x.grad, ref_dx, rtol=1e-5, atol=1e-5)
    assert (pow2_round(delta) != 0).all()


def test_wbc_linear_forward_and_backward():
    torch.manual_seed(4)
    layer = QLinear(12, 4, bias=False, fmt="pot:4", wbc=True, rounding="nearest")
    x = torch.randn(6, 12, requires_grad=True)
    z = layer(x)
    z.backward(torch.ones_like(z))
    w = layer.weight.detach()
    qw = lowbit.numerics.quant.quantize(w, "pot:4", rounding="nearest").decode()
    w_eff = qw + pow2_round(w.mean(1, keepdim=True) - qw.mean(1, keepdim=True))
    xa = lowbit.numerics.quant.quantize(x.detach(), "pot:4", rounding="nearest").decode()
    torch.testing.assert_close(z, xa @ w_eff.t(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, torch.ones(6, 4) @ w_eff, rtol=1e-5, atol=1e-5)


def test_prc_clips_weights_and_activations_not_errors(record):
    layer = QConv2d(2, 3, 3, fmt="pot:4", prc=0.5)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    z = layer(x)
    dz = torch.randn_like(z)
    z.backward(dz)
    assert _find(record, layer.weight)[1]["clip_ratio"] == 0.5
    assert _find(record, x)[1]["clip_ratio"] == 0.5
    assert "clip_ratio" not in _find(record, dz)[1]
    qw = _find(record, layer.weight)[2]
    assert qw.decode().abs().max() <= 0.5 * layer.weight.abs().max() * 2  # scale from the clipped max


def test_wbc_reduces_the_forward_error_on_positive_inputs():
    # post-ReLU inputs meet each channel's mean weight error coherently; WBC removes that part
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(8, 16, 8, 8, generator=gen).relu()
    errors = {}
    for wbc in (False, True):
        torch.manual_seed(12)
        layer = QConv2d(16, 8, 3, padding=1, bias=False, fmt="pot:4", wbc=wbc)
        ref = F.conv2d(x, layer.weight, None, padding=1)
        with torch.no_grad():
            errors[wbc] = float((layer(x) - ref).norm() / ref.norm())
    assert errors[True] < 0.97 * errors[False], errors
