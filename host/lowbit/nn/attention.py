"""Quantized matmul, scaled-dot-product attention and nn.MultiheadAttention (docs/layers.md).

A matmul ``Z[b] = A[b] @ B[b]`` is a batch of GEMMs of the one kernel. Its operands are laid out
as the kernel wants them, [rows, K] grouped along K: MLS groups are one per (batch, row, block of
``block`` along K), the tensor scale (MLS St, PoT 2^s) is one per whole operand.

forward : Q(A) [B*M, K]   x  Q(B^T) [B*N, K]         -> Z  [B, M, N]
dA      : Q(E) [B*M, N]   x  Q(B)   [B*K, N]         -> dA [B, M, K]
dB      : Q(A^T) [B*K, M] x  Q(E^T) [B*N, M]         -> dB [B, K, N]

Both matmul operands are activations (operand kind "A", its rounding), the incoming gradient is
"E". With MLS every operand is quantized once per grouping it is reduced along (as QLinear does);
PoT / fp32 / Mogami have no groups, so the transposes reuse the forward's codes.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lowbit.numerics.formats import MLS, Mogami
from lowbit.numerics.qtensor import QTensor
from lowbit.numerics.quant import contiguous
from lowbit.kernel.wire import Op
from lowbit.nn.functional import linear
from lowbit.nn.spec import LayerSpec


def _rows(spec: LayerSpec, t: torch.Tensor, operand: str) -> QTensor:
    """Q(t) for t [B, R, C]: MLS as the 2-D operand [B*R, C] (groups along C; a transposed view is
    copied by the native gather, quant.contiguous, not by reshape); the ungrouped formats as t itself,
    [B, R, C], whose flat order is the same (a view rounded to nearest is then read in place)."""
    if not isinstance(spec.fmt, MLS):
        return spec.quantize(t, operand)
    return spec.quantize(contiguous(t).view(-1, t.shape[-1]), operand, block=spec.block)


def _batch_transpose(q: QTensor, batch: int) -> QTensor:
    """[B, R, C] (or its rows [B*R, C]) -> the view [B, C, R] of an ungrouped QTensor: same codes,
    same scale, nothing copied (a backend with ``gemm_batched`` reads the view; the others get
    2-D slices of it)."""
    def t(x):
        return (x if x.dim() == 3 else x.view(batch, -1, x.shape[-1])).transpose(1, 2)
    values = None if q.values is None else t(q.values)
    return QTensor(q.fmt, t(q.codes), None, q.tensor_scale, q.dtype, q.block, values)


def row_slice(q: QTensor, start: int, stop: int) -> QTensor:
    """Rows [start, stop) of a 2-D QTensor (its group scales and tensor scale with them)."""
    scales = q.scale_codes
    if scales is not None and scales.shape[0] > 1:
        scales = scales[start:stop]
    return dataclasses.replace(q, codes=q.codes[start:stop], scale_codes=scales,
                               values=None if q.values is None else q.values[start:stop])


def _batch_slice(q: QTensor, i: int, batch: int) -> QTensor:
    """Slice i of a batched operand: rows [B*R, K] or the view [B, R, K]."""
    if q.codes.dim() == 3:
        return dataclasses.replace(q, codes=q.codes[i], values=None if q.values is None else q.values[i])
    rows = q.shape[0] // batch
    return row_slice(q, i * rows, (i + 1) * rows)


def batched_gemm(spec: LayerSpec, phase: str, a: QTensor, b: QTensor, batch: int, op: Op) -> torch.Tensor:
    """[batch, M, N]: slice i of ``a`` times slice i of ``b`` transposed (each [batch*rows, K] or
    [batch, rows, K]), one GEMM each (recorded as ``batch`` calls); a backend with
    ``gemm_batched`` runs them in one call."""
    spec.record(phase, batch)
    with torch._C.DisableTorchFunction():
        fast = getattr(spec.backend, "gemm_batched", None)
        if fast is not None:
            return fast(a, b, batch, op=op)
        return torch.stack([spec.backend.gemm(_batch_slice(a, i, batch), _batch_slice(b, i, batch), op=op)
                            for i in range(batch)])


def _matmul_forward(spec: LayerSpec, a: torch.Tensor, b: torch.Tensor):
    """(a @ b, what its backward needs): the forward GEMM of a [B, M, K] @ b [B, K, N]."""
    qa, qbt = _rows(spec, a, "A"), _rows(spec, b.transpose(1, 2), "A")
    return batched_gemm(spec, "fwd", qa, qbt, a.shape[0], Op.FORWARD), (a, b, qa, qbt)


def _matmul_backward(spec: LayerSpec, saved, dz: torch.Tensor, need_a: bool, need_b: bool):
    """(dA, dB) of ``_matmul_forward`` from dz [B, M, N]: the backward-data and weight-gradient GEMMs."""
    a, b, qa, qbt = saved
    batch, grouped = a.shape[0], isinstance(spec.fmt, MLS)
    qe = _rows(spec, dz, "E")
    da = db = None
    if need_a:
        qb = _rows(spec, b, "A") if grouped else _batch_transpose(qbt, batch)
        da = batched_gemm(spec, "bwd_data", qe, qb, batch, Op.BACKWARD_DATA)
    if need_b:
        qat = _rows(spec, a.transpose(1, 2), "A") if grouped else _batch_transpose(qa, batch)
        qet = _rows(spec, dz.transpose(1, 2), "E") if grouped else _batch_transpose(qe, batch)
        db = batched_gemm(spec, "wgrad", qat, qet, batch, Op.WEIGHT_GRAD)
    return da, db


class QMatmulFunction(torch.autograd.Function):
    """a [B, M, K] @ b [B, K, N] with its three GEMMs in the format (module docstring)."""

    @staticmethod
    def forward(ctx, a, b, spec: LayerSpec):
        z, ctx.saved = _matmul_forward(spec, a, b)
        ctx.spec = spec
        return z

    @staticmethod
    def backward(ctx, dz):
        da, db = _matmul_backward(ctx.spec, ctx.saved, dz, *ctx.needs_input_grad[:2])
        ctx.saved = None
        return da, db, None


class QAttentionFunction(torch.autograd.Function):
    """softmax(Q.K^T * scale + masks) . V for q [B*H, L, E], k [B*H, S, E], v [B*H, S, Ev]: both
    matmuls' three GEMMs as QMatmulFunction's, the scale, the additive masks (each broadcast
    against the scores viewed [B, H, L, S], added in order) and the softmax in place on the GEMM's
    fresh output, and their backwards in place too: one autograd node where the composed ops made
    six, the same values. Returns (output, attention probabilities); both are differentiable. An
    output nobody differentiates (usually the probabilities) gets no gradient tensor: autograd
    would otherwise fill a [B*H, L, S] zero tensor and the backward add it."""

    @staticmethod
    def forward(ctx, q, k, v, spec: LayerSpec, heads: int, scale: float, *masks):
        ctx.set_materialize_grads(False)
        scores, ctx.qk = _matmul_forward(spec, q, k.transpose(1, 2))
        scores4 = scores.view(-1, heads, *scores.shape[1:]).mul_(scale)
        for mask in masks:
            scores4.add_(mask)
        p = torch.softmax(scores, dim=-1)
        out, ctx.pv = _matmul_forward(spec, p, v)
        ctx.spec, ctx.heads, ctx.scale, ctx.mask_shapes = spec, heads, scale, [m.shape for m in masks]
        ctx.save_for_backward(p)
        return out, p

    @staticmethod
    def backward(ctx, dout, dp_weights):
        spec, (p,) = ctx.spec, ctx.saved_tensors
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        need_masks = ctx.needs_input_grad[6:]
        need_scores = need_q or need_k or any(need_masks)
        dp = dv = None
        if dout is not None:  # None: only the probabilities reach the loss, P.V has no backward
            dp, dv = _matmul_backward(spec, ctx.pv, dout, need_scores, need_v)
        dq = dk = None
        mask_grads = [None] * len(need_masks)
        if need_scores:
            if dp_weights is not None:
                dp = dp_weights if dp is None else dp.add_(dp_weights)
            ds = torch._softmax_backward_data(dp, p, -1, p.dtype)
            ds4 = ds.view(-1, ctx.heads, *ds.shape[1:])
            mask_grads = [ds4.sum_to_size(shape) if need else None for need, shape in zip(need_masks, ctx.mask_shapes)]
            ds = ds * ctx.scale if any(need_masks) else ds.mul_(ctx.scale)  # a mask's gradient may alias ds
            dq, dkt = _matmul_backward(spec, ctx.qk, ds, need_q, need_k)
            dk = None if dkt is None else dkt.transpose(1, 2)
        ctx.qk = ctx.pv = None
        return (dq, dk, dv, None, None, None, *mask_grads)


def check_operands(spec: LayerSpec, *tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.is_complex():
            raise ValueError(f"layer {spec.label!r}: a complex-valued ({t.dtype}) multiply cannot run in {spec.fmt} "
                             "(the kernel multiplies real codes); keep this op in fp32 or split it into real and "
                             "imaginary matmuls")
        if not t.is_floating_point():
            raise ValueError(f"layer {spec.label!r}: operand of dtype {t.dtype} cannot be quantized to {spec.fmt}; "
                             "pass floating-point tensors")
    if isinstance(spec.fmt, Mogami) and spec.mogami_backward == "exact":
        raise ValueError(f"layer {spec.label!r}: mogami_backward='exact' is implemented for Conv/Linear layers; "
                         "matmuls and attention use 'approx' (convert with mogami_backward='approx' or override "
                         "this layer)")


def qmatmul(a: torch.Tensor, b: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
    """torch.matmul(a, b) (1-D operands and broadcast batch dims as torch has them) in spec's format."""
    check_operands(spec, a, b)
    vec_a, vec_b = a.dim() == 1, b.dim() == 1
    a = a.unsqueeze(0) if vec_a else a
    b = b.unsqueeze(-1) if vec_b else b
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (m, k), n = a.shape[-2:], b.shape[-1]
    if b.shape[-2] != k:
        raise ValueError(f"layer {spec.label!r}: matmul shapes {tuple(a.shape)} and {tuple(b.shape)} do not match")
    a3 = a.expand(*batch, m, k).reshape(-1, m, k)
    b3 = b.expand(*batch, k, n).reshape(-1, k, n)
    z = _apply_matmul(a3, b3, spec).reshape(*batch, m, n)
    z = z.squeeze(-1) if vec_b else z
    return z.squeeze(-2) if vec_a else z


