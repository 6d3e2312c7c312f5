"""Stateid validation for an operation (RFC 7530 §9.1.4.4), shared by opens and lock sets.

Theory of operation: the state manager first locates the state a stateid names (its client,
then the client's per-index table, checking the client's lease on the way); `check_stateid`
then applies the remaining checks in the order §9.1.4.4 gives them: the file, the kind of
state and whether it is still open, the open-owner's confirmation, and finally the seqid
(an earlier one is NFS4ERR_OLD_STATEID, a later one NFS4ERR_BAD_STATEID).  No I/O.
"""

from __future__ import annotations

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.owners import LockState, OpenState
from pynfsd.nfs4.state.types import Stateid, seqid_earlier

AnyState = OpenState | LockState
StateKind = type[OpenState] | type[LockState] | tuple[type[OpenState], type[LockState]]


def check_stateid(
    state: AnyState, stateid: Stateid, file_key: bytes | None, kind: StateKind, unconfirmed_ok: bool
) -> None:
    """Validate a located stateid for an operation, in the order of §9.1.4.4."""
    open_state = state if isinstance(state, OpenState) else state.open
    if file_key is not None and open_state.file_key != file_key:
        raise E.NFS4ERR_BAD_STATEID("stateid is for another file")
    if not isinstance(state, kind) or state.closed:
        raise E.NFS4ERR_BAD_STATEID("wrong stateid type for this operation")
    if open_state.owner.cancelled or (not open_state.owner.confirmed and not unconfirmed_ok):
        raise E.NFS4ERR_BAD_STATEID("open not confirmed")  # §16.18.5
    check_seqid(stateid, state.seqid)


def check_seqid(stateid: Stateid, current: int) -> None:
    """The last check of §9.1.4.4: an earlier seqid is NFS4ERR_OLD_STATEID, a later one
    NFS4ERR_BAD_STATEID (opens, lock sets and delegations alike)."""
    if stateid.seqid != current:
        if seqid_earlier(stateid.seqid, current):
            raise E.NFS4ERR_OLD_STATEID()
        raise E.NFS4ERR_BAD_STATEID("stateid seqid from the future")
