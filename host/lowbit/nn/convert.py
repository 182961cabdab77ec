"""convert(): swap Conv2d / Linear for quantized layers in a copy of a model; summary()."""
from __future__ import annotations

import copy
from typing import Dict, Optional, Union

from torch import nn

from ..formats import parse
from .layers import QConv2d, QLinear

_SWAPPABLE = (nn.Conv2d, nn.Linear)


def _candidates(model: nn.Module):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, _SWAPPABLE) and not isinstance(m, (QConv2d, QLinear))]


def _choose(name, module, index, count, fmt, skip_first_last, overrides):
    """The format for one layer (None: keep the torch layer). Name override > first/last > type."""
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
                raise ValueError(f"override for unknown layer {key!r}; Conv2d/Linear layers are: {', '.join(names)}")
        elif not (isinstance(key, type) and issubclass(key, nn.Module)):
            raise ValueError(f"override keys are module names (str) or module types; got {key!r}")
    return {k: (None if v is None else parse(v)) for k, v in overrides.items()}


def convert(model: nn.Module, fmt, *, backend="software", skip_first_last: bool = True,
            overrides: Optional[Dict[Union[str, type], object]] = None, **layer_options) -> nn.Module:
    """A deep copy of ``model`` whose Conv2d / Linear layers compute in ``fmt`` on ``backend``.

    First and last Conv2d/Linear (registration order) stay fp32 torch layers unless
    ``skip_first_last=False``. ``overrides`` maps a module name or type to a format or None
    (None: keep the torch layer). ``layer_options`` go to every quantized layer: rounding,
    mogami_backward, block, wbc, prc, generator.
    """
    fmt = parse(fmt)
    out = copy.deepcopy(model)
    cands = _candidates(out)
    overrides = _check_overrides(overrides, [n for n, _ in cands])
    for index, (name, module) in enumerate(cands):
        chosen = _choose(name, module, index, len(cands), fmt, skip_first_last, overrides)
        if chosen is None:
            continue
        try:
            if isinstance(module, nn.Conv2d):
                new = QConv2d.from_conv(module, chosen, backend, **layer_options)
            else:
                new = QLinear.from_linear(module, chosen, backend, **layer_options)
        except ValueError as err:
            raise ValueError(f"cannot convert layer {name!r}: {err}") from err
        new.spec.name = name
        _set_submodule(out, name, new)
    return out


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def summary(model: nn.Module, *, print_table: bool = True) -> str:
    """A table of every Conv2d / Linear: name, type, format, backend. Printed and returned."""
    rows = [("layer", "type", "format", "backend")]
    for name, m in model.named_modules():
        if isinstance(m, (QConv2d, QLinear)):
            rows.append((name, type(m).__name__, m.spec.describe(), m.spec.backend.name))
        elif isinstance(m, _SWAPPABLE):
            rows.append((name, type(m).__name__, "fp32 (torch)", "torch"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    table = "\n".join(lines)
    if print_table:
        print(table)
    return table
