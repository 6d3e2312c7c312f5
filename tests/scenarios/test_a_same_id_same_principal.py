"""Scenario a: two containers with the same hostname share a co_ownerid and a principal.

Both send `Linux NFSv4.0 ctr/127.0.0.1` as AUTH_SYS uid 0, each with its own boot verifier,
from its own address (127.0.0.2 and 127.0.0.3).
To the server that is one client rebooting again and again (RFC 7530 §9.1.1, §16.33.5 case
"update" of a confirmed record with a new verifier): each SETCLIENTID_CONFIRM of one
discards the other's opens and locks (§16.34.5), so neither keeps its state.  The server warns once, naming the id and both addresses.
"""

from __future__ import annotations

from pynfsd.gen import nfs4 as N
from tests.scenarios.helpers import Actor, admin_clients, collision_warnings, linux_v40_id
from tests.scenarios.timeline import Timeline
from tests.serverproc import ServerProcess

# What a client may see for a stateid whose client was replaced (§9.1.4.3, §9.1.4.4).
LOST_STATEID = (N.NFS4ERR_STALE_STATEID, N.NFS4ERR_BAD_STATEID, N.NFS4ERR_EXPIRED)
LOST_CLIENTID = (N.NFS4ERR_STALE_CLIENTID, N.NFS4ERR_EXPIRED)


async def test_same_id_same_principal_keep_rebooting_each_other(server: ServerProcess, timeline: Timeline) -> None:
    """two clients, same co_ownerid, same principal: neither keeps its opens or locks"""
    await play(server, timeline)


async def play(srv: ServerProcess, tl: Timeline) -> None:
    ctr = linux_v40_id("ctr")
    a = await Actor.connect(tl, "A", srv.port, ownerid=ctr, verifier=b"boot-A-1", uid=0, source="127.0.0.2")
    b = await Actor.connect(tl, "B", srv.port, ownerid=ctr, verifier=b"boot-B-1", uid=0, source="127.0.0.3")
    c = await Actor.connect(tl, "C", srv.port, ownerid=linux_v40_id("observer"), uid=0, source="127.0.0.4")
    try:
        await a.establish()
        d = await a.root()
        fa = await a.open(d, b"a.txt")
        await a.lock(fa, 0, 10)

        tl.note("container B starts with the same hostname: same id, same principal, new verifier")
        await b.establish()
        tl.note("the server took B's SETCLIENTID_CONFIRM as a reboot of A's client (§16.34.5)")
        await a.fails("READ with A's open stateid", a.session.read(fa, 0, 1), *LOST_STATEID)
        await a.fails("RENEW A's clientid", a.session.renew(), *LOST_CLIENTID)
        fb = await b.open(d, b"b.txt")
        await b.lock(fb, 0, 10)

        tl.note("A's client notices its lost lease and re-establishes, as a kernel client does")
        a.reset_owners()
        await a.establish()
        await b.fails("READ with B's open stateid", b.session.read(fb, 0, 1), *LOST_STATEID)
        await b.fails("RENEW B's clientid", b.session.renew(), *LOST_CLIENTID)

        await c.establish()
        fca = await c.open(d, b"a.txt", create=False)
        fcb = await c.open(d, b"b.txt", create=False)
        tl.check(await c.lockt(fca, 0, 10) is None, "A's lock on a.txt is gone")
        tl.check(await c.lockt(fcb, 0, 10) is None, "B's lock on b.txt is gone")
        warnings = collision_warnings(srv, tl, ctr)
        tl.check(len(warnings) == 1 and all(ip in warnings[0] for ip in ("127.0.0.2", "127.0.0.3")),
                 "the server logged one warning naming the shared id and both machines")
        listed = [c for c in admin_clients(srv, tl) if c["co_ownerid"] == ctr.decode()]
        tl.check(len(listed) == 1 and listed[0]["collisions"] >= 2 and listed[0]["opens"] == 0,
                 "pynfsd clients shows one record for the shared id, its collisions, and no state")
    finally:
        for actor in (a, b, c):
            await actor.close()
