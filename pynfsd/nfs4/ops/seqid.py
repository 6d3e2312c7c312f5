"""Running a seqid-bearing operation with replay of the owner's last reply (RFC 7530 §9.1.7)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.state import Stateid, StateManager, StateOwner

T = TypeVar("T")


def to_stateid(sid: N.stateid4) -> Stateid:
    return Stateid(sid.seqid, sid.other)


def to_stateid4(sid: Stateid) -> N.stateid4:
    return N.stateid4(sid.seqid, sid.other)


async def sequenced(
    state: StateManager,
    owner: StateOwner,
    seqid: int,
    opnum: int,
    body: Callable[[], Awaitable[T]],
) -> T:
    """Run `body` as the owner's next request, or answer a retransmission from the cache;
    the owner's lease cannot expire while the request runs (docs/HABITS.md, "Time is a parameter, leases are short")."""
    with state.lease_held(owner.client.clientid):
        return await _sequenced(owner, seqid, opnum, body)


async def _sequenced(
    owner: StateOwner, seqid: int, opnum: int, body: Callable[[], Awaitable[T]]
) -> T:
    replay = owner.check_seqid(seqid, opnum)
    if replay is not None:
        result: Any = replay.result
        if isinstance(result, errors.NFS4Error):
            raise type(result)(str(result), value=result.value)
        return result  # type: ignore[no-any-return]
    try:
        result = await body()
    except errors.NFS4Error as e:
        owner.record_result(seqid, e, e.status, opnum)
        raise
    owner.record_result(seqid, result, N.NFS4_OK, opnum)
    return result  # type: ignore[no-any-return]
