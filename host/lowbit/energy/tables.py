"""Per-operation energy tables (pJ per op), each entry with its source.

Built-in tables:

* ``mls65``: the MLS paper's Table 4 (MAC units, Design Compiler, TSMC 65 nm, 1 GHz, mW). At
  1 GHz one op per cycle, P [mW] x 1 ns = E [pJ]. Table 4 gives only MUL and LocalAcc; the
  paper's Eq. 9 charges TreeAdd at the FP32 accumulator (0.512) and GroupwiseScale at the
  integer LocalAcc (0.065). XOR, INT4 add and the Mogami integer add are NOT in the paper:
  our assumptions, scaled from the 32-bit integer LocalAcc by bit width (ripple adder energy
  roughly linear in width), are marked ``verified=False``.
* ``horowitz45``: Horowitz, ISSCC 2014, 45 nm 0.9 V: fp32 add 0.9, fp32 mult 3.7, int32 add 0.1,
  int32 mult 3.1 (confirmed through a table citing Horowitz); int8 add 0.03 and int8 mult 0.2
  are the commonly quoted values, not re-verified. Low-bit MLS multiplies (<= 7-bit integers)
  are charged at the int8 mult; XOR and INT4 add are our width-scaled assumptions.

A user table is a dict or a JSON file: ``{"name": ..., "source": ..., "base": "horowitz45",
"pj": {"fp32_mul": 3.7, ...}}``; ``base`` (optional) supplies the ops the table leaves out.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

from lowbit.energy.counting import OPS


@dataclass(frozen=True)
class Entry:
    pj: float
    source: str
    verified: bool = True


@dataclass(frozen=True)
class EnergyTable:
    name: str
    source: str
    entries: dict = field(default_factory=dict)

    def pj(self, op: str) -> float:
        try:
            return self.entries[op].pj
        except KeyError:
            raise KeyError(f"energy table {self.name!r} has no entry for op {op!r}; "
                           f"it defines {sorted(self.entries)}; add it (or a 'base' table)") from None

    def as_dict(self) -> dict:
        return {op: e.pj for op, e in self.entries.items()}

    def describe(self) -> str:
        lines = [f"{self.name}: {self.source}"]
        for op in OPS:
            if op in self.entries:
                e = self.entries[op]
                flag = "" if e.verified else "  [assumed]"
                lines.append(f"  {op:12s} {e.pj:9.5f} pJ  {e.source}{flag}")
        return "\n".join(lines)


_T4 = "MLS paper Table 4 (65 nm, 1 GHz)"
_MLS65 = EnergyTable("mls65", "Zhong et al., MLS low-bit training, Table 4: TSMC 65 nm, 1 GHz, mW -> pJ/op", {
    "fp32_mul": Entry(2.311, f"{_T4}: Full Precision MUL"),
    "fp32_add": Entry(0.512, f"{_T4}: Full Precision LocalAcc"),
    "lowbit_mul": Entry(0.124, f"{_T4}: Ours (MLS) MUL"),
    "int_add": Entry(0.065, f"{_T4}: Ours LocalAcc (integer)"),
    "group_scale": Entry(0.065, "Eq. 9 charges GroupwiseScale at LocalAcc"),
    "tree_add": Entry(0.512, "Eq. 9 charges TreeAdd at the FP32 accumulator"),
    "xor": Entry(0.065 / 32, "1 bit of the 32-bit LocalAcc adder", verified=False),
    "int4_add": Entry(0.065 / 8, "4 bits of the 32-bit LocalAcc adder", verified=False),
    "mogami_add": Entry(0.065, "32-bit integer add = LocalAcc", verified=False),
    "fp8_mul": Entry(0.105, f"{_T4}: 8-bit FP (Sun et al. 2019) MUL"),
})

_H = "Horowitz ISSCC 2014, 45 nm"
_HOROWITZ45 = EnergyTable("horowitz45", "Horowitz, Computing's energy problem, ISSCC 2014 (45 nm, 0.9 V)", {
    "fp32_mul": Entry(3.7, f"{_H}: fp32 mult"),
    "fp32_add": Entry(0.9, f"{_H}: fp32 add"),
    "lowbit_mul": Entry(0.2, f"{_H}: int8 mult (commonly quoted, not re-verified)", verified=False),
    "int_add": Entry(0.1, f"{_H}: int32 add"),
    "group_scale": Entry(0.1, "shift-add charged as an int32 add"),
    "tree_add": Entry(0.9, f"{_H}: fp32 add"),
    "xor": Entry(0.1 / 32, "1 bit of the int32 adder", verified=False),
    "int4_add": Entry(0.03 / 2, "half of the int8 add (0.03, not re-verified)", verified=False),
    "mogami_add": Entry(0.1, f"{_H}: int32 add"),
    "fp8_mul": Entry(0.2, "no fp8 entry in Horowitz: charged as the int8 mult (not re-verified)", verified=False),
})

BUILTIN = {t.name: t for t in (_MLS65, _HOROWITZ45)}


def table_names() -> list[str]:
    return list(BUILTIN)


def from_dict(data: dict, _bases: tuple = ()) -> EnergyTable:
    """A user table: {"name", "source", "base" (optional), "pj": {op: pJ}}."""
    if not isinstance(data, dict) or not isinstance(data.get("pj"), dict):
        raise ValueError('an energy table is a dict like {"name": "mine", "source": "...", '
                         '"pj": {"fp32_mul": 3.7, ...}}; the "pj" dict is missing')
    unknown = set(data["pj"]) - set(OPS)
    if unknown:
        raise ValueError(f"unknown ops {sorted(unknown)} in energy table; known ops: {list(OPS)}")
    entries = dict(get_table(data["base"], _bases).entries) if data.get("base") else {}
    source = str(data.get("source", "user table"))
    for op, value in data["pj"].items():
        entries[op] = Entry(_energy(op, value), source, verified=False)
    return EnergyTable(str(data.get("name", "user")), source, entries)


def _energy(op: str, value) -> float:
    """A finite number of pJ >= 0 (JSON's Infinity and 1e999 parse as inf: refused)."""
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is None or not (math.isfinite(number) and number >= 0):
        raise ValueError(f"energy of {op} must be a finite number >= 0 pJ, got {str(value)[:40]!r}")
    return float(number)


def get_table(spec, _bases: tuple = ()) -> EnergyTable:
    """A table by name (mls65, horowitz45), a path to a JSON file, a dict, or an EnergyTable.
    ``_bases``: the files already being read for this table, so that a ``base`` loop is an error."""
    if isinstance(spec, EnergyTable):
        return spec
    if isinstance(spec, dict):
        return from_dict(spec, _bases)
    if isinstance(spec, str) and spec.lower() in BUILTIN:
        return BUILTIN[spec.lower()]
    if isinstance(spec, (str, os.PathLike)) and os.path.isfile(spec):
        return _from_file(spec, _bases)
    raise ValueError(f"unknown energy table {str(spec)[:100]!r}: give one of {table_names()}, a JSON file path, "
                     "or a dict")


def _from_file(path, bases: tuple) -> EnergyTable:
    key = os.path.realpath(path)
    if key in bases:
        chain = " -> ".join(os.path.basename(b) for b in (*bases, key))
        raise ValueError(f"energy table {path}: its 'base' chain loops ({chain}); end it at a built-in table")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"energy table {path}: not valid JSON ({str(e)[:200]})") from None
    try:
        return from_dict(data, (*bases, key))
    except ValueError as e:
        if str(e).startswith("energy table "):  # already names its file (a base table's error)
            raise
        raise ValueError(f"energy table {path}: {e}") from None
