"""Counter-based random bits: the same bits on every device and implementation."""
from __future__ import annotations

from typing import Optional

import torch


M32 = 0xFFFFFFFF


def draw_seed(generator: Optional[torch.Generator] = None) -> int:
    """A 64-bit seed from ``generator`` (or torch's default generator)."""
    device = generator.device if generator is not None else "cpu"
    hi, lo = torch.randint(0, 1 << 32, (2,), generator=generator, device=device, dtype=torch.int64).tolist()
    return (hi << 32) | lo


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x < 2^32 in int64 without signed overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & M32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding values < 2^32."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def signed32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def hash32_int32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 bit patterns: multiplies wrap mod 2^32 (two's complement, as on every
    CPU and GPU torch runs on; tests compare with the numpy reference), shifts are masked to be
    logical. Half the memory traffic of the int64 form."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * signed32(0x7FEB352D)
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * signed32(0x846CA68B)
    return x ^ ((x >> 16) & 0xFFFF)


INT32_COUNTERS = (1 << 31) - 1  # flat indices that fit the int32 form (larger tensors: int64)


def random_bits(numel: int, seed: int, device, keep: int = 24) -> torch.Tensor:
    """The top ``keep`` (<= 31) of the 32 counter-based random bits of each flat index, as int32."""
    k0, k1 = seed & M32, (seed >> 32) & M32
    if numel <= INT32_COUNTERS:
        i = torch.arange(numel, device=device, dtype=torch.int32)
        r = hash32_int32(hash32_int32(i ^ signed32(k0)) ^ signed32(k1))
        return (r >> (32 - keep)) & ((1 << keep) - 1)
    i = torch.arange(numel, device=device, dtype=torch.int64)
    r = hash32(hash32((i & M32) ^ k0) ^ (i >> 32) ^ k1)
    return (r >> (32 - keep)).to(torch.int32)


def seed_words(seed: int) -> tuple:
    """The 64-bit seed as its two 32-bit words (k0 low, k1 high), each as a signed int32."""
    return signed32(seed & M32), signed32((seed >> 32) & M32)


def keys_tensor(seed: int, device) -> torch.Tensor:
    """The seed words as the int32 tensor the torch element functions take."""
    return torch.tensor(seed_words(seed), dtype=torch.int32, device=device)
