"""Operation counts of ONE training step of a torch model, from the model's real layers.

The model runs one forward pass on a zero input of the given shape. Forward hooks read the
real geometry of every conv / linear / batch-norm call; a ``TorchFunctionMode`` sees the
functions called between modules (residual adds) and which activations are consumed more than
once (each extra consumer costs one add per element in the backward pass, where the errors of
the branches meet). Nothing is looked up in a table typed by hand.

Counting rules (MLS paper, Appendix C and Alg. 2; our readings are marked):

* which GEMMs are low-bit: for a plain model, ``lowbit.nn.plan`` (the same answer convert()
  acts on: first/last kept, no twin -> fp32); for a converted model, each module's own format.
  Whatever stays fp32 (Conv3d, RNN cells, functional matmuls / F.linear /
  scaled_dot_product_attention in user code) is priced as fp32 GEMMs.
* conv / linear: three GEMMs per layer, forward, backward-data (skipped when the layer's input
  needs no gradient: the first layer, as in Alg. 2) and weight-gradient, each with
  ``macs = products`` (zero padding included, as every MAC counter does). A transposed conv
  has products = input elements x Cout/groups x taps.
* multi-head attention: the in-projections and out-projection (three GEMMs each, as linear) and
  Q.K^T, P.V (forward, and a gradient GEMM per operand that needs one); lowbit.nn.Matmul the same.
* LSTM / GRU / RNN: the gate GEMMs (input and hidden weights, forward and both backwards).
* per format, for a GEMM of ``macs`` products and ``G`` = (output, group) partial sums:
  fp32:   fp32_mul = macs, fp32_add = macs (Table 5 counts adds = muls)
  mls:    lowbit_mul = macs, int_add = macs - G (local accumulation), group_scale = G (Eq. 8
          shift-add), tree_add = G (fp32 adder tree).  Eq. 9: per 9 MULs 8 / 1 / 1.
          Groups: K*K taps for forward and backward-data, H_out*W_out (one sample) for the
          weight gradient (docs/layers.md), ``linear_block`` (default: the whole row) for linear.
  pot:    xor = macs, int4_add = macs (exponent add), int_add = macs (shifted integer
          accumulate), group_scale = outputs (one power-of-two rescale per output) [ours].
  mogami: mogami_add = macs (integer add of bit patterns), fp32_add = macs.
* batch norm: 9 fp32 mul + 10 fp32 add per output element (fwd 3M4A, bwd 6M6A, Eq. 13-14).
* element-wise adds: one fp32 add per output element forward; one per element per extra
  consumer backward. For MLS one extra fp32 mul per element (the tensor-scale ratio, App. C).
* optimizer: SGD, per parameter 1 mul + 1 add for the update, +1/+1 for momentum, +1/+1 for
  weight decay.
* quantization (MLS, PoT and the fp8 baseline; not Mogami): 4 fp32 mul + 2 fp32 add per quantized
  element of W, A and E (Appendix C).
* fp8 (baseline only, Sun et al. 2019): fp8_mul = macs, fp32_add = macs.
* not counted: ReLU, pooling, loss, conv/linear bias of fp32 layers is counted as fp32 adds.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from lowbit.numerics import formats

OPS = (
    "fp32_mul", "fp32_add", "lowbit_mul", "int_add", "group_scale", "tree_add",
    "xor", "int4_add", "mogami_add", "fp8_mul",
)
PARTS = ("conv", "fc", "matmul", "rnn", "bn", "ewadd", "sgd", "dq", "bias")
FP32_LAYER_POLICIES = ("first_last", "linear", "none")
COLUMNS = ["layer", "module", "part", "phase", "op", "count"]

_ADD_FUNCS = {
    torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__iadd__,
    torch.Tensor.__radd__, torch.sub, torch.Tensor.sub, torch.Tensor.sub_, torch.Tensor.__sub__,
    torch.Tensor.__isub__, torch.Tensor.__rsub__,
}
_CONV = nn.modules.conv._ConvNd
PRODUCT_OPS = ["fp32_mul", "fp8_mul", "lowbit_mul", "xor", "mogami_add"]  # one per product, per format
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
_MATMUL_FUNCS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm,
                 torch.mm, torch.Tensor.mm}
_DEFAULT_BLOCK = 32  # lowbit.nn.LayerSpec's default group length along K (QLinear, matmul)


@dataclass(frozen=True)
class FP8Baseline:
    """Not a lowbit format: the FP8 training of Sun et al. 2019 (FP8 multiply, fp32 accumulate), the
    MLS paper's second baseline. Only the energy model knows it (``fmt="fp8"``)."""

    kind = "fp8"

    def __str__(self) -> str:
        return "fp8"


