"""Value types shared by the NFSv4.0 state manager (see `pynfsd.nfs4.state` for the theory).

Everything here is a plain value: stateids, the results the state manager hands back to the
op layer, byte-range arithmetic (RFC 7530 §16.10.4) and seqid arithmetic (§9.1.3).  The hook
interfaces live with their concept: `ClientStore` in `store`, `GraceTracker` in `grace`,
`OpenFiles` in `files`.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from pynfsd.nfs4 import errors as E

NFS4_UINT32_MAX = 0xFFFFFFFF
NFS4_UINT64_MAX = 0xFFFFFFFFFFFFFFFF
LENGTH_TO_EOF = NFS4_UINT64_MAX  # §16.10.4: a length with all bits set locks to end of file

OPEN4_SHARE_ACCESS_READ = 1
OPEN4_SHARE_ACCESS_WRITE = 2
OPEN4_SHARE_ACCESS_BOTH = 3
OPEN4_SHARE_DENY_NONE = 0
OPEN4_SHARE_DENY_READ = 1
OPEN4_SHARE_DENY_WRITE = 2
OPEN4_SHARE_DENY_BOTH = 3

READ_LT = 1
WRITE_LT = 2
READW_LT = 3
WRITEW_LT = 4
LOCK_TYPES = (READ_LT, WRITE_LT, READW_LT, WRITEW_LT)

# §9.1.7: a state-owner's seqid does NOT advance after these statuses.
NON_ADVANCING_STATUSES = frozenset(
    {
        E.NFS4ERR_STALE_CLIENTID.status,
        E.NFS4ERR_STALE_STATEID.status,
        E.NFS4ERR_BAD_STATEID.status,
        E.NFS4ERR_BAD_SEQID.status,
        E.NFS4ERR_BADXDR.status,
        E.NFS4ERR_RESOURCE.status,
        E.NFS4ERR_NOFILEHANDLE.status,
        E.NFS4ERR_MOVED.status,
    }
)


@dataclass(frozen=True, slots=True)
class Stateid:
    """A stateid4: `seqid` (uint32) and the 12-byte `other` (§9.1.4.2)."""

    seqid: int
    other: bytes


ANONYMOUS_STATEID = Stateid(0, bytes(12))  # §9.1.4.3
READ_BYPASS_STATEID = Stateid(NFS4_UINT32_MAX, b"\xff" * 12)  # §9.1.4.3


def is_special_other(other: bytes) -> bool:
    """True when `other` is all zeros or all ones: reserved for special stateids (§9.1.4.3)."""
    return other == ANONYMOUS_STATEID.other or other == READ_BYPASS_STATEID.other


def next_seqid(seqid: int) -> int:
    """The seqid after `seqid`; wraps past NFS4_UINT32_MAX to one, not zero (§9.1.3)."""
    return 1 if seqid >= NFS4_UINT32_MAX else seqid + 1


def seqid_earlier(a: int, b: int) -> bool:
    """True if seqid `a` is earlier than `b`, allowing for wraparound (§9.1.3)."""
    return a != b and ((b - a) & NFS4_UINT32_MAX) < 0x80000000


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range [start, end] on a file; `end` is NFS4_UINT64_MAX for to-EOF."""

    start: int
    end: int

    def overlaps(self, other: ByteRange) -> bool:
        return self.start <= other.end and other.start <= self.end

    @property
    def length(self) -> int:
        """The wire length4 for this range (all ones when it runs to end of file)."""
        return LENGTH_TO_EOF if self.end == NFS4_UINT64_MAX else self.end - self.start + 1


def byte_range(offset: int, length: int) -> ByteRange:
    """Validate a wire (offset, length) pair and return its inclusive range (§16.10.4)."""
    if not 0 <= offset <= NFS4_UINT64_MAX or not 0 <= length <= NFS4_UINT64_MAX:
        raise E.NFS4ERR_INVAL("offset/length out of range")
    if length == 0:
        raise E.NFS4ERR_INVAL("zero-length lock range")  # §16.10.4
    if length == LENGTH_TO_EOF:
        return ByteRange(offset, NFS4_UINT64_MAX)
    if offset + length - 1 > NFS4_UINT64_MAX:
        raise E.NFS4ERR_INVAL("lock range overflows 64 bits")  # §16.10.4
    return ByteRange(offset, offset + length - 1)


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


def is_write_lock(locktype: int) -> bool:
    """WRITE_LT and WRITEW_LT exclude others; READW_LT is treated like READ_LT (§16.11.4)."""
    return locktype in (WRITE_LT, WRITEW_LT)


def is_blocking_lock(locktype: int) -> bool:
    return locktype in (READW_LT, WRITEW_LT)


@dataclass(frozen=True, slots=True)
class ReplayedResult:
    """The stored reply of a state-owner's last seqid-bearing request (§9.1.7, §9.1.8).

    `result` is whatever the op layer recorded (an already built result object, or the
    NFS4Error it raised); `status` is its nfsstat4; `opnum` the operation it answered.
    """

    seqid: int
    result: object
    status: int
    opnum: int = 0


@dataclass(frozen=True, slots=True)
class OpenResult:
    """What OPEN granted: the open stateid and whether OPEN_CONFIRM is needed (§9.1.11)."""

    stateid: Stateid
    needs_confirm: bool


@dataclass(frozen=True, slots=True)
class LockDenied:
    """A conflicting lock, the payload of NFS4ERR_DENIED (converted to LOCK4denied)."""

    offset: int
    length: int
    locktype: int
    clientid: int
    owner: bytes


@dataclass(frozen=True, slots=True)
class SetClientIdResult:
    clientid: int
    confirm: bytes


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One client as the admin interface reports it."""

    clientid: int
    ownerid: bytes
    principal: str
    client_addr: str
    confirmed: bool
    lease_left: float
    opens: int
    locks: int
    courteous: bool = False  # lease lapsed, state kept until someone conflicts (§9.6.3.1)


@dataclass(frozen=True, slots=True)
class StateCounts:
    clients: int
    unconfirmed_clients: int
    open_owners: int
    opens: int
    lock_states: int
    locks: int
