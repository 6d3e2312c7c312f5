"""The asyncio skin over the sans-IO RPC core: a TCP server (RFC 5531 §11 record marking).

Theory of operation: each connection owns a `RecordReader`; every complete record becomes its
own task running `RpcServer.handle_call`, so many calls are outstanding at once and replies
go out in completion order: the small replies finished in one turn of the event loop in one
write at its end, a batch reaching `_JOIN_BELOW` bytes at once.  Reading pauses while the transport's write buffer is above its
high-water mark, while `max_outstanding` calls are running, or while decoded records wait
for a slot; it resumes when all three clear.  A record marker announcing more than
`max_record` bytes (or too many empty fragments) aborts that connection only.

Per-connection memory is therefore bounded by roughly: `max_record` (reader) + one read
chunk of queued records + `max_outstanding` calls in progress + `write_high` + a batch of
replies (`_JOIN_BELOW` bytes and one reply).
Across connections, `ConnectionTable` (pynfsd/rpc/connections.py) caps their number, closes
idle ones from one periodic sweep, and keeps the sum of partial records under a budget; this
module only reports to it and closes what it names.  Bytes received and sent are added to the
RPC server's `stats`.  Time comes from the injected `clock`.

Listeners: the server listens on at most `max_listeners` sockets: those bound at start, those
passed in by systemd (pynfsd/rpc/listeners.py) and those added at run time (`add_listener`,
through the control socket).  `remove_listener` stops accepting on one; like a port removed
from knfsd's `/proc/fs/nfsd/portlist`, the connections it accepted are served on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from pynfsd.rpc.connections import Clock, ConnectionTable, sweep_interval
from pynfsd.rpc.listeners import (
    DEFAULT_MAX_LISTENERS,
    ListenerError,
    bind_listener,
    bind_tcp,
    format_hostport,
    parse_hostport,
)
from pynfsd.rpc.record import DEFAULT_MAX_EMPTY_FRAGMENTS, RecordError, RecordReader, marker
from pynfsd.rpc.server import Buffer, ConnInfo, RpcServer

log = logging.getLogger(__name__)

ALL_ADDRESSES = ("0.0.0.0", "::")


def install_event_loop() -> bool:
    """Use uvloop's event loop policy when it is installed; return whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


DEFAULT_MAX_RECORD = (1 << 20) + (64 << 10)
DEFAULT_MAX_OUTSTANDING = 64
DEFAULT_WRITE_HIGH = 4 << 20
DEFAULT_WRITE_LOW = 1 << 20
DEFAULT_IDLE_TIMEOUT = 360.0  # knfsd closes idle TCP connections after about 6 minutes
DEFAULT_PARTIAL_BUDGET = 256 << 20
FD_RESERVE = 256  # descriptors kept for logs, sockets to gssproxy/callbacks' setup, workers
FD_PER_EXPORT = 512  # each export's fd cache: 256 entries, two fds at most
MAX_NOFILE = 1 << 20


def _capped(n: int) -> int:
    return MAX_NOFILE if n == resource.RLIM_INFINITY else min(n, MAX_NOFILE)