@torch.compiler.disable
def _apply_matmul(a, b, spec):
    return QMatmulFunction.apply(a, b, spec)


def qlinear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], spec: LayerSpec) -> torch.Tensor:
    """F.linear(x, weight, bias) with QLinear's three GEMMs (weight operand "W")."""
    check_operands(spec, x, weight)
    return linear(x, weight, bias, spec)


def qsdpa(query, key, value, spec: LayerSpec, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
          scale: Optional[float] = None, enable_gqa: bool = False) -> torch.Tensor:
    """F.scaled_dot_product_attention ([..., L, E] operands, batch dims broadcast) with Q.K^T and
    P.V quantized (``_attention``); scaling, masking, softmax and dropout stay fp32 element-wise ops."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    (length, _), source = query.shape[-2:], key.shape[-2]
    batch = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])

    def flat(t):
        return t.expand(*batch, *t.shape[-2:]).reshape(-1, *t.shape[-2:])

    masks = []
    if is_causal:
        masks.append(_additive(torch.ones(length, source, dtype=torch.bool, device=query.device).triu(1), query))
    if attn_mask is not None:  # bool: True = take part
        mask = _additive(~attn_mask, query) if attn_mask.dtype == torch.bool else attn_mask
        masks.append(mask.expand(*batch, length, source).reshape(-1, 1, length, source))
    out, _ = _attention(flat(query), flat(key), flat(value), spec, 1, scale, masks, dropout_p)
    return out.view(*batch, length, value.shape[-1])


def _additive(mask: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    """nn.MultiheadAttention's masks (bool: True = not allowed) as an additive fp32 mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(mask, float("-inf"))
    return mask.to(like.dtype)


