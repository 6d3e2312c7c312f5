"""Fuzz/property tests of the RPC layer: framing, header decoding, dispatch, a live server."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynfsd.gen import rpc as R
from pynfsd.rpc.auth import AuthRegistry
from pynfsd.rpc.client import AuthSysCred, BadReply, RpcError, decode_reply, encode_call
from pynfsd.rpc.errors import GarbageArgs
from pynfsd.rpc.header import BadCall, decode_call
from pynfsd.rpc.record import RecordError, RecordReader, encode_record, marker
from pynfsd.rpc.server import ConnInfo, RpcCall, RpcServer
from pynfsd.rpc.transport import RpcTcpServer, serve
from tests.aio import run

PROG = 0x20000099
MAX_RECORD = 8192
T = TypeVar("T")


async def echo(call: RpcCall) -> bytes:
    return bytes(call.args)


async def one_word(call: RpcCall) -> bytes:
    if len(call.args) != 4:
        raise GarbageArgs()
    return bytes(call.args)


def make_rpc() -> RpcServer:
    rpc = RpcServer(AuthRegistry.default())
    rpc.register(PROG, 1, {1: echo, 2: one_word})
    return rpc


# ---------------------------------------------------------------- strategies

INTERESTING = [0, 1, 2, 3, 4, 6, 16, 17, 255, 256, 399, 400, 401, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]

creds = st.one_of(
    st.just(R.opaque_auth(R.AUTH_NONE, b"")),
    st.builds(
        lambda uid, gids, name: AuthSysCred(uid, uid, tuple(gids), name).opaque_auth(),
        st.integers(0, 2**32 - 1),
        st.lists(st.integers(0, 2**32 - 1), max_size=16),
        st.text(max_size=60),
    ),
    st.builds(lambda body: R.opaque_auth(R.AUTH_SYS, body), st.binary(max_size=400)),
    st.builds(lambda body: R.opaque_auth(R.RPCSEC_GSS, body), st.binary(max_size=40)),
)

calls = st.builds(
    encode_call,
    st.integers(0, 2**32 - 1),
    st.sampled_from([PROG, PROG, PROG, 100003, 0]),
    st.sampled_from([1, 1, 1, 2, 0]),
    st.sampled_from([0, 1, 2, 2, 9]),
    st.binary(max_size=64),
    creds,
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    record = bytearray(draw(calls))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "word", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(record) - 1)))
        if kind == "flip" and record:
            record[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word":
            record[at : at + 4] = struct.pack(">I", draw(st.sampled_from(INTERESTING)))
        elif kind == "cut":
            del record[at:]
        else:
            record[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(record)


records = st.one_of(st.binary(max_size=120), mutated())


# ---------------------------------------------------------------- framing


@given(st.binary(max_size=400), st.lists(st.integers(1, 50), max_size=20))
@settings(max_examples=300)
def test_reader_raises_only_record_error_and_stays_bounded(data: bytes, cuts: list[int]) -> None:
    reader = RecordReader(max_record=64, max_empty_fragments=4)
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            for record in reader.feed(data[pos : pos + cut]):
                assert len(record) <= 64
            pos += cut
            assert reader.buffered <= 64 + 3
    except RecordError:
        pass


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    st.integers(1, 400),
    st.lists(st.integers(1, 97), min_size=1, max_size=30),
)
@settings(max_examples=200)
def test_reader_round_trip_any_fragmentation(
    payloads: list[bytes], fragment: int, cuts: list[int]
) -> None:
    stream = b"".join(encode_record(p, max_fragment=fragment) for p in payloads)
    reader = RecordReader(max_record=300)
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += reader.feed(stream[pos : pos + step])
        pos, i = pos + step, i + 1
    assert out == payloads and reader.buffered == 0


# ---------------------------------------------------------------- header and dispatch


@given(records)
@settings(max_examples=500)
def test_decode_call_raises_only_bad_call(record: bytes) -> None:
    try:
        call = decode_call(record)
    except BadCall:
        return
    assert call.args_offset <= len(record)


@given(records)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_dispatch_always_answers_well_formed(record: bytes) -> None:
    reply = run(make_rpc().handle_record(record, ConnInfo(("127.0.0.1", 1))))
    dropped = len(record) < 4 or record[4:8] == b"\0\0\0\x01"  # no xid, or a REPLY
    if dropped:
        assert reply is None
        return
    assert reply is not None and reply[:4] == record[:4]
    try:
        decode_reply(reply)
    except BadReply:  # pragma: no cover - the failure this test looks for
        raise
    except RpcError:
        pass


# ---------------------------------------------------------------- a live server


class LiveServer:
    """A server on its own event-loop thread, driven with blocking sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: RpcTcpServer = self.run(serve(make_rpc(), "127.0.0.1", 0, max_record=MAX_RECORD))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def inspect(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=30)
        return sock

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            await self.server.wait_closed()

        self.run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = LiveServer()
    yield server
    server.stop()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def recv_record(sock: socket.socket) -> bytes:
    (word,) = struct.unpack(">I", recv_exact(sock, 4))
    assert word & 0x80000000, "the server sends single-fragment records"
    return recv_exact(sock, word & 0x7FFFFFFF)


