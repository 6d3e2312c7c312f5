"""Sockets from outside: sd_listen_fds(3) parsing and checks (pynfsd/rpc/listeners.py), and the
transport's listeners added and removed at run time, with their bound."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from pynfsd.admin import AdminCore
from pynfsd.rpc.auth import AuthRegistry
from pynfsd.rpc.listeners import (
    ListenerError,
    format_hostport,
    listen_env,
    listening_socket,
    parse_hostport,
    passed_sockets,
)
from pynfsd.rpc.server import RpcServer
from pynfsd.rpc.transport import Limits, RpcTcpServer, serve

try:
    import uvloop

    LOOPS: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop,
                                                            uvloop.new_event_loop]
except ImportError:  # pragma: no cover - uvloop is optional
    LOOPS = [asyncio.new_event_loop]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
PID = 4242


@pytest.fixture(params=LOOPS, ids=lambda f: f.__module__.split(".")[0])
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    factory: LoopFactory = request.param
    return factory


# ------------------------------------------------------------------ LISTEN_* variables


def test_no_listen_pid_means_nothing_passed() -> None:
    assert listen_env({"LISTEN_FDS": "2"}, PID) == []
    assert listen_env({}, PID) == []


def test_sockets_meant_for_another_process_are_not_ours() -> None:
    assert listen_env({"LISTEN_PID": str(PID + 1), "LISTEN_FDS": "1"}, PID) == []
    assert listen_env({"LISTEN_PID": "self", "LISTEN_FDS": "1"}, PID) == []


def test_count_and_default_names() -> None:
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "3"}
    assert listen_env(env, PID) == ["unknown"] * 3
    assert listen_env({**env, "LISTEN_FDS": "0"}, PID) == []


def test_names_one_per_socket() -> None:
    env = {"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "nfs:nfs6"}
    assert listen_env(env, PID) == ["nfs", "nfs6"]
    with pytest.raises(ListenerError, match="LISTEN_FDNAMES names 1 sockets, LISTEN_FDS passes 2"):
        listen_env({**env, "LISTEN_FDNAMES": "nfs"}, PID)


@pytest.mark.parametrize("count", ["-1", "two", "", "100000"])
def test_a_bad_count_is_refused(count: str) -> None:
    with pytest.raises(ListenerError, match="LISTEN_FDS="):
        listen_env({"LISTEN_PID": str(PID), "LISTEN_FDS": count}, PID)


def test_the_variables_are_unset_after_reading() -> None:
    env = {"LISTEN_PID": str(PID + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "HOME": "/"}
    assert passed_sockets(env, PID) == []
    assert env == {"HOME": "/"}
    bad = {"LISTEN_PID": str(PID), "LISTEN_FDS": "x"}
    with pytest.raises(ListenerError):
        passed_sockets(bad, PID)
    assert bad == {}


# ------------------------------------------------------------------ the descriptors


@pytest.fixture
def owned() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def _make(owned: list[socket.socket], family: int, kind: int, listen: bool) -> int:
    s = socket.socket(family, kind)
    owned.append(s)
    s.bind("" if family == socket.AF_UNIX else ("127.0.0.1", 0))  # "": an autobound name
    if listen:
        s.listen(1)
    s.set_inheritable(True)
    return s.fileno()


def test_a_listening_tcp_socket_is_taken_close_on_exec(owned: list[socket.socket]) -> None:
    fd = _make(owned, socket.AF_INET, socket.SOCK_STREAM, True)
    sock = listening_socket(fd)
    assert sock.fileno() == fd and not os.get_inheritable(fd)
    assert not sock.getblocking()
    sock.detach()  # `owned` closes it


def test_a_non_socket_is_refused() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ListenerError, match=f"passed descriptor {r} is not a socket"):
            listening_socket(r)
        os.fstat(r)  # still open: not ours to close
    finally:
        os.close(r)
        os.close(w)


def test_a_closed_descriptor_is_refused() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(ListenerError, match="not a socket"):
        listening_socket(r)


@pytest.mark.parametrize(("family", "kind", "listen", "why"), [
    (socket.AF_INET, socket.SOCK_STREAM, False, "a TCP socket that is not listening"),
    (socket.AF_INET, socket.SOCK_DGRAM, False, "not a stream"),
    (socket.AF_UNIX, socket.SOCK_STREAM, True, "family AF_UNIX, not IPv4 or IPv6"),
])
def test_other_sockets_are_refused(owned: list[socket.socket], family: int, kind: int,
                                   listen: bool, why: str) -> None:
    fd = _make(owned, family, kind, listen)
    with pytest.raises(ListenerError, match=why):
        listening_socket(fd)
    assert owned[0].fileno() == fd  # left open


# ------------------------------------------------------------------ ADDR:PORT


def test_parse_hostport() -> None:
    assert parse_hostport("0.0.0.0:2049") == (socket.AF_INET, "0.0.0.0", 2049)
    assert parse_hostport("[::1]:0") == (socket.AF_INET6, "::1", 0)
    assert parse_hostport(" [::]:2050 ") == (socket.AF_INET6, "::", 2050)
    assert format_hostport("::1", 5) == "[::1]:5" and format_hostport("10.0.0.1", 5) == "10.0.0.1:5"


@pytest.mark.parametrize(("text", "why"), [
    ("127.0.0.1", "expected ADDR:PORT"),
    ("127.0.0.1:70000", "expected ADDR:PORT"),
    ("nfs.example.com:2049", "not a numeric"),
    ("::1:2049", "in brackets"),
    (":2049", "nothing is not a numeric"),
])
def test_bad_hostport(text: str, why: str) -> None:
    with pytest.raises(ListenerError, match=why):
        parse_hostport(text)


# ------------------------------------------------------------------ the transport


def _rpc() -> RpcServer:
    return RpcServer(AuthRegistry.default())


async def _connects(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return False
    writer.close()
    return True


async def test_add_and_remove_a_listener(loop_factory: LoopFactory) -> None:
    async with await serve(_rpc(), "127.0.0.1", 0) as server:
        added = await server.add_listener("127.0.0.1:0")
        port = added.address[1]
        assert added.origin == "added" and [x.origin for x in server.listeners] == ["--bind", "added"]
        _, kept = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: server.connection_count == 1)
        assert server.remove_listener(f"127.0.0.1:{port}") is added
        assert not await _connects(port)
        assert server.connection_count == 1 and not kept.is_closing()  # still connected
        assert added.accepted == 1
        with pytest.raises(ListenerError, match=f"not listening on 127.0.0.1:{port} "
                           rf"\(listening on: 127.0.0.1:{server.port}\)"):
            server.remove_listener(f"127.0.0.1:{port}")
        kept.close()


async def test_add_refuses_duplicates_and_addresses_in_use(loop_factory: LoopFactory) -> None:
    async with await serve(_rpc(), "127.0.0.1", 0) as server:
        with pytest.raises(ListenerError, match=f"already listening on 127.0.0.1:{server.port}"):
            await server.add_listener(f"127.0.0.1:{server.port}")
        other = socket.create_server(("127.0.0.1", 0))
        try:
            with pytest.raises(ListenerError, match="Address already in use"):
                await server.add_listener(f"127.0.0.1:{other.getsockname()[1]}")
        finally:
            other.close()
        with pytest.raises(ListenerError, match="Cannot assign requested address"):
            await server.add_listener("192.0.2.1:0")  # TEST-NET-1: not an address of this host
        assert len(server.listeners) == 1


async def test_listeners_are_bounded(loop_factory: LoopFactory) -> None:
    limits = Limits(max_listeners=3)
    async with await serve(_rpc(), "127.0.0.1", 0, limits=limits) as server:
        for _ in range(2):
            await server.add_listener("127.0.0.1:0")
        with pytest.raises(ListenerError, match=r"the most --max-listeners allows \(3\)"):
            await server.add_listener("127.0.0.1:0")
        assert len(server.listeners) == 3 and all(await asyncio.gather(
            *(_connects(x.address[1]) for x in server.listeners)))


async def test_more_sockets_at_start_than_allowed_are_closed(loop_factory: LoopFactory) -> None:
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    server = RpcTcpServer(_rpc(), Limits(max_listeners=2))
    with pytest.raises(ListenerError, match="3 listening sockets, more than --max-listeners 2"):
        await server._listen([(s, "systemd fd 3 (unknown)") for s in socks])
    assert all(s.fileno() == -1 for s in socks)


async def until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.002)


# ------------------------------------------------------------------ the control socket's requests


async def _ask(core: AdminCore, request: dict[str, object]) -> dict[str, object]:
    reply: dict[str, object] = json.loads(await core.answer(json.dumps(request).encode() + b"\n"))
    return reply


async def test_listen_requests(loop_factory: LoopFactory) -> None:
    async with await serve(_rpc(), "127.0.0.1", 0) as server:
        core = AdminCore(cast(Any, None), listeners=server)  # listen needs no NFS server
        (first,) = (await _ask(core, {"cmd": "listen"}))["result"]  # type: ignore[misc]
        assert first == {"address": "127.0.0.1", "port": server.port, "origin": "--bind",
                         "listen": f"127.0.0.1:{server.port}", "accepted": 0}
        added = await _ask(core, {"cmd": "listen", "action": "add", "address": "127.0.0.1:0"})
        port = added["result"]["port"]  # type: ignore[index]
        assert await _connects(port)
        gone = await _ask(core, {"cmd": "listen", "action": "remove",
                                 "address": f"127.0.0.1:{port}"})
        assert gone["ok"] and not await _connects(port)
        for bad, why in [({"action": "add", "address": "host:1"}, "not a numeric"),
                         ({"action": "remove", "address": f"127.0.0.1:{port}"}, "not listening"),
                         ({"action": "add"}, "add/remove with an address"),
                         ({"action": "drop", "address": "127.0.0.1:1"}, "add/remove")]:
            reply = await _ask(core, {"cmd": "listen", **bad})
            assert not reply["ok"] and why in str(reply["error"]), reply
        sync = json.loads(core.handle_line(b'{"cmd": "listen", "action": "add", '
                                           b'"address": "127.0.0.1:0"}\n'))
        assert sync == {"ok": False, "error": "this request needs the running server"}
        assert len(json.loads(core.handle_line(b'{"cmd": "listen"}\n'))["result"]) == 1
