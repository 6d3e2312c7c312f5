"""Request deferral in the COMPOUND executor: a COMPOUND whose client's exports are not cached
yet is parked at the first op that needs them (ops before it have run), and resumes at that
same op when the caches answer; it gets NFS4ERR_DELAY at that op when they do not answer in
time or when there is no room to park; a burst of one client's calls waits in one slot; other
clients are served meanwhile.  The caches are filled by the real embedded resolver, whose blocking work runs on a
runner the test holds per client address (the slow name service)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nfs4_fixtures import World, make_world

from pynfsd.cache.caches import CACHE_NAMES, CacheLimits, ServerCaches
from pynfsd.client.nfs4 import op
from pynfsd.exports.embedded import EmbeddedWay
from pynfsd.exports.resolver import StaticExportResolver
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.views import ExportViews
from tests.clock import ManualClock

T = TypeVar("T")
EXPORTS = ("/export *(rw,no_root_squash)",)
A, B = ("127.0.0.1", 800), ("127.0.0.2", 800)


class HeldRunner:
    """Runs the embedded resolver's lookups on the loop; one about a client address (an
    `auth.unix.ip` request) once that address is released."""

    def __init__(self) -> None:
        self.released: set[str] = set()
        self.calls: list[str] = []
        self._changed = asyncio.Event()

    def release(self, addr: str) -> None:
        self.released.add(addr)
        self._changed.set()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        text = repr(args)
        self.calls.append(text)
        while not set(re.findall(r"127\.0\.0\.\d+", text)) <= self.released:
            self._changed.clear()
            await self._changed.wait()
        return fn(*args)


def world(tmp_path: Path, runner: HeldRunner, clock: ManualClock, **limits: Any) -> World:
    def views(resolver: StaticExportResolver) -> ExportViews:
        way = EmbeddedWay(resolver.entries, names_of=lambda addr: [], runner=runner, clock=clock)
        caches = ServerCaches({name: [way] for name in CACHE_NAMES},
                              CacheLimits(**limits), clock=clock)
        return ExportViews(caches, tuple(e.path for e in resolver.entries))
    return make_world(tmp_path, EXPORTS, clock=clock, views=views)


def setclientid() -> N.nfs_argop4:
    return op.setclientid(b"v" * 8, b"deferral-test")


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_parked_compound_resumes_at_the_same_op_while_others_are_served(
        tmp_path: Path) -> None:
    runner, clock = HeldRunner(), ManualClock(time_of_day())
    w = world(tmp_path, runner, clock)
    try:
        parked = asyncio.ensure_future(w.client(peer=A).compound(
            [setclientid(), op.putrootfh(), op.getfh()]))
        await turns()
        assert not parked.done() and any("127.0.0.1" in c for c in runner.calls)
        runner.release("127.0.0.2")  # the other client's name service answers: it is served
        other = await w.client(peer=B).compound([op.putrootfh(), op.getfh()])
        assert other.status == N.NFS4_OK
        assert not parked.done()
        runner.release("127.0.0.1")
        res = await asyncio.wait_for(parked, 30)
        assert res.status == N.NFS4_OK
        assert [r.resop for r in res.resarray] == [N.OP_SETCLIENTID, N.OP_PUTROOTFH, N.OP_GETFH]
        assert res.resarray[2].value.value == other.resarray[1].value.value
        # now cached: the next COMPOUND of the client runs without asking again
        asked = len(runner.calls)
        again = await w.client(peer=A).compound([op.putrootfh(), op.getfh()])
        assert again.status == N.NFS4_OK and len(runner.calls) == asked
    finally:
        w.close()


async def test_no_answer_in_time_is_nfs4err_delay_at_the_op_that_waited(tmp_path: Path) -> None:
    runner, clock = HeldRunner(), ManualClock(time_of_day())
    w = world(tmp_path, runner, clock, wait=5.0)
    try:
        parked = asyncio.ensure_future(w.client(peer=A).compound(
            [setclientid(), op.putrootfh(), op.getfh()]))
        await turns()
        assert not parked.done()
        clock.advance(6)
        w.server.views.caches.tick()
        res = await asyncio.wait_for(parked, 30)
        assert res.status == N.NFS4ERR_DELAY
        assert [r.resop for r in res.resarray] == [N.OP_SETCLIENTID, N.OP_PUTROOTFH]
        assert res.resarray[0].value.status == N.NFS4_OK
        runner.release("127.0.0.1")  # the answer comes late: the retry is served from the cache
        await turns()
        again = await w.client(peer=A).compound([op.putrootfh(), op.getfh()])
        assert again.status == N.NFS4_OK
    finally:
        w.close()


async def test_a_clients_burst_shares_one_parked_slot_and_the_total_is_bounded(
        tmp_path: Path) -> None:
    runner, clock = HeldRunner(), ManualClock(time_of_day())
    w = world(tmp_path, runner, clock, max_deferred_per_client=1, max_deferred=2)
    try:
        burst = [asyncio.ensure_future(w.client(peer=A).compound([op.putrootfh()]))
                 for _ in range(5)]
        other = asyncio.ensure_future(w.client(peer=B).compound([op.putrootfh()]))
        await turns()
        assert not any(t.done() for t in [*burst, other])
        assert w.server.views.caches.status()["deferred"]["parked"] == 2  # the burst waits once
        refused = await w.client(peer=("127.0.0.3", 800)).compound([op.putrootfh()])
        assert refused.status == N.NFS4ERR_DELAY  # no room left, and no fairer share to take
        runner.release("127.0.0.1")
        runner.release("127.0.0.2")
        for task in [*burst, other]:
            assert (await asyncio.wait_for(task, 30)).status == N.NFS4_OK
        assert w.server.views.caches.status()["deferred"]["parked"] == 0
    finally:
        w.close()


def time_of_day() -> float:
    """Cache entries carry wall-clock expiry times: the manual clock starts at the real one."""
    import time
    return float(int(time.time()))
