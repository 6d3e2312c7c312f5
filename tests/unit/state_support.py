"""Shared helpers for the state manager tests: a counting RNG, a world (with the suite's
manual clock, `tests.clock.ManualClock`), a confirmed client, opens."""

from __future__ import annotations

from dataclasses import dataclass

from pynfsd.nfs4.state import Stateid, StateManager
from pynfsd.nfs4.state.leases import enforced_lease
from pynfsd.nfs4.state.types import OPEN4_SHARE_ACCESS_BOTH, OPEN4_SHARE_DENY_NONE
from tests.clock import ManualClock

LEASE = 90
ENFORCED = enforced_lease(LEASE)  # 92 s: the lease plus min(10 %, 2 s)


class CountingRng:
    """Deterministic, never-repeating bytes: good enough to test uniqueness rules."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return self.n.to_bytes(size, "big")


@dataclass
class World:
    clock: ManualClock
    sm: StateManager


def make_world(boot: bytes = b"boot-1", **kw: object) -> World:
    clock = ManualClock()
    sm = StateManager(clock, CountingRng(), LEASE, server_boot_id=boot, **kw)  # type: ignore[arg-type]
    return World(clock, sm)


def new_client(sm: StateManager, name: bytes = b"client-A", principal: str = "root") -> int:
    clientid, confirm = sm.setclientid(b"verf0001", name, principal, None, "127.0.0.1.8.1")
    sm.setclientid_confirm(clientid, confirm, principal)
    return clientid


def sequenced_open(
    sm: StateManager,
    clientid: int,
    owner: bytes,
    seqid: int,
    file_key: bytes,
    access: int = OPEN4_SHARE_ACCESS_BOTH,
    deny: int = OPEN4_SHARE_DENY_NONE,
) -> Stateid:
    """OPEN as the op layer runs it: owner, seqid check, open, record (no confirm)."""
    oo = sm.open_owner(clientid, owner, seqid)
    assert oo.check_seqid(seqid) is None
    res = sm.open(clientid, owner, file_key, access, deny)
    oo.record_result(seqid, res, 0)
    return res.stateid


def open_confirmed(
    sm: StateManager,
    clientid: int,
    owner: bytes,
    file_key: bytes,
    access: int = OPEN4_SHARE_ACCESS_BOTH,
    deny: int = OPEN4_SHARE_DENY_NONE,
    seqid: int = 1,
) -> Stateid:
    """OPEN then OPEN_CONFIRM for a new owner (seqids `seqid`, `seqid + 1`)."""
    stateid = sequenced_open(sm, clientid, owner, seqid, file_key, access, deny)
    oo = sm.owner_for_stateid(stateid)
    if getattr(oo, "confirmed", True):
        return stateid
    assert oo.check_seqid(seqid + 1) is None
    confirmed = sm.open_confirm(stateid, file_key)
    oo.record_result(seqid + 1, confirmed, 0)
    return confirmed
