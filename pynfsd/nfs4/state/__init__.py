"""NFSv4.0 state: client ids, leases, opens, share reservations and byte-range locks.

Theory of operation
-------------------
Sans-IO: the manager (`StateManager`, the one entry point the op layer uses) is driven only by calls from the op layer; it never reads the time or
randomness itself (`clock()` in seconds and `rng(n)` are injected) and owns no tasks or timers.
It is not thread-safe: call it from one thread (the event loop) or serialise the calls.

Clients (`clients`).  SETCLIENTID/SETCLIENTID_CONFIRM follow every case of RFC 7530
§16.33.5/§16.34.5.  A client id is `boot_tag << 32 | counter`, and a stateid's 12-byte `other`
is `clientid (8) | per-client index (4)`, so ids minted by another server boot are recognised
at once (NFS4ERR_STALE_CLIENTID / NFS4ERR_STALE_STATEID, §9.6.2) and a stateid leads straight
to its client without a global table.

Leases (§9.5).  Each confirmed client has one expiry time, pushed forward by every operation
that uses a valid client id or non-special stateid.  The server *announces* `lease_time`
(the lease_time attribute) and *enforces* `enforced_lease(lease_time)`: the lease plus a
margin of 10 %, at most 2 s (`leases.lease_margin`), so a client renewing on time is
not cut off by a delay and a crashed client's state blocks others barely longer than its lease.  A client whose lease is *pinned* (`pin`/`unpin`
or `lease_held`, held by the COMPOUND that is using it) never lapses; unpinning renews it.

Courtesy (§9.6.3.1).  A lapsed client that holds opens is *courteous*: it keeps its opens and
locks, and if it comes back (RENEW, or any use of its client id or stateids) they are renewed
as if nothing happened.  When another client's request conflicts with its state (a share
reservation, a lock range, I/O refused by its deny mode, or a SETCLIENTID of its co_ownerid
by another principal), the courteous client's lease is cancelled there and then: all its state
goes, its ids get NFS4ERR_EXPIRED (§9.6.3.2) and the conflicting request proceeds.  Courtesy
is bounded: a client lapsed for `courtesy_limit` seconds (24 h) is cancelled, and when more
than `max_courteous` clients are courteous `sweep()` cancels the longest-lapsed first.  A
lapsed client without opens is cancelled when next noticed.  A cancelled or revoked client
leaves a bounded tombstone so its ids get NFS4ERR_EXPIRED / NFS4ERR_ADMIN_REVOKED instead of
NFS4ERR_BAD_STATEID or NFS4ERR_STALE_CLIENTID; so does an incarnation replaced by its
client's reboot (its stateids get NFS4ERR_EXPIRED, as knfsd and Ganesha answer).

State-owners (§9.1.7-§9.1.9).  Seqid-bearing operations run in three steps in the op layer:
get the owner (`open_owner` for OPEN, `owner_for_stateid` for CLOSE, OPEN_CONFIRM,
OPEN_DOWNGRADE, LOCK and LOCKU), `owner.check_seqid(seqid, opnum)` (returns the stored reply
of a retransmission, raises NFS4ERR_BAD_SEQID), run the operation, then
`owner.record_result(seqid, result, status, opnum)` whatever the outcome; the seqid does not
advance for the statuses §9.1.7 lists.  For LOCK with a new lock-owner, the open-owner's
sequence governs replay and `lock_seqid` initialises the lock-owner (§16.10.5); for a
lock-owner already known it must be its next seqid, and its lock set on that open, if any,
is extended (as knfsd does, where §16.10.5 says NFS4ERR_BAD_SEQID).
New open-owners are unconfirmed until OPEN_CONFIRM (§9.1.11, §16.18); another OPEN on an
unconfirmed owner that is not a retransmission, or a bad seqid, cancels its opens (§16.18.5).
A CLOSEd stateid is retained until the owner's next sequenced request so that a retransmitted
CLOSE is answered from the replay cache (§9.1.10.1).

Opens and shares (§9.9-§9.11).  One `OpenState` per (open-owner, file); a second OPEN
upgrades it to the union of the modes and bumps its seqid.  Share checks include the
requester's own opens, as §9.9 requires.  I/O with the anonymous stateid (or the READ bypass
stateid for writes) is refused with NFS4ERR_LOCKED by a conflicting deny reservation.
An `OpenFiles` hook is told when a file gets its first open and loses its last one, so the
server can keep an opened file usable by its stateids after its last link goes (as knfsd).

Locks (`locks`, `lockset`).  One `LockState` per (lock-owner, open); POSIX range semantics
with split, merge, upgrade and downgrade (`lockset`); conflicts across lock-owners give
NFS4ERR_DENIED with the conflicting lock; blocking-lock fairness is described in `locks`.
Locks are advisory: I/O never checks them.

Delegations (§10.2-§10.5, `delegations`).  `StateManager.delegations` grants read and write
delegations after OPEN, recalls the ones a request conflicts with (NFS4ERR_DELAY until they
are returned or, a lease after the recall, revoked), takes DELEGRETURN and accepts delegation
stateids for I/O; the callback side comes in through `DelegationHooks`.  A client holding
delegations counts as holding state (courtesy), and its delegations go with its state.

Stable storage and grace (§9.6.2, §9.6.3.4.3).  A `ClientStore` records a client the first
time it gets an open in this boot (`client_has_state`) and forgets it when its state goes
(`client_removed`); the op layer awaits `store.sync()` before replying.  A `GraceTracker`
says whether the server is in grace: then only reclaims (OPEN CLAIM_PREVIOUS, LOCK with
reclaim) are served, from clients the store allows (else NFS4ERR_RECLAIM_BAD); other OPEN,
LOCK, LOCKT and I/O with a special stateid get NFS4ERR_GRACE; reclaims outside grace get
NFS4ERR_NO_GRACE.  The tracker is told of each recorded client's progress so grace can end
early.
"""

from pynfsd.nfs4.state.manager import StateManager
from pynfsd.nfs4.state.opens import check_share_args
from pynfsd.nfs4.state.owners import StateOwner
from pynfsd.nfs4.state.store import ClientStore
from pynfsd.nfs4.state.types import (
    ANONYMOUS_STATEID,
    READ_BYPASS_STATEID,
    ClientInfo,
    LockDenied,
    OpenResult,
    ReplayedResult,
    StateCounts,
    Stateid,
)

__all__ = [
    "ANONYMOUS_STATEID",
    "READ_BYPASS_STATEID",
    "ClientInfo",
    "ClientStore",
    "LockDenied",
    "OpenResult",
    "ReplayedResult",
    "StateCounts",
    "StateManager",
    "StateOwner",
    "Stateid",
    "check_share_args",
]
