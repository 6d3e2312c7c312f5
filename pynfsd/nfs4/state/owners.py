"""State records of the NFSv4.0 state manager: clients, state-owners, opens and lock states.

These are slotted records with no behaviour beyond their own invariants; the rules that
span records live in the package's other modules (a lock state's ranges are a `LockSet`
of `lockset`, the per-file lock table is in `locks`).  The one piece
of protocol here is the state-owner seqid machine of RFC 7530 §9.1.7/§9.1.8: `check_seqid`
before executing a seqid-bearing operation, `record_result` after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.lockset import HeldLock, LockSet
from pynfsd.nfs4.state.types import (
    NON_ADVANCING_STATUSES,
    ByteRange,
    ReplayedResult,
    Stateid,
    next_seqid,
)


@dataclass(slots=True, eq=False)
class Client:
    """One client record { v, x, c, k, s } of §16.33.5, confirmed or not, and its state."""

    clientid: int
    ownerid: bytes
    verifier: bytes
    principal: str
    callback: object
    client_addr: str
    confirm: bytes
    client_port: int = 0  # the source port of the SETCLIENTID that made the record
    confirmed: bool = False
    expires: float = 0.0
    pins: int = 0
    recorded: bool = False  # in stable storage for this server boot (first open, §9.6.3.4.3)
    courteous: bool = False  # lease lapsed but state kept (§9.6.3.1); cleared on renewal
    open_owners: dict[bytes, OpenOwner] = field(default_factory=dict)
    lock_owners: dict[bytes, LockOwner] = field(default_factory=dict)
    states: dict[int, OpenState | LockState] = field(default_factory=dict)
    delegations: dict[int, Delegation] = field(default_factory=dict)  # by stateid index
    next_index: int = 1

    def has_state(self) -> bool:
        """True when the client holds opens, locks or delegations (§9.1.2 "state")."""
        if self.delegations:
            return True
        return any(not s.closed for s in self.states.values() if isinstance(s, OpenState))

    def stateid_other(self, index: int) -> bytes:
        """`other` = clientid (boot tag + counter) + per-client index: unique per server."""
        return self.clientid.to_bytes(8, "big") + index.to_bytes(4, "big")

    def allocate_index(self) -> int:
        index = self.next_index
        self.next_index += 1
        return index


@dataclass(slots=True, eq=False)
class StateOwner:
    """An open-owner or lock-owner: (clientid, opaque owner) with its seqid and last reply."""

    client: Client
    owner: bytes
    last_seqid: int | None = None
    reply: ReplayedResult | None = None
    last_used: float = 0.0

    def check_seqid(self, seqid: int, opnum: int = 0) -> ReplayedResult | None:
        """Check the seqid of a request before executing it (§9.1.7).

        Returns None when the request is the next in sequence (or the owner has no sequence
        yet, §9.1.9), the stored reply when it is a retransmission of the last request, and
        raises NFS4ERR_BAD_SEQID otherwise.
        """
        if self.last_seqid is None or seqid == next_seqid(self.last_seqid):
            return None
        reply = self.reply
        if seqid == self.last_seqid and reply is not None and reply.seqid == seqid:
            if opnum and reply.opnum and opnum != reply.opnum:
                raise E.NFS4ERR_BAD_SEQID("replayed seqid with another operation")  # §9.1.9
            return reply
        self.on_bad_seqid()
        raise E.NFS4ERR_BAD_SEQID(f"seqid {seqid}, last {self.last_seqid}")  # §9.1.7

    def record_result(self, seqid: int, result: object, status: int, opnum: int = 0) -> None:
        """Remember the reply to a request; the seqid advances unless §9.1.7 exempts `status`."""
        if status in NON_ADVANCING_STATUSES:
            return
        self.last_seqid = seqid
        self.reply = ReplayedResult(seqid, result, status, opnum)
        self.on_advance()

    def on_bad_seqid(self) -> None:
        return None

    def on_advance(self) -> None:
        return None


@dataclass(slots=True, eq=False)
class OpenOwner(StateOwner):
    """An open-owner (§9.1.1); new ones are unconfirmed until OPEN_CONFIRM (§9.1.11)."""

    confirmed: bool = False
    cancelled: bool = False
    opens: dict[bytes, OpenState] = field(default_factory=dict)
    closed: OpenState | None = None  # the last CLOSEd stateid, kept for replay (§9.1.10.1)
    closed_fresh: bool = False

    def on_bad_seqid(self) -> None:
        if not self.confirmed:
            self.cancelled = True  # §16.18.4: the original OPEN will not be confirmed

    def on_advance(self) -> None:
        """A new validly sequenced request ends the retention of a closed stateid."""
        if self.closed is not None and not self.closed_fresh:
            self.client.states.pop(self.closed.index, None)
            self.closed = None
        self.closed_fresh = False


@dataclass(slots=True, eq=False)
class LockOwner(StateOwner):
    """A lock-owner (§9.1.5) and its lock sets, one per open it locked under (a tuple:
    usually one, and no per-owner list to allocate)."""

    lock_states: tuple[LockState, ...] = ()


@dataclass(slots=True, eq=False)
class OpenState:
    """The open of one file by one open-owner (§9.1.4.1), with its share reservation.

    `modes` is a 16-bit set of the (access, deny) pairs of the OPENs merged into this open,
    bit (access * 4 + deny), for the OPEN_DOWNGRADE subset rule of §16.19.4.  Its lock
    sets are a tuple (usually empty: the shared `()`).
    """

    index: int
    seqid: int
    owner: OpenOwner
    file_key: bytes
    access: int
    deny: int
    modes: int = 0
    lock_states: tuple[LockState, ...] = ()
    closed: bool = False

    def stateid(self) -> Stateid:
        return Stateid(self.seqid, self.owner.client.stateid_other(self.index))

    def bump(self) -> Stateid:
        self.seqid = next_seqid(self.seqid)  # §9.1.4.2
        return self.stateid()


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


@dataclass(slots=True, eq=False)
class Delegation:
    """A read or write delegation of one file to one client (§10.4), with its recall.

    `recalled_at` is when the recall began (None: not recalled); `change` and `size` are the
    server's change attribute and size when it was granted, `client_change` the holder's
    change attribute last reported by CB_GETATTR, `bumped` the change attribute the server
    reports while the holder has modified the file (§10.4.3) and `modified_ns` the wall-clock
    time (ns) of the report that bumped it, reported as its modify and change times."""

    index: int
    client: Client
    file_key: bytes
    write: bool
    seqid: int = 1
    recalled_at: float | None = None
    change: int = 0
    size: int = 0
    client_change: int | None = None
    bumped: int | None = None
    modified_ns: int = 0

    def stateid(self) -> Stateid:
        return Stateid(self.seqid, self.client.stateid_other(self.index))

    @property
    def held(self) -> bool:
        """Whether the client still holds it (not returned, revoked or replaced)."""
        return self.client.delegations.get(self.index) is self
