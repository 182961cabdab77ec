"""Quantizers: torch tensor -> QTensor (integer codes + scales + cached dequantized values).

``quantize(x, fmt, rounding=..., generator=...)`` is the one entry point. The arithmetic, whose
definition is the numpy reference ``lowbit.numerics.reference`` (this package equals it bit for bit):

* Random numbers come from a counter-based generator: element ``i`` (flat, C order) gets
  ``r = hash32(hash32(lo32(i) ^ k0) ^ hi32(i) ^ k1)`` with ``(k1 << 32) | k0`` a 64-bit seed drawn
  once per call from ``generator`` (torch's default generator when None). ``hash32`` is the
  "lowbias32" integer hash. So a result depends only on (x, fmt, rounding, seed), not on the
  device, thread count or implementation (torch ops, the native CPU kernel, the reference).
* Stochastic rounding of y >= 0 is ``floor(y + u)`` with ``u = (r >> 8) / 2^24`` (exact, unbiased
  to within 2^-24 of a grid step); nearest is round half to even.
* MLS, PoT: see ``mls.mls_torch`` and ``pot.pot_torch`` and docs/formats.md.
* Mogami: fp32 bit patterns as they are; bf16 rounds fp32 to bf16 (nearest even, or stochastic
  by adding ``r >> 16`` to the 16 dropped bits), saturating at the largest finite bf16.

Modules: ``api`` (quantize), ``rng``, ``common``, ``mls``, ``pot``, ``bf16`` (Mogami/fp32),
``native`` (the C kernel), ``accel`` (torch.compile and Triton), ``triton`` (the Triton kernels).
"""
from __future__ import annotations

from lowbit.numerics.quant.rng import (  # noqa: F401
    M32,
    draw_seed,
    hash32,
    signed32,
    hash32_int32,
    INT32_COUNTERS,
    random_bits,
    seed_words,
    keys_tensor,
)
from lowbit.numerics.quant.common import (  # noqa: F401
    FLT_MAX,
    pow2,
    float_exponent,
    round_grid,
    group_view,
    ungroup,
    reduce_groups,
    group_scale_codes,
    group_scale_values,
    check_finite,
    with_values,
)
from lowbit.numerics.quant.native import (  # noqa: F401
    contiguous,
    native_available,
)
from lowbit.numerics.quant.mls import (  # noqa: F401
    mls_element_codes,
    mls_torch,
    mls_elements,
    mls_native,
)
from lowbit.numerics.quant.pot import (  # noqa: F401
    POT_SCALE_RANGE,
    pot_scale_exponent,
    pot_element_codes,
    pot_torch,
    pot_elements,
    pot_native,
)
from lowbit.numerics.quant.bf16 import (  # noqa: F401
    BF16_MAX_BITS,
    round_to_bf16_bits,
    bits_qtensor,
    mogami_quantize,
)
from lowbit.numerics.quant.api import (  # noqa: F401
    DEFAULT_BLOCK,
    ROUNDINGS,
    quantize,
)
