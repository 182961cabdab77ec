"""convert(): swap every multiply-bearing module for its quantized twin in a copy of a model;
plan() (which module gets which format: convert and the energy model read the same answer);
summary() (what each multiply-bearing module ran)."""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple, Union

from torch import nn

from lowbit.numerics.formats import parse
from lowbit.nn.attention import Matmul, QMatmul, QMultiheadAttention
from lowbit.nn.layers import QConv1d, QConv2d, QConvTranspose1d, QConvTranspose2d, QLinear
from lowbit.nn.recurrent import QGRU, QLSTM, QRNN
from lowbit.nn.spec import LayerSpec

# torch type -> (its quantized twin, how the twin is made from it); first match wins (twins
# subclass their torch type, so re-converting a converted model finds them too)
TWINS = (
    (nn.ConvTranspose2d, QConvTranspose2d, QConvTranspose2d.from_conv),
    (nn.ConvTranspose1d, QConvTranspose1d, QConvTranspose1d.from_conv),
    (nn.Conv2d, QConv2d, QConv2d.from_conv),
    (nn.Conv1d, QConv1d, QConv1d.from_conv),
    (nn.Linear, QLinear, QLinear.from_linear),
    (nn.MultiheadAttention, QMultiheadAttention, QMultiheadAttention.from_mha),
    (Matmul, QMatmul, QMatmul.from_matmul),
    (nn.LSTM, QLSTM, QLSTM.from_rnn),
    (nn.GRU, QGRU, QGRU.from_rnn),
    (nn.RNN, QRNN, QRNN.from_rnn),
)
# multiply-bearing modules without a twin: they stay fp32, listed by summary(), refused by strict
NO_TWIN = (nn.RNNCellBase, nn.Conv3d, nn.ConvTranspose3d, nn.Bilinear)


def _twin_entry(module: nn.Module):
    return next((entry for entry in TWINS if isinstance(module, entry[0])), None)


def _is_twin(module: nn.Module) -> bool:
    return isinstance(getattr(module, "spec", None), LayerSpec)


