"""Scenario d: the server restarts and the client comes back under another identity.

Container ctr's client identifier is not stable: a random uniquifier is written to
/sys/fs/nfs/net/nfs_client/identifier whenever its network namespace is set up.  It locks a
file; while the server restarts, the namespace is recreated, and the client comes back under a
new id string.  That identity is not in the server's stable-storage records, so its reclaims fail (NFS4ERR_RECLAIM_BAD or
NFS4ERR_NO_GRACE, RFC 7530 §9.6.2, §9.6.3.4); when grace is over the lock is free for anyone:
client B takes it, and the container's client has lost it for good (lock stealing).
"""

from __future__ import annotations

import uuid

import pytest

from pynfsd.gen import nfs4 as N
from tests.scenarios.helpers import (
    Actor,
    grace_log,
    linux_v40_id,
    open_when_grace_ends,
)
from tests.scenarios.timeline import Timeline
from tests.serverproc import ServerProcess


@pytest.mark.slow
async def test_restart_with_changed_id_cannot_reclaim_and_loses_lock(server: ServerProcess, timeline: Timeline) -> None:
    """the server restarts and the client comes back with a changed identity: no reclaim, lock stolen"""
    await play(server, timeline)


async def play(srv: ServerProcess, tl: Timeline) -> None:
    before = await Actor.connect(tl, "A", srv.port, ownerid=linux_v40_id("ctr", uniquifier=str(uuid.uuid4())))
    await before.establish()
    d = await before.root()
    fa = await before.open(d, b"data.txt")
    await before.lock(fa, 0, 100)
    tl.note("the server restarts (SIGTERM, same state dir); meanwhile the client's identifier is regenerated")
    mark = srv.log_mark()
    srv.restart()
    tl.note(f"server up again on port {srv.port}")

    a = await Actor.connect(tl, "A'", srv.port, ownerid=linux_v40_id("ctr", uniquifier=str(uuid.uuid4())),
                            verifier=b"boot-002")
    b = await Actor.connect(tl, "B", srv.port, ownerid=linux_v40_id("other-host"))
    try:
        await a.establish()
        await a.fails("OPEN data.txt claim=CLAIM_PREVIOUS", a.session.reclaim_open(fa.fh),
                      N.NFS4ERR_RECLAIM_BAD, N.NFS4ERR_NO_GRACE)
        tl.note("the new identity is not in the server's records: nothing to reclaim")
        await b.establish()
        fb = await open_when_grace_ends(tl, b, d, b"data.txt", a)
        grace_log(srv, tl, mark)
        await b.lock(fb, 0, 100)
        tl.note("B holds the lock A held before the restart")
        fa2 = await a.open(d, b"data.txt", create=False)
        await a.fails(a.lock_label("LOCK", fa2, 0, 100), a.try_lock(fa2, 0, 100), N.NFS4ERR_DENIED)
        tl.note("A's client lost its lock to B: lock stealing")
    finally:
        for actor in (before, a, b):
            await actor.close()