def fd_limit(raise_soft: bool = False) -> int:
    """The soft RLIMIT_NOFILE (at most 2**20), first raised to the hard limit if asked."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if raise_soft and _capped(soft) < _capped(hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (_capped(hard), hard))
            return _capped(hard)
        except (ValueError, OSError):
            pass
    return _capped(soft)


def default_max_connections(nofile: int, exports: int = 1) -> int:
    """Half of the descriptors left after the fd caches and a reserve: the other half is
    for each client's callback connection (RFC 7530 §16.33: the server connects to the
    client's callback address, one more descriptor per client)."""
    return max(16, (nofile - FD_RESERVE - FD_PER_EXPORT * exports) // 2)


@dataclass(frozen=True, slots=True)
class Limits:
    max_record: int = DEFAULT_MAX_RECORD
    max_empty_fragments: int = DEFAULT_MAX_EMPTY_FRAGMENTS
    max_outstanding: int = DEFAULT_MAX_OUTSTANDING
    write_high: int = DEFAULT_WRITE_HIGH
    write_low: int = DEFAULT_WRITE_LOW
    max_connections: int = 1024
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # 0: never
    partial_budget: int = DEFAULT_PARTIAL_BUDGET
    max_listeners: int = DEFAULT_MAX_LISTENERS

    def __post_init__(self) -> None:
        if self.partial_budget < self.max_record:
            raise ValueError(f"the partial-record budget ({self.partial_budget} bytes) must hold "
                             f"at least one record of the maximum size ({self.max_record} bytes)")
        if self.max_connections < 1 or self.idle_timeout < 0 or self.max_listeners < 1:
            raise ValueError("max_connections and max_listeners must be >= 1, idle_timeout >= 0")


def normalize_addr(sockaddr: object) -> tuple[str, int]:
    """(ip, port) from a socket address; IPv4-mapped IPv6 addresses become plain IPv4."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return ("", 0)
    host, port = str(sockaddr[0]), int(sockaddr[1])
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:") :]
    return host, port


class _Connection(asyncio.Protocol):
    """One client connection: framing, task per call, flow control."""

    def __init__(self, owner: RpcTcpServer) -> None:
        self.owner = owner
        self.limits = owner.limits
        self.reader = RecordReader(self.limits.max_record, self.limits.max_empty_fragments)
        self.queued: deque[bytes] = deque()
        self.outstanding = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.write_paused = False
        self.read_paused = False
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.info = ConnInfo(("", 0))
        self.replies: list[Buffer] = []  # records made this loop iteration, marker first
        self.reply_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = normalize_addr(transport.get_extra_info("peername"))
        self.info = ConnInfo(peer, normalize_addr(transport.get_extra_info("sockname")))
        if not self.owner.table.admit(self, peer, self.owner.clock()):
            self.abort()
            return
        self.transport.set_write_buffer_limits(high=self.limits.write_high, low=self.limits.write_low)
        _set_nodelay(transport.get_extra_info("socket"))
        self.owner._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.owner.stats.received_bytes += len(data)
        try:
            records = self.reader.feed(data)
        except RecordError as e:
            log.warning("closing connection from %s port %d: %s", *self.info.peer, e)
            self.abort()
            return
        reader = self.reader
        now = self.owner.clock()
        for victim in self.owner.table.received(self, reader.held, reader.in_record, len(records), now):
            victim.abort()
        if self.closed:
            return
        self.queued.extend(records)
        self._pump()

    def _pump(self) -> None:
        while self.queued and self.outstanding < self.limits.max_outstanding and not self.closed:
            self.outstanding += 1
            task = asyncio.get_running_loop().create_task(self._serve(self.queued.popleft()))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self.owner.table.calls(self, self.outstanding + len(self.queued), self.owner.clock())
        self._flow()

    def _flow(self) -> None:
        busy = self.write_paused or bool(self.queued)
        busy = busy or self.outstanding >= self.limits.max_outstanding
        if self.transport is None or self.closed or busy == self.read_paused:
            return
        self.read_paused = busy
        if busy:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    async def _serve(self, record: bytes) -> None:
        try:
            reply = await self.owner.rpc.handle_call(record, self.info)
            if reply is not None and not self.closed:
                self._reply(reply)
        except Exception:
            log.exception("RPC call from %s port %d failed", *self.info.peer)
        finally:
            self.outstanding -= 1
            self._pump()

    def _reply(self, parts: list[Buffer]) -> None:
        """Queue one reply record; the small replies made in one loop iteration go out
        together at its end (`_flush`): one system call and, on loopback, one wake-up of the
        reader for all of them, where a write per reply cost more CPU than making a small
        reply. Once `_JOIN_BELOW` bytes are queued they go out at once."""
        size = sum(len(p) for p in parts)
        if not self.replies:
            asyncio.get_running_loop().call_soon(self._flush)  # one per batch
        self.replies.append(marker(size))
        self.replies.extend(parts)
        self.reply_bytes += size + 4
        if self.reply_bytes >= _JOIN_BELOW:
            self._flush()  # large ones at once: flow control sees them as before

    def _flush(self) -> None:
        parts, size = self.replies, self.reply_bytes
        self.replies, self.reply_bytes = [], 0
        if not parts or self.closed or self.transport is None:
            return
        self.owner.stats.sent_bytes += size
        if size < _JOIN_BELOW:
            self.transport.write(b"".join(parts))  # one buffer: one write call, one segment
        else:
            self.transport.writelines(parts)  # large payloads (READ data) are not copied

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flow()

    def abort(self) -> None:
        self.closed = True  # no more calls start; connection_lost follows
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.queued.clear()
        self.owner._connections.discard(self)
        self.owner.table.remove(self)


def _set_nodelay(sock: object) -> None:
    """Replies are whole records: send each at once instead of waiting on Nagle/delayed ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pass  # not a TCP socket (tests with other transports)


_JOIN_BELOW = 16 << 10


@dataclass(slots=True)
class Listener:
    """One listening socket: its address, where it came from, connections it accepted."""

    address: tuple[str, int]
    origin: str  # "--bind", "systemd fd 3 (name)", "added"
    server: asyncio.AbstractServer | None = None
    accepted: int = 0

    def status(self) -> dict[str, object]:
        host, port = self.address
        return {"address": host, "port": port, "listen": format_hostport(host, port),
                "origin": self.origin, "accepted": self.accepted}


class RpcTcpServer:
    """Listening sockets plus their connections; from `serve()`."""

    def __init__(self, rpc: RpcServer, limits: Limits, clock: Clock = time.monotonic) -> None:
        self.rpc = rpc
        self.stats = rpc.stats  # bytes received and sent
        self.limits = limits
        self.clock = clock
        self.table: ConnectionTable[_Connection] = ConnectionTable(
            limits.max_connections, limits.idle_timeout, limits.partial_budget)
        self._listeners: list[Listener] = []
        self._connections: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def _listen(self, sockets: Sequence[tuple[socket.socket, str]]) -> None:
        """Serve each (socket, origin); ListenerError (all closed) past `max_listeners`."""
        if len(sockets) > self.limits.max_listeners:
            for sock, _ in sockets:
                sock.close()
            raise ListenerError(f"{len(sockets)} listening sockets, more than --max-listeners "
                                f"{self.limits.max_listeners}")
        for sock, origin in sockets:
            await self.add_socket(sock, origin)
        loop = asyncio.get_running_loop()
        if self.limits.idle_timeout:
            self._sweeper = loop.create_task(self._sweep_forever(sweep_interval(self.limits.idle_timeout)))

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self) -> int:
        """Close the connections idle for `idle_timeout`; return how many."""
        idle = self.table.idle(self.clock())
        for conn in idle:
            log.debug("closing idle connection from %s port %d", *conn.info.peer)
            conn.abort()
        return len(idle)

    async def add_socket(self, sock: socket.socket, origin: str) -> Listener:
        """Accept connections on the listening `sock` (closed on ListenerError)."""
        address = normalize_addr(sock.getsockname())
        problem = self._refusal(address)
        if problem:
            sock.close()
            raise ListenerError(problem)
        listener = Listener(address, origin)
        self._listeners.append(listener)
        try:
            listener.server = await asyncio.get_running_loop().create_server(
                lambda: self._accept(listener), sock=sock)
        except BaseException:
            self._listeners.remove(listener)
            sock.close()
            raise
        log.debug("RPC socket on %s port %d (%s)", *address, origin)
        return listener

    def _refusal(self, address: tuple[str, int]) -> str | None:
        if len(self._listeners) >= self.limits.max_listeners:
            return (f"already listening on {len(self._listeners)} addresses, the most "
                    f"--max-listeners allows ({self.limits.max_listeners}); remove one first")
        if any(item.address == address for item in self._listeners):
            return f"already listening on {format_hostport(*address)}"
        return None

    def _accept(self, listener: Listener) -> _Connection:
        listener.accepted += 1
        return _Connection(self)

    async def add_listener(self, text: str) -> Listener:
        """Listen on "ADDR:PORT" (port 0: any free port); ListenerError says why not."""
        family, host, port = parse_hostport(text)
        problem = self._refusal((host, port)) if port else None
        if problem:  # checked before binding, for the clearer message
            raise ListenerError(problem)
        listener = await self.add_socket(bind_listener(family, host, port), "added")
        log.info("listening on %s port %d (added)", *listener.address)
        return listener

    def remove_listener(self, text: str) -> Listener:
        """Stop accepting on "ADDR:PORT"; its connections stay.  ListenerError if not there."""
        _, host, port = parse_hostport(text)
        found = next((item for item in self._listeners if item.address == (host, port)), None)
        if found is None:
            where = ", ".join(format_hostport(*item.address) for item in self._listeners)
            raise ListenerError(f"not listening on {format_hostport(host, port)} "
                                f"(listening on: {where or 'nothing'})")
        self._listeners.remove(found)
        if found.server is not None:
            found.server.close()  # the socket only: its connections are not the server's
        log.info("no longer listening on %s port %d; its connections stay open", *found.address)
        if not self._listeners:
            log.warning("no listening socket left: new clients cannot connect")
        return found

    @property
    def listeners(self) -> list[Listener]:
        return list(self._listeners)

    @property
    def _servers(self) -> list[asyncio.AbstractServer]:
        return [item.server for item in self._listeners if item.server is not None]

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for server in self._servers for s in server.sockets]  # type: ignore[attr-defined]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [normalize_addr(s.getsockname()) for s in self.sockets]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def close(self) -> None:
        """Stop listening, abort every connection and cancel calls in progress."""
        for server in self._servers:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._connections):
            for task in conn.tasks:
                task.cancel()
            conn.abort()

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()
        tasks = [t for conn in list(self._connections) for t in conn.tasks]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> RpcTcpServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


