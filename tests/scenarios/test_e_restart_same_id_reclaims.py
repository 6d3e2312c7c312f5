"""Scenario e: the server restarts and the client comes back with the same identity.

A holds an open and a lock when the server is killed (kill -9).  The restarted server knows A
from its stable-storage record and is in grace (RFC 7530 §9.6.2): A learns of the restart from
NFS4ERR_STALE_CLIENTID / NFS4ERR_STALE_STATEID, establishes a new client id under the same id
string and reclaims its open (CLAIM_PREVIOUS) and its lock (reclaim=true), while B's ordinary
OPEN gets NFS4ERR_GRACE.  A's first ordinary OPEN after its reclaims tells the server that
the only recorded client has finished reclaiming, so grace ends early; B then finds the lock
still held by A.
"""

from __future__ import annotations

from pynfsd.gen import nfs4 as N
from tests.scenarios.helpers import Actor, grace_log, linux_v40_id
from tests.scenarios.timeline import Timeline
from tests.serverproc import ServerProcess


async def test_restart_with_same_id_reclaims_in_grace(server: ServerProcess, timeline: Timeline) -> None:
    """the server restarts and the client comes back with the same identity: it reclaims in grace"""
    await play(server, timeline)


async def play(srv: ServerProcess, tl: Timeline) -> None:
    a = await Actor.connect(tl, "A", srv.port, ownerid=linux_v40_id("ctr"))
    b = await Actor.connect(tl, "B", srv.port, ownerid=linux_v40_id("other-host"))
    try:
        await a.establish()
        d = await a.root()
        fa = await a.open(d, b"data.txt")
        await a.ok("WRITE data.txt (FILE_SYNC)", a.session.write(fa, 0, b"A's data"), lambda n: f"{n} bytes")
        await a.lock(fa, 0, 100)
        mark = srv.log_mark()
        tl.note("kill -9 of the server; it starts again on the same port and state dir")
        srv.kill9()
        srv.start()
        await a.reconnect(srv.port)
        await b.reconnect(srv.port)

        await a.fails("RENEW the old clientid", a.session.renew(), N.NFS4ERR_STALE_CLIENTID)
        await a.fails("READ with the old open stateid", a.session.read(fa, 0, 1), N.NFS4ERR_STALE_STATEID)
        tl.note("A's client sees the server restarted: same id string, same verifier, new client id")
        a.reset_owners()
        await a.establish()
        await b.establish()
        await b.fails("OPEN data.txt (read+write, deny none)", b.session.open(d, b"data.txt"), N.NFS4ERR_GRACE)
        ra = await a.reclaim_open(fa.fh, "data.txt")
        await a.lock(ra, 0, 100, reclaim=True)
        data = await a.ok("READ data.txt", a.session.read(ra, 0, 8), repr)
        tl.check(data == b"A's data", "A reads its data through the reclaimed open")
        tl.note("A's reclaim pass is over; like a kernel client it goes back to ordinary OPENs")
        await a.open(d, b"notes.txt")
        fb = await b.open(d, b"data.txt", create=False)
        ended = grace_log(srv, tl, mark)
        tl.check(any("early" in ln for ln in ended),
                 "grace ended early, as the only recorded client finished reclaiming, and the log says so")
        denied = await b.lockt(fb, 0, 100)
        tl.check(denied is not None and denied.owner.clientid == a.session.clientid,
                 "after grace the lock is still A's (LOCKT DENIED)")
        await b.fails(b.lock_label("LOCK", fb, 0, 100), b.try_lock(fb, 0, 100), N.NFS4ERR_DENIED)
    finally:
        for actor in (a, b):
            await actor.close()
