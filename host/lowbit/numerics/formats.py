"""Number formats: one parser, frozen dataclasses whose ``str()`` round-trips.

Accepted forms::

    fp32
    mls:Ex,Mx                         (group scales <8,1>, groups nc)
    mls:Ex,Mx,g=Eg,Mg,group=nc|n|c|none
    pot:4                             (sign + 4-bit exponent code, one code is zero)
    mogami:fp32 | mogami:bf16
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

# The MLS formats lowbit accepts: elements <Ex,Mx> up to these, Ex + Mx >= 1; group scales <Eg,Mg>.
# The single statement of the ranges: the kernel's header check and datapath widths come from the
# copies ``lowbit wire --emit-hpp`` writes into hls/include/lowbit/wire.hpp (drift-tested).
MLS_MAX_EX, MLS_MAX_MX, MLS_MAX_EG, MLS_MAX_MG = 4, 7, 8, 1
ACCEPTED_FORMS = (
    "fp32, mls:Ex,Mx, mls:Ex,Mx,g=Eg,Mg,group=nc|n|c|none "
    f"(Ex 0..{MLS_MAX_EX}, Mx 0..{MLS_MAX_MX}, Ex+Mx >= 1, Eg 0..{MLS_MAX_EG}, Mg 0..{MLS_MAX_MG}), "
    "pot:4, mogami:fp32, mogami:bf16"
)
GROUPINGS = ("nc", "n", "c", "none")
MAX_SPEC_CHARS = 64  # the longest accepted form has 24; longer is a mistake, and is not echoed whole


@dataclass(frozen=True)
class FP32:
    """Full precision: no quantization."""

    kind = "fp32"

    def __str__(self) -> str:
        return "fp32"


def mls_element_in_range(ex: int, mx: int) -> bool:
    return 0 <= ex <= MLS_MAX_EX and 0 <= mx <= MLS_MAX_MX and ex + mx >= 1


def mls_scale_in_range(eg: int, mg: int) -> bool:
    return 0 <= eg <= MLS_MAX_EG and 0 <= mg <= MLS_MAX_MG


@dataclass(frozen=True)
class MLS:
    """Multi-level scaling: <ex,mx> elements, <eg,mg> group scales, fp32 tensor scale.

    Element code (docs/formats.md): sign bit, exponent code ``e`` in
    [0, 2^ex - 1] and mantissa ``m`` in [0, 2^mx - 1]. ``e == 0`` is gradual underflow,
    value m * 2^(exmin - mx); otherwise value (1 + m/2^mx) * 2^(exmin + e - 1).
    Group-scale code: exponent code ``eg_code`` in [0, 2^eg - 1] and mantissa bit, value
    (1 + m/2^mg) * 2^-eg_code.
    """

    ex: int
    mx: int
    eg: int = 8
    mg: int = 1
    group: str = "nc"

    kind = "mls"

    def __post_init__(self) -> None:
        if not mls_element_in_range(self.ex, self.mx):
            raise ValueError(f"mls element <{self.ex},{self.mx}> out of range; accepted: {ACCEPTED_FORMS}")
        if not mls_scale_in_range(self.eg, self.mg):
            raise ValueError(f"mls group scale <{self.eg},{self.mg}> out of range; accepted: {ACCEPTED_FORMS}")
        if self.group not in GROUPINGS:
            raise ValueError(f"mls group={self.group!r} unknown; accepted: {ACCEPTED_FORMS}")

    @property
    def exmin(self) -> int:
        """Smallest normal binade exponent, 1 - 2^ex."""
        return 1 - (1 << self.ex)

    @property
    def code_bits(self) -> int:
        """Bits of one element code: sign + exponent + mantissa."""
        return 1 + self.ex + self.mx

    @property
    def int_bits(self) -> int:
        """Bits of an element magnitude as an integer in units of 2^(exmin - mx) (Appendix B)."""
        return self.mx + (1 << self.ex) - 1

    @property
    def max_int(self) -> int:
        """Largest element magnitude in units of 2^(exmin - mx)."""
        if self.ex == 0:
            return (1 << self.mx) - 1
        return ((1 << (self.mx + 1)) - 1) << ((1 << self.ex) - 2)

    @property
    def scale_bits(self) -> int:
        return self.eg + self.mg

    def __str__(self) -> str:
        if (self.eg, self.mg, self.group) == (8, 1, "nc"):
            return f"mls:{self.ex},{self.mx}"
        return f"mls:{self.ex},{self.mx},g={self.eg},{self.mg},group={self.group}"


@dataclass(frozen=True)
class PoT:
    """ALS-POTQ power of two: sign bit + ``bits``-bit exponent code, code 0 is zero.

    Code c in [1, 2^bits - 1] has value 2^(s - (2^bits - 1) + c), s the tensor's
    power-of-two scale exponent; c = 2^bits - 1 is the largest magnitude 2^s.
    """

    bits: int = 4
    kind = "pot"

    def __post_init__(self) -> None:
        if self.bits != 4:
            raise ValueError(f"pot:{self.bits} unsupported; accepted: {ACCEPTED_FORMS}")

    @property
    def code_bits(self) -> int:
        return 1 + self.bits

    @property
    def max_code(self) -> int:
        return (1 << self.bits) - 1

    def __str__(self) -> str:
        return f"pot:{self.bits}"


@dataclass(frozen=True)
class Mogami:
    """Products as integer adds of IEEE-754 bit patterns (fp32 or bf16 operands)."""

    dtype: str = "fp32"
    kind = "mogami"

    def __post_init__(self) -> None:
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"mogami:{self.dtype} unsupported; accepted: {ACCEPTED_FORMS}")

    @property
    def code_bits(self) -> int:
        return 32 if self.dtype == "fp32" else 16

    def __str__(self) -> str:
        return f"mogami:{self.dtype}"


Format = Union[FP32, MLS, PoT, Mogami]

_MLS_RE = re.compile(r"^mls:(\d+),(\d+)(?:,g=(\d+),(\d+)(?:,group=(\w+))?)?$")


def parse(spec: "str | Format") -> Format:
    """Parse a format string (or pass a format object through)."""
    if isinstance(spec, (FP32, MLS, PoT, Mogami)):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"format must be a string, got {type(spec).__name__}; accepted: {ACCEPTED_FORMS}")
    if len(spec) > MAX_SPEC_CHARS:
        raise ValueError(f"format string of {len(spec)} characters (starting {spec[:20]!r}) is longer than any "
                         f"format ({MAX_SPEC_CHARS} at most); accepted: {ACCEPTED_FORMS}")
    s = spec.strip().lower().replace(" ", "")
    if s == "fp32":
        return FP32()
    m = _MLS_RE.match(s)
    if m:
        ex, mx, eg, mg, group = m.groups()
        return MLS(int(ex), int(mx), int(eg) if eg else 8, int(mg) if mg else 1, group or "nc")
    m = re.match(r"^pot:(\d+)$", s)
    if m:
        return PoT(int(m.group(1)))
    m = re.match(r"^mogami:(\w+)$", s)
    if m:
        return Mogami(m.group(1))
    raise ValueError(f"unknown number format {spec!r}; accepted: {ACCEPTED_FORMS}")
