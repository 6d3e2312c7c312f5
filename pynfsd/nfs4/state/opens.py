"""Opens and share reservations for OPEN, OPEN_DOWNGRADE and I/O (RFC 7530 §9.9-§9.11, §16.19).

An open remembers, as a 16-bit set, every (share_access, share_deny) pair of the OPENs merged
into it (bit `access * 4 + deny`), so OPEN_DOWNGRADE can check that its modes are exactly the
union of some subset of those OPENs (§16.19.4).  A reservation held by a client whose lease
has lapsed does not block anyone: the conflict checks here ask `yield_courteous` (the state
manager cancels that client, §9.6.3.1) before they refuse a request.
"""

from __future__ import annotations

from collections.abc import Callable

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.locks import FileState
from pynfsd.nfs4.state.owners import Client, OpenState
from pynfsd.nfs4.state.types import OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE


def check_share_args(access: int, deny: int) -> None:
    """OPEN/OPEN_DOWNGRADE modes must be one of the defined values (§16.16.6, §9.9)."""
    if access not in (1, 2, 3) or deny not in (0, 1, 2, 3):
        raise E.NFS4ERR_INVAL("bad share_access/share_deny")


def mode_bit(access: int, deny: int) -> int:
    return 1 << (access * 4 + deny)


def subset_mask(access: int, deny: int) -> int:
    """The `modes` bits of every (a, d) with a ⊆ access and d ⊆ deny."""
    return sum(
        mode_bit(a, d) for a in (1, 2, 3) for d in range(4) if a & ~access == 0 and d & ~deny == 0
    )


def is_union_of_subset(modes: int, access: int, deny: int) -> bool:
    """True if (access, deny) is the union of some subset of the recorded OPEN modes."""
    got_access = got_deny = 0
    for a in (1, 2, 3):
        for d in range(4):
            if modes & subset_mask(access, deny) & mode_bit(a, d):
                got_access |= a
                got_deny |= d
    return (got_access, got_deny) == (access, deny)


def locks_fit_access(os: OpenState, access: int) -> bool:
    """Held locks stay allowed by the downgraded access (write locks need write access)."""
    for ls in os.lock_states:
        if ls.has_write() and not access & OPEN4_SHARE_ACCESS_WRITE:
            return False
        if ls.has_read() and not access & OPEN4_SHARE_ACCESS_READ:
            return False
    return True


def check_downgrade(os: OpenState, access: int, deny: int) -> None:
    """OPEN_DOWNGRADE's modes: a union of earlier OPENs' modes that the held locks fit."""
    if not is_union_of_subset(os.modes, access, deny):
        raise E.NFS4ERR_INVAL("not a union of previous OPEN modes")  # §16.19.4
    if not locks_fit_access(os, access):
        raise E.NFS4ERR_LOCKS_HELD()  # §16.19.4


def check_share_conflicts(
    fs: FileState, access: int, deny: int, yield_courteous: Callable[[Client, str], bool]
) -> None:
    """NFS4ERR_SHARE_DENIED if another open's modes conflict with an OPEN's (§9.9)."""
    sharing = fs.opens if deny or fs.denying else ()  # no deny anywhere: nothing to check
    for other in list(sharing):  # §9.9: no exception for the same open-owner
        if other.closed or not (access & other.deny or deny & other.access):
            continue
        if not yield_courteous(other.owner.client, "a share reservation"):
            raise E.NFS4ERR_SHARE_DENIED()


def check_special_io(
    fs: FileState, write: bool, yield_courteous: Callable[[Client, str], bool]
) -> None:
    """Special stateids are refused by a conflicting deny reservation (§9.1.4.3, §9.10)."""
    bit = OPEN4_SHARE_ACCESS_WRITE if write else OPEN4_SHARE_ACCESS_READ
    for os in list(fs.opens if fs.denying else ()):
        if os.deny & bit and not os.closed:
            if not yield_courteous(os.owner.client, "I/O with a special stateid"):
                raise E.NFS4ERR_LOCKED("denied by a share reservation")
