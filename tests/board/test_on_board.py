"""On a real board: set LOWBIT_BOARD_BITSTREAM (PYNQ .bit) or LOWBIT_ALVEO_XCLBIN and run
``pytest -m board tests/board``. The results must equal the emulation backend bit for bit."""
import os

import pytest
import torch

pytestmark = pytest.mark.board


def _backend():
    from lowbit import open_device

    if os.environ.get("LOWBIT_BOARD_BITSTREAM"):
        return open_device("pynq", bitstream=os.environ["LOWBIT_BOARD_BITSTREAM"])
    if os.environ.get("LOWBIT_ALVEO_XCLBIN"):
        return open_device("alveo", xclbin=os.environ["LOWBIT_ALVEO_XCLBIN"])
    pytest.skip("no board: set LOWBIT_BOARD_BITSTREAM or LOWBIT_ALVEO_XCLBIN")


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4", "pot:4", "mogami:fp32", "mogami:bf16"])
def test_real_board_equals_emulation(fmt, emulation, operands):
    backend = _backend()
    for i, shape in enumerate([(3, 5, 7), (200, 300, 576)]):
        a, b = operands(fmt, *shape, seed=i)
        assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))
    backend.close()
