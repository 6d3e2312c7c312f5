"""Loopback integration: the TCP transport, the dispatcher and the client together."""

from __future__ import annotations

import asyncio
import random
import resource
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from pynfsd.gen import rpc as R
from pynfsd.rpc.auth import AuthRegistry
from pynfsd.rpc.client import (
    AuthRejected,
    AuthSysCred,
    ConnectionClosed,
    GarbageArgsError,
    ProcUnavail,
    ProgMismatch,
    ProgUnavail,
    RpcClient,
    RpcMismatch,
    SystemErr,
    decode_reply,
    encode_call,
)
from pynfsd.rpc.errors import GarbageArgs
from pynfsd.rpc.record import DEFAULT_MAX_EMPTY_FRAGMENTS, marker
from pynfsd.rpc.server import RpcCall, RpcServer
from pynfsd.rpc.transport import (
    Limits,
    RpcTcpServer,
    default_max_connections,
    fd_limit,
    install_event_loop,
    serve,
)
from tests.clock import ManualClock

PROG = 0x20000099
CRED = AuthSysCred(1000, 1000, (1000, 10), "tester")

try:
    import uvloop

    LOOPS: list[Callable[[], asyncio.AbstractEventLoop]] = [
        asyncio.new_event_loop,
        uvloop.new_event_loop,
    ]
except ImportError:  # pragma: no cover - uvloop is optional
    LOOPS = [asyncio.new_event_loop]


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@pytest.fixture(params=LOOPS, ids=lambda f: f.__module__.split(".")[0])
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    """Each async test here runs on both loops (tests/conftest.py reads this fixture)."""
    factory: LoopFactory = request.param
    return factory


