"""The per-file table: each file's opens, share reservations, lock sets and lock waiters.

Theory of operation: a file gets a `FileState` (see `locks`) when it is first opened or
locked and loses it when nothing remains on it.  Releasing state always goes through here,
innermost first (lock set, then open, then open-owner), so that every table that refers to
a state (its client's `states`, its owner's, its open's and its file's) forgets it at once
and an emptied file is dropped.  The `OpenFiles` hook hears of a file's first open and of its
last CLOSE, so the server can keep a file with opens usable after its last link goes.
`may_grant` checks a LOCK against the file's locks and its blocking-lock queue (fairness as
described in `locks`); `waiting` is the set of files that may have queued lock waiters (§9.4),
so that dropping a client's waiters and the sweep need not visit every file.  Time comes from
the injected clock.  Not thread-safe; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.locks import (
    FileState,
    Holder,
    Waiter,
    denied,
    find_conflict,
    holder,
    waiter_denied,
)
from pynfsd.nfs4.state.opens import mode_bit
from pynfsd.nfs4.state.owners import Client, LockState, OpenOwner, OpenState
from pynfsd.nfs4.state.types import (
    NFS4_UINT64_MAX,
    OPEN4_SHARE_ACCESS_READ,
    OPEN4_SHARE_ACCESS_WRITE,
    ByteRange,
    Stateid,
    is_blocking_lock,
    is_write_lock,
)


class OpenFiles(Protocol):
    """Told when a file gets its first open and loses its last one (`hold` / `release`),
    so that the file stays usable by its open stateids after its last link is removed, as
    knfsd holds the open file (the server's holds it in the backend).  Called on the event
    loop thread; errors are the implementation's to handle."""

    def hold(self, file_key: bytes) -> None: ...

    def release(self, file_key: bytes) -> None: ...


class NoOpenFiles:
    """`OpenFiles` that holds nothing (tests of the state manager alone)."""

    def hold(self, file_key: bytes) -> None:
        return None

    def release(self, file_key: bytes) -> None:
        return None


class FileTable:
    """Every file that has state, by file key (see the module docstring)."""

    def __init__(
        self, open_files: OpenFiles, clock: Callable[[], float], waiter_window: float
    ) -> None:
        self.by_key: dict[bytes, FileState] = {}
        self.waiting: set[FileState] = set()  # files that may have waiters (§9.4)
        self._open_files = open_files
        self._clock = clock
        self._waiter_window = waiter_window

    def get(self, file_key: bytes) -> FileState | None:
        return self.by_key.get(file_key)

    def file(self, file_key: bytes) -> FileState:
        fs = self.by_key.get(file_key)
        if fs is None:
            fs = self.by_key[file_key] = FileState()
        return fs

    def live(self, file_key: bytes) -> FileState:
        """The file's state after reaping cancelled opens (which may drop an emptied
        FileState, so it is looked up again rather than kept)."""
        fs = self.by_key.get(file_key)
        if fs is not None:
            self.reap(fs)
        return self.file(file_key)

    def reap(self, fs: FileState) -> None:
        """Release the opens of cancelled owners on a file (lapsed holders yield on conflict).

        Only an unconfirmed owner can be cancelled, so only `fs.pending` is looked at."""
        if not fs.pending:
            return
        fs.pending = tuple(os for os in fs.pending if not (os.closed or os.owner.confirmed))
        for os in [os for os in fs.pending if os.owner.cancelled]:
            self.release_open_owner(os.owner)

    def upgrade_or_create(
        self, oo: OpenOwner, fs: FileState, file_key: bytes, access: int, deny: int
    ) -> Stateid:
        os = oo.opens.get(file_key)
        if os is not None:
            os.access |= access
            fs.set_deny(os, os.deny | deny)
            os.modes |= mode_bit(access, deny)
            return os.bump()  # §9.11: one open, union of the modes
        client = oo.client
        os = OpenState(
            client.allocate_index(), 1, oo, file_key, access, deny, mode_bit(access, deny)
        )
        client.states[os.index] = os
        oo.opens[file_key] = os
        if not fs.opens:
            self._open_files.hold(file_key)  # the file outlives its links until the last CLOSE
        fs.add_open(os)
        if not oo.confirmed:
            fs.pending = (*fs.pending, os)  # a cancelled owner's opens are reaped from here
        return os.stateid()

    def attach(self, ls: LockState) -> None:
        """Enter a new lock set in its client's, owner's, open's and file's tables."""
        ls.owner.client.states[ls.index] = ls
        ls.owner.lock_states = (*ls.owner.lock_states, ls)
        ls.open.lock_states = (*ls.open.lock_states, ls)
        self.file(ls.open.file_key).add_lock_state(ls)

    def may_grant(
        self,
        ls: LockState,
        rng: ByteRange,
        locktype: int,
        yield_courteous: Callable[[Client, str], bool],
    ) -> FileState:
        """Check that `rng` may be granted to lock set `ls` (returning its file) or raise
        NFS4ERR_DENIED / NFS4ERR_OPENMODE; the caller then grants it."""
        write = is_write_lock(locktype)
        need = OPEN4_SHARE_ACCESS_WRITE if write else OPEN4_SHARE_ACCESS_READ
        if not ls.open.access & need:
            raise E.NFS4ERR_OPENMODE("lock type not allowed by the open's access")
        fs = self.live(ls.open.file_key)
        who = holder(ls)
        hit = find_conflict(fs, rng, write, who, yield_courteous)
        if hit is not None:
            self._note_denied(fs, who, rng, locktype)
            raise E.NFS4ERR_DENIED(value=denied(hit))
        waiter = fs.preferred_waiter(who, rng, write, self._clock())
        if waiter is not None:
            self._note_denied(fs, who, rng, locktype)
            raise E.NFS4ERR_DENIED(value=waiter_denied(waiter))  # §9.4 fairness
        fs.remove_waiter(who)
        return fs

    def _note_denied(self, fs: FileState, who: Holder, rng: ByteRange, locktype: int) -> None:
        """Queue a denied blocking request; a denied non-blocking one leaves the queue (§9.4)."""
        if is_blocking_lock(locktype):
            expires = self._clock() + self._waiter_window
            fs.add_waiter(Waiter(who[0], who[1], rng, is_write_lock(locktype), expires))
            self.waiting.add(fs)
        else:
            fs.remove_waiter(who)

    def drop_client_waiters(self, clientid: int) -> None:
        for fs in list(self.waiting):
            fs.remove_client_waiters(clientid)
            if not fs.waiters:
                self.waiting.discard(fs)

    def sweep(self, now: float) -> None:
        """Drop lapsed waiters and files left empty."""
        for key, fs in list(self.by_key.items()):
            fs.drop_lapsed_waiters(now)
            if not fs.waiters:
                self.waiting.discard(fs)
            if fs.is_empty():
                del self.by_key[key]

    def sweep_owners(self, client: Client, idle_before: float) -> None:
        """Cancel unconfirmed opens and forget owners idle for a lease (§16.18.5, §9.1.10)."""
        for oo in list(client.open_owners.values()):
            if oo.last_used <= idle_before and (not oo.confirmed or not oo.opens):
                self.release_open_owner(oo)
        for name, lo in list(client.lock_owners.items()):
            if not lo.lock_states and lo.last_used <= idle_before:
                del client.lock_owners[name]

    def release_open_owner(self, oo: OpenOwner) -> None:
        for os in list(oo.opens.values()):
            self.release_open(os)
        if oo.closed is not None:
            oo.client.states.pop(oo.closed.index, None)
            oo.closed = None
        if oo.client.open_owners.get(oo.owner) is oo:
            del oo.client.open_owners[oo.owner]

    def release_open(self, os: OpenState) -> None:
        for ls in list(os.lock_states):
            self.release_lock_state(ls)
        os.closed = True
        os.owner.opens.pop(os.file_key, None)
        os.owner.client.states.pop(os.index, None)
        fs = self.by_key.get(os.file_key)
        if fs is not None:
            fs.remove_open(os)
            if not fs.opens:
                self._open_files.release(os.file_key)
            if fs.pending:
                fs.pending = tuple(p for p in fs.pending if p is not os)
            self._gc(os.file_key, fs)

    def release_lock_state(self, ls: LockState) -> None:
        ls.owner.lock_states = tuple(x for x in ls.owner.lock_states if x is not ls)
        ls.open.lock_states = tuple(x for x in ls.open.lock_states if x is not ls)
        ls.owner.client.states.pop(ls.index, None)
        fs = self.by_key.get(ls.open.file_key)
        if fs is not None:
            fs.remove_lock_state(ls)
            self._gc(ls.open.file_key, fs)
        else:
            ls.remove(0, NFS4_UINT64_MAX)

    def _gc(self, file_key: bytes, fs: FileState) -> None:
        if fs.is_empty() and self.by_key.get(file_key) is fs:
            del self.by_key[file_key]
