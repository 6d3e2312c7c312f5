"""Value types shared by the NFSv4.0 state manager (see `pynfsd.nfs4.state` for the theory).

Everything here is a plain value: stateids, the results the state manager hands back to the
op layer, byte-range arithmetic (RFC 7530 §16.10.4) and seqid arithmetic (§9.1.3).  The
protocol's constants (share modes, lock types, integer limits) come from the generated
codec and are re-exported here for the package.  The hook interfaces live with their
concept: `ClientStore` in `store`, `GraceTracker` in `grace`, `OpenFiles` in `files`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pynfsd.gen.nfs4 import NFS4_UINT32_MAX as NFS4_UINT32_MAX
from pynfsd.gen.nfs4 import NFS4_UINT64_MAX as NFS4_UINT64_MAX
from pynfsd.gen.nfs4 import OPEN4_SHARE_ACCESS_BOTH as OPEN4_SHARE_ACCESS_BOTH
from pynfsd.gen.nfs4 import OPEN4_SHARE_ACCESS_READ as OPEN4_SHARE_ACCESS_READ
from pynfsd.gen.nfs4 import OPEN4_SHARE_ACCESS_WRITE as OPEN4_SHARE_ACCESS_WRITE
from pynfsd.gen.nfs4 import OPEN4_SHARE_DENY_BOTH as OPEN4_SHARE_DENY_BOTH
from pynfsd.gen.nfs4 import OPEN4_SHARE_DENY_NONE as OPEN4_SHARE_DENY_NONE
from pynfsd.gen.nfs4 import OPEN4_SHARE_DENY_READ as OPEN4_SHARE_DENY_READ
from pynfsd.gen.nfs4 import OPEN4_SHARE_DENY_WRITE as OPEN4_SHARE_DENY_WRITE
from pynfsd.gen.nfs4 import READ_LT as READ_LT
from pynfsd.gen.nfs4 import READW_LT as READW_LT
from pynfsd.gen.nfs4 import WRITE_LT as WRITE_LT
from pynfsd.gen.nfs4 import WRITEW_LT as WRITEW_LT
from pynfsd.nfs4 import errors as E

LENGTH_TO_EOF = NFS4_UINT64_MAX  # §16.10.4: a length with all bits set locks to end of file
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
    """What SETCLIENTID answers (§16.33.4): the client id and the verifier to confirm it with."""

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
    delegations: int = 0


@dataclass(frozen=True, slots=True)
class StateCounts:
    clients: int
    unconfirmed_clients: int
    open_owners: int
    opens: int
    lock_states: int
    locks: int
    delegations: int = 0
