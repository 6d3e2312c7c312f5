"""Byte-range lock arithmetic and the per-file lock table (RFC 7530 §9.2-§9.4, §16.10-§16.12).

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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state_owners import HeldLock, LockOwner, LockState, OpenState
from pynfsd.nfs4.state_types import (
    LOCK_TYPES,
    NFS4_UINT64_MAX,
    READ_LT,
    WRITE_LT,
    ByteRange,
    LockDenied,
    byte_range,
)

MAX_WAITERS_PER_FILE = 64


def subtract(held: list[HeldLock], rng: ByteRange) -> list[HeldLock]:
    """`held` with the bytes of `rng` removed, splitting ranges that straddle it."""
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
    """Sort `held` and coalesce touching or overlapping ranges of the same type."""
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
    """Set `rng` to the given type: new, extended, upgraded or downgraded (§9.3)."""
    return merge([*subtract(held, rng), HeldLock(rng, write)])


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
    """Everything the state manager tracks for one file: opens, lock sets, waiters."""

    opens: list[OpenState] = field(default_factory=list)
    lock_states: list[LockState] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.opens and not self.lock_states and not self.waiters

    def find_conflict(
        self, rng: ByteRange, write: bool, skip: tuple[int, bytes] | None
    ) -> tuple[LockState, HeldLock] | None:
        """The first lock of another lock-owner that conflicts with the request."""
        for ls in self.lock_states:
            if skip is not None and (ls.owner.client.clientid, ls.owner.owner) == skip:
                continue
            for lock in ls.locks:
                if lock.range.overlaps(rng) and conflicts(lock.write, write):
                    return ls, lock
        return None

    def preferred_waiter(
        self, who: tuple[int, bytes], rng: ByteRange, write: bool, now: float
    ) -> Waiter | None:
        """A live waiter ahead of `who` whose request conflicts with this one (§9.4)."""
        self.waiters = [w for w in self.waiters if w.expires > now]
        for w in self.waiters:
            if (w.clientid, w.owner) == who:
                return None  # nobody conflicting is ahead of the requester
            if w.range.overlaps(rng) and conflicts(w.write, write):
                return w
        return None

    def add_waiter(self, waiter: Waiter) -> None:
        """Queue `waiter`, or refresh its entry keeping its place in line."""
        for i, w in enumerate(self.waiters):
            if (w.clientid, w.owner) == (waiter.clientid, waiter.owner):
                self.waiters[i] = waiter
                return
        self.waiters.append(waiter)
        del self.waiters[:-MAX_WAITERS_PER_FILE]

    def remove_waiter(self, who: tuple[int, bytes]) -> None:
        self.waiters = [w for w in self.waiters if (w.clientid, w.owner) != who]

    def remove_client_waiters(self, clientid: int) -> None:
        self.waiters = [w for w in self.waiters if w.clientid != clientid]


def count_locks(states: Iterable[LockState]) -> int:
    return sum(len(ls.locks) for ls in states)


def lock_args(locktype: int, offset: int, length: int) -> ByteRange:
    if locktype not in LOCK_TYPES:
        raise E.NFS4ERR_INVAL("bad lock type")
    return byte_range(offset, length)


def check_new_locker_seqid(lo: LockOwner, os: OpenState, lock_seqid: int) -> None:
    """An existing lock-owner named as new: §16.10.5 cases for open_to_lock_owner4."""
    if any(ls.open is os for ls in lo.lock_states):
        raise E.NFS4ERR_BAD_SEQID("lock-owner already has state for this open")  # §16.10.5
    if lo.lock_states and lo.check_seqid(lock_seqid) is not None:
        raise E.NFS4ERR_BAD_SEQID("lock_seqid replays an old request")


def denied(ls: LockState, rng: ByteRange, write: bool) -> LockDenied:
    locktype = WRITE_LT if write else READ_LT
    return LockDenied(rng.start, rng.length, locktype, ls.owner.client.clientid, ls.owner.owner)


def waiter_denied(w: Waiter) -> LockDenied:
    locktype = WRITE_LT if w.write else READ_LT
    return LockDenied(w.range.start, w.range.length, locktype, w.clientid, w.owner)
