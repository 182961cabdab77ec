"""convert(): which layers are swapped, overrides, parameters kept; summary(); DDP; torch.compile."""
import copy

import pytest
import torch
from torch import nn

from lowbit.numerics.formats import parse
from lowbit.nn import QConv2d, QLinear, convert, quantized_layers, summary


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.fc1 = nn.Linear(6 * 4 * 4, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        x = self.body(torch.relu(self.stem(x)))
        return self.head(torch.relu(self.fc1(x.flatten(1))))


def _net():
    torch.manual_seed(0)
    return Net()


def _kinds(model):
    return {n: (type(m).__name__, str(m.spec.fmt) if hasattr(m, "spec") else "torch")
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_first_and_last_stay_fp32_by_default():
    net = _net()
    q = convert(net, "mls:2,1")
    assert _kinds(q) == {"stem": ("Conv2d", "torch"), "body.0": ("QConv2d", "mls:2,1"),
                         "body.3": ("QConv2d", "mls:2,1"), "fc1": ("QLinear", "mls:2,1"),
                         "head": ("Linear", "torch")}
    assert type(net.body[0]) is nn.Conv2d  # the original is untouched
    every = convert(net, "pot:4", skip_first_last=False)
    assert all(kind.startswith("Q") for kind, _ in _kinds(every).values())


def test_overrides_by_name_and_type():
    q = convert(_net(), "mls:2,1", overrides={nn.Linear: "pot:4", "body.3": None, "stem": "mogami:fp32"})
    assert _kinds(q) == {"stem": ("QConv2d", "mogami:fp32"), "body.0": ("QConv2d", "mls:2,1"),
                         "body.3": ("Conv2d", "torch"), "fc1": ("QLinear", "pot:4"),
                         "head": ("Linear", "torch")}


def test_layer_options_and_names_reach_the_layers():
    q = convert(_net(), "pot:4", rounding="stochastic", wbc=True, prc=0.5)
    layer = q.body[0]
    assert layer.spec.name == "body.0" and layer.spec.wbc and layer.spec.prc == 0.5
    assert layer.spec.rounding == dict(W="stochastic", A="stochastic", E="stochastic")
    assert [n for n, _ in quantized_layers(q)] == ["body.0", "body.3", "fc1"]


def test_bad_overrides_and_layers_raise():
    with pytest.raises(ValueError, match="unknown layer 'body.9'.*stem, body.0, body.3, fc1, head"):
        convert(_net(), "mls:2,1", overrides={"body.9": None})
    with pytest.raises(ValueError, match="unknown number format"):
        convert(_net(), "mls:9")
    with pytest.raises(ValueError, match="override keys"):
        convert(_net(), "mls:2,1", overrides={3: None})
    tconv = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ConvTranspose2d(2, 2, 3), nn.Conv2d(2, 2, 1))
    with pytest.raises(ValueError, match="cannot convert layer '1'.*wbc.*not transposed"):
        convert(tconv, "pot:4", wbc=True)
    assert type(convert(tconv, "pot:4", wbc=True, overrides={"1": None})[1]) is nn.ConvTranspose2d


def test_parameters_are_shared_copies_and_state_dict_round_trips():
    net = _net()
    q = convert(net, "mls:2,4")
    assert list(q.state_dict()) == list(net.state_dict())
    for k, v in net.state_dict().items():
        assert torch.equal(q.state_dict()[k], v)
    assert q.body[0].weight is not net.body[0].weight  # a deep copy, not an alias of the input model
    assert q.body[0].weight is q.body[0].weight  # and the quantized layer owns it
    with torch.no_grad():
        q.fc1.weight.add_(1.0)
    plain = _net()
    plain.load_state_dict(q.state_dict())
    assert torch.equal(plain.fc1.weight, q.fc1.weight)
    back = convert(_net(), "mls:2,4")
    back.load_state_dict(plain.state_dict())
    assert torch.equal(back.fc1.weight, q.fc1.weight)


def test_summary_table(capsys):
    q = convert(_net(), "mls:2,1", overrides={"fc1": "mogami:bf16"}, mogami_backward="exact")
    table = summary(q)
    assert capsys.readouterr().out == ""  # returned, not printed: the REPL shows it once
    assert repr(table) == str(table)
    assert summary(q, print_table=True) is None and capsys.readouterr().out.strip() == table.strip()
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["layer", "type", "format", "backend"]
    row = {line.split()[0]: line for line in lines[2:]}
    assert "fp32 (torch)" in row["stem"] and "torch" in row["head"]
    assert "mls:2,1, W/A/E stoc/stoc/stoc" in row["body.0"] and row["body.0"].endswith("software  not run yet")
    assert "mogami:bf16, bwd exact" in row["fc1"]


def test_training_step_runs_for_every_format():
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1])
    for fmt in ["fp32", "mls:2,1", "mls:1,1", "pot:4", "mogami:fp32", "mogami:bf16"]:
        q = convert(_net(), fmt, skip_first_last=False, wbc=fmt == "pot:4")
        before = copy.deepcopy(q.state_dict())
        opt = torch.optim.SGD(q.parameters(), lr=0.1)
        nn.functional.cross_entropy(q(x), y).backward()
        opt.step()
        for name, p in q.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (fmt, name)
            assert not torch.equal(p, before[name]), (fmt, name)