class Toy:
    """prog 0x20000099: 1 echo, 2 wait for the gate, 3 open the gate, 4 sleep, 5 big, 6 bad."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.active = 0
        self.max_active = 0
        self.calls = 0
        self.peers: list[tuple[str, int]] = []

    def server(self) -> RpcServer:
        rpc = RpcServer(AuthRegistry.default())
        procs: dict[int, Callable[[RpcCall], Awaitable[bytes]]] = {
            1: self.echo, 2: self.wait, 3: self.open, 4: self.sleep, 5: self.big, 6: self.bad,
            7: self.crash,
        }
        rpc.register(PROG, 1, procs)
        rpc.register(PROG, 2, procs)
        return rpc

    async def echo(self, call: RpcCall) -> bytes:
        self.calls += 1
        self.peers.append(call.peer)
        return bytes(call.args)

    async def wait(self, call: RpcCall) -> bytes:
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        await self.gate.wait()
        self.active -= 1
        return b"waited!!"

    async def open(self, call: RpcCall) -> bytes:
        self.gate.set()
        return b""

    async def sleep(self, call: RpcCall) -> bytes:
        (ms,) = struct.unpack(">I", call.args[:4])
        await asyncio.sleep(ms / 1000)
        return bytes(call.args)

    async def big(self, call: RpcCall) -> bytes:
        self.calls += 1
        return b"\xab" * (256 << 10)

    async def bad(self, call: RpcCall) -> bytes:
        raise GarbageArgs()

    async def crash(self, call: RpcCall) -> bytes:
        raise KeyError("crash")


async def started(toy: Toy, **kw: Any) -> RpcTcpServer:
    return await serve(toy.server(), "127.0.0.1", 0, **kw)


async def test_concurrent_calls_out_of_order(loop_factory: LoopFactory) -> None:
    toy = Toy()
    async with await started(toy) as server:
        client = await RpcClient.connect("127.0.0.1", server.port, cred=CRED)
        waiting = asyncio.ensure_future(client.call(PROG, 1, 2))
        while toy.active == 0:
            await asyncio.sleep(0.001)
        assert await client.call(PROG, 1, 1, b"next") == b"next"  # overtakes the first
        assert not waiting.done() and not toy.gate.is_set()
        assert await client.call(PROG, 1, 3) == b""
        assert await waiting == b"waited!!"
        rng = random.Random(7)
        args = [struct.pack(">II", rng.randrange(5), i) for i in range(300)]
        results = await asyncio.gather(*(client.call(PROG, 1, 4, a) for a in args))
        assert results == args
        client.close()


async def test_every_rejection_over_tcp(loop_factory: LoopFactory) -> None:
    async with await started(Toy()) as server:
        c = await RpcClient.connect("127.0.0.1", server.port, cred=CRED)
        assert await c.call(PROG, 1, 0) == b""
        with pytest.raises(ProgUnavail):
            await c.call(PROG + 1, 1, 0)
        with pytest.raises(ProgMismatch) as mismatch:
            await c.call(PROG, 9, 0)
        assert (mismatch.value.low, mismatch.value.high) == (1, 2)
        with pytest.raises(ProcUnavail):
            await c.call(PROG, 1, 42)
        with pytest.raises(GarbageArgsError):
            await c.call(PROG, 1, 6)
        with pytest.raises(SystemErr):
            await c.call(PROG, 1, 7)
        with pytest.raises(AuthRejected) as auth:
            await c.call(PROG, 1, 1, cred=R.opaque_auth(R.AUTH_SYS, b"short"))
        assert auth.value.auth_stat == R.AUTH_BADCRED
        xid = c.next_xid()
        reply = await c.call_record(xid, encode_call(xid, PROG, 1, 0, rpcvers=1))
        with pytest.raises(RpcMismatch):
            decode_reply(reply)
        assert await c.call(PROG, 1, 1, b"ok!!") == b"ok!!"  # connection still fine
        c.close()


async def test_multi_fragment_call(loop_factory: LoopFactory) -> None:
    async with await started(Toy()) as server:
        async with await RpcClient.connect("127.0.0.1", server.port) as c:
            c.max_fragment = 50
            payload = bytes(range(256)) * 4
            assert await c.call(PROG, 1, 1, payload) == payload  # 22 fragments
            for size in (5, 1):  # any layout within the record cap
                c.max_fragment = size
                assert await c.call(PROG, 1, 1, payload) == payload
            c.send_raw(marker(0, last=False) * (DEFAULT_MAX_EMPTY_FRAGMENTS + 1))
            await c.wait_closed()  # endless empty fragments: the server hangs up
        assert c.is_closed


def limited(toy: Toy, clock: ManualClock, **kw: Any) -> Coroutine[Any, Any, RpcTcpServer]:
    return serve(toy.server(), "127.0.0.1", 0, limits=Limits(**kw), clock=clock)


async def until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.002)


async def test_connection_cap_refuses_new_keeps_established(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with await limited(Toy(), ManualClock(), max_connections=2) as server:
        a = await RpcClient.connect("127.0.0.1", server.port)
        b = await RpcClient.connect("127.0.0.1", server.port)
        assert await a.call(PROG, 1, 0) == b"" and await b.call(PROG, 1, 0) == b""
        for _ in range(3):
            c = await RpcClient.connect("127.0.0.1", server.port)
            with pytest.raises(ConnectionClosed):
                await c.call(PROG, 1, 0)
        assert server.table.refused == 3 and len(server.table) == 2
        assert await a.call(PROG, 1, 1, b"still") == b"still"
        a.close()
        await until(lambda: len(server.table) == 1)
        d = await RpcClient.connect("127.0.0.1", server.port)  # room again
        assert await d.call(PROG, 1, 0) == b""
        b.close()
        d.close()
    refusals = [r for r in caplog.records if "refusing connection" in r.getMessage()]
    assert len(refusals) == 1  # rate-limited: one line, not one per refusal


async def test_idle_connection_closed_busy_one_kept(loop_factory: LoopFactory) -> None:
    toy, clock = Toy(), ManualClock()
    async with await limited(toy, clock, idle_timeout=360) as server:
        idle = await RpcClient.connect("127.0.0.1", server.port)
        busy = await RpcClient.connect("127.0.0.1", server.port)
        assert await idle.call(PROG, 1, 0) == b""
        waiting = asyncio.ensure_future(busy.call(PROG, 1, 2))
        await until(lambda: toy.active == 1)
        clock.now += 359
        assert server.sweep() == 0
        clock.now += 1
        assert server.sweep() == 1
        await idle.wait_closed()
        toy.gate.set()
        assert await waiting == b"waited!!"  # a call in progress is not idle
        assert await busy.call(PROG, 1, 0) == b""
        busy.close()


async def test_slow_sender_is_idle(loop_factory: LoopFactory) -> None:
    clock = ManualClock()
    async with await limited(Toy(), clock, idle_timeout=10) as server:
        slow = await RpcClient.connect("127.0.0.1", server.port)
        slow.send_raw(marker(100))
        start = clock.now
        for _ in range(30):  # one byte a second never completes a record
            slow.send_raw(b"x")
            await until(lambda: server.table.partial_held == int(clock.now - start) + 1)
            clock.now += 1
            if server.sweep():
                break
        await slow.wait_closed()
        assert server.table.idle_closed == 1 and clock.now - start == 10


async def test_partial_record_budget_closes_oldest_record(
    loop_factory: LoopFactory,
) -> None:
    clock = ManualClock()
    async with await limited(Toy(), clock, max_record=4096, partial_budget=8192) as server:
        slow = [await RpcClient.connect("127.0.0.1", server.port) for _ in range(3)]
        for held, c in zip((3000, 6000), slow, strict=False):
            c.send_raw(marker(4000) + b"p" * 3000)
            await until(lambda: server.table.partial_held == held)  # noqa: B023
        slow[2].send_raw(marker(4000) + b"p" * 3000)
        await slow[0].wait_closed()  # over the budget: the oldest partial record went
        assert server.table.evicted == 1 and server.table.partial_held == 6000
        honest = await RpcClient.connect("127.0.0.1", server.port)
        assert await honest.call(PROG, 1, 1, b"h" * 3500) == b"h" * 3500
        slow[1].send_raw(b"q" * 1000)  # completes: served, budget freed
        await until(lambda: server.table.partial_held == 3000)
        assert not slow[1].is_closed and not slow[2].is_closed
        for c in (*slow[1:], honest):
            c.close()


async def test_oversized_marker_closes_only_that_connection(
    loop_factory: LoopFactory,
) -> None:
    async with await started(Toy(), max_record=4096) as server:
        good = await RpcClient.connect("127.0.0.1", server.port)
        bad = await RpcClient.connect("127.0.0.1", server.port)
        bad.send_raw(marker(0x7FFFFFF0))
        await bad.wait_closed()
        with pytest.raises(ConnectionClosed):
            await bad.call(PROG, 1, 0)
        assert await good.call(PROG, 1, 1, b"\0" * 4000) == b"\0" * 4000
        good.close()


async def test_outstanding_cap_pauses_reading(loop_factory: LoopFactory) -> None:
    toy = Toy()
    async with await started(toy, max_outstanding_per_conn=3) as server:
        c = await RpcClient.connect("127.0.0.1", server.port)
        calls = [asyncio.ensure_future(c.call(PROG, 1, 2)) for _ in range(20)]
        while toy.active < 3:
            await asyncio.sleep(0.001)
        other = await RpcClient.connect("127.0.0.1", server.port)
        assert await other.call(PROG, 1, 3) == b""  # opens the gate from another connection
        assert await asyncio.gather(*calls) == [b"waited!!"] * 20
        assert toy.max_active <= 3
        c.close()
        other.close()


async def test_write_backpressure(loop_factory: LoopFactory) -> None:
    toy = Toy()
    async with await started(toy, write_high=64 << 10, write_low=16 << 10) as server:
        c = await RpcClient.connect("127.0.0.1", server.port)
        assert c._transport is not None
        c._transport.pause_reading()  # a client that stops reading its replies
        calls = [asyncio.ensure_future(c.call(PROG, 1, 5)) for _ in range(60)]
        conn = next(iter(server._connections))
        while not conn.read_paused:
            await asyncio.sleep(0.005)
        assert conn.write_paused and toy.calls < 60
        c._transport.resume_reading()
        replies = await asyncio.gather(*calls)
        assert all(len(r) == 256 << 10 for r in replies) and toy.calls == 60
        c.close()


async def test_ipv4_and_ipv6_on_one_port(loop_factory: LoopFactory) -> None:
    toy = Toy()
    async with await serve(toy.server(), ["127.0.0.1", "::1"], 0) as server:
        families = {s.family for s in server.sockets}
        assert families == {socket.AF_INET, socket.AF_INET6}
        assert len({port for _, port in server.addresses}) == 1
        for host in ("127.0.0.1", "::1"):
            c = await RpcClient.connect(host, server.port)
            assert await c.call(PROG, 1, 1, b"abcd") == b"abcd"
            c.close()
        assert [peer[0] for peer in toy.peers] == ["127.0.0.1", "::1"]


async def test_all_addresses_and_lone_v6_wildcard(loop_factory: LoopFactory) -> None:
    toy = Toy()
    async with await serve(toy.server(), None, 0) as server:
        hosts = {host for host, _ in server.addresses}
        assert "0.0.0.0" in hosts and len({p for _, p in server.addresses}) == 1
        c = await RpcClient.connect("127.0.0.1", server.port)
        assert await c.call(PROG, 1, 1) == b""
        c.close()
    async with await serve(toy.server(), "::", 0) as server:  # dual-stack socket
        c = await RpcClient.connect("127.0.0.1", server.port)
        assert await c.call(PROG, 1, 1) == b""
        c.close()
    assert toy.peers[-1][0] == "127.0.0.1"  # v4-mapped address normalised


def test_install_event_loop() -> None:
    policy = asyncio.get_event_loop_policy()
    try:
        installed = install_event_loop()
        assert installed == (type(asyncio.get_event_loop_policy()).__module__.startswith("uvloop"))
    finally:
        asyncio.set_event_loop_policy(policy)


async def test_server_sockets_disable_nagle(loop_factory: LoopFactory) -> None:
    async with await started(Toy()) as server:
        c = await RpcClient.connect("127.0.0.1", server.port)
        assert await c.call(PROG, 1, 0) == b""
        conn = next(iter(server._connections))
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        c.close()


def test_fd_limit_raises_the_soft_limit_and_the_cap_follows() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert fd_limit() == 256
        assert fd_limit(raise_soft=True) == min(hard, 1 << 20) == fd_limit()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert default_max_connections(20000, 1) == 9616
    assert default_max_connections(20000, 3) == 9104
    assert default_max_connections(1024, 1) == 128 and default_max_connections(256, 1) == 16


def test_limits_must_fit_together() -> None:
    with pytest.raises(ValueError, match="budget"):
        Limits(max_record=1 << 20, partial_budget=(1 << 20) - 1)
    with pytest.raises(ValueError):
        Limits(max_connections=0)
    with pytest.raises(ValueError):
        Limits(idle_timeout=-1)
    assert Limits(idle_timeout=0).idle_timeout == 0  # never


class _Writes:
    """A transport's stand-in that counts the write calls and passes them on."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    def write(self, data: bytes) -> None:
        self.calls += 1
        self.real.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        self.calls += 1
        self.real.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_replies_made_in_one_loop_turn_go_out_in_one_write(loop_factory: LoopFactory) -> None:
    async with await started(Toy()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await until(lambda: len(server._connections) == 1)
        conn = next(iter(server._connections))
        writes = _Writes(conn.transport)
        conn.transport = writes  # type: ignore[assignment]
        calls = [encode_call(xid, PROG, 1, 1, b"%04d" % xid) for xid in range(1, 9)]
        writer.write(b"".join(marker(len(c)) + c for c in calls))  # eight calls, one segment
        got = set()
        for _ in calls:
            size = struct.unpack(">I", await reader.readexactly(4))[0] & 0x7FFFFFFF
            got.add(decode_reply(await reader.readexactly(size))[1])
        assert got == {b"%04d" % xid for xid in range(1, 9)}
        assert writes.calls < len(calls)  # echoes answered in one turn: written together
        writer.close()
