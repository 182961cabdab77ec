"""Result ownership: a backend's result never aliases a buffer it reuses (issue 14, item 1).

The board reuses two DMA output buffers; a result that viewed one was overwritten two calls later,
which made thin tiles (one A row or one B row) over three or more K-tiles wrong."""
import numpy as np
import pytest
import torch

from lowbit.board import packing
from lowbit.backends.reference import ReferenceBackend


@pytest.mark.parametrize("m, n", [(1, 5), (5, 1), (1, 1), (3, 4)])
def test_unpack_call_never_returns_a_view_of_the_output_buffer(m, n):
    words = np.arange(1, m * n // 2 + 3, dtype=np.uint64) * np.uint64(0x3F8000003F800000)
    c = packing.unpack_call(words, m, n)
    kept = c.copy()
    assert c.shape == (m, n) and c.dtype == np.float32
    assert not np.shares_memory(c, words)
    words[:] = 0  # the buffer is refilled by a later call
    assert np.array_equal(c, kept)


# The cases of the issue: three or more K-tiles on a tile with one A row or one B row.
THIN = [("pot:4", 1, 4, 24576), ("mogami:bf16", 1, 3, 20000), ("pot:4", 129, 2, 20000), ("mls:2,1", 2, 1, 24576)]


@pytest.mark.parametrize("fmt, m, n, k", THIN)
def test_board_thin_tiles_over_many_k_tiles_equal_emulation(board, emulation, operands, fmt, m, n, k):
    a, b = operands(fmt, m, n, k, seed=k + m, block=256)
    before = board.calls_run
    c = board.gemm(a, b)
    assert board.calls_run - before >= 3 * -(-m // 128)
    assert torch.equal(c, emulation.gemm(a, b))


def _backends(board, emulation):
    from lowbit.backends.software import SoftwareBackend

    return {"software": SoftwareBackend(), "emulation": emulation, "reference": ReferenceBackend(), "board": board}


def _buffers(backend) -> list:
    slots = getattr(backend, "inputs", []) + getattr(backend, "outputs", [])
    return [s.buffer for s in slots if getattr(s, "buffer", None) is not None]


@pytest.mark.parametrize("name", ["software", "emulation", "reference", "board"])
@pytest.mark.parametrize("fmt", ["pot:4", "mls:2,1", "mogami:fp32"])
def test_gemm_result_is_the_callers_and_later_calls_do_not_change_it(board, emulation, operands, name, fmt):
    backend = _backends(board, emulation)[name]
    a, b = operands(fmt, 1, 3, 40, seed=1, block=8)
    c = backend.gemm(a, b)
    kept = c.clone()
    for seed in (2, 3, 4):  # cycles through both buffer slots
        backend.gemm(*operands(fmt, 1, 3, 40, seed=seed, block=8))
    assert torch.equal(c, kept)
    assert not any(np.shares_memory(c.numpy(), buf) for buf in _buffers(backend))
