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


def _check_double_buffered(stages, units: int = 1) -> None:
    """``stages`` (stage, call, unit, slot): every one of ``units`` units ran at least two calls, each
    unit's calls alternate between its two buffer sets, a unit's call r+1 is packed after its call
    r was launched and before call r is waited on, and every unit is launched before any is waited on."""
    launches = [s for s in stages if s[0] == "launch"]
    assert sorted({s[2] for s in launches}) == list(range(units))
    for unit in range(units):
        mine = [s for s in launches if s[2] == unit]
        assert len(mine) >= 2 and [s[3] for s in mine] == [r % 2 for r in range(len(mine))]
        for r in range(len(mine) - 1):
            call, following = mine[r][1], mine[r + 1][1]
            order = [stages.index(("launch", call, unit, r % 2)), stages.index(("pack", following, unit, (r + 1) % 2)),
                     stages.index(("wait", call, unit, r % 2))]
            assert order == sorted(order)
    first_wait = next(i for i, s in enumerate(stages) if s[0] == "wait")
    assert {s[2] for s in stages[:first_wait] if s[0] == "launch"} == set(range(units))


@pytest.fixture
def double_buffered():
    return _check_double_buffered
