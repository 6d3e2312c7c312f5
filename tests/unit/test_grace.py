"""The grace period (RFC 7530 §9.6.2): who may reclaim, what gets NFS4ERR_GRACE, early end,
and an in-process server restart on the same state directory."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from nfs4_fixtures import (
    ANON,
    BYPASS,
    DENY_NONE,
    RW,
    World,
    expect,
    export_root,
    make_world,
    new_clientid,
    open_file,
    ops,
)
from state_support import LEASE, CountingRng, new_client

from pynfsd.client.nfs4 import in_process, op
from pynfsd.fs.backend import Backend
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.server import NFSServer
from pynfsd.nfs4.state import ANONYMOUS_STATEID, READ_BYPASS_STATEID, StateManager
from pynfsd.nfs4.state.grace import GracePeriod
from pynfsd.nfs4.state.store import FileClientStore
from tests.clock import ManualClock

R, WRITE_LT = 1, 2


def grace(recorded: set[bytes], duration: float = 90) -> tuple[ManualClock, GracePeriod, list[int]]:
    clock = ManualClock()
    ended: list[int] = []
    g = GracePeriod(clock, duration, recorded, lease=LEASE, on_end=lambda: ended.append(1))
    return clock, g, ended


# -- GracePeriod on its own ---------------------------------------------------------------------


def test_no_recorded_clients_means_no_grace(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "pynfsd.nfs4.grace"):
        _, g, ended = grace(set())
    assert not g.in_grace() and ended == [1]
    assert g.status()["ended_reason"] == "no grace: no clients were recorded"
    assert "no grace: no clients were recorded" in caplog.text


def test_grace_ends_after_its_duration_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock, g, ended = grace({b"a"})
    assert g.in_grace()
    st = g.status()
    assert st["seconds_left"] == 90 and st["recorded"] == 1 and st["ended_reason"] is None
    clock.advance(89)
    assert g.in_grace()
    clock.advance(1)
    with caplog.at_level(logging.INFO, "pynfsd.nfs4.grace"):
        assert not g.in_grace() and not g.in_grace()
    assert caplog.text.count("grace ended after 90 s") == 1 and ended == [1]
    assert g.status() == {
        "in_grace": False,
        "seconds_left": 0.0,
        "recorded": 1,
        "reclaimed": 0,
        "pending": 0,
        "ended_reason": "grace ended after 90 s",
    }


def test_grace_ends_early_when_every_recorded_client_finished() -> None:
    clock, g, ended = grace({b"a", b"b", b"c"}, duration=1000)
    for name in (b"a", b"b", b"c"):
        g.client_confirmed(name)
        g.reclaimed(name)
    g.non_reclaim(b"a")
    g.non_reclaim(b"b")
    clock.advance(LEASE + 1)
    assert g.in_grace()  # c reclaimed something and may still be reclaiming
    g.non_reclaim(b"c")
    assert not g.in_grace() and ended == [1]
    reason = str(g.status()["ended_reason"])
    assert reason.startswith("grace ended early: all 3 recorded clients finished reclaiming")
    assert g.status()["reclaimed"] == 3


def test_new_incarnation_that_never_reclaims_is_done_after_a_lease() -> None:
    clock, g, _ = grace({b"a", b"b"}, duration=1000)
    g.client_confirmed(b"a")
    clock.advance(LEASE / 2)
    g.client_confirmed(b"a")  # confirmed again: the lease runs from the latest confirm
    g.client_gone(b"b")
    clock.advance(LEASE / 2)
    assert g.in_grace()
    clock.advance(LEASE / 2)
    assert not g.in_grace()
    assert str(g.status()["ended_reason"]).startswith("grace ended early: all 2 recorded")


def test_a_client_that_never_came_back_keeps_grace_to_the_end() -> None:
    clock, g, _ = grace({b"a", b"b"})
    g.client_confirmed(b"a")
    g.non_reclaim(b"a")
    clock.advance(89)
    assert g.in_grace() and g.status()["pending"] == 1


def test_disabled_grace_has_none() -> None:
    _, g, ended = grace({b"a"}, duration=0)
    assert not g.in_grace() and ended == [1]


# -- through the state manager ------------------------------------------------------------------


def test_only_recorded_clients_reclaim_and_others_get_grace(tmp_path: Path) -> None:
    first = FileClientStore(tmp_path)
    first.client_has_state(b"back", "root")
    first.flush()
    store = FileClientStore(tmp_path)
    clock = ManualClock()
    g = GracePeriod(clock, 90, store.recorded(), lease=LEASE, on_end=store.grace_done)
    sm = StateManager(clock, CountingRng(), LEASE, server_boot_id=b"b", store=store, grace=g)
    back, new = new_client(sm, b"back"), new_client(sm, b"new")
    sid = sm.open(back, b"oo", b"f", RW, DENY_NONE, reclaim=True).stateid
    sm.lock_new(sid, b"lo", 1, b"f", WRITE_LT, 0, 10, reclaim=True)
    sm.check_io_stateid(sid, b"f", write=True)  # reclaimed state may do I/O
    with pytest.raises(E.NFS4ERR_RECLAIM_BAD):
        sm.open(new, b"oo", b"g", R, DENY_NONE, reclaim=True)
    with pytest.raises(E.NFS4ERR_GRACE):
        sm.open(new, b"oo", b"g", R, DENY_NONE)
    with pytest.raises(E.NFS4ERR_GRACE):
        sm.lockt(new, b"lo", b"f", WRITE_LT, 0, 10)
    with pytest.raises(E.NFS4ERR_GRACE):
        sm.check_io_stateid(ANONYMOUS_STATEID, b"f", write=False)
    sm.check_io_stateid(READ_BYPASS_STATEID, b"f", write=False)
    sm.open(back, b"oo", b"g", R, DENY_NONE)  # back's first normal OPEN ends grace
    assert not g.in_grace()
    with pytest.raises(E.NFS4ERR_NO_GRACE):
        sm.open(back, b"oo", b"h", R, DENY_NONE, reclaim=True)
    with pytest.raises(E.NFS4ERR_DENIED):
        sm.lockt(new, b"lo", b"f", WRITE_LT, 0, 10)


# -- an in-process restart ----------------------------------------------------------------------


def restart(w: World) -> NFSServer:
    """A new server on the same state dir and the same (memory) backends: a restart."""

    def same_backend(export: object, sdir: str) -> Backend:
        return w.backends[export.path]  # type: ignore[attr-defined]

    config = dataclasses.replace(w.server.config, backend_factory=same_backend)
    return NFSServer(config, w.server.resolver)


def reclaim_open(cid: int, owner: bytes, access: int = RW) -> N.nfs_argop4:
    claim = N.open_claim4(N.CLAIM_PREVIOUS, N.OPEN_DELEGATE_NONE)
    how = N.openflag4(N.OPEN4_NOCREATE, None)
    args = N.OPEN4args(1, access, DENY_NONE, N.open_owner4(cid, owner), how, claim)
    return N.nfs_argop4(N.OP_OPEN, args)


def test_restart_reclaim_in_grace_while_others_get_grace(tmp_path: Path) -> None:
    w = make_world(tmp_path)

    async def before() -> tuple[bytes, bytes, N.stateid4]:
        c = w.client()
        root = await export_root(c)
        cid = await new_clientid(c, b"host-a", b"verf-a01")
        o = await open_file(c, root, cid, b"o", b"f")
        await c.check(
            [op.putfh(o.fh), ops.lock_new(WRITE_LT, 0, 10, o.seqid, o.stateid, 1, cid, b"lo")]
        )
        return root, o.fh, o.stateid

    root, fh, old = w.run(before())  # then the server "crashes": nothing is flushed or closed
    server = restart(w)
    assert server.grace.status()["in_grace"] and server.grace.status()["recorded"] == 1

    async def after() -> None:
        a = in_process(server, peer=("127.0.0.1", 800))
        b = in_process(server, peer=("127.0.0.2", 800))
        await expect(a, [op.putfh(fh), op.read(old, 0, 1)], N.NFS4ERR_STALE_STATEID)
        cid = await new_clientid(a, b"host-a", b"verf-a01")
        cid_b = await new_clientid(b, b"host-b", b"verf-b01")
        _, opened = await a.check([op.putfh(fh), reclaim_open(cid, b"o")])
        assert not opened.rflags & 0x2  # no OPEN_CONFIRM on reclaim (§9.1.11)
        lock = ops.lock_new(WRITE_LT, 0, 10, 2, opened.stateid, 1, cid, b"lo")
        lock.value.reclaim = True
        await a.check([op.putfh(fh), lock])
        await expect(b, [op.putfh(root), op.open(1, cid_b, b"p", b"f")], N.NFS4ERR_GRACE)
        await expect(b, [op.putfh(fh), op.lockt(WRITE_LT, 0, 10, cid_b, b"lo")], N.NFS4ERR_GRACE)
        await expect(b, [op.putfh(fh), op.read(ANON, 0, 1)], N.NFS4ERR_GRACE)
        await b.check([op.putfh(fh), op.read(BYPASS, 0, 1)])
        await expect(b, [op.putfh(fh), reclaim_open(cid_b, b"r")], N.NFS4ERR_RECLAIM_BAD)
        assert server.grace.status()["in_grace"]
        await open_file(a, root, cid, b"o2", b"g")  # a's first normal OPEN: grace ends early
        status = server.grace.status()
        assert not status["in_grace"] and status["reclaimed"] == 1
        assert str(status["ended_reason"]).startswith("grace ended early: 1 recorded client")
        ob = await open_file(b, root, cid_b, b"p", b"f", seqid=2)
        deny = ops.lock_new(WRITE_LT, 5, 1, ob.seqid, ob.stateid, 1, cid_b, b"lo")
        await expect(b, [op.putfh(fh), deny], N.NFS4ERR_DENIED)  # a's reclaimed lock holds
        await expect(b, [op.putfh(fh), reclaim_open(cid_b, b"q")], N.NFS4ERR_NO_GRACE)

    try:
        w.run(after())
    finally:
        server.close()
        w.close()
