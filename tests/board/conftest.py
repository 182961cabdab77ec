import importlib.util

import pytest
import torch

from lowbit import quantize


# Without pynq (the [board] extra) only the Alveo fake and the emulation parts can run.
collect_ignore = [] if importlib.util.find_spec("pynq") else [
    "test_fixture.py", "test_sim_dma.py", "test_gemm.py", "test_faults.py", "test_train.py", "test_device.py",
    "test_notebook.py", "test_result_ownership.py", "test_gemm_property.py", "test_remote.py"]


@pytest.fixture
def board():
    from lowbit.board import open_simulated

    backend = open_simulated("zcu104", timeout_s=60.0)  # generous: CI machines are shared
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def emulation():
    from lowbit.backends.emulation import EmulationBackend

    return EmulationBackend()


def _operands(fmt: str, m: int, n: int, k: int, seed: int = 0, block: int = 32):
    g = torch.Generator().manual_seed(seed)
    blk = min(block, k) if fmt.startswith("mls") else None
    a = quantize(torch.randn(m, k, generator=g), fmt, rounding="nearest", block=blk)
    b = quantize(torch.randn(n, k, generator=g), fmt, rounding="nearest", block=blk)
    return a, b


@pytest.fixture
def operands():
    """operands(fmt, m, n, k, seed=0, block=32) -> (a [m, k], b [n, k]) quantized with nearest rounding."""
    return _operands


def _check_double_buffered(stages, calls: int = 3) -> None:
    """Calls alternate between two buffer sets, and call i+1 is packed after call i was launched and
    before call i is waited on."""
    assert [s for s in stages if s[0] == "launch"] == [("launch", i, i % 2) for i in range(calls)]
    for i in range(calls - 1):
        order = [stages.index(("launch", i, i % 2)), stages.index(("pack", i + 1, (i + 1) % 2)),
                 stages.index(("wait", i, i % 2))]
        assert order == sorted(order)


@pytest.fixture
def double_buffered():
    return _check_double_buffered
