"""The `StateManager` facade: the one entry point of the op layer into NFSv4.0 state.

Theory of operation: see the package docstring (`pynfsd.nfs4.state`).  The manager holds the
client table, the leases and the per-file table, and delegates each concept to its module
(`clients`, `leases`, `owners`, `opens`, `locks`, `files`, `stateids`); what stays here is
what crosses concepts: a lapsed client's courtesy and expiry, and the order of checks of
each operation.  Stable storage and grace come in through the `ClientStore` (`store`) and
`GraceTracker` (`grace`) hooks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.clients import ClientTable
from pynfsd.nfs4.state.delegations import DelegationHooks, Delegations
from pynfsd.nfs4.state.files import FileTable, NoOpenFiles, OpenFiles
from pynfsd.nfs4.state.grace import FixedGrace, GraceTracker, check_reclaim
from pynfsd.nfs4.state.leases import (
    ADMIN_REVOKED,
    COURTESY_LIMIT,
    EXPIRED,
    MAX_COURTEOUS,
    Leases,
    client_info,
    enforced_lease,
    state_counts,
    tombstone_error,
)
from pynfsd.nfs4.state.locks import (
    check_new_locker_seqid,
    denied,
    find_conflict,
    lock_args,
)
from pynfsd.nfs4.state.opens import (
    check_downgrade,
    check_share_args,
    check_share_conflicts,
    check_special_io,
    subset_mask,
)
from pynfsd.nfs4.state.owners import (
    Client,
    LockOwner,
    LockState,
    OpenOwner,
    OpenState,
    StateOwner,
)
from pynfsd.nfs4.state.stateids import AnyState, StateKind, check_stateid
from pynfsd.nfs4.state.store import ClientStore, NullClientStore
from pynfsd.nfs4.state.types import (
    ANONYMOUS_STATEID,
    OPEN4_SHARE_ACCESS_WRITE,
    READ_BYPASS_STATEID,
    ByteRange,
    ClientInfo,
    OpenResult,
    StateCounts,
    Stateid,
    is_special_other,
    is_write_lock,
)

log = logging.getLogger("pynfsd.nfs4.state")  # the name operators filter on


def boot_tag_of(server_boot_id: bytes) -> int:
    """The 32-bit tag of a server boot carried in every client id and stateid."""
    tag = int.from_bytes(hashlib.blake2b(server_boot_id, digest_size=4).digest(), "big")
    return tag ^ 1 if tag in (0, 0xFFFFFFFF) else tag  # never an all-zeros/ones prefix


class StateManager:
    """All NFSv4.0 locking state of one server boot (see the package docstring)."""

    def __init__(
        self,
        clock: Callable[[], float],
        rng: Callable[[int], bytes],
        lease_time: int = 90,
        *,
        server_boot_id: bytes,
        store: ClientStore | None = None,
        open_files: OpenFiles | None = None,
        in_grace: Callable[[], bool] | None = None,
        grace: GraceTracker | None = None,
        waiter_window: float | None = None,
        courtesy_limit: float = COURTESY_LIMIT,
        max_courteous: int = MAX_COURTEOUS,
        on_client_dropped: Callable[[int], None] | None = None,
        delegation_hooks: DelegationHooks | None = None,
    ) -> None:
        self.clock = clock
        # told the id of every client whose state is dropped (expired, revoked, replaced)
        self._on_dropped = on_client_dropped or (lambda _clientid: None)
        self.lease_time = lease_time
        self.enforced_lease = enforced_lease(lease_time)
        self.waiter_window = lease_time if waiter_window is None else waiter_window
        self._store: ClientStore = store if store is not None else NullClientStore()
        self._grace: GraceTracker = grace if grace is not None else FixedGrace(in_grace)
        self._in_grace = self._grace.in_grace
        self.leases = Leases(clock, self.enforced_lease, courtesy_limit, max_courteous)
        self.clients = ClientTable(
            boot_tag_of(server_boot_id),
            clock,
            rng,
            self.enforced_lease,
            self._store,
            self._drop_state,
        )
        self.files = FileTable(
            open_files if open_files is not None else NoOpenFiles(), clock, self.waiter_window
        )
        self.delegations = Delegations(clock, self.enforced_lease, self.files, self._stateid_client,
                                       self._yield_courteous, self._in_grace, delegation_hooks)

    # -- client ids (§16.33, §16.34, §16.28) ----------------------------------------------

    def setclientid(
        self, verifier: bytes, ownerid: bytes, principal: str, callback: object, client_addr: str,
        client_port: int = 0,
    ) -> tuple[int, bytes]:
        """SETCLIENTID: returns (clientid, setclientid_confirm); may raise NFS4ERR_CLID_INUSE.

        A lapsed client of the same co_ownerid yields to another principal (§9.1.2: MUST
        allow once the lease expired); a courteous one presented by its own principal stays.
        """
        conf = self.clients.confirmed_by_name.get(ownerid)
        if conf is not None and (conf.principal != principal or not self.leases.courteous(conf)):
            self._expire_if_lapsed(conf)  # §9.1.2, §9.6.3.1
        res = self.clients.setclientid(verifier, ownerid, principal, callback, client_addr,
                                       client_port)
        return res.clientid, res.confirm

    def setclientid_confirm(self, clientid: int, confirm: bytes, principal: str) -> None:
        """SETCLIENTID_CONFIRM; confirming a new incarnation drops the old one's state.

        A callback update of a courteous client keeps its state (the client came back).
        """
        unconf = self.clients.unconfirmed.get(clientid)
        if unconf is not None:
            old = self.clients.confirmed_by_name.get(unconf.ownerid)
            if old is not None and (old.clientid != clientid or not self.leases.courteous(old)):
                self._expire_if_lapsed(old)
        was_confirmed = clientid in self.clients.confirmed
        client = self.clients.confirm(clientid, confirm, principal)
        self.leases.renew(client)
        if not was_confirmed:
            self._grace.client_confirmed(client.ownerid)

    def renew(self, clientid: int, principal: str = "") -> None:
        """RENEW (§16.28): NFS4ERR_STALE_CLIENTID or NFS4ERR_EXPIRED, else the lease is renewed.

        `principal` is accepted for future policy but not enforced: clients may renew with
        any credential (Linux uses whichever state-owner credential it has at hand).
        A client holding delegations whose callback path is down is told so (§16.28.4).
        """
        client = self._client(clientid)
        if client.delegations and self.delegations.hooks.callback_down(clientid):
            raise E.NFS4ERR_CB_PATH_DOWN()

    def pin(self, clientid: int) -> None:
        """Hold the lease of `clientid` for an operation in progress: it cannot expire."""
        self._client(clientid).pins += 1

    def unpin(self, clientid: int) -> None:
        client = self.clients.confirmed.get(clientid)
        if client is not None and client.pins > 0:
            client.pins -= 1
            self.leases.renew(client)

    @contextmanager
    def lease_held(self, clientid: int) -> Iterator[None]:
        """`with state.lease_held(clientid):` pins the lease for the duration of a block."""
        self.pin(clientid)
        try:
            yield
        finally:
            self.unpin(clientid)

    def clientid_of(self, stateid: Stateid) -> int | None:
        """The client id a non-special stateid belongs to (for pinning), or None."""
        if len(stateid.other) != 12 or is_special_other(stateid.other):
            return None
        return int.from_bytes(stateid.other[:8], "big")

    # -- state-owners (§9.1.7) ------------------------------------------------------------

    def open_owner(self, clientid: int, owner: bytes, seqid: int) -> OpenOwner:
        """The open-owner an OPEN with `seqid` is sequenced on (created if unknown, §9.1.9).

        An unconfirmed owner is restarted unless this is a retransmission (§16.18.5).
        """
        client = self._client(clientid)
        oo = client.open_owners.get(owner)
        if oo is not None and (oo.cancelled or (not oo.confirmed and seqid != oo.last_seqid)):
            self.files.release_open_owner(oo)
            oo = None
        if oo is None:
            oo = client.open_owners[owner] = OpenOwner(client, owner)
        oo.last_used = self.clock()
        return oo

    def owner_for_stateid(self, stateid: Stateid) -> StateOwner:
        """The state-owner whose seqid sequences an operation on `stateid`.

        Raises the stateid errors that do not depend on its seqid (STALE, BAD, EXPIRED,
        ADMIN_REVOKED); the seqid itself is checked later by the operation (§9.1.9 order).
        """
        client, state = self._locate(stateid)
        self.leases.renew(client)
        owner = state.owner
        owner.last_used = self.clock()
        return owner

    # -- OPEN, OPEN_CONFIRM, OPEN_DOWNGRADE, CLOSE (§16.16, §16.18, §16.19, §16.2) ------------

    def open(
        self,
        clientid: int,
        owner: bytes,
        file_key: bytes,
        access: int,
        deny: int,
        *,
        reclaim: bool = False,
    ) -> OpenResult:
        """OPEN's state part: share reservation check, new open or upgrade (§9.9, §9.11)."""
        check_share_args(access, deny)
        client = self._client(clientid)
        check_reclaim(self._grace, self._store, client.ownerid, reclaim)
        oo = client.open_owners.get(owner)
        if oo is None or oo.cancelled:
            oo = self.open_owner(clientid, owner, 0)
        fs = self.files.live(file_key)
        check_share_conflicts(fs, access, deny, self._yield_courteous)
        if reclaim:
            oo.confirmed = True  # §9.1.11: MUST NOT require confirmation on reclaim
        stateid = self.files.upgrade_or_create(oo, fs, file_key, access, deny)
        self._record(client)
        return OpenResult(stateid, needs_confirm=not oo.confirmed)

    def _record(self, client: Client) -> None:
        """Put a client in stable storage the first time it holds state in this boot."""
        if not client.recorded:
            self._store.client_has_state(client.ownerid, client.principal)  # may refuse
            client.recorded = True

    def record(self, clientid: int) -> Client | None:
        """Queue the record of a client before its first state (OPEN awaits it); the client,
        or None if it is recorded already."""
        client = self._client(clientid)
        if client.recorded:
            return None
        self._record(client)
        return client

    def open_confirm(self, stateid: Stateid, file_key: bytes | None = None) -> Stateid:
        """OPEN_CONFIRM (§16.18): confirm the open-owner; returns the bumped stateid."""
        os = self._resolve(stateid, file_key, OpenState, unconfirmed_ok=True)
        assert isinstance(os, OpenState)
        if os.owner.confirmed:
            raise E.NFS4ERR_BAD_STATEID("open-owner already confirmed")
        os.owner.confirmed = True
        return os.bump()

    def open_downgrade(
        self, stateid: Stateid, access: int, deny: int, file_key: bytes | None = None
    ) -> Stateid:
        """OPEN_DOWNGRADE (§16.19): modes must be the union of a subset of the OPENs."""
        check_share_args(access, deny)
        os = self._resolve(stateid, file_key, OpenState)
        assert isinstance(os, OpenState)
        check_downgrade(os, access, deny)
        os.access = access
        self.files.file(os.file_key).set_deny(os, deny)
        os.modes &= subset_mask(access, deny)
        return os.bump()  # §9.11: MUST increment even when nothing changes

    def close(self, stateid: Stateid, file_key: bytes | None = None) -> Stateid:
        """CLOSE (§16.2): fails with NFS4ERR_LOCKS_HELD while any byte-range lock remains."""
        os = self._resolve(stateid, file_key, OpenState)
        assert isinstance(os, OpenState)
        if any(len(ls) for ls in os.lock_states):
            raise E.NFS4ERR_LOCKS_HELD()  # §16.2.4: MUST fail if locks would exist after
        self.files.release_open(os)
        oo = os.owner
        if oo.closed is not None:
            oo.client.states.pop(oo.closed.index, None)
        oo.client.states[os.index] = os  # retained for a retransmitted CLOSE (§9.1.10.1)
        oo.closed, oo.closed_fresh = os, True
        return os.bump()

    # -- I/O (§9.1.4.3-§9.1.4.6) ----------------------------------------------------------

    def check_io_stateid(self, stateid: Stateid, file_key: bytes, write: bool) -> None:
        """Validate the stateid of READ, WRITE or SETATTR(size) against the file's state.

        A read is allowed under any open (write-only opens included, as clients read to fill
        partial pages); a write needs OPEN4_SHARE_ACCESS_WRITE (NFS4ERR_OPENMODE).
        """
        if stateid.other == ANONYMOUS_STATEID.other:
            if stateid.seqid != 0:
                raise E.NFS4ERR_BAD_STATEID()  # §9.1.4.3
            self._check_io_grace()
            return self._check_anonymous(file_key, write)
        if stateid.other == READ_BYPASS_STATEID.other:
            if stateid.seqid != READ_BYPASS_STATEID.seqid:
                raise E.NFS4ERR_BAD_STATEID()  # §9.1.4.3
            if not write:
                return None  # bypasses share reservations, so no reclaim can conflict
            self._check_io_grace()
            return self._check_anonymous(file_key, write)
        deleg = self.delegations.find(stateid, file_key)
        if deleg is not None:  # §10.4: I/O under a delegation; writes need a write one
            if write and not deleg.write:
                raise E.NFS4ERR_OPENMODE()
            return None
        state = self._resolve(stateid, file_key, (OpenState, LockState))
        os = state if isinstance(state, OpenState) else state.open
        if write and not os.access & OPEN4_SHARE_ACCESS_WRITE:
            raise E.NFS4ERR_OPENMODE()

    def _check_io_grace(self) -> None:
        """I/O without reclaimed state may conflict with a share reservation still to be
        reclaimed, so it waits out the grace period (§9.6.2); reclaimed stateids may do I/O."""
        if self._in_grace():
            raise E.NFS4ERR_GRACE()

    def _check_anonymous(self, file_key: bytes, write: bool) -> None:
        """Special stateids are refused by a conflicting deny reservation (§9.1.4.3, §9.10)."""
        fs = self.files.get(file_key)
        if fs is not None:
            self.files.reap(fs)
            check_special_io(fs, write, self._yield_courteous)

    # -- LOCK, LOCKT, LOCKU, RELEASE_LOCKOWNER (§16.10-§16.12, §16.37) ------------------------

    def lock_new(
        self,
        open_stateid: Stateid,
        lock_owner: bytes,
        lock_seqid: int,
        file_key: bytes,
        locktype: int,
        offset: int,
        length: int,
        *,
        clientid: int | None = None,
        reclaim: bool = False,
    ) -> Stateid:
        """LOCK with new_lock_owner (open_to_lock_owner4): a new lock stateid (seqid 1), or the
        bumped one of the lock-owner's lock set for this open (`check_new_locker_seqid`).

        `clientid` is the lock_owner4's (the op layer always passes it): a lock-owner of
        another client than the open's is NFS4ERR_BAD_STATEID, as knfsd answers.
        """
        rng = lock_args(locktype, offset, length)
        os = self._resolve(open_stateid, file_key, OpenState)
        assert isinstance(os, OpenState)
        client = os.owner.client
        if clientid is not None and clientid != client.clientid:
            raise E.NFS4ERR_BAD_STATEID("lock-owner of another client than the open's")
        check_reclaim(self._grace, self._store, client.ownerid, reclaim)
        lo = client.lock_owners.get(lock_owner)
        ls = check_new_locker_seqid(lo, os, lock_seqid) if lo is not None else None
        if lo is None:
            lo = client.lock_owners[lock_owner] = LockOwner(client, lock_owner)
        if ls is None:
            ls = LockState(client.allocate_index(), 1, lo, os)
        try:
            return self._grant(ls, rng, locktype)
        except E.NFS4Error:
            if not lo.lock_states and lo.reply is None:
                del client.lock_owners[lock_owner]
            raise
        finally:
            lo.last_seqid = lock_seqid  # the lock-owner's sequence starts or goes on (§16.10.5)

    def lock_existing(
        self,
        lock_stateid: Stateid,
        file_key: bytes | None,
        locktype: int,
        offset: int,
        length: int,
        *,
        reclaim: bool = False,
    ) -> Stateid:
        """LOCK with an existing lock-owner (exist_lock_owner4); returns the bumped stateid."""
        rng = lock_args(locktype, offset, length)
        ls = self._resolve(lock_stateid, file_key, LockState)
        assert isinstance(ls, LockState)
        check_reclaim(self._grace, self._store, ls.owner.client.ownerid, reclaim)
        return self._grant(ls, rng, locktype)

    def _grant(self, ls: LockState, rng: ByteRange, locktype: int) -> Stateid:
        """Lock `rng` for lock set `ls` (attached now if new) or raise NFS4ERR_DENIED; the
        lock stateid: seqid 1 for a new set, else bumped (§9.1.4.2)."""
        fs = self.files.may_grant(ls, rng, locktype, self._yield_courteous)
        if ls in ls.owner.lock_states:
            fs.lock(ls, rng, is_write_lock(locktype))
            return ls.bump()
        ls.apply(rng.start, rng.end, is_write_lock(locktype))
        self.files.attach(ls)
        return ls.stateid()

    def lockt(
        self,
        clientid: int,
        owner: bytes,
        file_key: bytes,
        locktype: int,
        offset: int,
        length: int,
    ) -> None:
        """LOCKT (§16.11): NFS4ERR_DENIED with the conflicting lock of another lock-owner."""
        rng = lock_args(locktype, offset, length)
        self._client(clientid)
        if self._in_grace():
            raise E.NFS4ERR_GRACE()
        fs = self.files.get(file_key)
        if fs is None:
            return
        self.files.reap(fs)
        hit = find_conflict(fs, rng, is_write_lock(locktype), (clientid, owner), self._yield_courteous)
        if hit is not None:
            raise E.NFS4ERR_DENIED(value=denied(hit))

    def locku(
        self,
        stateid: Stateid,
        locktype: int,
        offset: int,
        length: int,
        file_key: bytes | None = None,
    ) -> Stateid:
        """LOCKU (§16.12): unlock any sub-range (POSIX); returns the bumped lock stateid."""
        rng = lock_args(locktype, offset, length)
        ls = self._resolve(stateid, file_key, LockState)
        assert isinstance(ls, LockState)
        self.files.file(ls.open.file_key).unlock(ls, rng)
        return ls.bump()

    def release_lockowner(self, clientid: int, owner: bytes) -> None:
        """RELEASE_LOCKOWNER (§16.37): NFS4ERR_LOCKS_HELD if it still holds any lock."""
        client = self._client(clientid)
        lo = client.lock_owners.get(owner)
        if lo is None:
            return
        if any(len(ls) for ls in lo.lock_states):
            raise E.NFS4ERR_LOCKS_HELD()  # §16.37.4
        for ls in list(lo.lock_states):
            self.files.release_lock_state(ls)
        del client.lock_owners[owner]

    # -- admin ----------------------------------------------------------------------------

    def sweep(self) -> int:
        """Cancel lapsed leases beyond courtesy, move the others to courtesy (§9.6.3.1) and
        forget idle records; returns how many clients were cancelled."""
        now = self.clock()
        expired = 0
        courteous: list[Client] = []
        for client in list(self.clients.confirmed.values()):
            if not self.leases.lapsed(client):
                self.files.sweep_owners(client, now - self.enforced_lease)
            elif self.leases.courteous(client):
                courteous.append(client)
            else:
                self._expire(client, EXPIRED)
                expired += 1
        for client in self.leases.over_bound(courteous):
            self._expire(client, EXPIRED)
            expired += 1
        self.clients.expire_unconfirmed(now)
        self.files.sweep(now)
        self.delegations.sweep()
        return expired

    def revoke_client(self, clientid: int) -> bool:
        """Drop all state of a client; its stateids then give NFS4ERR_ADMIN_REVOKED (§9.8)."""
        client = self.clients.confirmed.get(clientid)
        if client is None:
            return False
        self._expire(client, ADMIN_REVOKED)
        return True

    def client_list(self) -> list[ClientInfo]:
        """Every client record with its remaining (enforced) lease and state counts."""
        now = self.clock()
        records = [*self.clients.confirmed.values(), *self.clients.unconfirmed.values()]
        return [client_info(c, now) for c in records]

    def counts(self) -> StateCounts:
        return state_counts(self.clients.confirmed.values(), len(self.clients.unconfirmed))

    # -- leases ---------------------------------------------------------------------------

    def _client(self, clientid: int) -> Client:
        """The confirmed client for a clientid argument, renewed; or STALE/EXPIRED."""
        client = self.clients.lookup(clientid)
        self._check_lease(client)
        self.leases.renew(client)
        return client

    def _check_lease(self, client: Client) -> None:
        """The client's own request: a courteous client comes back and keeps its state
        (§9.6.3.1: renewed implicitly); any other lapsed lease is cancelled (§9.6.3.2)."""
        if not self.leases.lapsed(client):
            return
        if self.leases.courteous(client):
            log.info("client %r came back after its lease expired: state kept", client.ownerid)
            return
        self._expire(client, EXPIRED)
        raise E.NFS4ERR_EXPIRED()  # §9.5, §9.6.3.2: the lease was cancelled

    def _yield_courteous(self, client: Client, what: str) -> bool:
        """Cancel a lapsed client whose state conflicts with another client's request
        (§9.6.3.1: MUST free the courtesy lock and grant the new request); False if live."""
        if not client.confirmed or not self.leases.lapsed(client):
            return False
        log.info(
            "cancelling the expired lease of client %r: another client needs %s it holds",
            client.ownerid,
            what,
        )
        self._expire(client, EXPIRED)
        return True

    def _expire_if_lapsed(self, client: Client | None) -> None:
        if client is not None and client.confirmed and self.leases.lapsed(client):
            self._expire(client, EXPIRED)

    def _expire(self, client: Client, status: int) -> None:
        self.clients.remove_confirmed(client)
        self._drop_state(client, status)

    def _drop_state(self, client: Client, status: int) -> None:
        """Release every open, lock and waiter of `client`; tombstone its id if `status`."""
        for oo in list(client.open_owners.values()):
            self.files.release_open_owner(oo)
        client.lock_owners.clear()
        client.states.clear()
        self.delegations.drop_client(client)
        self.files.drop_client_waiters(client.clientid)
        if status:
            self.clients.bury(client.clientid, status)
        client.courteous = False
        self._store.client_removed(client.ownerid)
        self._grace.client_gone(client.ownerid)
        self._on_dropped(client.clientid)

    # -- stateid resolution (§9.1.4.4) -----------------------------------------------------

    def _locate(self, stateid: Stateid) -> tuple[Client, AnyState]:
        """Find the state behind a non-special stateid, ignoring its seqid."""
        client = self._stateid_client(stateid)
        state = client.states.get(int.from_bytes(stateid.other[8:], "big"))
        if state is None:
            raise E.NFS4ERR_BAD_STATEID()
        return client, state

    def _stateid_client(self, stateid: Stateid) -> Client:
        """The live client a non-special stateid belongs to (STALE, EXPIRED, ADMIN_REVOKED)."""
        other = stateid.other
        if len(other) != 12 or is_special_other(other):
            raise E.NFS4ERR_BAD_STATEID()  # §9.1.4.4: special stateid not allowed here
        clientid = int.from_bytes(other[:8], "big")
        if not self.clients.is_this_boot(clientid):
            raise E.NFS4ERR_STALE_STATEID()  # §9.1.4.4, §9.6.2
        client = self.clients.confirmed.get(clientid)
        if client is None:
            raise tombstone_error(self.clients.tombstones.get(clientid))
        self._check_lease(client)
        return client

    def _resolve(
        self,
        stateid: Stateid,
        file_key: bytes | None,
        kind: StateKind,
        *,
        unconfirmed_ok: bool = False,
    ) -> AnyState:
        """Validate a stateid for an operation, in the order of §9.1.4.4; renews the lease."""
        client, state = self._locate(stateid)
        check_stateid(state, stateid, file_key, kind, unconfirmed_ok)
        self.leases.renew(client)
        return state
