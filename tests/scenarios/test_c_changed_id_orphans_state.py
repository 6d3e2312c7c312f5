"""Scenario c: a client restarts under a new co_ownerid and orphans its old state.

A container called ctr-1 locks a file, then comes back as ctr-2 (a new hostname, so a new
`Linux NFSv4.0 ...` id string).  The server cannot know ctr-2 is ctr-1: the old client's
lock stays until its lease runs out (RFC 7530 §9.5, §9.6.3) and blocks everyone, the new
incarnation included.  After the lease the lock is released: a courteous server (pynfsd) keeps
it until a conflicting request arrives (§9.6.3.1), a plain one drops it in its lease sweep;
the timeline shows which happened.
"""

from __future__ import annotations

import asyncio

import pytest

from pynfsd.client.session import OpenFile
from pynfsd.gen import nfs4 as N
from tests.scenarios.helpers import LEASE, Actor, admin_clients, linux_v40_id, wait_for_log
from tests.scenarios.timeline import Timeline
from tests.serverproc import ServerProcess

POLL = 0.5
# What the server logs (pynfsd.nfs4.state / server.py) when it lets go of lapsed state.
SWEEP = "expired the state of"
COURTESY = "kept as a courtesy"
CONFLICT = "another client needs"


@pytest.mark.slow
async def test_changed_id_orphans_state_until_lease_ends(server: ServerProcess, timeline: Timeline) -> None:
    """a client restarts with a changed co_ownerid: its old lock blocks others until its lease ends"""
    await play(server, timeline)


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
        await b.fails(b.lock_label("LOCK", fb, 0, 100), b.try_lock(fb, 0, 100), N.NFS4ERR_DENIED)
        mark = srv.log_mark()
        seen = await wait_for_log(tl, srv, mark, (COURTESY, SWEEP), b, new, limit=6 * LEASE)
        if seen is not None and COURTESY in seen:
            tl.note("the lapsed client's lock is kept as a courtesy (§9.6.3.1) until someone conflicts")
            orphan = [c for c in admin_clients(srv, tl) if c["co_ownerid"] == old.session.ownerid.decode()]
            tl.check(len(orphan) == 1 and orphan[0]["courtesy"] and orphan[0]["locks"] == 1,
                     "pynfsd clients lists the orphaned client in courtesy, still holding its lock")
            before_grant = srv.log_mark()
            await b.lock(fb, 0, 100)
            cancelled = [ln for ln in srv.log_text(before_grant).splitlines() if CONFLICT in ln and "ctr-1" in ln]
            for ln in cancelled:
                tl.note(f"server log: {ln.split(': ', 1)[-1]}")
            tl.check(len(cancelled) == 1, "B's conflicting LOCK cancelled the courteous client's lease")
        else:
            tl.note("the server released the lapsed client's state" if seen else "no sweep seen; B retries")
            await poll_lock(tl, b, fb, keep=[new])
        tl.check(asyncio.get_running_loop().time() - last_renewal >= LEASE,
                 f"B got the lock only after the old lease ({LEASE}s announced) ran out")
        await old.fails("READ with the orphaned open stateid", old.session.read(fa, 0, 1),
                        N.NFS4ERR_EXPIRED, N.NFS4ERR_BAD_STATEID)
        await new.fails(new.lock_label("LOCK", fn, 0, 100), new.try_lock(fn, 0, 100), N.NFS4ERR_DENIED)
        tl.note("the lock now belongs to B")
    finally:
        for actor in (old, new, b):
            await actor.close()


async def poll_lock(tl: Timeline, b: Actor, f: OpenFile, keep: list[Actor]) -> None:
    """B retries LOCK every POLL seconds until granted (RENEWing `keep` meanwhile)."""
    label = b.lock_label("LOCK", f, 0, 100)
    for tries in range(int(12 * LEASE / POLL)):
        status = await b.status_of(label, b.try_lock(f, 0, 100), log=False)
        if status == N.NFS4_OK:
            tl.log(b.name, f"{label} -> NFS4_OK, after {tries} DENIED tries")
            return
        tl.check(status == N.NFS4ERR_DENIED, f"B's LOCK is DENIED ({status}) while the old lease runs")
        await asyncio.sleep(POLL)
        for actor in keep:
            await actor.session.renew()
    tl.check(False, "the orphaned lock was released")