def parse_format(fmt):
    """formats.parse, plus the energy-only baseline "fp8"."""
    if isinstance(fmt, FP8Baseline) or (isinstance(fmt, str) and fmt.strip().lower() == "fp8"):
        return FP8Baseline()
    return formats.parse(fmt)


@dataclass(frozen=True)
class Gemm:
    """One GEMM of training: ``macs`` products, ``outputs`` results, reduction blocks of ``block``."""

    macs: int
    outputs: int
    block: int

    @property
    def partial_sums(self) -> int:
        """(output, group) pairs: the partial sums the adder tree combines."""
        return math.ceil(self.macs / max(1, self.block))


def gemm_ops(fmt: formats.Format, gemm: Gemm) -> dict[str, int]:
    """Ops of one GEMM in a number format (the per-format rules of the module docstring)."""
    fmt = parse_format(fmt)
    m = gemm.macs
    if fmt.kind == "fp32":
        return {"fp32_mul": m, "fp32_add": m}
    if fmt.kind == "fp8":
        return {"fp8_mul": m, "fp32_add": m}
    if fmt.kind == "mls":
        g = gemm.partial_sums
        return {"lowbit_mul": m, "int_add": m - g, "group_scale": g, "tree_add": g}
    if fmt.kind == "pot":
        return {"xor": m, "int4_add": m, "int_add": m, "group_scale": gemm.outputs}
    if fmt.kind == "mogami":
        return {"mogami_add": m, "fp32_add": m}
    raise ValueError(f"no op-count rule for format {fmt}")


def lowbit_mul_label(fmt: formats.Format) -> str:
    """Name of the low-bit multiplier: FP7Mul for MLS <2,4> (Table 5: sign + 2-bit exp + 4-bit man)."""
    fmt = parse_format(fmt)
    if fmt.kind == "mls":
        return f"FP{fmt.code_bits}Mul"
    if fmt.kind == "mogami":
        return f"IntAdd{fmt.code_bits}"  # the product adds the operands' bit patterns: 32 or 16 bits
    return {"fp32": "FloatMul", "fp8": "FP8Mul", "pot": "XOR+INT4Add"}[fmt.kind]


@dataclass
class _Call:
    name: str
    module: nn.Module
    kind: str  # conv | linear | attention | matmul | rnn | bn
    in_shape: tuple
    out_shape: tuple
    in_needs_grad: bool
    arg_shapes: tuple = ()  # every tensor argument's shape (attention: query, key, value)
    arg_grads: tuple = ()


@dataclass
class _Trace:
    calls: list = field(default_factory=list)
    ewadds: list = field(default_factory=list)  # (context, elements)
    matmuls: list = field(default_factory=list)  # (context, macs, grad of a?, grad of b?)
    uses: Counter = field(default_factory=Counter)
    numel: dict = field(default_factory=dict)
    where: dict = field(default_factory=dict)
    alive: list = field(default_factory=list)  # keeps ids unique while tracing
    order: list = field(default_factory=list)  # layer / block names in execution order


