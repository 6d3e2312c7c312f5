"""Lock sets: the granted byte ranges of one lock-owner under one open (RFC 7530 §9.3, §16.12).

A lock set keeps a sorted list of non-overlapping ranges; adjacent or overlapping ranges of
the same type are merged, and a request over part of a held range splits it (POSIX
semantics: the server supports sub-range locking, upgrade and downgrade, so
NFS4ERR_LOCK_RANGE and NFS4ERR_LOCK_NOTSUPP are never needed).

Lock sets are stored compactly (`LockSet`, below); the list functions `subtract`, `merge`
and `apply_lock` are the plain reference model of the same rules, on `HeldLock` values,
which the tests compare the compact form against.  These are plain values: the record
`LockState` (in `owners`) extends `LockSet`, and the per-file table is in `locks`.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from pynfsd.nfs4.state.types import NFS4_UINT64_MAX, ByteRange

Range = tuple[int, int, bool]  # (start, end, write): one granted range, end inclusive
_PAIR = struct.Struct("=QQ")  # a range's (start, end) in `LockSet.bounds`


class LockSet:
    """The granted byte ranges of one lock set, kept canonical under POSIX rules (§9.3).

    Ranges are sorted, disjoint, and two ranges of the same type never touch (they are
    merged); a request over part of a range splits it, one of the other type upgrades or
    downgrades that part.  Stored compactly: `bounds` is an exact-size `bytes` of native
    uint64 (start, end) pairs, inclusive (the empty set shares b""), and `writes` an int
    with bit i set when range i is a write lock.  As
    the ranges are disjoint, both starts and ends are sorted, so a change bisects to the
    ranges it touches and rewrites only those (at most one neighbour on each side).
    """

    __slots__ = ("bounds", "writes")

    def __init__(self) -> None:
        self.bounds = b""
        self.writes = 0

    def __len__(self) -> int:
        return len(self.bounds) >> 4

    def range_at(self, i: int) -> Range:
        start, end = _PAIR.unpack_from(self.bounds, i << 4)
        return start, end, bool(self.writes >> i & 1)

    def ranges(self) -> Iterator[Range]:
        return (self.range_at(i) for i in range(len(self)))

    def has_write(self) -> bool:
        return self.writes != 0

    def has_read(self) -> bool:
        return self.writes != (1 << len(self)) - 1

    def window(self, lo: int, hi: int) -> tuple[int, int]:
        """Indices [i, j) of the ranges ending at or after `lo` and starting at or before `hi`."""
        words = memoryview(self.bounds).cast("Q")
        i = bisect_left(words[1::2], lo)
        return i, bisect_right(words[0::2], hi, lo=i)

    def conflict(self, start: int, end: int, write: bool) -> Range | None:
        """The first range overlapping [start, end] that conflicts with a lock of `write`."""
        i, j = self.window(start, end)
        if i == j:
            return None
        if write:
            return self.range_at(i)
        held = self.writes >> i & ((1 << (j - i)) - 1)
        return self.range_at(i + (held & -held).bit_length() - 1) if held else None

    def apply(self, start: int, end: int, write: bool) -> tuple[list[Range], list[Range]]:
        """Set [start, end] to the type `write` (new, extended, upgraded, downgraded).

        Returns the ranges replaced and their replacements (for the per-file index).
        """
        i, j = self.window(start - 1, end + 1)  # same-type ranges that touch are merged
        old = [self.range_at(k) for k in range(i, j)]
        lo, hi, left, right = start, end, [], []
        for s, e, w in old:
            if w == write:
                lo, hi = min(lo, s), max(hi, e)
                continue
            if s < start:
                left.append((s, min(e, start - 1), w))
            if e > end:
                right.append((max(s, end + 1), e, w))
        return old, self._replace(i, j, [*left, (lo, hi, write), *right])

    def remove(self, start: int, end: int) -> tuple[list[Range], list[Range]]:
        """Unlock [start, end], splitting a range that straddles it (§16.12)."""
        i, j = self.window(start, end)
        old = [self.range_at(k) for k in range(i, j)]
        new: list[Range] = []
        if old and old[0][0] < start:
            new.append((old[0][0], start - 1, old[0][2]))
        if old and old[-1][1] > end:
            new.append((end + 1, old[-1][1], old[-1][2]))
        return old, self._replace(i, j, new)

    def _replace(self, i: int, j: int, new: list[Range]) -> list[Range]:
        bits = 0
        for k, (_, _, w) in enumerate(new):
            bits |= w << k
        packed = b"".join(_PAIR.pack(s, e) for s, e, _ in new)
        old = memoryview(self.bounds)
        self.bounds = b"".join((old[: i << 4], packed, old[j << 4 :]))
        low = self.writes & ((1 << i) - 1)
        self.writes = low | bits << i | (self.writes >> j) << (i + len(new))
        return new


@dataclass(frozen=True, slots=True)
class HeldLock:
    """One granted byte range of a lock set, as views (`LockState.locks`) show it."""

    range: ByteRange
    write: bool


def subtract(held: list[HeldLock], rng: ByteRange) -> list[HeldLock]:
    """Reference model: `held` with the bytes of `rng` removed, splitting straddling ranges."""
    out: list[HeldLock] = []
    for lock in held:
        r = lock.range
        if not r.overlaps(rng):
            out.append(lock)
            continue
        if r.start < rng.start:
            out.append(HeldLock(ByteRange(r.start, rng.start - 1), lock.write))
        if r.end > rng.end:
            out.append(HeldLock(ByteRange(rng.end + 1, r.end), lock.write))
    return out


def merge(held: list[HeldLock]) -> list[HeldLock]:
    """Reference model: sort `held`, coalesce touching or overlapping ranges of one type."""
    out: list[HeldLock] = []
    for lock in sorted(held, key=lambda h: h.range.start):
        prev = out[-1] if out else None
        if prev is not None and prev.write == lock.write and _touches(prev.range, lock.range):
            end = max(prev.range.end, lock.range.end)
            out[-1] = HeldLock(ByteRange(prev.range.start, end), lock.write)
        else:
            out.append(lock)
    return out


def _touches(a: ByteRange, b: ByteRange) -> bool:
    return a.end == NFS4_UINT64_MAX or b.start <= a.end + 1


def apply_lock(held: list[HeldLock], rng: ByteRange, write: bool) -> list[HeldLock]:
    """Reference model: set `rng` to the given type (§9.3); `LockSet.apply` does this."""
    return merge([*subtract(held, rng), HeldLock(rng, write)])
