"""The same quantized layers on the software backend and on the emulated HLS kernel: both GEMM
engines get the identical QTensors (same seeds), so results differ only by fp32 summation order
(MLS inter-group sums, Mogami accumulators); PoT accumulates exactly in both."""
import pytest
import torch

from lowbit.nn import QConv2d, QLinear


def _run(fmt, backend, mogami_backward="approx"):
    torch.manual_seed(0)
    conv = QConv2d(3, 4, 3, padding=1, stride=1, fmt=fmt, backend=backend, mogami_backward=mogami_backward)
    lin = QLinear(4 * 5 * 5, 3, fmt=fmt, backend=backend, block=16)
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    torch.manual_seed(2)
    out = lin(conv(x).relu().flatten(1))
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return out.detach(), x.grad, conv.weight.grad, lin.weight.grad


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4,g=8,0,group=n", "pot:4", "mogami:fp32"])
def test_software_and_emulation_agree(fmt):
    soft, emu = _run(fmt, "software"), _run(fmt, "emulation")
    for name, s, e in zip(("out", "dx", "dW conv", "dW linear"), soft, emu):
        bound = 1e-5 * s.abs().max()
        assert (s - e).abs().max() <= bound, (fmt, name)