def test_ddp_world_size_one_matches_plain(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    plain = convert(_net(), "mls:2,1")
    wrapped_model = copy.deepcopy(plain)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        ddp = DDP(wrapped_model)
        torch.manual_seed(7)
        ddp(x).square().sum().backward()
        del ddp  # the reducer must not outlive the group (see _DDP_RANK)
    finally:
        dist.destroy_process_group()
    torch.manual_seed(7)
    plain(x).square().sum().backward()
    for (n, p), (_, r) in zip(plain.named_parameters(), wrapped_model.named_parameters()):
        assert torch.equal(p.grad, r.grad), n  # same seed: same stochastic rounding, same sums


_DDP_RANK = r"""
import sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
sys.path.insert(0, sys.argv[3])
from test_convert import _net
from lowbit.nn import convert
rank, out = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=2)
ddp = DDP(convert(_net(), "mls:2,1"))
x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))[4 * rank:4 * rank + 4]
torch.manual_seed(7 + rank)
ddp(x).square().sum().backward()
torch.save({n: p.grad for n, p in ddp.module.named_parameters()}, f"{out}/rank{rank}.pt")
# torch 2.13's gloo aborts at interpreter exit (about 1 run in 2) when a DDP reducer outlives its group
del ddp
dist.destroy_process_group()
"""


def test_ddp_two_processes_average_the_quantized_gradients(tmp_path):
    """Two gloo ranks, each on half the batch with its own stochastic rounding: both end with the
    mean of the two half-batch gradients that plain (undistributed) layers compute."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(__file__)
    procs = [subprocess.Popen([sys.executable, "-c", _DDP_RANK, str(r), str(tmp_path), here]) for r in (0, 1)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    grads = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    halves = []
    for r in (0, 1):
        plain = convert(_net(), "mls:2,1")
        torch.manual_seed(7 + r)
        plain(x[4 * r:4 * r + 4]).square().sum().backward()
        halves.append({n: p.grad for n, p in plain.named_parameters()})
    for name, g0 in grads[0].items():
        assert torch.equal(g0, grads[1][name]), name  # the ranks agree exactly
        expected = (halves[0][name] + halves[1][name]) / 2
        torch.testing.assert_close(g0, expected, rtol=1e-6, atol=0, msg=name)  # allreduce order: fp32 rounding only


def test_torch_compile_matches_eager():
    q = convert(_net(), "mls:2,1")
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    compiled = torch.compile(q)
    torch.manual_seed(3)
    out_c = compiled(x)
    out_c.sum().backward()
    grads_c = [p.grad.clone() for p in q.parameters()]
    q.zero_grad()
    torch.manual_seed(3)
    out_e = q(x)
    out_e.sum().backward()
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)  # inductor may fuse the fp32 parts
    for gc, p in zip(grads_c, q.parameters()):
        torch.testing.assert_close(gc, p.grad, rtol=1e-4, atol=1e-5)


def test_parse_objects_accepted():
    assert isinstance(convert(_net(), parse("pot:4")).body[0], QConv2d)
    assert isinstance(convert(_net(), "mls:2,1").fc1, QLinear)
