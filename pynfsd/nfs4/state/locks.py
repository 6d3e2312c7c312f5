"""Byte-range locks: lock sets and the per-file lock table (RFC 7530 §9.2-§9.4, §16.10-§16.12).

Each lock set (`LockState`: one lock-owner, one open) keeps a sorted list of non-overlapping
`HeldLock`s; adjacent or overlapping ranges of the same type are merged, and a request over
part of a held range splits it (POSIX semantics: the server supports sub-range locking,
upgrade and downgrade, so NFS4ERR_LOCK_RANGE and NFS4ERR_LOCK_NOTSUPP are never needed).

Fairness for blocking locks (§9.4): when a READW_LT/WRITEW_LT request is denied, its
lock-owner joins the file's FIFO wait queue for that range.  Until the waiter's entry lapses
(`window` seconds after its last denied poll, the lease time by default), a LOCK by any
lock-owner that is not ahead of it in the queue and that would conflict with the waiter's
request is denied as if the waiter held the lock, so the waiter wins when it polls again.
A waiter leaves the queue when it is granted the lock, when it sends a non-blocking request
that is denied (the client's "last poll" courtesy of §9.4), when its entry lapses, or when
its client's state is dropped.  The queue is bounded per file; overflow drops the oldest.

Lock sets are compact `LockSet`s (below); the list functions `subtract`, `merge`
and `apply_lock` below are the plain reference model of the same rules, which the tests
compare the compact form against.  Conflict checks: a file with few lock sets checks each
set by bisection.  From `INDEX_AT` lock sets on, the file also keeps a `RangeIndex` of every
granted range, so LOCK and LOCKT stay cheap however many clients share the file: ranges are
filed by type and by length class k (length < 2**k), each class sorted by start.  A range
of class k that reaches offset s starts after s - 2**k, so a query bisects each class to
that point and scans forward; the ranges it passes without overlapping are of the same
length class and start within 2**k before s, which is at most two per lock set.  Read
requests look only at write ranges.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.owners import Client, LockOwner, OpenState
from pynfsd.nfs4.state.types import (
    LOCK_TYPES,
    NFS4_UINT64_MAX,
    READ_LT,
    WRITE_LT,
    ByteRange,
    LockDenied,
    Stateid,
    byte_range,
    next_seqid,
)

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


@dataclass(slots=True, eq=False)
class LockState(LockSet):
    """The byte-range locks of one lock-owner on one file under one open (§9.1.4.1).

    The ranges are the `LockSet` it extends; change them only through the file's
    `FileState`, which keeps its conflict index in step.
    """

    index: int
    seqid: int
    owner: LockOwner
    open: OpenState

    def __post_init__(self) -> None:
        LockSet.__init__(self)

    @property
    def closed(self) -> bool:
        return self.open.closed

    @property
    def locks(self) -> list[HeldLock]:
        """The ranges as `HeldLock` values (built on demand, for views and tests)."""
        return [HeldLock(ByteRange(s, e), w) for s, e, w in self.ranges()]

    def stateid(self) -> Stateid:
        return Stateid(self.seqid, self.owner.client.stateid_other(self.index))

    def bump(self) -> Stateid:
        self.seqid = next_seqid(self.seqid)  # §9.1.4.2
        return self.stateid()


MAX_WAITERS_PER_FILE = 64
INDEX_AT = 8  # lock sets on a file from which its conflict checks use a RangeIndex

Holder = tuple[int, bytes]  # (clientid, lock-owner name): who a lock belongs to
Hit = tuple[LockState, Range]  # a conflicting lock and the lock set holding it


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


def holder(ls: LockState) -> Holder:
    return ls.owner.client.clientid, ls.owner.owner


class _Tier:
    """The ranges of one type and length class, sorted by start (parallel sequences)."""

    __slots__ = ("starts", "ends", "sets")

    def __init__(self) -> None:
        self.starts = array("Q")
        self.ends = array("Q")
        self.sets: list[LockState] = []


class RangeIndex:
    """Every granted range on one file, for conflict checks (see the module docstring)."""

    __slots__ = ("tiers",)

    def __init__(self) -> None:
        self.tiers: dict[int, _Tier] = {}

    def add(self, ls: LockState, rng: Range) -> None:
        start, end, write = rng
        tier = self.tiers.get(_tier_key(rng))
        if tier is None:
            tier = self.tiers[_tier_key(rng)] = _Tier()
        i = bisect_right(tier.starts, start)
        tier.starts.insert(i, start)
        tier.ends.insert(i, end)
        tier.sets.insert(i, ls)

    def remove(self, ls: LockState, rng: Range) -> None:
        key = _tier_key(rng)
        tier = self.tiers[key]
        i = bisect_left(tier.starts, rng[0])
        while tier.sets[i] is not ls or tier.ends[i] != rng[1]:
            i += 1
        del tier.starts[i], tier.ends[i], tier.sets[i]
        if not tier.sets:
            del self.tiers[key]

    def find(self, start: int, end: int, write: bool, skip: Holder | None) -> Hit | None:
        """A range of a lock set not held by `skip` that conflicts with the request."""
        for key, tier in self.tiers.items():
            if not write and not key & 1:
                continue  # read locks never conflict with a read request
            starts, ends = tier.starts, tier.ends
            i = bisect_left(starts, start - (1 << (key >> 1)) + 1)
            while i < len(starts) and starts[i] <= end:
                if ends[i] >= start and (skip is None or holder(tier.sets[i]) != skip):
                    return tier.sets[i], (starts[i], ends[i], bool(key & 1))
                i += 1
        return None


def _tier_key(rng: Range) -> int:
    """Length class k (the range spans fewer than 2**k bytes beyond its start) and type."""
    return (rng[1] - rng[0]).bit_length() << 1 | rng[2]


def conflicts(a_write: bool, b_write: bool) -> bool:
    return a_write or b_write


@dataclass(slots=True)
class Waiter:
    """A lock-owner whose blocking request was denied, preferred until `expires` (§9.4)."""

    clientid: int
    owner: bytes
    range: ByteRange
    write: bool
    expires: float


@dataclass(slots=True, eq=False)
class FileState:
    """Everything the state manager tracks for one file: opens, lock sets, waiters.

    `denying` counts the opens with a deny mode, so OPEN and I/O with a special stateid
    skip the share check when there is none (the usual case).  `pending` holds opens made
    by open-owners that were not yet confirmed, the only ones a
    cancelled owner can have (pruned as they are confirmed or closed); `index` exists while
    the file has at least `INDEX_AT // 2` lock sets, once it reached `INDEX_AT`.  Empty
    collections are shared empty tuples until first needed.
    """

    opens: list[OpenState] = field(default_factory=list)
    lock_states: tuple[LockState, ...] | list[LockState] = ()
    waiters: tuple[Waiter, ...] = ()
    pending: tuple[OpenState, ...] = ()
    index: RangeIndex | None = None
    denying: int = 0

    def is_empty(self) -> bool:
        return not self.opens and not self.lock_states and not self.waiters

    # -- opens ------------------------------------------------------------------------------

    def add_open(self, os: OpenState) -> None:
        self.opens.append(os)
        self.denying += os.deny != 0

    def remove_open(self, os: OpenState) -> None:
        self.opens.remove(os)
        self.denying -= os.deny != 0

    def set_deny(self, os: OpenState, deny: int) -> None:
        """Change the deny mode of an open of this file (upgrade or downgrade)."""
        self.denying += (deny != 0) - (os.deny != 0)
        os.deny = deny

    # -- lock sets: every change to a lock set on this file goes through here -------------

    def add_lock_state(self, ls: LockState) -> None:
        if not isinstance(self.lock_states, list):
            self.lock_states = []
        self.lock_states.append(ls)
        if self.index is not None:
            for rng in ls.ranges():
                self.index.add(ls, rng)
        elif len(self.lock_states) >= INDEX_AT:
            self.index = RangeIndex()
            for other in self.lock_states:
                for rng in other.ranges():
                    self.index.add(other, rng)

    def remove_lock_state(self, ls: LockState) -> None:
        self._changed(ls, list(ls.ranges()), [])
        ls.remove(0, NFS4_UINT64_MAX)
        if isinstance(self.lock_states, list):
            self.lock_states.remove(ls)
        if len(self.lock_states) < INDEX_AT // 2:
            self.index = None
        if not self.lock_states:
            self.lock_states = ()

    def lock(self, ls: LockState, rng: ByteRange, write: bool) -> None:
        """Grant `rng` to `ls` as a lock of type `write` (merging, splitting, converting)."""
        self._changed(ls, *ls.apply(rng.start, rng.end, write))

    def unlock(self, ls: LockState, rng: ByteRange) -> None:
        self._changed(ls, *ls.remove(rng.start, rng.end))

    def _changed(self, ls: LockState, old: list[Range], new: list[Range]) -> None:
        if self.index is None:
            return
        for rng in old:
            if rng not in new:
                self.index.remove(ls, rng)
        for rng in new:
            if rng not in old:
                self.index.add(ls, rng)

    def find_conflict(self, rng: ByteRange, write: bool, skip: Holder | None) -> Hit | None:
        """A lock of another lock-owner that conflicts with the request."""
        if self.index is not None:
            return self.index.find(rng.start, rng.end, write, skip)
        for ls in self.lock_states:
            if skip is not None and holder(ls) == skip:
                continue
            hit = ls.conflict(rng.start, rng.end, write)
            if hit is not None:
                return ls, hit
        return None

    # -- waiters (§9.4) ---------------------------------------------------------------------

    def preferred_waiter(
        self, who: Holder, rng: ByteRange, write: bool, now: float
    ) -> Waiter | None:
        """A live waiter ahead of `who` whose request conflicts with this one (§9.4)."""
        if not self.waiters:
            return None
        self.drop_lapsed_waiters(now)
        for w in self.waiters:
            if (w.clientid, w.owner) == who:
                return None  # nobody conflicting is ahead of the requester
            if w.range.overlaps(rng) and conflicts(w.write, write):
                return w
        return None

    def add_waiter(self, waiter: Waiter) -> None:
        """Queue `waiter`, or refresh its entry keeping its place in line."""
        who = (waiter.clientid, waiter.owner)
        if any((w.clientid, w.owner) == who for w in self.waiters):
            self.waiters = tuple(
                waiter if (w.clientid, w.owner) == who else w for w in self.waiters
            )
        else:
            self.waiters = (*self.waiters, waiter)[-MAX_WAITERS_PER_FILE:]

    def drop_lapsed_waiters(self, now: float) -> None:
        if self.waiters:
            self.waiters = tuple(w for w in self.waiters if w.expires > now)

    def remove_waiter(self, who: Holder) -> None:
        if self.waiters:
            self.waiters = tuple(w for w in self.waiters if (w.clientid, w.owner) != who)

    def remove_client_waiters(self, clientid: int) -> None:
        self.waiters = tuple(w for w in self.waiters if w.clientid != clientid)


def count_locks(states: Iterable[LockState]) -> int:
    return sum(len(ls) for ls in states)


def lock_args(locktype: int, offset: int, length: int) -> ByteRange:
    if locktype not in LOCK_TYPES:
        raise E.NFS4ERR_INVAL("bad lock type")
    return byte_range(offset, length)


def check_new_locker_seqid(lo: LockOwner, os: OpenState, lock_seqid: int) -> LockState | None:
    """A known lock-owner named as new (open_to_lock_owner4): its lock set for this open,
    if any, which the LOCK then extends.

    §16.10.5 answers NFS4ERR_BAD_SEQID when the lock-owner already has state for the open;
    as knfsd (and pynfs LOCK24 expects), the request is served when `lock_seqid` is the
    lock-owner's next seqid, and only a seqid out of sequence is NFS4ERR_BAD_SEQID.
    """
    if lo.lock_states and lo.last_seqid is not None and lock_seqid != next_seqid(lo.last_seqid):
        raise E.NFS4ERR_BAD_SEQID(f"lock_seqid {lock_seqid}, last {lo.last_seqid}")  # §9.1.7
    return next((ls for ls in lo.lock_states if ls.open is os), None)


def denied(hit: Hit) -> LockDenied:
    """The LOCK4denied payload describing a conflicting lock (§16.10.4)."""
    ls, (start, end, write) = hit
    length = ByteRange(start, end).length
    locktype = WRITE_LT if write else READ_LT
    return LockDenied(start, length, locktype, ls.owner.client.clientid, ls.owner.owner)


def waiter_denied(w: Waiter) -> LockDenied:
    locktype = WRITE_LT if w.write else READ_LT
    return LockDenied(w.range.start, w.range.length, locktype, w.clientid, w.owner)


def find_conflict(
    fs: FileState,
    rng: ByteRange,
    write: bool,
    who: Holder,
    yield_courteous: Callable[[Client, str], bool],
) -> Hit | None:
    """The first conflicting lock of another lock-owner; courteous holders yield (§9.6.3.1)."""
    while True:
        hit = fs.find_conflict(rng, write, skip=who)
        if hit is None or not yield_courteous(hit[0].owner.client, "a lock"):
            return hit
