"""bitmap4 helpers (RFC 7530 §3.3.7): attribute numbers <-> 32-bit words.

Bit ``n`` of a bitmap4 is bit ``n % 32`` of word ``n // 32``.  Internally a Python ``int``
(``bitmap_to_int``) is the fastest representation: membership is a shift and a mask, and the
set bits come out in ascending order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

__all__ = [
    "bitmap_to_int",
    "bitmap_to_set",
    "int_to_bitmap",
    "iter_bits",
    "set_to_bitmap",
]

_WORD = 0xFFFFFFFF


def bitmap_to_int(words: Iterable[int]) -> int:
    """The bitmap as one integer (bit n of the result = attribute n); linear in its length."""
    words = list(words)
    if len(words) <= 2:  # the common case: no packing needed
        value = 0
        for i, w in enumerate(words):
            value |= (w & _WORD) << (32 * i)
        return value
    packed = struct.pack(f"<{len(words)}I", *[w & _WORD for w in words])
    return int.from_bytes(packed, "little")


def int_to_bitmap(value: int) -> list[int]:
    """bitmap4 words for ``value``, without trailing zero words."""
    n = (value.bit_length() + 31) // 32
    if n <= 2:
        return [(value >> (32 * i)) & _WORD for i in range(n)]
    return list(struct.unpack(f"<{n}I", value.to_bytes(4 * n, "little")))


def _iter_small(value: int, base: int) -> Iterator[int]:
    while value:
        low = value & -value
        yield base + low.bit_length() - 1
        value ^= low


def iter_bits(value: int) -> Iterator[int]:
    """Set bit numbers of ``value`` in ascending order; linear in the size of ``value``."""
    if value < 0:
        raise ValueError("a bitmap cannot be negative")
    if value.bit_length() <= 64:
        yield from _iter_small(value, 0)
        return
    data = value.to_bytes((value.bit_length() + 63) // 64 * 8, "little")
    for i, (chunk,) in enumerate(struct.iter_unpack("<Q", data)):
        if chunk:
            yield from _iter_small(chunk, 64 * i)


def bitmap_to_set(words: Iterable[int]) -> frozenset[int]:
    """The attribute numbers set in a bitmap4."""
    return frozenset(iter_bits(bitmap_to_int(words)))


def set_to_bitmap(bits: Iterable[int]) -> list[int]:
    """bitmap4 words with exactly ``bits`` set (no trailing zero words)."""
    value = 0
    for b in bits:
        if b < 0:
            raise ValueError(f"negative attribute number {b}")
        value |= 1 << b
    return int_to_bitmap(value)