def _resolve(hosts: Sequence[str]) -> list[tuple[socket.AddressFamily, str]]:
    out: list[tuple[socket.AddressFamily, str]] = []
    for host in hosts:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, _, _, _, sockaddr in infos:
            item = (family, str(sockaddr[0]))
            if item not in out:
                out.append(item)
    return out


def bind_sockets(hosts: Sequence[str], port: int, *, optional_v6: bool = False) -> list[socket.socket]:
    """Listening sockets for every address of `hosts`, all on the same port.

    With both IPv4 and IPv6 addresses, IPv6 sockets are IPV6_V6ONLY so they do not collide
    with the IPv4 ones; a lone IPv6 wildcard stays dual-stack.  Port 0 picks one ephemeral
    port for all sockets (retrying if the other family has it taken).
    """
    addrs = _resolve(hosts)
    v6only = any(family == socket.AF_INET for family, _ in addrs)
    for _attempt in range(20):
        try:
            return _bind_all(addrs, port, v6only, optional_v6)
        except OSError as e:
            if port != 0 or e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "could not find a free port for every address")


def _bind_all(
    addrs: list[tuple[socket.AddressFamily, str]], port: int, v6only: bool, optional_v6: bool
) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for family, addr in addrs:
            try:
                sock = bind_tcp(family, addr, port, v6only)
            except OSError as e:
                if not (optional_v6 and family == socket.AF_INET6 and socks):
                    raise
                log.warning("not listening on %s: %s", addr, e)
                continue
            socks.append(sock)
            port = sock.getsockname()[1]
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