def ping(sock: socket.socket, xid: int) -> list[bytes]:
    """Send a NULL call; return the replies received up to and including its reply."""
    sock.sendall(encode_record(encode_call(xid, PROG, 1, 0)))
    replies = []
    while True:
        reply = recv_record(sock)
        replies.append(reply)
        if reply[:4] == struct.pack(">I", xid):
            return replies


@given(st.lists(records, min_size=1, max_size=8))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_live_server_survives_random_records(live: LiveServer, batch: list[bytes]) -> None:
    with live.connect() as sock:
        sock.sendall(b"".join(encode_record(r) for r in batch))
        xid = 0xC0FFEE00
        replies = ping(sock, xid)
        assert decode_reply(replies[-1]) == (xid, b"")
        for reply in replies[:-1]:
            try:
                decode_reply(reply)
            except BadReply:  # pragma: no cover
                raise
            except RpcError:
                pass
        expected = sum(1 for r in batch if len(r) >= 4 and r[4:8] != b"\0\0\0\x01")
        assert len(replies) - 1 == expected


@given(st.binary(min_size=1, max_size=200))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_live_server_random_stream_then_canary(live: LiveServer, junk: bytes) -> None:
    with live.connect() as sock:
        sock.sendall(junk)  # arbitrary bytes, markers included; maybe an oversized one
    with live.connect() as canary:
        assert decode_reply(ping(canary, 7)[-1]) == (7, b"")


def test_oversized_marker_closes_only_offender(live: LiveServer) -> None:
    with live.connect() as bystander, live.connect() as offender:
        offender.sendall(marker(MAX_RECORD + 1))
        assert offender.recv(1) == b""  # closed by the server
        assert decode_reply(ping(bystander, 1)[-1]) == (1, b"")
        bystander.sendall(encode_record(encode_call(2, PROG, 1, 2, b"abcd")))
        assert decode_reply(recv_record(bystander)) == (2, b"abcd")


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")  # pragma: no cover


def test_memory_stays_within_caps(live: LiveServer) -> None:
    """Peers holding almost complete maximal records, and peers announcing 2 GiB records."""
    before = rss_kib()
    for _ in range(100):
        with live.connect() as sock:
            sock.sendall(marker(2**31 - 1) + b"\0" * (64 << 10))  # rejected from the marker
    socks = [live.connect() for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(marker(MAX_RECORD) + b"\0" * (MAX_RECORD - 1))

        def buffered() -> list[int]:
            return [conn.reader.buffered for conn in live.server._connections]

        for _ in range(3000):  # wait until every byte has reached the server
            held = live.inspect(buffered)
            if sum(held) >= 50 * (MAX_RECORD - 1):
                break
            live.run(asyncio.sleep(0.01))
        assert sum(held) == 50 * (MAX_RECORD - 1) and max(held) == MAX_RECORD - 1
        with live.connect() as canary:
            assert decode_reply(ping(canary, 3)[-1]) == (3, b"")
        assert rss_kib() - before < 64 * 1024
    finally:
        for sock in socks:
            sock.close()
