"""The fused attention core (QAttentionFunction) computes what the composed quantized ops
compute: the same quantize calls in the same order, so with one seed the output, the attention
probabilities and every gradient (q, k, v, masks, through the returned probabilities too) are
equal bit for bit."""
import pytest
import torch

from lowbit.nn.attention import QAttentionFunction, qmatmul
from lowbit.nn.spec import LayerSpec

BATCH, HEADS, L, S, E = 2, 3, 5, 7, 16


def _inputs(seed, bias_shape=(HEADS, L, S)):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(BATCH * HEADS, n, E, generator=g).requires_grad_() for n in (L, S, S))
    bias = torch.randn(bias_shape, generator=g).requires_grad_()  # a learned additive bias
    padding = torch.zeros(BATCH, 1, 1, S)
    padding[1, ..., -2:] = float("-inf")
    return q, k, v, [bias, padding]


def _spec(fmt):
    return LayerSpec.make(fmt, generator=torch.Generator().manual_seed(3))


def _composed(q, k, v, masks, spec, scale):
    scores = qmatmul(q, k.transpose(1, 2), spec)
    scores4 = scores.view(BATCH, HEADS, L, S) * scale
    for m in masks:
        scores4 = scores4 + m
    p = torch.softmax(scores4, dim=-1).view(scores.shape)
    return qmatmul(p, v, spec), p


def _run(fn, fmt, bias_shape, seed=0, uses=("out", "p")):
    """``uses``: the outputs the loss reads (the others get no gradient)."""
    q, k, v, masks = _inputs(seed, bias_shape)
    out, p = fn(q, k, v, masks, _spec(fmt), 0.25)
    g = torch.Generator().manual_seed(9)
    terms = {name: (t * torch.randn(t.shape, generator=g)).sum() for name, t in (("out", out), ("p", p))}
    sum(terms[name] for name in uses).backward()
    return [out, p, q.grad, k.grad, v.grad, masks[0].grad]


def _fused(q, k, v, masks, spec, scale):
    return QAttentionFunction.apply(q, k, v, spec, HEADS, scale, *masks)


def _assert_runs_equal(label, fused, composed):
    for name, a, b in zip(["out", "p", "dq", "dk", "dv", "dbias"], fused, composed):
        assert (a is None) == (b is None), f"{label}: {name} is None in one run only"
        assert a is None or torch.equal(a, b), f"{label}: {name} differs (max |diff| {(a - b).abs().max():.3g})"


@pytest.mark.parametrize("fmt", ["mls:2,1", "mls:2,4", "pot:4", "mogami:fp32", "fp32"])
@pytest.mark.parametrize("bias_shape", [(HEADS, L, S), (BATCH, HEADS, L, S)], ids=["broadcast", "full"])
def test_fused_core_equals_composed_ops(fmt, bias_shape):
    _assert_runs_equal(fmt, _run(_fused, fmt, bias_shape), _run(_composed, fmt, bias_shape))


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4"])
@pytest.mark.parametrize("uses", [("out",), ("p",)], ids=["output only", "probabilities only"])
def test_fused_core_with_one_output_unused_equals_composed_ops(fmt, uses):
    """An unused output gets no gradient tensor; the gradients (and the quantize calls that make
    them) are still the composed ops', and with only the probabilities used v gets none."""
    shape = (HEADS, L, S)
    _assert_runs_equal(f"{fmt} {uses}", _run(_fused, fmt, shape, uses=uses), _run(_composed, fmt, shape, uses=uses))


def test_fused_core_records_both_matmuls_gemms():
    spec = _spec("pot:4")
    q, k, v, masks = _inputs(1)
    out, _ = _fused(q, k, v, masks, spec, 0.25)
    out.sum().backward()
    calls = BATCH * HEADS
    assert dict(spec.ran) == {("fwd", "pot:4"): 2 * calls, ("bwd_data", "pot:4"): 2 * calls,
                              ("wgrad", "pot:4"): 2 * calls}


SDPA_CASES = {
    "plain": dict(),
    "causal": dict(is_causal=True),
    "bool mask": dict(attn_mask=torch.rand(5, 7, generator=torch.Generator().manual_seed(4)) > 0.3),
    "float mask, 4-D": dict(attn_mask=torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(5))),
    "scale": dict(scale=0.1),
}


@pytest.mark.parametrize("case", SDPA_CASES)
@pytest.mark.parametrize("key_batch", [(2, 3), (1, 3)], ids=["same", "broadcast"])
def test_qsdpa_in_fp32_is_torchs_attention(case, key_batch):
    """Format fp32 quantizes nothing, so the quantized attention must be torch's own (fp32 sums
    in another order: stated bound 1e-5)."""
    import torch.nn.functional as F
    from lowbit.nn.attention import qsdpa

    kwargs = dict(SDPA_CASES[case])
    if case == "bool mask":
        kwargs["attn_mask"][:, 0] = True  # no row fully masked
    g = torch.Generator().manual_seed(6)
    q = torch.randn(2, 3, 5, E, generator=g).requires_grad_()
    k, v = (torch.randn(*key_batch, 7, E, generator=g).requires_grad_() for _ in range(2))
    ours = qsdpa(q, k, v, _spec("fp32"), **kwargs)
    theirs = F.scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grads = [torch.autograd.grad(o.square().sum(), (q, k, v)) for o in (ours, theirs)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


MHA_CASES = {
    "plain": (dict(), dict()),
    "key padding + causal": (dict(), dict(key_padding_mask="pad", attn_mask="causal")),
    "3-D float mask, weights per head": (dict(), dict(attn_mask="float3d", average_attn_weights=False)),
    "bias_k, add_zero_attn": (dict(add_bias_kv=True, add_zero_attn=True), dict(key_padding_mask="pad")),
    "separate kdim/vdim": (dict(kdim=6, vdim=10), dict()),
}


@pytest.mark.parametrize("case", MHA_CASES)
def test_qmultiheadattention_in_fp32_is_torchs(case):
    """QMultiheadAttention in format fp32 against nn.MultiheadAttention itself: outputs,
    attention weights and gradients (fp32 sums in another order: stated bound 1e-5)."""
    from torch import nn
    from lowbit.nn.attention import QMultiheadAttention

    module_kw, call_kw = MHA_CASES[case]
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=True, **module_kw)
    ours = QMultiheadAttention.from_mha(mha, "fp32")
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 5, 12, generator=g, requires_grad=True)
    k = torch.randn(2, 7, module_kw.get("kdim", 12), generator=g, requires_grad=True)
    v = torch.randn(2, 7, module_kw.get("vdim", 12), generator=g, requires_grad=True)
    masks = {"pad": torch.tensor([[False] * 7, [False] * 5 + [True] * 2]),
             "causal": torch.ones(5, 7, dtype=torch.bool).triu(1),
             "float3d": torch.randn(2 * 3, 5, 7, generator=g)}
    kw = {name: masks.get(value, value) if isinstance(value, str) else value for name, value in call_kw.items()}
    results = []
    for module in (ours, mha):
        out, weights = module(q, k, v, **kw)
        grads = torch.autograd.grad(out.square().sum() + weights.sum(), (q, k, v, mha.in_proj_weight
                                                                          if mha._qkv_same_embed_dim else mha.q_proj_weight))
        results.append((out, weights, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
