"""bitmap4 helpers (RFC 7530 §3.3.7): attribute numbers <-> 32-bit words.

Bit ``n`` of a bitmap4 is bit ``n % 32`` of word ``n // 32``.  Internally a Python ``int``
(``bitmap_to_int``) is the fastest representation: membership is a shift and a mask, and the
set bits come out in ascending order.
"""

from __future__ import annotations

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
    """The bitmap as one integer (bit n of the result = attribute n)."""
    value = 0
    for i, w in enumerate(words):
        if w:
            value |= (w & _WORD) << (32 * i)
    return value


def int_to_bitmap(value: int) -> list[int]:
    """bitmap4 words for ``value``, without trailing zero words."""
    words: list[int] = []
    while value:
        words.append(value & _WORD)
        value >>= 32
    return words


def iter_bits(value: int) -> Iterator[int]:
    """Set bit numbers of ``value`` in ascending order."""
    while value:
        low = value & -value
        yield low.bit_length() - 1
        value ^= low


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
