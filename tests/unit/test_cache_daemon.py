"""The daemon way with real daemons on a real Unix socket (the test daemon `support_upcalld.py`
as a subprocess, or a raw socket speaking for itself): the socket's mode, a stale socket
replaced, removed on close; the hello and the caches it names; answers from the daemon's table,
several in flight answered out of order; with no daemon, or a daemon that fails, the next way
of the chain answers.  Hostile daemons: garbage, unsolicited and late replies refused and the
connection kept; a hung daemon's requests lost after the timeout, a disconnected one's at once;
an overlong line, no hello, a hello naming no known cache, silence past the hello timeout and
one daemon too many closed; the bound on outstanding requests; close, quietly, and a
connection accepted just before it not served."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pynfsd.cache import lines as L
from pynfsd.cache.caches import CacheLimits, ServerCaches
from pynfsd.cache.command import CommandWay
from pynfsd.cache.core import State
from pynfsd.cache.daemon import (
    DEFAULT_TIMEOUT,
    HELLO_TIMEOUT,
    MAX_DAEMONS,
    MAX_OUTSTANDING,
    DaemonWay,
)
from pynfsd.cache.deferral import CacheDelay
from pynfsd.cache.ways import Way

UPCALLD = str(Path(__file__).resolve().parents[1] / "support_upcalld.py")
EXPIRY = 4102444800  # 2100-01-01: the command way's answers, on the real clock
KEY = L.ExportKey("127.0.0.1", "/srv/a")
ENTRIES = [f"nfsd.export 127.0.0.1 /srv/{n}=8192 65534 65534 {i + 1}"
           for i, n in enumerate(["a", "b", "0", "1", "2", "3", "4"])]
FSID = {f"/srv/{n}": i + 1 for i, n in enumerate(["a", "b", "0", "1", "2", "3", "4"])}
COMMAND_FSID = 7


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    path = tmp_path / "upcall.sock"
    assert len(str(path)) < 100, "a Unix socket path must be short"
    return path


def command(tmp_path: Path) -> CommandWay:
    """The next way of the chain: a program answering every key with fsid COMMAND_FSID."""
    path = tmp_path / "answer"
    path.write_text(f'#!/bin/sh\necho "$2 $3 {EXPIRY} 0 65534 65534 {COMMAND_FSID}"\n')
    path.chmod(stat.S_IRWXU)
    return CommandWay(str(path))


def caches(*ways: Way, **limits: float) -> ServerCaches:
    return ServerCaches({"nfsd.export": list(ways)}, CacheLimits(**limits))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(sock: Path, *next_ways: Way, timeout: float = DEFAULT_TIMEOUT,
                  max_daemons: int = MAX_DAEMONS, hello_timeout: float = HELLO_TIMEOUT,
                  max_outstanding: int = MAX_OUTSTANDING,
                  **limits: float) -> AsyncIterator[tuple[DaemonWay, ServerCaches]]:
    """The daemon way listening on `sock`, first of the export chain before `next_ways`, and
    caches over that chain with `limits`; closed, the way with them, whatever happens."""
    way = DaemonWay(sock, timeout, max_daemons=max_daemons, hello_timeout=hello_timeout,
                    max_outstanding=max_outstanding)
    await way.start()
    sc = caches(way, *next_ways, **limits)
    try:
        yield way, sc
    finally:
        await sc.close()


async def until(cond: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Poll `cond` on the loop, failing after `seconds`."""
    for _ in range(int(seconds / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {seconds} s: {what}")


@contextlib.asynccontextmanager
async def upcalld(sock: Path, *flags: str, entries: list[str] = ENTRIES,
                  log: Path | None = None) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The test daemon as a subprocess, killed and reaped whatever happens."""
    argv = [sys.executable, UPCALLD, "--socket", str(sock), *flags]
    for e in entries:
        argv += ["--entry", e]
    if log is not None:
        argv += ["--log", str(log)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def connected(way: DaemonWay, proc: subprocess.Popen[bytes], n: int = 1) -> None:
    await until(lambda: way.daemons >= n or proc.poll() is not None, "the daemon's hello")
    assert proc.poll() is None and way.daemons == n


async def exited(proc: subprocess.Popen[bytes]) -> int:
    await until(lambda: proc.poll() is not None, "the daemon's exit")
    return proc.returncode


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def fsid(entry: object) -> int:
    value = getattr(entry, "value", None)
    assert isinstance(value, L.ExportInfo), entry
    return value.fsid


# ------------------------------------------------------------------ the socket


async def test_the_socket_is_private_a_stale_one_is_replaced_and_close_removes_it(
        sock: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # a socket file nobody listens on, as a crashed server leaves it
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(sock))
    async with serving(sock) as (way, _):
        mode = os.stat(sock).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        reader, writer = await asyncio.open_unix_connection(str(sock))  # the new one listens
        writer.write(b"hello nfsd.export\n")
        await until(lambda: way.daemons == 1, "a raw daemon's hello")
        writer.close()
        await until(lambda: way.daemons == 0, "the raw daemon gone")
    assert not sock.exists()


# ------------------------------------------------------------------ answers


async def test_a_daemon_answers_from_its_table_for_the_caches_of_its_hello(
        sock: Path, tmp_path: Path) -> None:
    log = tmp_path / "received"
    async with serving(sock) as (way, sc):
        assert not way.ready("nfsd.export") and way.daemons == 0
        async with upcalld(sock, "--hello", "nfsd.export", "auth.unix.ip", log=log) as proc:
            await connected(way, proc)
            assert way.ready("nfsd.export") and way.ready("auth.unix.ip")
            assert not way.ready("nfsd.fh") and not way.ready("auth.unix.gid")
            assert fsid(await sc.export.get(KEY, "c1")) == 1
            assert fsid(await sc.export.get(L.ExportKey("127.0.0.1", "/srv/b"), "c1")) == 2
            other = await sc.export.get(L.ExportKey("127.0.0.1", "/srv/x"), "c1")
            assert other.negative  # not in the daemon's table
            assert lines(log) == ["nfsd.export 127.0.0.1 /srv/a", "nfsd.export 127.0.0.1 /srv/b",
                                  "nfsd.export 127.0.0.1 /srv/x"]
            assert way.stats["requests"] == 3 and way.stats["replies"] == 3
            assert way.outstanding() == 0
            assert sc.status()["nfsd.export"]["upcall_answered_daemon"] == 3


async def test_with_no_daemon_connected_the_next_way_answers(sock: Path, tmp_path: Path) -> None:
    async with serving(sock, command(tmp_path)) as (way, sc):
        assert fsid(await sc.export.get(KEY, "c1")) == COMMAND_FSID
        status = sc.status()["nfsd.export"]
        assert status["upcall_sent_command"] == 1 and "upcall_sent_daemon" not in status
        async with upcalld(sock) as proc:
            await connected(way, proc)
            assert fsid(await sc.export.get(L.ExportKey("127.0.0.1", "/srv/b"), "c1")) == 2
            assert sc.status()["nfsd.export"]["upcall_sent_daemon"] == 1


async def test_requests_answered_out_of_order_land_on_their_keys(
        sock: Path, tmp_path: Path) -> None:
    log = tmp_path / "received"
    paths = [f"/srv/{i}" for i in range(5)]
    async with serving(sock, wait=30) as (way, sc):
        async with upcalld(sock, "--reverse", "5", log=log) as proc:
            await connected(way, proc)
            got = await asyncio.gather(*(sc.export.get(L.ExportKey("127.0.0.1", p), "c1")
                                         for p in paths))
            assert [fsid(e) for e in got] == [FSID[p] for p in paths]
            assert lines(log) == [f"nfsd.export 127.0.0.1 {p}" for p in paths]  # asked in order
            assert way.stats["replies"] == 5 and way.stats["unasked"] == 0
            assert way.outstanding() == 0


# ------------------------------------------------------------------ hostile daemons


@pytest.mark.parametrize("fallback", [True, False], ids=["next way", "no next way"])
async def test_garbage_replies_are_refused_and_the_connection_kept(
        sock: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, fallback: bool) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(sock, *([command(tmp_path)] if fallback else []), timeout=0.5) as (way, sc):
        async with upcalld(sock, "--garbage") as proc:
            await connected(way, proc)
            if fallback:
                assert fsid(await sc.export.get(KEY, "c1")) == COMMAND_FSID
            else:
                with pytest.raises(CacheDelay):
                    await sc.export.get(KEY, "c1")
                assert sc.export.cache.state(KEY) is State.MISSING  # asked again next time
            assert way.stats["unasked"] == 1 and way.stats["timeouts"] == 1
            assert "not asked of it refused" in caplog.text
            assert way.daemons == 1 and proc.poll() is None and way.ready("nfsd.export")


async def test_an_unsolicited_reply_is_refused_and_the_asked_key_answered(
        sock: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(sock) as (way, sc):
        async with upcalld(sock, "--unsolicited") as proc:
            await connected(way, proc)
            assert fsid(await sc.export.get(KEY, "c1")) == 1
            assert way.stats["unasked"] == 1 and way.stats["replies"] == 1
            assert "/unasked" in caplog.text
            assert sc.export.cache.state(L.ExportKey("unasked.example", "/unasked")) \
                is State.MISSING
            assert way.daemons == 1


async def test_a_hung_daemons_request_is_lost_after_the_timeout(
        sock: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    log = tmp_path / "received"
    async with serving(sock, command(tmp_path), timeout=0.5) as (way, sc):
        async with upcalld(sock, "--hang", log=log) as proc:
            await connected(way, proc)
            assert fsid(await sc.export.get(KEY, "c1")) == COMMAND_FSID
            assert way.stats["timeouts"] == 1 and way.outstanding() == 0
            assert "no answer within 0.5 s" in caplog.text
            await until(lambda: len(lines(log)) == 1, "the daemon's log")
            assert lines(log) == ["nfsd.export 127.0.0.1 /srv/a"]  # it was asked, never answered
            assert way.daemons == 1 and proc.poll() is None
            assert sc.status()["nfsd.export"]["upcall_fallbacks"] == 1


async def test_a_daemon_that_disconnects_loses_its_requests_at_once(
        sock: Path, tmp_path: Path) -> None:
    # the way's timeout longer than the wait: only the disconnect can answer
    async with serving(sock, command(tmp_path), timeout=30, wait=5) as (way, sc):
        async with upcalld(sock, "--disconnect-after", "1") as proc:
            await connected(way, proc)
            assert fsid(await sc.export.get(KEY, "c1")) == COMMAND_FSID
            assert way.stats["lost_on_disconnect"] == 1 and way.stats["timeouts"] == 0
            assert await exited(proc) == 0
            assert way.daemons == 0 and not way.ready("nfsd.export")


async def test_an_overlong_line_closes_the_connection(
        sock: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(sock) as (way, _):
        async with upcalld(sock, "--overlong") as proc:
            await exited(proc)  # the server closed the connection (EOF, or a reset: unread data)
            assert way.stats["overlong"] == 1 and way.daemons == 0
            assert "over 32768 bytes: closed" in caplog.text


@pytest.mark.parametrize("flags, logged", [
    (["--no-hello"], "first line is not hello"),
    (["--hello", "nfsd.bogus"], "hello names no known cache"),
    (["--hello"], "hello names no known cache"),
], ids=["no hello", "unknown cache", "empty hello"])
async def test_a_daemon_without_a_good_hello_is_closed(
        sock: Path, caplog: pytest.LogCaptureFixture, flags: list[str], logged: str) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(sock) as (way, _):
        async with upcalld(sock, *flags) as proc:
            assert await exited(proc) == 0
            assert way.stats["no_hello"] == 1 and way.daemons == 0
            assert not way.ready("nfsd.export")
            assert logged in caplog.text


async def test_unknown_caches_in_a_hello_are_ignored(
        sock: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(sock) as (way, sc):
        async with upcalld(sock, "--hello", "nfsd.bogus", "nfsd.export") as proc:
            await connected(way, proc)
            assert "unknown caches ignored: nfsd.bogus" in caplog.text
            assert way.ready("nfsd.export") and not way.ready("nfsd.fh")
            assert fsid(await sc.export.get(KEY, "c1")) == 1


async def test_a_daemon_silent_past_the_hello_timeout_is_closed(sock: Path) -> None:
    async with serving(sock, hello_timeout=0.3) as (way, _):
        reader, writer = await asyncio.open_unix_connection(str(sock))
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed by the server
        writer.close()
        assert way.stats["no_hello"] == 1 and way.daemons == 0


async def test_one_daemon_too_many_is_refused(
        sock: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with serving(sock, max_daemons=2) as (way, sc):
        async with upcalld(sock) as first:
            await connected(way, first)
            async with upcalld(sock) as second:
                await connected(way, second, 2)
                async with upcalld(sock) as third:
                    await exited(third)  # closed with its hello unread: EOF or a reset
                assert way.stats["refused_too_many"] == 1 and way.daemons == 2
                assert "2 daemons already connected" in caplog.text
                assert fsid(await sc.export.get(KEY, "c1")) == 1  # the two still answer
                assert first.poll() is None and second.poll() is None


# ------------------------------------------------------------------ a raw daemon


async def test_a_raw_daemons_bad_replies_are_refused_and_the_next_way_answers(
        sock: Path, tmp_path: Path) -> None:
    async with serving(sock, command(tmp_path), timeout=30, wait=30) as (way, sc):
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b"hello nfsd.export\n")
        await until(lambda: way.daemons == 1, "the raw daemon's hello")
        task = asyncio.ensure_future(sc.export.get(KEY, "c1"))
        async with asyncio.timeout(10):
            assert await reader.readline() == b"nfsd.export 127.0.0.1 /srv/a\n"
        writer.write(b"auth.unix.gid 0 4102444800 0\n"  # a cache it said no hello for
                     b"nfsd.export 127.0.0.1 \\xZZ 4102444800 0\n"  # not words
                     b"nfsd.export 127.0.0.1 /srv/a 4102444800 not a number\n")  # the key's
        assert fsid(await task) == COMMAND_FSID  # refused by the channel: the next way, at once
        assert way.stats["unknown_cache"] == 1 and way.stats["malformed"] == 1
        assert way.stats["replies"] == 1 and way.stats["timeouts"] == 0
        assert sc.status()["nfsd.export"]["upcall_refused_daemon"] == 1
        writer.write(b"nfsd.export 127.0.0.1 /srv/a 4102444800 0 0 0 9\n")  # asked no more
        await until(lambda: way.stats["unasked"] == 1, "the late reply refused")
        assert fsid(await sc.export.get(KEY, "c1")) == COMMAND_FSID
        assert way.daemons == 1  # all through, the connection kept
        writer.write(b"nfsd.export 127.0.0.1 /srv/a")  # and gone in the middle of a line
        writer.close()
        await until(lambda: way.daemons == 0, "the raw daemon gone")


async def test_a_late_reply_after_the_timeout_is_refused_as_unasked(sock: Path) -> None:
    async with serving(sock, timeout=0.3) as (way, _):
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b"hello nfsd.export\n")
        await until(lambda: way.daemons == 1, "the raw daemon's hello")
        answered: list[bytes] = []
        lost: list[str] = []
        way.send("nfsd.export", b"127.0.0.1 /srv/a\n", answered.append, lost.append)
        async with asyncio.timeout(10):
            assert await reader.readline() == b"nfsd.export 127.0.0.1 /srv/a\n"
        await until(lambda: bool(lost), "the request lost")
        writer.write(b"nfsd.export 127.0.0.1 /srv/a 4102444800 0 0 0 1\n")
        await until(lambda: way.stats["unasked"] == 1, "the late reply refused")
        assert answered == [] and len(lost) == 1 and way.stats["timeouts"] == 1
        writer.close()


# ------------------------------------------------------------------ bounds and close


async def test_a_daemon_with_max_outstanding_requests_is_not_ready(
        sock: Path, tmp_path: Path) -> None:
    log = tmp_path / "received"
    async with serving(sock, command(tmp_path), timeout=2.0, max_outstanding=2,
                       wait=30) as (way, sc):
        async with upcalld(sock, "--hang", log=log) as proc:
            await connected(way, proc)
            keys = [L.ExportKey("127.0.0.1", f"/srv/{i}") for i in range(3)]
            tasks = [asyncio.ensure_future(sc.export.get(k, "c1")) for k in keys]
            assert fsid(await tasks[2]) == COMMAND_FSID  # the daemon had no room for it
            assert way.outstanding() == 2 and not way.ready("nfsd.export")
            status = sc.status()["nfsd.export"]
            assert status["upcall_sent_daemon"] == 2 and status["upcall_sent_command"] == 1
            assert [fsid(await t) for t in tasks[:2]] == [COMMAND_FSID] * 2  # timed out
            assert way.stats["timeouts"] == 2 and way.ready("nfsd.export")
            await until(lambda: len(lines(log)) == 2, "the daemon's log")
            await sc.close()
            assert await exited(proc) == 0
            assert lines(log) == ["nfsd.export 127.0.0.1 /srv/0", "nfsd.export 127.0.0.1 /srv/1"]


async def test_close_loses_outstanding_requests_and_the_daemon_sees_eof(
        sock: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    log = tmp_path / "received"
    async with serving(sock, timeout=30, wait=30) as (way, sc):
        async with upcalld(sock, "--hang", log=log) as proc:
            await connected(way, proc)
            keys = [L.ExportKey("127.0.0.1", f"/srv/{i}") for i in range(2)]
            tasks = [asyncio.ensure_future(sc.export.get(k, "c1")) for k in keys]
            await until(lambda: len(lines(log)) == 2, "the requests at the daemon")
            assert way.outstanding() == 2
            await sc.close()
            for task in tasks:
                with pytest.raises(CacheDelay):  # lost, and no next way
                    await task
            assert way.stats["lost_on_disconnect"] == 2 and way.outstanding() == 0
            # the connection ends quietly: no error from the event loop about its task
            assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
            assert await exited(proc) == 0
            assert not sock.exists() and not way.ready("nfsd.export") and way.daemons == 0
            lost: list[str] = []
            way.send("nfsd.export", b"127.0.0.1 /srv/a\n", lambda line: None, lost.append)
            assert lost == []  # never from inside send
            await asyncio.sleep(0)
            assert lost == ["no daemon connected for nfsd.export"]


def peer_closed(client: socket.socket) -> bool:
    try:
        return client.recv(100) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("turns", range(8))
async def test_a_connection_accepted_just_before_close_is_not_served(
        sock: Path, caplog: pytest.LogCaptureFixture, turns: int) -> None:
    """Whatever the loop turns between a connect and close(), a connection whose task starts
    after close() serves no daemon: it is closed, and close() leaves no daemon connected."""
    caplog.set_level(logging.WARNING)
    async with serving(sock, hello_timeout=30) as (way, _):
        client = socket.socket(socket.AF_UNIX)
        try:
            client.connect(str(sock))
            client.setblocking(False)
            for _ in range(turns):
                await asyncio.sleep(0)
            await way.close()
            with contextlib.suppress(OSError):
                client.send(b"hello nfsd.export\n")

            def closed() -> bool:
                # asyncio 3.11 drops a connection whose accept ends after the server closed
                # without closing its socket: the collector does
                gc.collect()
                return peer_closed(client)

            await until(closed, "the connection closed")
            assert way.daemons == 0 and not way.ready("nfsd.export") and way.stats["requests"] == 0
            assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        finally:
            client.close()
