"""A cache's channel as rpc.mountd and exportfs use it: request lines read one at a time,
replies written back (waking parked requests), bad input refused with EINVAL and logged at a
bounded rate, exportfs's test entries and flush, the content file."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from pynfsd.cache import lines as L
from pynfsd.cache.channel import AUTH_UNIX_GID, AUTH_UNIX_IP, NFSD_EXPORT, NFSD_FH, Channel
from pynfsd.cache.core import Cache
from pynfsd.cache.deferral import CacheDelay, Deferral
from pynfsd.cache.waiters import Waiters
from tests.clock import ManualClock

T0 = 1_700_000_000
KEY = L.ExportKey("127.0.0.1", "/srv/a")


def export_channel(clock: ManualClock, max_entries: int = 100,
                   **kw: bool) -> Channel[L.ExportKey, L.ExportInfo]:
    cache: Cache[L.ExportKey, L.ExportInfo] = Cache(
        "nfsd.export", clock=clock, max_entries=max_entries, **kw)  # type: ignore[arg-type]
    holder: list[Channel[L.ExportKey, L.ExportInfo]] = []
    deferral = Deferral(cache, Waiters(), lambda k: holder[0].upcall(k))
    holder.append(Channel(NFSD_EXPORT, deferral))
    holder[0].readers = 1
    return holder[0]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_mountd_round_trip_wakes_the_parked_requests() -> None:
    clock = ManualClock(float(T0))
    ch = export_channel(clock)
    waiting = [asyncio.ensure_future(ch.deferral.get(KEY, c)) for c in ("c1", "c2")]
    await settle()
    assert ch.pending() == 1
    assert ch.read() == b"127.0.0.1 /srv/a\n" and ch.read() == b""
    reply = b"127.0.0.1 /srv/a %d 9252 65534 65534 1 secinfo 1 1 9252\n" % (T0 + 1800)
    assert ch.write(reply) == 0
    for entry in await asyncio.gather(*waiting):
        assert entry.value is not None and entry.value.fsid == 1
    assert ch.content() == (b"#path domain(flags)\n/srv/a\t127.0.0.1(rw,root_squash,sync,"
                            b"wdelay,no_subtree_check,fsid=1,sec=1)\n")


async def test_negative_reply_for_an_unknown_path() -> None:
    clock = ManualClock(float(T0))
    ch = export_channel(clock)
    key = L.ExportKey("127.0.0.1", "/nonexistent")
    task = asyncio.ensure_future(ch.deferral.get(key, "c1"))
    await settle()
    assert ch.write(b"127.0.0.1 /nonexistent %d\n" % (T0 + 120)) == 0
    assert (await task).negative
    assert b"/nonexistent\t127.0.0.1()" in ch.content()


async def test_malformed_reply_is_refused_logged_and_the_request_times_out(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(float(T0))
    ch = export_channel(clock)
    task = asyncio.ensure_future(ch.deferral.get(KEY, "c1"))
    other = L.ExportKey("127.0.0.1", "/srv/b")
    served = asyncio.ensure_future(ch.deferral.get(other, "c2"))
    await settle()
    with caplog.at_level(logging.WARNING, logger="pynfsd.cache.channel"):
        for _ in range(50):
            assert ch.write(b"127.0.0.1 /srv/a %d garbage\n" % (T0 + 60)) == errno.EINVAL
    assert ch.stats["malformed"] == 50
    assert len([r for r in caplog.records if "malformed" in r.message]) == 1
    assert ch.write(b"127.0.0.1 /srv/b %d\n" % (T0 + 60)) == 0  # others unaffected
    assert (await served).negative
    clock.advance(6)
    ch.deferral.tick()
    with pytest.raises(CacheDelay):
        await task


def test_reply_nobody_asked_about_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    ch = export_channel(ManualClock(float(T0)))
    with caplog.at_level(logging.WARNING, logger="pynfsd.cache.channel"):
        assert ch.write(b"* /srv/x %d 0 0 0 0\n" % (T0 + 60)) == errno.EINVAL
    assert "nobody asked" in caplog.text and len(ch.deferral.cache) == 0


def test_exportfs_test_entries_and_flush() -> None:
    clock = ManualClock(float(T0))
    ch = export_channel(clock)
    assert ch.write(b"-test-client- /path  3 9252 65534 65534 0\n") == 0
    assert len(ch.deferral.cache) == 0
    assert ch.write_flush(b"%d\n" % T0) == 0
    assert ch.read_flush() == b"%d\n" % T0
    assert ch.write_flush(b"soon\n") == errno.EINVAL


async def test_no_reader_means_negative_at_once() -> None:
    ch = export_channel(ManualClock(float(T0)))
    ch.readers = 0
    entry = await ch.deferral.get(KEY, "c1")
    assert entry.negative and ch.pending() == 0 and ch.stats["no_reader"] == 1


def test_request_queue_is_bounded_and_deduplicated() -> None:
    ch = export_channel(ManualClock(float(T0)), max_entries=4)
    for _ in range(3):
        ch.upcall(KEY)
    assert ch.pending() == 1
    for i in range(100):
        ch.upcall(L.ExportKey("c", f"/p{i}"))
    assert ch.pending() == 4 and ch.stats["requests_dropped"] == 97
    assert ch.read() == b"c /p96\n"


def test_content_of_the_other_caches() -> None:
    clock = ManualClock(float(T0))
    for fmt, key, reply, row in [
        (AUTH_UNIX_IP, L.IpKey("nfsd", "127.0.0.1"),
         b"nfsd 127.0.0.1 %d *,127.0.0.1\n", b"nfsd 127.0.0.1 *,127.0.0.1\n"),
        (NFSD_FH, L.FhKey("127.0.0.1", 1, b"\0\0\0\1"),
         b"127.0.0.1 1 \\x00000001 %d /srv/a\n", b"127.0.0.1 1 0x00000001 /srv/a\n"),
        (AUTH_UNIX_GID, 1000, b"1000 %d 2 1000 24\n", b"1000 2: 1000 24\n"),
    ]:
        cache: Cache[object, object] = Cache(fmt.name, clock=clock)
        ch = Channel(fmt, Deferral(cache, Waiters(), lambda k: True))  # type: ignore[arg-type]
        cache.lookup(key)
        assert ch.content().endswith(b"\n") and ch.content().count(b"\n# ") == 1  # pending
        assert ch.write(reply % (T0 + 60)) == 0
        assert ch.content() == L.CONTENT_HEADERS[fmt.name] + row
