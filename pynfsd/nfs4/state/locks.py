"""The per-file lock table: conflicts and fairness (RFC 7530 §9.2-§9.4, §16.10-§16.12).

Each lock set (`LockState`: one lock-owner, one open, in `owners`) holds its ranges as a
`LockSet` (see `lockset`); they change only through the file's `FileState`, which keeps its
conflict index in step and checks conflicts across lock-owners.

Fairness for blocking locks (§9.4): when a READW_LT/WRITEW_LT request is denied, its
lock-owner joins the file's FIFO wait queue for that range.  Until the waiter's entry lapses
(`window` seconds after its last denied poll, the lease time by default), a LOCK by any
lock-owner that is not ahead of it in the queue and that would conflict with the waiter's
request is denied as if the waiter held the lock, so the waiter wins when it polls again.
A waiter leaves the queue when it is granted the lock, when it sends a non-blocking request
that is denied (the client's "last poll" courtesy of §9.4), when its entry lapses, or when
its client's state is dropped.  The queue is bounded per file; overflow drops the oldest.

Conflict checks: a file with few lock sets checks each set by bisection.  From `INDEX_AT`
lock sets on, the file also keeps a `RangeIndex` of every granted range, so LOCK and LOCKT
stay cheap however many clients share the file: ranges are filed by type and by length class
k (length < 2**k), each class sorted by start.  A range of class k that reaches offset s
starts after s - 2**k, so a query bisects each class to that point and scans forward; the
ranges it passes without overlapping are of the same length class and start within 2**k
before s, which is at most two per lock set.  Read requests look only at write ranges.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.lockset import Range
from pynfsd.nfs4.state.owners import Client, LockOwner, LockState, OpenState
from pynfsd.nfs4.state.types import (
    LOCK_TYPES,
    NFS4_UINT64_MAX,
    READ_LT,
    WRITE_LT,
    ByteRange,
    LockDenied,
    byte_range,
    next_seqid,
)

MAX_WAITERS_PER_FILE = 64
INDEX_AT = 8  # lock sets on a file from which its conflict checks use a RangeIndex

Holder = tuple[int, bytes]  # (clientid, lock-owner name): who a lock belongs to
Hit = tuple[LockState, Range]  # a conflicting lock and the lock set holding it


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
