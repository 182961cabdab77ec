"""lowbit.convert(model, fmt, backend=<simulated board>) trains the digits CNN exactly as emulation does."""
import pytest
import torch

import lowbit
from lowbit.data import load
from lowbit.models.digits_cnn import DigitsCNN


def train(backend, fmt, steps=3):
    torch.manual_seed(0)
    model = lowbit.convert(DigitsCNN(width=4), fmt, backend=backend, generator=torch.Generator().manual_seed(7))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step, (x, y) in enumerate(load("digits").train.batches(16, shuffle=True, seed=3)):
        if step == steps:
            break
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4"])
def test_digits_training_on_the_board_equals_emulation(board, emulation, fmt):
    on_board, board_losses = train(board, fmt)
    emulated, emulated_losses = train(emulation, fmt)
    assert board.calls_run >= 3 * 3 * 2  # two quantized convs, three GEMMs each, per step
    assert board_losses == emulated_losses
    for (name, p), (_, q) in zip(on_board.state_dict().items(), emulated.state_dict().items()):
        assert torch.equal(p, q), name
