"""The channel way (`pynfsd.cache.reader.ChannelWay`): a cache's requests go to the readers of
its `channel` file only while one has it open; one request line per read, one reply per write;
bad replies refused with EINVAL and nothing changed; a reader that never answers, or closes,
leads to the next way of the chain."""

from __future__ import annotations

import asyncio
import errno

import pytest

from pynfsd.cache import lines as L
from pynfsd.cache.caches import CacheLimits, ServerCaches
from pynfsd.cache.deferral import CacheDelay
from pynfsd.cache.reader import ChannelWay
from tests.clock import ManualClock
from tests.unit.test_cache_ways import REQ, TableWay, export_reply, settle

T0 = 1_700_000_000
KEY = L.ExportKey("127.0.0.1", "/srv/a")


def setup(clock: ManualClock, way: ChannelWay, *rest: TableWay,
          **limits: float) -> ServerCaches:
    sc = ServerCaches({"nfsd.export": [way, *rest]}, CacheLimits(**limits),  # type: ignore[arg-type]
                      clock)
    way.bind(sc.channels)
    return sc


async def test_without_a_reader_the_next_way_answers() -> None:
    way, table = ChannelWay(), TableWay("embedded", {REQ: export_reply()})
    sc = setup(ManualClock(T0), way, table)
    assert not way.ready("nfsd.export")
    entry = await sc.export.get(KEY, "c1")
    assert entry.value is not None and table.sent == [("nfsd.export", REQ)]
    assert way.pending("nfsd.export") == 0 and way.read("nfsd.export") == b""


async def test_one_request_per_read_and_the_reply_wakes_the_parked() -> None:
    way, table = ChannelWay(), TableWay("embedded")
    woken: list[str] = []
    way.on_request = woken.append
    sc = setup(ManualClock(T0), way, table)
    way.open_reader("nfsd.export")
    other = L.ExportKey("127.0.0.1", "/srv/b")
    tasks = [asyncio.ensure_future(sc.export.get(k, c))
             for k, c in ((KEY, "c1"), (KEY, "c2"), (other, "c3"))]
    await settle()
    assert woken == ["nfsd.export", "nfsd.export"] and way.pending("nfsd.export") == 2
    assert way.read("nfsd.export") == REQ
    assert way.read("nfsd.export") == b"127.0.0.1 /srv/b\n"
    assert way.read("nfsd.export") == b""
    assert way.write("nfsd.export", export_reply(), T0) == 0
    assert way.write("nfsd.export", export_reply(other, 2), T0) == 0
    got = await asyncio.gather(*tasks)
    assert [e.value.fsid for e in got if e.value is not None] == [1, 1, 2]
    assert table.sent == []
    assert sc.status()["nfsd.export"]["upcall_answered_channel"] == 2


async def test_bad_replies_get_einval_and_change_nothing() -> None:
    way = ChannelWay(max_line=200)
    sc = setup(ManualClock(T0), way)
    way.open_reader("nfsd.export")
    task = asyncio.ensure_future(sc.export.get(KEY, "c1"))
    await settle()
    assert way.read("nfsd.export") == REQ
    before = sc.content("nfsd.export")
    assert way.write("nfsd.export", b"garbage\n", T0) == errno.EINVAL
    unasked = export_reply(L.ExportKey("127.0.0.1", "/srv/zz"))
    assert way.write("nfsd.export", unasked, T0) == errno.EINVAL
    assert way.write("nfsd.export", b"127.0.0.1 /srv/a " + b"9" * 300 + b"\n", T0) == errno.EINVAL
    assert sc.content("nfsd.export") == before and not task.done()
    assert way.write("nfsd.export", export_reply(), T0) == 0
    assert (await task).value is not None


async def test_exportfs_test_entries_are_accepted_and_dropped() -> None:
    way = ChannelWay()
    sc = setup(ManualClock(T0), way)
    way.open_reader("nfsd.export")
    line = b"-test-client- /srv/a  3 9252 65534 65534 0\n"
    assert way.write("nfsd.export", line, T0) == 0
    assert b"-test-client-" not in sc.content("nfsd.export")


async def test_a_reader_that_never_answers_means_delay_then_the_fallback() -> None:
    clock = ManualClock(T0)
    way, table = ChannelWay(timeout=0.01), TableWay("embedded", {REQ: export_reply()})
    sc = setup(clock, way, table, wait=1.0)
    way.open_reader("nfsd.export")
    task = asyncio.ensure_future(sc.export.get(KEY, "c1"))
    await settle()
    assert way.read("nfsd.export") == REQ
    clock.advance(2)
    sc.tick()
    with pytest.raises(CacheDelay):
        await task
    while not table.sent:
        await asyncio.sleep(0.01)
    await settle()
    assert table.sent == [("nfsd.export", REQ)]
    entry = await sc.export.get(KEY, "c1")
    assert entry.value is not None and way.stats["timeouts"] == 1


async def test_the_last_reader_closing_hands_its_requests_on() -> None:
    way, table = ChannelWay(), TableWay("embedded", {REQ: export_reply()})
    sc = setup(ManualClock(T0), way, table)
    way.open_reader("nfsd.export")
    way.open_reader("nfsd.export")
    task = asyncio.ensure_future(sc.export.get(KEY, "c1"))
    await settle()
    way.close_reader("nfsd.export")
    assert way.pending("nfsd.export") == 1 and not task.done()
    way.close_reader("nfsd.export")
    assert (await task).value is not None and table.sent == [("nfsd.export", REQ)]
    assert not way.ready("nfsd.export") and way.pending("nfsd.export") == 0


async def test_past_max_outstanding_requests_go_to_the_next_way() -> None:
    way = ChannelWay(max_outstanding=2)
    table = TableWay("embedded", {b"127.0.0.1 /srv/%d\n" % i: export_reply(
        L.ExportKey("127.0.0.1", f"/srv/{i}")) for i in range(3)})
    sc = setup(ManualClock(T0), way, table)
    way.open_reader("nfsd.export")
    tasks = [asyncio.ensure_future(sc.export.get(L.ExportKey("127.0.0.1", f"/srv/{i}"), "c"))
             for i in range(3)]
    await settle()
    assert way.pending("nfsd.export") == 2 and not way.ready("nfsd.export")
    assert table.sent == [("nfsd.export", b"127.0.0.1 /srv/2\n")]
    await way.close()
    assert all(e.value is not None for e in await asyncio.gather(*tasks))
