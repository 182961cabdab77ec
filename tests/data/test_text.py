"""The pydoc text set and the character Transformer trained on it through `lowbit train`."""
import math

import torch

import lowbit
from lowbit.data import load
from lowbit.data.text import pydoc_text
from lowbit.models import get, info
from lowbit.apps.sweep import lm_markdown
from lowbit.apps.train import TrainConfig, fit


def test_pydoc_windows_are_next_character_targets_and_val_is_the_tail():
    data = load("pydoc")
    text = pydoc_text()
    assert len(text) > 400_000 and data.num_classes == len(set(text)) == len(data.classes)
    x, y = data.train.x, data.train.y
    assert x.shape[1] == 64 and x.dtype == torch.int64
    assert torch.equal(x[0, 1:], y[0, :-1]) and torch.equal(y[0, -1:], x[1, :1])  # windows tile the text
    decoded = "".join(data.classes[i] for i in x[0].tolist())
    assert decoded == text[:64]
    val = "".join(data.classes[i] for i in data.test.x[0].tolist())
    cut = int(len(text) * 0.9)
    assert val == text[cut:cut + 64]  # the contiguous tail: no validation window overlaps training text
    assert len(data.train) * 64 <= cut


def test_char_transformer_shapes_and_every_multiply_converted():
    model = get("char_transformer", num_classes=103, in_channels=64)
    assert info("char_transformer").input_shape == (64,)
    logits = model(torch.randint(0, 103, (2, 64)))
    assert logits.shape == (2, 103, 64)  # [batch, vocab, time] for cross_entropy on [batch, time]
    q = lowbit.convert(model, "pot:4", skip_first_last=False)
    assert all(r["format"].startswith("pot:4") for r in lowbit.summary(q).rows)


def test_train_runs_the_transformer_on_pydoc_and_the_sweep_table_reports_bpc():
    result = fit(TrainConfig(model="char_transformer", data="pydoc", format="pot:4", epochs=1, batch_size=16,
                             lr=0.05, limit_train=32, limit_test=16, progress=False, threads=1))
    final = result.final
    assert math.isfinite(final["test_loss"]) and 0 < final["test_acc"] <= 100
    cells = [dict(seed=s, test_loss=math.log(2) * (3.0 + d), test_acc=30.0, diverged=False, seconds=1.0)
             for s, d in ((0, 0.0), (1, 0.2))]
    worse = [dict(c, test_loss=c["test_loss"] + math.log(2) * 0.1) for c in cells]
    table = lm_markdown([dict(label="fp32", format="fp32", options={}, cells=cells, seconds=2.0),
                         dict(label="PoT", format="pot:4", options={}, cells=worse, seconds=2.0)])
    assert "| 3.1000 ± 0.1000 |" in table  # bpc mean ± s.e. of fp32
    assert "+0.1000 ± 0.0000" in table  # the paired gap
