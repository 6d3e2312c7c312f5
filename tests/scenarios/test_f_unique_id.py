"""Scenario f (library half): a unique identifier per client prevents scenarios a and d.

With `nfs4_unique_id` (or /sys/fs/nfs/net/nfs_client/identifier) set, a Linux NFSv4.0 client
sends "Linux NFSv4.0 <nodename>/<unique id>/<server>".  Two containers with one hostname but
their own unique ids are two clients to the server: both keep their opens and locks and no
collision is logged (unlike a).  A client whose unique id is stable comes back under the same
identity after a server restart and reclaims its state (unlike d).
"""

from __future__ import annotations

import uuid

from pynfsd.gen import nfs4 as N
from tests.scenarios.helpers import Actor, grace_log, linux_v40_id
from tests.scenarios.timeline import Timeline
from tests.serverproc import ServerProcess


async def test_unique_ids_do_not_collide(server: ServerProcess, timeline: Timeline) -> None:
    """same hostname, unique ids: both clients keep their state (scenario a does not happen)"""
    await play_no_collision(server, timeline)


async def play_no_collision(srv: ServerProcess, tl: Timeline) -> None:
    ids = [linux_v40_id("ctr", uniquifier=str(uuid.uuid4())) for _ in range(2)]
    a = await Actor.connect(tl, "A", srv.port, ownerid=ids[0], verifier=b"boot-A-1", source="127.0.0.2")
    b = await Actor.connect(tl, "B", srv.port, ownerid=ids[1], verifier=b"boot-B-1", source="127.0.0.3")
    try:
        await a.establish()
        d = await a.root()
        fa = await a.open(d, b"a.txt")
        await a.lock(fa, 0, 10)
        await b.establish()
        fb = await b.open(d, b"b.txt")
        await b.lock(fb, 0, 10)
        tl.note("each SETCLIENTID_CONFIRM left the other client alone")
        for actor, f in ((a, fa), (b, fb)):
            await actor.renew()
            await actor.ok(f"WRITE {actor.names[f.fh]} with its open stateid", actor.session.write(f, 0, actor.name.encode()),
                           lambda n: f"{n} bytes")
        fab = await b.open(d, b"a.txt", create=False)
        denied = await b.lockt(fab, 0, 10)
        tl.check(denied is not None and denied.owner.clientid == a.session.clientid, "A still holds its lock")
        warned = [ln for ln in srv.log_text().splitlines() if "WARNING" in ln and "Linux NFSv4.0 ctr/" in ln]
        tl.check(not warned, "the server logged no collision")
    finally:
        for actor in (a, b):
            await actor.close()


async def test_stable_unique_id_reclaims_after_server_restart(server: ServerProcess, timeline: Timeline) -> None:
    """a unique id kept across restarts: the client reclaims after a server restart (scenario d does not happen)"""
    await play_stable_id(server, timeline)


async def play_stable_id(srv: ServerProcess, tl: Timeline) -> None:
    stable = linux_v40_id("ctr", uniquifier=str(uuid.uuid4()))
    a = await Actor.connect(tl, "A", srv.port, ownerid=stable)
    b = await Actor.connect(tl, "B", srv.port, ownerid=linux_v40_id("other-host"))
    try:
        await a.establish()
        d = await a.root()
        fa = await a.open(d, b"data.txt")
        await a.lock(fa, 0, 100)
        mark = srv.log_mark()
        tl.note("the server restarts; the client keeps its unique id, so its id string is unchanged")
        srv.restart()
        await a.reconnect(srv.port)
        await b.reconnect(srv.port)
        a.reset_owners()
        await a.establish()
        await b.establish()
        await b.fails("OPEN data.txt (read+write, deny none)", b.session.open(d, b"data.txt"), N.NFS4ERR_GRACE)
        ra = await a.reclaim_open(fa.fh, "data.txt")
        await a.lock(ra, 0, 100, reclaim=True)
        tl.note("the same identity came back: its open and lock are its own again")
        grace_log(srv, tl, mark)
    finally:
        for actor in (a, b):
            await actor.close()