def mha_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias, bias_k, bias_v,
                add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True, key_padding_mask=None,
                need_weights=True, attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                is_causal=False, *, spec: LayerSpec):
    """F.multi_head_attention_forward (same arguments, sequence-first [L, N, E]) with every GEMM
    quantized: in-projections, Q.K^T, P.V and out-projection."""
    if static_k is not None or static_v is not None:
        raise ValueError(f"layer {spec.label!r}: static_k / static_v are not supported by the quantized attention")
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
    tgt_len, bsz, embed_dim = query.shape
    if embed_dim != embed_dim_to_check:
        raise ValueError(f"layer {spec.label!r}: query has embedding size {embed_dim}, expected {embed_dim_to_check}")
    head_dim = embed_dim // num_heads
    q, k, v = _in_projection(query, key, value, in_proj_weight, in_proj_bias, use_separate_proj_weight,
                             q_proj_weight, k_proj_weight, v_proj_weight, spec)
    attn_mask, key_padding_mask = _additive(attn_mask, q), _additive(key_padding_mask, q)
    if is_causal and attn_mask is None:
        attn_mask = _additive(torch.ones(tgt_len, k.shape[0], dtype=torch.bool, device=q.device).triu(1), q)
    if bias_k is not None:
        k, v = torch.cat([k, bias_k.repeat(1, bsz, 1)]), torch.cat([v, bias_v.repeat(1, bsz, 1)])
        attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
    q = q.reshape(tgt_len, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.reshape(k.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
    v = v.reshape(v.shape[0], bsz * num_heads, head_dim).transpose(0, 1)
    if add_zero_attn:
        k = torch.cat([k, k.new_zeros(bsz * num_heads, 1, head_dim)], dim=1)
        v = torch.cat([v, v.new_zeros(bsz * num_heads, 1, head_dim)], dim=1)
        attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
    src_len = k.shape[1]
    masks = [] if attn_mask is None else [attn_mask.view(bsz, num_heads, tgt_len, src_len) if attn_mask.dim() == 3
                                          else attn_mask]
    if key_padding_mask is not None:
        masks.append(key_padding_mask.view(bsz, 1, 1, src_len))
    out, p = _attention(q, k, v, spec, num_heads, 1.0 / math.sqrt(head_dim), masks,
                        dropout_p if training else 0.0)  # p: [N*H, L, S]
    out = out.transpose(0, 1).reshape(tgt_len * bsz, embed_dim)
    out = qlinear(out, out_proj_weight, out_proj_bias, spec).view(tgt_len, bsz, embed_dim)
    weights = None
    if need_weights:
        weights = p.view(bsz, num_heads, tgt_len, src_len)
        weights = weights.mean(dim=1) if average_attn_weights else weights
        weights = weights.squeeze(0) if unbatched else weights
    return (out.squeeze(1) if unbatched else out), weights


def _attention(q, k, v, spec: LayerSpec, heads: int, scale: float, masks: list, dropout_p: float):
    """(softmax(Q.K^T * scale + masks) . V, the probabilities): one QAttentionFunction, or with
    dropout between the softmax and P.V the same ops composed."""
    check_operands(spec, q, k, v)
    if dropout_p == 0.0:
        return _apply_attention(q, k, v, spec, heads, scale, *masks)
    scores = qmatmul(q, k.transpose(1, 2), spec)
    scores4 = scores.view(-1, heads, *scores.shape[1:]) * scale
    for mask in masks:
        scores4 = scores4 + mask
    p = torch.softmax(scores4, dim=-1).view(scores.shape)
    return qmatmul(F.dropout(p, dropout_p), v, spec), p


@torch.compiler.disable
def _apply_attention(*args):
    return QAttentionFunction.apply(*args)


def _in_projection(query, key, value, in_w, in_b, separate, w_q, w_k, w_v, spec):
    e = query.shape[-1]
    if not separate:
        if query is key and key is value:
            return qlinear(query, in_w, in_b, spec).chunk(3, dim=-1)
        w_q, w_k, w_v = in_w.split([e, e, e])
    b_q, b_k, b_v = (None, None, None) if in_b is None else in_b.split([e, e, e])
    return qlinear(query, w_q, b_q, spec), qlinear(key, w_k, b_k, spec), qlinear(value, w_v, b_v, spec)


def _keep_off_fused_path(module, args):
    """A forward pre-hook that does nothing: its presence makes nn.TransformerEncoderLayer skip
    torch's fused fp32 inference kernel (which checks for hooks), so eval() runs these GEMMs."""
    return None


_MHA_PARAMS = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight", "bias_k",
               "bias_v")


def _seq_first(query, key, value):
    """[N, L, E] -> [L, N, E], keeping self-attention's one tensor one tensor (one packed in-projection)."""
    flip = lambda t: t.transpose(1, 0) if t.dim() == 3 else t  # noqa: E731
    if query is key and key is value:
        query = key = value = flip(query)
        return query, key, value
    return flip(query), flip(key), flip(value)


class QMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention with every GEMM in ``fmt``: the in-projections and out-projection
    (three GEMMs each, as QLinear) and Q.K^T, P.V (three each, as qmatmul). Same parameters and
    state_dict as the torch module."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None, *, fmt="mls:2,1",
                 backend="software", **spec_kwargs):
        super().__init__(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first,
                         device, dtype)
        self.spec = LayerSpec.make(fmt, backend, **spec_kwargs)
        self.register_forward_pre_hook(_keep_off_fused_path)

    fmt = property(lambda self: self.spec.fmt)
    backend = property(lambda self: self.spec.backend)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention, fmt, backend="software", **spec_kwargs):
        q = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.in_proj_bias is not None, mha.bias_k is not None,
                mha.add_zero_attn, mha.kdim, mha.vdim, mha.batch_first, device="meta", fmt=fmt, backend=backend,
                **spec_kwargs)
        for name in _MHA_PARAMS:
            setattr(q, name, getattr(mha, name))
        q.out_proj = mha.out_proj
        q.train(mha.training)
        return q

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        self.spec.training = self.training
        if self.batch_first:
            query, key, value = _seq_first(query, key, value)
        out, weights = mha_forward(
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight, self.out_proj.bias,
            training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, use_separate_proj_weight=not self._qkv_same_embed_dim,
            q_proj_weight=self.q_proj_weight, k_proj_weight=self.k_proj_weight, v_proj_weight=self.v_proj_weight,
            average_attn_weights=average_attn_weights, is_causal=is_causal, spec=self.spec)
        if self.batch_first and out.dim() == 3:
            out = out.transpose(1, 0)
        return out, weights

    def extra_repr(self) -> str:
        return f"fmt={self.spec.describe()}, backend={self.spec.backend.name}"


class Matmul(nn.Module):
    """torch.matmul as a module, for user code: ``self.mm = lowbit.nn.Matmul()`` then
    ``self.mm(a, b)``. convert() swaps it for QMatmul; as it is, it computes in fp32."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


class QMatmul(Matmul):
    """torch.matmul(a, b) with its three GEMMs in ``fmt`` (module docstring for the layout)."""

    def __init__(self, *, fmt="mls:2,1", backend="software", **spec_kwargs):
        super().__init__()
        self.spec = LayerSpec.make(fmt, backend, **spec_kwargs)

    fmt = property(lambda self: self.spec.fmt)
    backend = property(lambda self: self.spec.backend)

    @classmethod
    def from_matmul(cls, module: Matmul, fmt, backend="software", **spec_kwargs):
        q = cls(fmt=fmt, backend=backend, **spec_kwargs)
        q.train(module.training)
        return q

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.spec.training = self.training
        return qmatmul(a, b, self.spec)

    def extra_repr(self) -> str:
        return f"fmt={self.spec.describe()}, backend={self.spec.backend.name}"
