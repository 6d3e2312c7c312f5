"""The router of a cache's upcalls along its chain of ways (first ready way, fallback on a
lost request, a refused or unsettling answer, abandon when none is left) and the assembly of
the four caches (`ServerCaches`: flush, content, status, the shared bound on parked requests;
`--upcall` parsing and the chains)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pynfsd.cache import lines as L
from pynfsd.cache.caches import CacheLimits, ServerCaches, build_chains, parse_upcall_spec
from pynfsd.cache.core import Cache, State
from pynfsd.cache.deferral import CacheDelay
from pynfsd.cache.ways import Answer, Lost, Way
from tests.clock import ManualClock

T0 = 1_700_000_000
EXPIRY = T0 + 3600
KEY = L.ExportKey("127.0.0.1", "/srv/a")
REQ = b"127.0.0.1 /srv/a\n"


class TableWay:
    """A way answering from a table of request line -> reply line, on the next loop turn;
    a request not in the table is lost."""

    def __init__(self, name: str, table: dict[bytes, bytes] | None = None,
                 ready: bool = True) -> None:
        self.name = name
        self.table = table or {}
        self.is_ready = ready
        self.sent: list[tuple[str, bytes]] = []
        self.closed = False

    def ready(self, cache: str) -> bool:
        return self.is_ready

    def send(self, cache: str, request: bytes, answer: Answer, lost: Lost) -> None:
        self.sent.append((cache, request))
        loop = asyncio.get_running_loop()
        if request in self.table:
            loop.call_soon(answer, self.table[request])
            loop.call_soon(lost, "a second report, to be ignored")
        else:
            loop.call_soon(lost, "not in the table")

    async def close(self) -> None:
        self.closed = True


def export_reply(key: L.ExportKey = KEY, fsid: int = 1) -> bytes:
    return L.encode_export_reply(L.ExportReply(key, EXPIRY, L.ExportInfo(0, 65534, 65534, fsid)))


def caches(clock: ManualClock, *chain: Way, **limits: int) -> ServerCaches:
    return ServerCaches({"nfsd.export": list(chain)}, CacheLimits(**limits), clock)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_first_ready_way_answers_and_the_parked_are_woken() -> None:
    clock = ManualClock(T0)
    off = TableWay("daemon", ready=False)
    table = TableWay("embedded", {REQ: export_reply()})
    sc = caches(clock, off, table)
    got = await asyncio.gather(*(sc.export.get(KEY, c) for c in ("c1", "c2")))
    assert all(e.value is not None and e.value.fsid == 1 for e in got)
    assert off.sent == [] and table.sent == [("nfsd.export", REQ)]
    assert sc.status()["nfsd.export"]["upcall_answered_embedded"] == 1


async def test_no_ready_way_makes_the_key_negative() -> None:
    clock = ManualClock(T0)
    sc = caches(clock, TableWay("daemon", ready=False))
    entry = await sc.export.get(KEY, "c1")
    assert entry.negative
    assert sc.status()["nfsd.export"]["upcall_no_way"] == 1


async def test_a_lost_request_falls_back_to_the_next_ready_way() -> None:
    clock = ManualClock(T0)
    first = TableWay("daemon")
    skipped = TableWay("command", {REQ: export_reply(fsid=2)}, ready=False)
    last = TableWay("embedded", {REQ: export_reply(fsid=3)})
    sc = caches(clock, first, skipped, last)
    entry = await sc.export.get(KEY, "c1")
    assert entry.value is not None and entry.value.fsid == 3
    assert len(first.sent) == 1 and skipped.sent == [] and len(last.sent) == 1
    status = sc.status()["nfsd.export"]
    assert status["upcall_lost_daemon"] == 1 and status["upcall_fallbacks"] == 1


@pytest.mark.parametrize("bad", [b"this is not a reply\n",
                                 export_reply(L.ExportKey("127.0.0.1", "/srv/other")),
                                 b"127.0.0.1 /srv/a 5 0 65534 65534 1\n"],
                         ids=["garbage", "unasked key", "already expired"])
async def test_a_refused_or_unsettling_answer_falls_back(bad: bytes) -> None:
    clock = ManualClock(T0)
    liar = TableWay("daemon", {REQ: bad})
    good = TableWay("embedded", {REQ: export_reply(fsid=7)})
    sc = caches(clock, liar, good)
    entry = await sc.export.get(KEY, "c1")
    assert entry.value is not None and entry.value.fsid == 7
    assert sc.export.cache.state(L.ExportKey("127.0.0.1", "/srv/other")) is State.MISSING


async def test_an_answer_for_another_pending_key_is_stored_but_falls_back_for_ours() -> None:
    clock = ManualClock(T0)
    other = L.ExportKey("127.0.0.1", "/srv/b")
    crossed = TableWay("daemon", {REQ: export_reply(other, fsid=5)})
    good = TableWay("embedded", {REQ: export_reply(fsid=7), b"127.0.0.1 /srv/b\n":
                                 export_reply(other, fsid=9)})
    sc = caches(clock, crossed, good)
    crossed.is_ready = False
    waiting_b = asyncio.ensure_future(sc.export.get(other, "c2"))
    await asyncio.sleep(0)
    crossed.is_ready = True
    a = await sc.export.get(KEY, "c1")
    b = await waiting_b
    assert a.value is not None and a.value.fsid == 7
    assert b.value is not None and b.value.fsid in (5, 9)
    assert sc.status()["nfsd.export"]["upcall_unsettled_daemon"] == 1


async def test_when_every_way_fails_the_key_is_abandoned_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(T0)
    a, b = TableWay("daemon"), TableWay("embedded")
    sc = caches(clock, a, b, wait=3600)
    for _ in range(3):
        with pytest.raises(CacheDelay):
            await sc.export.get(KEY, "c1")
        assert sc.export.cache.state(KEY) is State.MISSING  # asked again next time
    assert len(a.sent) == len(b.sent) == 3
    assert sc.status()["nfsd.export"]["upcall_abandoned"] == 3
    assert sc.status()["deferred"]["parked"] == 0
    abandoned = [r for r in caplog.records if "no way answered" in r.getMessage()]
    assert len(abandoned) == 1  # rate-limited


async def test_a_refresh_that_every_way_fails_keeps_the_entry() -> None:
    clock = ManualClock(T0)
    way = TableWay("embedded", {REQ: export_reply()})
    sc = caches(clock, way)
    await sc.export.get(KEY, "c1")
    way.table.clear()
    clock.advance(2000)  # past half its life: served, and a refresh is sent
    entry = await sc.export.get(KEY, "c1")
    await settle()
    assert entry.value is not None and len(way.sent) == 2
    assert sc.export.cache.state(KEY) is State.VALID and not sc.export.cache.pending(KEY)


def test_cache_abandon_forgets_the_upcall_only() -> None:
    clock = ManualClock(T0)
    cache: Cache[str, int] = Cache("t", clock=clock)
    assert not cache.abandon("k")
    cache.lookup("k")
    assert cache.pending("k") and cache.abandon("k")
    assert cache.state("k") is State.MISSING and len(cache) == 0
    cache.lookup("k")
    cache.update("k", 1, T0 + 100)
    clock.advance(60)
    assert cache.lookup("k").refresh and cache.abandon("k")
    assert cache.state("k") is State.VALID


# ------------------------------------------------------------ ServerCaches
def filled(clock: ManualClock, **limits: int) -> ServerCaches:
    ways: dict[str, Way] = {
        "embedded": TableWay("embedded", {
            REQ: export_reply(), b"nfsd 127.0.0.1\n": b"nfsd 127.0.0.1 %d 127.0.0.1\n" % EXPIRY,
            b"1000\n": b"1000 %d 2 10 20\n" % EXPIRY})}
    return ServerCaches(build_chains({}, ways), CacheLimits(**limits), clock)  # type: ignore[arg-type]


async def test_flush_one_or_all_and_content_and_status() -> None:
    clock = ManualClock(T0)
    sc = filled(clock)
    await sc.export.get(KEY, "c1")
    await sc.ip.get(L.ip_key("127.0.0.1"), "c1")
    gid = await sc.gid.get(1000, "c1")
    assert gid.value == (10, 20)
    assert b"/srv/a\t127.0.0.1(" in sc.content("nfsd.export")
    assert sc.content("auth.unix.gid").splitlines()[1] == b"1000 2: 10 20"
    status = sc.status()
    assert status["nfsd.export"]["entries"] == 1 and status["auth.unix.ip"].get("hits", 0) == 0
    assert status["auth.unix.gid"]["upcall_answered_embedded"] == 1
    assert status["deferred"]["parked"] == 0 and status["deferred"]["woken"] == 3
    clock.advance(1)
    sc.flush("nfsd.export")
    assert sc.export.cache.state(KEY) is State.MISSING
    assert sc.ip.cache.state(L.ip_key("127.0.0.1")) is State.VALID
    sc.flush()
    assert sc.ip.cache.state(L.ip_key("127.0.0.1")) is State.MISSING
    assert sc.gid.cache.state(1000) is State.MISSING
    with pytest.raises(KeyError):
        sc.content("nfsd.nothing")


async def test_the_parked_bound_is_shared_by_the_four_caches() -> None:
    clock = ManualClock(T0)
    slow = TableWay("daemon")
    slow.send = lambda cache, request, answer, lost: None  # type: ignore[method-assign]
    sc = ServerCaches(build_chains({}, {"daemon": slow}),  # type: ignore[dict-item]
                      CacheLimits(max_deferred=2, max_deferred_per_client=2), clock)
    parked = [asyncio.ensure_future(sc.export.get(KEY, "c1")),
              asyncio.ensure_future(sc.ip.get(L.ip_key("127.0.0.1"), "c1"))]
    await settle()
    assert sc.status()["deferred"]["parked"] == 2
    with pytest.raises(CacheDelay):
        await sc.gid.get(1000, "c1")
    with pytest.raises(CacheDelay):
        await sc.fh.get(L.FhKey("d", 1, b"\0\0\0\1"), "c1")
    clock.advance(10)
    sc.tick()
    for task in parked:
        with pytest.raises(CacheDelay):
            await task
    assert sc.status()["deferred"]["refused_client"] == 2
    assert sc.status()["deferred"]["timed_out"] == 2


async def test_run_ticks_until_cancelled_and_close_closes_each_way_once() -> None:
    clock = ManualClock(T0)
    way = TableWay("embedded")
    sc = ServerCaches(build_chains({}, {"embedded": way}), clock=clock)  # type: ignore[dict-item]
    task = asyncio.ensure_future(sc.run(interval=0))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sc.close()
    assert way.closed


def test_parse_upcall_spec() -> None:
    assert parse_upcall_spec(["nfsd.export=daemon,embedded", "auth.unix.gid = command"]) == {
        "nfsd.export": ("daemon", "embedded"), "auth.unix.gid": ("command",)}
    for bad, why in [("nfsd.export", "expected CACHE=WAY"), ("nfsd.foo=daemon", "unknown cache"),
                     ("nfsd.fh=daemon,carrier-pigeon", "unknown way"),
                     ("nfsd.fh=daemon,daemon", "named twice"), ("nfsd.fh=", "unknown way")]:
        with pytest.raises(ValueError, match=why) as e:
            parse_upcall_spec([bad])
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="given twice"):
        parse_upcall_spec(["nfsd.fh=daemon", "nfsd.fh=embedded"])


def test_build_chains_default_and_named() -> None:
    d, c, e = TableWay("daemon"), TableWay("command"), TableWay("embedded")
    ways: dict[str, Way] = {"embedded": e, "command": c, "daemon": d}
    chains = build_chains({"auth.unix.gid": ("command", "embedded")}, ways)
    assert chains["nfsd.export"] == [d, c, e] and chains["auth.unix.gid"] == [c, e]
    assert build_chains({}, {"embedded": e})["nfsd.fh"] == [e]
    with pytest.raises(ValueError, match="not configured"):
        build_chains({"nfsd.fh": ("daemon",)}, {"embedded": e})
    with pytest.raises(ValueError, match="unknown cache"):
        ServerCaches({"nfsd.nothing": [e]})


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CacheLimits(max_deferred=0)


async def test_refusals_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    clock = ManualClock(T0)
    liar = TableWay("daemon", {b"127.0.0.1 /srv/%d\n" % i: b"garbage\n" for i in range(20)})
    sc = caches(clock, liar)
    for i in range(20):
        with pytest.raises(CacheDelay):
            await sc.export.get(L.ExportKey("127.0.0.1", f"/srv/{i}"), "c1")
    refused = [r for r in caplog.records if "was refused" in r.getMessage()]
    assert len(refused) == 1
    assert sc.status()["nfsd.export"]["upcall_refused_daemon"] == 20