def _module_kind(module: nn.Module) -> "str | None":
    from lowbit.nn.attention import Matmul

    if isinstance(module, _CONV):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    if isinstance(module, Matmul):
        return "matmul"
    if isinstance(module, nn.RNNBase):
        return "rnn"
    if isinstance(module, _NORMS):
        return "bn"
    return None


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _activations(obj) -> list:
    """Tensors that carry a gradient and are not parameters: the activations of the graph."""
    return [t for t in _tensors(obj) if t.requires_grad and not isinstance(t, nn.Parameter)]


class _Tracer(TorchFunctionMode):
    """Follows the functions called between modules; modules counted as a whole hide their insides."""

    def __init__(self, trace: _Trace) -> None:
        super().__init__()
        self.trace = trace
        self.depth = 0
        self.context = [""]

    def use(self, inputs: list, output, context: str) -> None:
        outs = _activations(output)
        if not outs:
            return
        out_ids = {id(t) for t in outs}
        for t, key in inputs:
            if id(t) in out_ids and key[1] == t._version:
                continue  # pass-through (nn.Identity): no consumer of its own
            self.trace.uses[key] += 1
            self.trace.numel[key] = t.numel()
            self.trace.where.setdefault(key, context)
            self.trace.alive.append(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth:
            return func(*args, **kwargs)
        inputs = [(t, (id(t), t._version)) for t in _activations((args, kwargs))]
        out = func(*args, **kwargs)
        self.use(inputs, out, self.context[-1])
        if func in _MATMUL_FUNCS and isinstance(out, torch.Tensor) and len(args) >= 2:
            a, b = args[0], args[1]
            macs = out.numel() * a.shape[-1]
            self.trace.matmuls.append((self.context[-1], macs, bool(a.requires_grad), bool(b.requires_grad)))
            self.trace.order.append(self.context[-1])
        if func is F.linear and isinstance(out, torch.Tensor):
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            self.trace.matmuls.append((self.context[-1], out.numel() * w.shape[1], bool(x.requires_grad),
                                       bool(w.requires_grad)))
            self.trace.order.append(self.context[-1])
        if func is F.scaled_dot_product_attention and isinstance(out, torch.Tensor):
            q, k, v = args[:3]
            scores = out.numel() // v.shape[-1] * k.shape[-2]
            grad = bool(q.requires_grad or k.requires_grad or v.requires_grad)
            self.trace.matmuls.append((self.context[-1], scores * q.shape[-1], grad, grad))
            self.trace.matmuls.append((self.context[-1], scores * v.shape[-1], grad, grad))
            self.trace.order.append(self.context[-1])
        if func in _ADD_FUNCS and isinstance(out, torch.Tensor) and inputs:
            operands = [a for a in args[:2] if isinstance(a, torch.Tensor) and a.numel() > 1]
            if len(operands) == 2:
                self.trace.ewadds.append((self.context[-1], out.numel()))
                self.trace.order.append(self.context[-1])
        return out


def _install_hooks(model: nn.Module, tracer: _Tracer) -> list:
    handles, pending = [], []

    def pre(name, atomic):
        def hook(module, args):
            tracer.context.append(name)
            if atomic:
                if tracer.depth == 0:
                    pending.append([(t, (id(t), t._version)) for t in _activations(args)])
                tracer.depth += 1
        return hook

    def post(name, atomic):
        def hook(module, args, output):
            tracer.context.pop()
            if not atomic:
                return
            tracer.depth -= 1
            if tracer.depth:
                return
            tracer.use(pending.pop(), output, tracer.context[-1])
            kind = _module_kind(module)
            if kind:
                x = args[0]
                out = output[0] if isinstance(output, tuple) else output
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                tracer.trace.calls.append(_Call(
                    name, module, kind, tuple(x.shape), tuple(out.shape), bool(x.requires_grad),
                    tuple(tuple(a.shape) for a in tensors), tuple(bool(a.requires_grad) for a in tensors)))
                tracer.trace.order.append(name)
        return hook

    for name, module in model.named_modules():
        atomic = _module_kind(module) is not None or not any(True for _ in module.children())
        handles.append(module.register_forward_pre_hook(pre(name or "model", atomic)))
        handles.append(module.register_forward_hook(post(name or "model", atomic)))
    return handles


def _example(model: nn.Module, input_shape, batch: int) -> torch.Tensor:
    if isinstance(input_shape, torch.Tensor):  # a real example batch (token ids, ...), used as given
        if input_shape.dim() == 0:
            raise ValueError("an example input needs a batch dimension")
        return input_shape
    shape = (int(batch), *[int(s) for s in input_shape])
    if batch < 1 or any(s < 1 for s in shape):
        raise ValueError(f"batch and input sizes must be >= 1, got batch={batch}, input={tuple(input_shape)}")
    param = next(model.parameters())
    return torch.zeros(shape, device=param.device, dtype=param.dtype)


def trace(model: nn.Module, input_shape, batch: int = 1) -> _Trace:
    """Run one forward pass (eval mode) and record layer calls, adds, matmuls and fan-outs.

    ``input_shape``: one sample's shape (a zero batch of ``batch`` is made), or an example input
    tensor with its batch dimension (for inputs that are not float images, e.g. token ids)."""
    if next(model.parameters(), None) is None:
        raise ValueError("the model has no parameters: nothing to train, nothing to count")
    example = _example(model, input_shape, batch)
    result = _Trace()
    tracer = _Tracer(result)
    handles = _install_hooks(model, tracer)
    modes = {m: m.training for m in model.modules()}
    model.eval()  # batch statistics do not change the counts; eval mode accepts batch 1
    try:
        with torch.enable_grad(), tracer:
            model(example)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.train(training)
        result.alive.clear()
    return result


def _layer_gemms(call: _Call, linear_block: "int | None") -> dict[str, Gemm]:
    """The GEMMs of one conv / linear call (im2col view, docs/layers.md)."""
    m = call.module
    out = math.prod(call.out_shape)
    if call.kind == "conv":
        taps = math.prod(m.kernel_size)
        if m.transposed:  # every input element meets Cout/groups x taps weights
            macs = math.prod(call.in_shape) * (m.out_channels // m.groups) * taps
        else:
            macs = out * (m.in_channels // m.groups) * taps
        per_sample = math.prod(call.out_shape[2:])
        gemms = {"fwd": Gemm(macs, out, taps)}
        if call.in_needs_grad:
            gemms["bwd_data"] = Gemm(macs, math.prod(call.in_shape), taps)
        if m.weight.requires_grad:
            gemms["wgrad"] = Gemm(macs, m.weight.numel(), per_sample)
        return gemms
    rows = out // m.out_features
    return _linear_gemms(rows, m.in_features, m.out_features, call.in_needs_grad, m.weight.requires_grad,
                         _block(m, linear_block))


def _block(module: nn.Module, linear_block: "int | None") -> int:
    return linear_block or getattr(getattr(module, "spec", None), "block", None) or _DEFAULT_BLOCK


def _linear_gemms(rows: int, k: int, n: int, need_x: bool, need_w: bool, block: int) -> dict[str, Gemm]:
    """x [rows, k] @ W^T [k, n]: each GEMM grouped along its reduction dim in ``block``s."""
    macs = rows * k * n
    gemms = {"fwd": Gemm(macs, rows * n, min(block, k))}
    if need_x:
        gemms["bwd_data"] = Gemm(macs, rows * k, min(block, n))
    if need_w:
        gemms["wgrad"] = Gemm(macs, k * n, min(block, rows))
    return gemms


def _matmul_gemms(batch: int, m: int, k: int, n: int, need_a: bool, need_b: bool, block: int) -> dict[str, Gemm]:
    """A [m, k] @ B [k, n] per batch element; the gradient GEMMs of A and of B as bwd_data / wgrad."""
    macs = batch * m * k * n
    gemms = {"fwd": Gemm(macs, batch * m * n, min(block, k))}
    if need_a:
        gemms["bwd_data"] = Gemm(macs, batch * m * k, min(block, n))
    if need_b:
        gemms["wgrad"] = Gemm(macs, batch * k * n, min(block, m))
    return gemms


def _seq_batch(shape: tuple, batch_first: bool) -> tuple:
    """(length, batch) of an attention input [L, N, E] / [N, L, E] / unbatched [L, E]."""
    if len(shape) == 2:
        return shape[0], 1
    return (shape[1], shape[0]) if batch_first else (shape[0], shape[1])


def _attention_gemms(call: _Call, linear_block: "int | None") -> list:
    """(part, GEMMs, weight elements) of each GEMM family of one nn.MultiheadAttention call."""
    m = call.module
    block = _block(m, linear_block)
    shapes = list(call.arg_shapes) + [call.arg_shapes[0]] * (3 - len(call.arg_shapes))
    grads = list(call.arg_grads) + [call.arg_grads[0]] * (3 - len(call.arg_grads))
    (length, batch), (source, _) = _seq_batch(shapes[0], m.batch_first), _seq_batch(shapes[1], m.batch_first)
    e, heads = m.embed_dim, m.num_heads
    need_w = any(p.requires_grad for p in m.parameters())
    source += int(m.bias_k is not None) + int(m.add_zero_attn)
    out = []
    for rows, width, need in ((length * batch, shapes[0][-1], grads[0]), (source * batch, shapes[1][-1], grads[1]),
                              (source * batch, shapes[2][-1], grads[2])):
        out.append(("fc", _linear_gemms(rows, width, e, need, need_w, block),
                    {"W": width * e, "A": rows * width, "E": rows * e}))
    inner = any(grads) or need_w
    bh, hd = batch * heads, e // heads
    for m_, k_, n_ in ((length, hd, source), (length, source, hd)):  # Q.K^T, then P.V
        out.append(("matmul", _matmul_gemms(bh, m_, k_, n_, inner, inner, block),
                    {"A": bh * (m_ * k_ + k_ * n_), "E": bh * m_ * n_}))
    out.append(("fc", _linear_gemms(length * batch, e, e, inner, need_w, block),
                {"W": e * e, "A": length * batch * e, "E": length * batch * e}))
    return out


def _matmul_module_gemms(call: _Call, linear_block: "int | None") -> list:
    (a, b), (ga, gb) = call.arg_shapes[:2], call.arg_grads[:2]
    a, b = (1,) + a if len(a) == 1 else a, b + (1,) if len(b) == 1 else b
    batch = math.prod(call.out_shape) // max(1, a[-2] * b[-1])
    m_, k_, n_ = a[-2], a[-1], b[-1]
    return [("matmul", _matmul_gemms(batch, m_, k_, n_, ga, gb, _block(call.module, linear_block)),
             {"A": batch * (m_ * k_ + k_ * n_), "E": batch * m_ * n_})]


def _rnn_gemms(call: _Call) -> list:
    """The gate GEMMs of an LSTM / GRU / RNN (all layers and directions): per layer the input
    GEMM over all steps and the hidden GEMMs of every step."""
    m = call.module
    gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
    shape = call.in_shape
    steps, batch = (shape[0], 1) if len(shape) == 2 else ((shape[1], shape[0]) if m.batch_first else shape[:2])
    dirs = 2 if m.bidirectional else 1
    hidden = m.proj_size or m.hidden_size
    out = []
    for layer in range(m.num_layers):
        width = m.input_size if layer == 0 else hidden * dirs
        for k in (width, hidden):
            g = _linear_gemms(steps * batch, k, gates * m.hidden_size, True, True, _DEFAULT_BLOCK)
            rows = steps * batch * dirs
            out.append(("rnn", {p: Gemm(dirs * v.macs, dirs * v.outputs, v.block) for p, v in g.items()},
                        {"W": dirs * k * gates * m.hidden_size, "A": rows * k, "E": rows * gates * m.hidden_size}))
    return out


def _lowbit_names(model: nn.Module, fmt, policy: str) -> set:
    """The modules convert() would quantize (lowbit.nn.plan): "first_last" is convert's default,
    "none" its skip_first_last=False, "linear" keeps every Linear fp32 as well."""
    from lowbit.nn.convert import plan

    if fmt.kind == "fp8":
        fmt = formats.FP32()  # the plan depends on the modules, not on the format
    overrides = {nn.Linear: None} if policy == "linear" else None
    # "linear" is Table 5's convention: every conv low-bit, the first one included
    chosen = plan(model, fmt, skip_first_last=policy == "first_last", overrides=overrides)
    return {name or "model" for name, f in chosen.items() if f is not None}


def _own_format(module: nn.Module):
    own = getattr(module, "fmt", None)  # lowbit.nn twins (QConv*, QLinear, QMultiheadAttention...) carry theirs
    return own if isinstance(own, (formats.FP32, formats.MLS, formats.PoT, formats.Mogami)) else None


def _layer_format(call: _Call, fmt, lowbit: set, converted: bool):
    own = _own_format(call.module)
    if converted:  # a model from lowbit.convert: its layers say which format they compute in
        return own or formats.FP32()
    return fmt if call.name in lowbit else formats.FP32()


class OpCounts:
    """Counts of one training step: a long DataFrame (layer, module, part, phase, op, count)."""

    def __init__(self, frame: pd.DataFrame, fmt, batch: int, input_shape: tuple, mul_label: str) -> None:
        self.frame = frame
        self.fmt = fmt
        self.batch = batch
        self.input_shape = input_shape
        self.mul_label = mul_label

    def total(self, per_image: bool = False) -> dict:
        s = self.frame.groupby("op")["count"].sum()
        return {op: float(s[op]) / (self.batch if per_image else 1) for op in s.index}

    def macs(self, phase: str = "fwd", part: str = "conv") -> int:
        """Products of one GEMM phase (fwd | bwd_data | wgrad) summed over the layers of a part."""
        f = self.frame
        f = f[(f.part == part) & (f.phase == phase) & f.op.isin(PRODUCT_OPS)]
        return int(f["count"].sum())

    def by(self, *keys: str) -> pd.DataFrame:
        return self.frame.groupby(list(keys), sort=False)["count"].sum().unstack("op", fill_value=0)

    def __repr__(self) -> str:
        return f"OpCounts(fmt={self.fmt}, batch={self.batch}, input={self.input_shape}, rows={len(self.frame)})"


def count_training_step(
    model: nn.Module,
    input_shape,
    batch: int = 1,
    fmt="fp32",
    fp32_layers: str = "first_last",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    linear_block: "int | None" = None,
    as_converted: "bool | None" = None,
) -> OpCounts:
    """Ops of one SGD training step of ``model`` on a batch of ``batch`` inputs of ``input_shape``.

    ``fmt``: the low-bit format of the conv/linear GEMMs. ``fp32_layers``: which of them stay
    full precision: "first_last" (lowbit.convert's default, paper §5.1), "linear" (every Linear,
    as in Table 5 of the MLS paper), or "none". A model made by ``lowbit.convert`` is counted as
    converted: each twin in its own format, every other layer fp32 (``fmt`` and ``fp32_layers``
    are then ignored); ``as_converted=False`` counts it as its plain original instead (the
    baseline of an estimate). Multiply-bearing modules without a twin are always fp32.
    """
    fmt = parse_format(fmt)
    if fp32_layers not in FP32_LAYER_POLICIES:
        raise ValueError(f"fp32_layers={fp32_layers!r}; choose one of {FP32_LAYER_POLICIES}")
    t = trace(model, input_shape, batch)
    rows: list = []
    add = lambda layer, module, part, phase, ops: rows.extend(  # noqa: E731
        (layer, module, part, phase, op, int(n)) for op, n in ops.items() if n)
    lowbit = _lowbit_names(model, fmt, fp32_layers)
    converted = any(_own_format(c.module) is not None for c in t.calls) if as_converted is None else as_converted
    any_mls = False
    for call in t.calls:
        mod = type(call.module).__name__
        if call.kind == "bn":
            n = math.prod(call.out_shape)
            add(call.name, mod, "bn", "fwd", {"fp32_mul": 3 * n, "fp32_add": 4 * n})
            add(call.name, mod, "bn", "bwd", {"fp32_mul": 6 * n, "fp32_add": 6 * n})
            continue
        layer_fmt = _layer_format(call, fmt, lowbit, converted)
        any_mls |= layer_fmt.kind == "mls"
        for part, gemms, quantized in _call_gemms(call, linear_block):
            for phase, gemm in gemms.items():
                add(call.name, mod, part, phase, gemm_ops(layer_fmt, gemm))
            if layer_fmt.kind in ("mls", "pot", "fp8"):
                _dq_ops(call, mod, quantized, add)
        _bias_ops(call, add, mod)
    for context, macs, grad_a, grad_b in t.matmuls:  # activation x activation products stay fp32
        phases = {"fwd": macs, "bwd_data": macs if grad_a else 0, "wgrad": macs if grad_b else 0}
        for phase, n in phases.items():
            add(context, "matmul", "matmul", phase, {"fp32_mul": n, "fp32_add": n})
    extra_mul = fmt.kind == "mls" or any_mls
    for context, n in t.ewadds:
        add(context, "add", "ewadd", "fwd", {"fp32_add": n, "fp32_mul": n if extra_mul else 0})
    for key, uses in t.uses.items():
        if uses > 1:
            n = (uses - 1) * t.numel[key]
            add(t.where[key], "fork", "ewadd", "bwd", {"fp32_add": n, "fp32_mul": n if extra_mul else 0})
    _sgd_ops(model, add, momentum, weight_decay)
    frame = _in_execution_order(pd.DataFrame(rows, columns=COLUMNS), t.order)
    if isinstance(input_shape, torch.Tensor):
        batch, input_shape = input_shape.shape[0], input_shape.shape[1:]
    return OpCounts(frame, fmt, int(batch), tuple(input_shape), lowbit_mul_label(fmt))


def _call_gemms(call: _Call, linear_block) -> list:
    """(part, {phase: Gemm}, {"W"|"A"|"E": quantized elements}) per GEMM family of one call."""
    if call.kind == "attention":
        return _attention_gemms(call, linear_block)
    if call.kind == "matmul":
        return _matmul_module_gemms(call, linear_block)
    if call.kind == "rnn":
        return _rnn_gemms(call)
    part = "conv" if call.kind == "conv" else "fc"
    quant = {"W": call.module.weight.numel(), "A": math.prod(call.in_shape), "E": math.prod(call.out_shape)}
    return [(part, _layer_gemms(call, linear_block), quant)]


def _dq_ops(call: _Call, mod: str, quant: dict, add) -> None:
    """Appendix C: 4 fp32 mul + 2 add per quantized element of W, A and E."""
    for which, n in quant.items():
        if n:
            add(call.name, mod, "dq", which, {"fp32_mul": 4 * n, "fp32_add": 2 * n})


def _in_execution_order(frame: pd.DataFrame, order: list) -> pd.DataFrame:
    rank = {}
    for name in order + list(frame["layer"]):
        rank.setdefault(name, len(rank))
    keys = frame["layer"].map(rank)
    return frame.iloc[keys.argsort(kind="stable")].reset_index(drop=True)


def _bias_ops(call: _Call, add, mod: str) -> None:
    if not isinstance(getattr(call.module, "bias", None), torch.Tensor):  # LSTM's bias is a flag
        return
    n = math.prod(call.out_shape)
    add(call.name, mod, "bias", "fwd", {"fp32_add": n})
    if call.module.bias.requires_grad:
        add(call.name, mod, "bias", "wgrad", {"fp32_add": n})


def _sgd_ops(model: nn.Module, add, momentum: float, weight_decay: float) -> None:
    per_param = 1 + (momentum > 0) + (weight_decay > 0)
    for name, module in model.named_modules():
        n = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
        if n:
            add(name or "model", type(module).__name__, "sgd", "update",
                {"fp32_mul": per_param * n, "fp32_add": per_param * n})
