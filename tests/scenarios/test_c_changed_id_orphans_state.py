"""Scenario c: a client restarts under a new co_ownerid and orphans its old state.

A container called ctr-1 locks a file, then comes back as ctr-2 (a new hostname, so a new
`Linux NFSv4.0 ...` id string).  The server cannot know ctr-2 is ctr-1: the old client's
lock stays until its lease runs out (RFC 7530 §9.5, §9.6.3) and blocks everyone, the new
incarnation included.  After the lease the lock is released — by the server's lease sweep, or
(a courteous server) when a conflicting request arrives; the timeline says which happened.
"""

from __future__ import annotations

import asyncio

import pytest

from pynfsd.client.session import OpenFile
from pynfsd.gen import nfs4 as N
from tests.scenarios.helpers import LEASE, Actor, linux_v40_id, run
from tests.scenarios.timeline import Timeline
from tests.serverproc import ServerProcess

POLL = 0.5
# What the server logs (pynfsd.nfs4.state / server.py) when it lets go of lapsed state.
SWEEP = "expired the state of"
COURTESY = "kept as a courtesy"
CONFLICT = "another client needs"


@pytest.mark.slow
def test_changed_id_orphans_state_until_lease_ends(server: ServerProcess, timeline: Timeline) -> None:
    """a client restarts with a changed co_ownerid: its old lock blocks others until its lease ends"""
    run(play(server, timeline))


async def play(srv: ServerProcess, tl: Timeline) -> None:
    old = await Actor.connect(tl, "A", srv.port, ownerid=linux_v40_id("ctr-1"), verifier=b"boot-001")
    new = await Actor.connect(tl, "A'", srv.port, ownerid=linux_v40_id("ctr-2"), verifier=b"boot-002")
    b = await Actor.connect(tl, "B", srv.port, ownerid=linux_v40_id("other-host"))
    try:
        await old.establish()
        d = await old.root()
        fa = await old.open(d, b"shared.txt")
        await old.lock(fa, 0, 100)
        last_renewal = asyncio.get_running_loop().time()
        tl.note("container ctr-1 restarts as ctr-2: new id string; the old client never returns")

        await new.establish()
        fn = await new.open(d, b"shared.txt", create=False)
        await new.fails(new.lock_label("LOCK", fn, 0, 100), new.try_lock(fn, 0, 100), N.NFS4ERR_DENIED)
        tl.note("the orphaned lock blocks even the client that made it")
        await b.establish()
        fb = await b.open(d, b"shared.txt", create=False)
        mark = srv.log_mark()
        granted_at, sent_mark = await poll_lock(tl, srv, b, fb, keep=[new])
        tl.check(granted_at - last_renewal >= LEASE,
                 f"B got the lock only after the old lease ({LEASE}s announced) ran out")
        say_how_released(tl, srv.log_text(mark)[: sent_mark - mark], srv.log_text(mark))

        await old.fails("READ with the orphaned open stateid", old.session.read(fa, 0, 1),
                        N.NFS4ERR_EXPIRED, N.NFS4ERR_BAD_STATEID)
        await new.fails(new.lock_label("LOCK", fn, 0, 100), new.try_lock(fn, 0, 100), N.NFS4ERR_DENIED)
        tl.note("the lock now belongs to B")
    finally:
        for actor in (old, new, b):
            await actor.close()


async def poll_lock(tl: Timeline, srv: ServerProcess, b: Actor, f: OpenFile,
                    keep: list[Actor]) -> tuple[float, int]:
    """B retries LOCK every POLL seconds until granted (RENEWing `keep` meanwhile).

    Returns when it was granted and the server log offset just before the granting LOCK.
    """
    loop = asyncio.get_running_loop()
    label = b.lock_label("LOCK", f, 0, 100)
    denied = 0
    while True:
        sent_mark = srv.log_mark()
        status = await b.status_of(label, b.try_lock(f, 0, 100), log=denied == 0)
        if status == N.NFS4_OK:
            tl.log(b.name, f"{label} -> NFS4_OK, after {denied} DENIED tries")
            return loop.time(), sent_mark
        if status != N.NFS4ERR_DENIED or denied == 0:
            tl.check(status == N.NFS4ERR_DENIED, "B's LOCK is DENIED while the old lease runs")
            tl.note(f"B retries every {POLL}s (each try is DENIED and renews B's lease); A' renews")
        denied += 1
        await asyncio.sleep(POLL)
        for actor in keep:
            await actor.session.renew()


def say_how_released(tl: Timeline, before_grant: str, whole: str) -> None:
    """Print how the server let go of the orphaned state; a server that says it keeps lapsed
    state as a courtesy must have released it for B's conflicting request (§9.6.3.1)."""
    old_id = "ctr-1"
    for ln in whole.splitlines():
        if old_id in ln or SWEEP in ln:
            tl.note(f"server log: {ln.split(': ', 1)[-1]}")
    swept = SWEEP in before_grant
    courteous = COURTESY in whole
    if courteous:
        tl.check(CONFLICT in whole and not swept,
                 "courteous server: the lapsed lease was cancelled when B's conflicting LOCK arrived")
    elif swept:
        tl.note("released by the server's lease sweep, before B's next LOCK arrived")
    elif CONFLICT in whole:
        tl.note("released when B's conflicting LOCK arrived after the lease ran out")
    else:
        tl.note("the server log does not say how the orphaned state was released")
