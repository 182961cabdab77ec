"""CUDA: the same layers on GPU tensors give the CPU results (quantizer RNG is device-independent;
only the fp32 summation order of the convolutions differs)."""
import pytest
import torch

from lowbit.backends.software import _torch_bmm
from lowbit.numerics.mogami import mogami_mul
from lowbit.nn import QConv2d, QLinear


def _needs_native(fmt):
    if fmt.startswith("mogami"):
        pytest.importorskip("cffi", reason="the CPU reference of Mogami layers is the native kernel")

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _both(layer_fn, x, seed=0):
    out = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(seed)
        layer = layer_fn().to(dev)
        xd = x.detach().to(dev).requires_grad_(True)
        torch.manual_seed(seed + 1)  # the same quantizer seeds on both devices
        z = layer(xd)
        z.backward(torch.ones_like(z) * 0.01 + z.detach() * 0.1)
        out[dev] = (z.detach().cpu(), xd.grad.cpu(), layer.weight.grad.cpu())
    return out["cpu"], out["cuda"]


def _close(a, b, rel):
    for u, v in zip(a, b):
        scale = u.abs().max().clamp(min=1e-6)
        assert ((u - v).abs().max() / scale) <= rel


@pytest.mark.parametrize("fmt", ["fp32", "mls:2,1", "mls:2,4", "pot:4", "mogami:fp32"])
def test_conv_cuda_matches_cpu(fmt):
    _needs_native(fmt)
    x = torch.randn(4, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    cpu, cuda = _both(lambda: QConv2d(3, 8, 3, padding=1, stride=2, fmt=fmt), x)
    # same quantized operands, exact products; the fp32 sums differ in order only
    # (TF32 is off by default for convolutions in this check)
    _close(cpu, cuda, 1e-4)


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4", "mogami:bf16"])
def test_linear_cuda_matches_cpu(fmt):
    _needs_native(fmt)
    x = torch.randn(16, 40, generator=torch.Generator().manual_seed(4))
    cpu, cuda = _both(lambda: QLinear(40, 12, fmt=fmt), x)
    _close(cpu, cuda, 1e-4)


def test_mogami_exact_backward_on_cuda():
    _needs_native("mogami")
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    cpu, cuda = _both(lambda: QConv2d(3, 4, 3, padding=1, fmt="mogami:fp32", mogami_backward="exact"), x)
    _close(cpu, cuda, 1e-4)


def test_mogami_torch_path_on_cuda_is_mogami_mul_summed():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(3, 7, 33, generator=g), torch.randn(3, 33, 20, generator=g)
    ref = mogami_mul(a[:, :, :, None], b[:, None, :, :]).double().sum(2)
    got = _torch_bmm(a.cuda(), b.cuda(), False).cpu().double()
    assert ((got - ref).abs() <= 33 * 1.2e-7 * (a.abs() @ b.abs())).all()