async def serve(
    rpc: RpcServer,
    host: str | Sequence[str] | None,
    port: int,
    *,
    max_record: int = DEFAULT_MAX_RECORD,
    max_empty_fragments: int = DEFAULT_MAX_EMPTY_FRAGMENTS,
    max_outstanding_per_conn: int = DEFAULT_MAX_OUTSTANDING,
    write_high: int = DEFAULT_WRITE_HIGH,
    write_low: int = DEFAULT_WRITE_LOW,
    limits: Limits | None = None,
    clock: Clock = time.monotonic,
) -> RpcTcpServer:
    """Listen on `host` (None, "" or "*": every IPv4 and IPv6 address) and serve `rpc`.

    `limits`, when given, replaces the individual limit arguments."""
    wildcard = host in (None, "", "*")
    hosts = ALL_ADDRESSES if wildcard else [host] if isinstance(host, str) else list(host or ())
    if limits is None:
        limits = Limits(max_record, max_empty_fragments, max_outstanding_per_conn, write_high,
                        write_low, max_connections=default_max_connections(fd_limit()))
    return await serve_sockets(rpc, [(s, "--bind") for s in bind_sockets(hosts, port, optional_v6=wildcard)],
                               limits, clock)


async def serve_sockets(
    rpc: RpcServer, sockets: Sequence[tuple[socket.socket, str]], limits: Limits,
    clock: Clock = time.monotonic,
) -> RpcTcpServer:
    """Serve `rpc` on listening sockets already made, each with where it came from."""
    server = RpcTcpServer(rpc, limits, clock)
    await server._listen(sockets)
    return server
