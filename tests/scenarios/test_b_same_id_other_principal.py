"""Scenario b: the same co_ownerid arrives under another principal.

A (AUTH_SYS uid 0) holds opens and locks under `Linux NFSv4.0 ctr/127.0.0.1`; B presents the
same id string as uid 1000.  A confirmed record for the id with another principal means
NFS4ERR_CLID_INUSE (RFC 7530 §16.33.5), and A's state is untouched.  Once A holds no state any
more the server MUST let B have the id (§9.1.2).
"""

from __future__ import annotations

from pynfsd.client.session import WRITE_LT
from pynfsd.gen import nfs4 as N
from tests.scenarios.helpers import Actor, collision_warnings, linux_v40_id
from tests.scenarios.timeline import Timeline
from tests.serverproc import ServerProcess


async def test_same_id_other_principal_is_clid_inuse(server: ServerProcess, timeline: Timeline) -> None:
    """same co_ownerid, different principals: the first works, the second gets NFS4ERR_CLID_INUSE"""
    await play(server, timeline)


async def play(srv: ServerProcess, tl: Timeline) -> None:
    ctr = linux_v40_id("ctr")
    a = await Actor.connect(tl, "A", srv.port, ownerid=ctr, verifier=b"boot-A-1", uid=0)
    b = await Actor.connect(tl, "B", srv.port, ownerid=ctr, verifier=b"boot-B-1", uid=1000)
    c = await Actor.connect(tl, "C", srv.port, ownerid=linux_v40_id("observer"), uid=0)
    try:
        await a.establish()
        d = await a.root()
        fa = await a.open(d, b"a.txt")
        await a.ok("WRITE a.txt", a.session.write(fa, 0, b"A's data"), lambda n: f"{n} bytes")
        await a.lock(fa, 0, 10)

        tl.note("B presents A's id string under another principal while A holds state")
        await b.setclientid_refused(N.NFS4ERR_CLID_INUSE)
        b.session.verifier = b"boot-A-1"
        await b.setclientid_refused(N.NFS4ERR_CLID_INUSE)

        warnings = collision_warnings(srv, tl, ctr)
        tl.check(len(warnings) == 1 and "sys:0" in warnings[0] and "sys:1000" in warnings[0],
                 "the server logged one warning naming the shared id and both principals")
        tl.note("A's client, state and lease are untouched")
        await a.renew()
        data = await a.ok("READ a.txt", a.session.read(fa, 0, 8), repr)
        tl.check(data == b"A's data", "A still reads through its open stateid")
        await c.establish()
        fc = await c.open(d, b"a.txt", create=False)
        tl.check(await c.lockt(fc, 0, 10) is not None, "A's lock is still held")

        tl.note("A releases everything; an id with no state MUST be given to the new principal (§9.1.2)")
        await a.ok(a.lock_label("LOCKU", fa, 0, 10), a.session.unlock(fa, WRITE_LT, 0, 10))
        await a.ok("CLOSE a.txt", a.session.close(fa))
        await b.establish()
        await a.fails("RENEW A's clientid (replaced by B's)", a.session.renew(),
                      N.NFS4ERR_STALE_CLIENTID, N.NFS4ERR_EXPIRED)
    finally:
        for actor in (a, b, c):
            await actor.close()