def multiplying_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of every module that multiplies (registration order); the projections
    nn.MultiheadAttention applies functionally (out_proj) belong to their attention module."""
    out, inside = [], []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if _twin_entry(m) is not None or isinstance(m, NO_TWIN):
            out.append((name, m))
        if isinstance(m, nn.MultiheadAttention):
            inside.append(name)
    return out


def _candidates(model: nn.Module):
    return [(n, m) for n, m in multiplying_modules(model) if _twin_entry(m) is not None]


def _choose(name, module, index, count, fmt, skip_first_last, overrides):
    """The format for one module (None: the torch module). Name override > first/last > type."""
    if name in overrides:
        return overrides[name]
    if skip_first_last and index in (0, count - 1):
        return None
    for key, value in overrides.items():
        if isinstance(key, type) and isinstance(module, key):
            return value
    return fmt


def _check_overrides(overrides, names) -> Dict:
    overrides = dict(overrides or {})
    for key in overrides:
        if isinstance(key, str):
            if key not in names:
                raise ValueError(f"override for unknown layer {key!r}; the convertible layers are: {', '.join(names)}")
        elif not (isinstance(key, type) and issubclass(key, nn.Module)):
            raise ValueError(f"override keys are module names (str) or module types; got {key!r}")
    return {k: (None if v is None else parse(v)) for k, v in overrides.items()}


def plan(model: nn.Module, fmt, *, skip_first_last: bool = True,
         overrides: Optional[Dict[Union[str, type], object]] = None) -> Dict[str, object]:
    """{name: format or None} for every module convert() would consider: the format it gets, or
    None where it stays fp32 (first/last, an override of None, or no quantized twin)."""
    fmt = parse(fmt)
    cands = _candidates(model)
    overrides = _check_overrides(overrides, [n for n, _ in cands])
    chosen = {name: _choose(name, m, i, len(cands), fmt, skip_first_last, overrides)
              for i, (name, m) in enumerate(cands)}
    for name, m in multiplying_modules(model):
        chosen.setdefault(name, None)
    return chosen


def _cannot(model: nn.Module) -> List[str]:
    out = []
    for name, m in multiplying_modules(model):
        if _twin_entry(m) is None:
            out.append(f"{name or 'model'} ({type(m).__name__}: no quantized twin)")
        elif any(p.is_complex() for p in m.parameters(recurse=False)):
            out.append(f"{name} ({type(m).__name__}: complex-valued parameters)")
    return out


def convert(model: nn.Module, fmt, *, backend="software", skip_first_last: bool = True,
            overrides: Optional[Dict[Union[str, type], object]] = None, strict: bool = False,
            **layer_options) -> nn.Module:
    """A deep copy of ``model`` whose multiply-bearing modules compute in ``fmt`` on ``backend``:
    Conv1d/2d (any groups and padding mode), ConvTranspose1d/2d, Linear, MultiheadAttention
    (projections and both attention matmuls; nn.Transformer* layers use it), LSTM / GRU / RNN
    (gate GEMMs) and lowbit.nn.Matmul.

    The first and last of them (registration order) stay fp32 torch modules unless
    ``skip_first_last=False``. ``overrides`` maps a module name or type to a format or None (the
    torch module). A converted model may be converted again: every twin gets the new format (or
    goes back to its torch module where the new plan says fp32). ``strict=True`` raises, naming
    each multiply-bearing module that cannot be quantized (Conv3d, Bilinear, RNN cells,
    complex parameters); without it they stay fp32 and summary() lists them so. ``layer_options``
    go to every twin: rounding, eval_rounding, mogami_backward, block, wbc, prc, generator.
    """
    out = copy.deepcopy(model)
    if strict and _cannot(out):
        raise ValueError(f"convert(strict=True): these multiplies cannot run in {parse(fmt)}: "
                         + "; ".join(_cannot(out)) + ". Pass strict=False to keep them fp32 (summary() lists them)")
    chosen = plan(out, fmt, skip_first_last=skip_first_last, overrides=overrides)
    for name, module in _candidates(out):
        fmt_here = chosen[name]
        if fmt_here is None:
            if _is_twin(module):
                _set_submodule(out, name, _plain(module))
            continue
        _, _, make = _twin_entry(module)
        try:
            new = make(module, fmt_here, backend, **layer_options)
        except ValueError as err:
            raise ValueError(f"cannot convert layer {name!r}: {err}") from err
        new.spec.name = name
        _set_submodule(out, name, new)
    _no_nested_fast_path(out)
    return out


def _plain(twin: nn.Module) -> nn.Module:
    """The torch module a twin was made from, sharing its parameters."""
    torch_type = _twin_entry(twin)[0]
    plain = torch_type.__new__(torch_type)
    state = dict(twin.__dict__)
    for key in ("spec", "_pre_pad", "geometry"):
        state.pop(key, None)
    for key in ("_parameters", "_buffers", "_modules", "_forward_pre_hooks"):
        state[key] = type(state[key])(state[key])
    state["_forward_pre_hooks"] = type(state["_forward_pre_hooks"])()
    plain.__dict__.update(state)
    return plain


def _no_nested_fast_path(model: nn.Module) -> None:
    """nn.TransformerEncoder's nested-tensor fast path would hand its layers nested tensors
    and fused fp32 kernels; a converted encoder takes the plain path."""
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder) and any(_is_twin(c) for c in m.modules()):
            m.use_nested_tensor = False


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _ran(spec: LayerSpec) -> str:
    if not spec.ran:
        return "not run yet"
    by_fmt: Dict[str, Dict[str, int]] = {}
    for (phase, fmt), n in spec.ran.items():
        by_fmt.setdefault(fmt, {})[phase] = by_fmt.get(fmt, {}).get(phase, 0) + n
    return "; ".join(f"{fmt}: " + " ".join(f"{p} {n}" for p, n in phases.items()) for fmt, phases in by_fmt.items())


class Summary(str):
    """summary()'s table: a str (print it, or let the REPL show it once); ``rows`` holds the
    cells: layer, type, format, backend, ran."""

    rows: list

    def __repr__(self) -> str:
        return str(self)


def summary(model: nn.Module, *, print_table: bool = False) -> "Summary | None":
    """A table of every multiply-bearing module: name, type, format, backend and the GEMM calls
    that ran, by phase and format. Returned (``print_table=True``: printed instead)."""
    header = ("layer", "type", "format", "backend", "ran (GEMM calls)")
    rows = []
    for name, m in multiplying_modules(model):
        if _is_twin(m):
            rows.append((name, type(m).__name__, m.spec.describe(), m.spec.backend.name, _ran(m.spec)))
        elif _twin_entry(m) is None:
            rows.append((name, type(m).__name__, "fp32 (torch; no quantized twin)", "torch", "fp32"))
        else:
            rows.append((name, type(m).__name__, "fp32 (torch)", "torch", "fp32"))
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    table = Summary("\n".join(lines))
    table.rows = [dict(zip(("layer", "type", "format", "backend", "ran"), r)) for r in rows]
    if print_table:
        print(table)
        return None
    return table
