"""The daemon way: long-running daemons connected to a Unix socket under the state directory.

Theory of operation.  The server listens on a Unix socket (`<state-dir>/upcall.sock`, mode
0600, so only root's daemons connect).  The protocol is the kernel's channel lines (`lines.py`,
NFS-UTILS-INTEROP.md) with the cache name in front, one line each, ending in a newline:

* daemon -> server, first line: `hello <cache> [<cache>...]`, the caches it answers (names
  the server does not know are logged and ignored; with none known the connection is closed);
* server -> daemon: `<cache> <request line>`, e.g. `nfsd.export 192.168.1.0/24 /srv/a`;
* daemon -> server: `<cache> <reply line>`, e.g.
  `nfsd.export 192.168.1.0/24 /srv/a 1767225600 8192 65534 65534 0`.

Several requests are in flight on one connection and replies come in any order: a reply is
matched to the request whose words (decoded, as `qword_get` reads them) begin the reply, and
handed to that request's `answer` (the router stores it through `Channel.write`).  A reply
for a cache the daemon did not say hello for, a line that is not words, or a reply that
matches no request of this connection (a key nobody asked this daemon about) is refused:
counted, logged at most once per `LOG_INTERVAL` per kind, and the connection is kept.

`ready(cache)` is True while some connected daemon said hello for the cache and has fewer than
`max_outstanding` requests out; `send` picks the one with the fewest.  A request not answered
within `timeout` seconds is *lost* (the router falls back to the next way; a late reply is
then refused as unasked).  A daemon that disconnects loses all its outstanding requests.

Bounds, each one number: `max_daemons` connections (one more is closed at once), `max_line`
bytes per line (a longer line closes the connection: the stream cannot be resynchronised),
`hello_timeout` seconds to say hello (then closed), `max_outstanding` requests per daemon.
The server only writes requests a daemon has room for, so what it buffers for a daemon that
does not read is bounded by `max_outstanding` lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pynfsd.cache.qword import LineError, split_line
from pynfsd.cache.ways import CACHE_NAMES, Answer, Lost, Outstanding
from pynfsd.rpc.connections import LOG_INTERVAL, RateLimitedLog

log = logging.getLogger(__name__)

SOCKET_NAME = "upcall.sock"
DEFAULT_TIMEOUT = 10.0  # seconds a daemon may take to answer one request
MAX_DAEMONS = 4
MAX_LINE = 32 * 1024
HELLO_TIMEOUT = 10.0
MAX_OUTSTANDING = 4096  # requests out per daemon


@dataclass(eq=False)
class _Daemon:
    """One connected daemon."""

    number: int
    writer: asyncio.StreamWriter
    caches: frozenset[str] = frozenset()
    out: dict[tuple[str, tuple[bytes, ...]], deque[Outstanding]] = field(default_factory=dict)
    count: int = 0
    lengths: dict[str, Counter[int]] = field(default_factory=dict)  # cache -> key word counts


class DaemonWay:
    """The daemon channel; see the module docstring."""

    name = "daemon"

    def __init__(self, path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT, *,
                 max_daemons: int = MAX_DAEMONS, max_line: int = MAX_LINE,
                 hello_timeout: float = HELLO_TIMEOUT,
                 max_outstanding: int = MAX_OUTSTANDING,
                 known: Iterable[str] = CACHE_NAMES,
                 log_interval: float = LOG_INTERVAL) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.max_daemons = max_daemons
        self.max_line = max_line
        self.hello_timeout = hello_timeout
        self.max_outstanding = max_outstanding
        self.known = frozenset(known)
        self.stats: Counter[str] = Counter()
        self._daemons: list[_Daemon] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._next = 0
        self._closing = False
        self._logs = {k: RateLimitedLog(log_interval, log)
                      for k in ("connect", "malformed", "unknown", "unasked")}

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen on `path` (a stale socket there is replaced), mode 0600."""
        self._closing = False
        with contextlib.suppress(FileNotFoundError):
            if self.path.is_socket():
                self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=self.max_line)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        """Stop listening, close every connection (their requests are lost)."""
        self._closing = True  # a connection accepted but not yet served is closed at once
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @property
    def daemons(self) -> int:
        """Daemons connected and past their hello."""
        return sum(1 for d in self._daemons if d.caches)

    def outstanding(self) -> int:
        return sum(d.count for d in self._daemons)

    # ------------------------------------------------------------ the Way interface
    def ready(self, cache: str) -> bool:
        return self._pick(cache) is not None

    def _pick(self, cache: str) -> _Daemon | None:
        fit = [d for d in self._daemons
               if cache in d.caches and d.count < self.max_outstanding]
        return min(fit, key=lambda d: d.count, default=None)

    def send(self, cache: str, request: bytes, answer: Answer, lost: Lost) -> None:
        loop = asyncio.get_running_loop()
        daemon = self._pick(cache)
        try:
            words = tuple(split_line(request))
        except LineError as e:
            loop.call_soon(lost, f"request not a channel line: {e}")
            return
        if daemon is None:
            loop.call_soon(lost, f"no daemon connected for {cache}")
            return
        item = Outstanding(answer, lost)
        key = (cache, words)
        daemon.out.setdefault(key, deque()).append(item)
        daemon.lengths.setdefault(cache, Counter())[len(words)] += 1
        daemon.count += 1
        item.timer = loop.call_later(self.timeout, self._expire, daemon, key, item)
        daemon.writer.write(cache.encode() + b" " + request)
        self.stats["requests"] += 1

    # ------------------------------------------------------------ outstanding requests
    def _take(self, daemon: _Daemon, key: tuple[str, tuple[bytes, ...]],
              item: Outstanding | None = None) -> Outstanding | None:
        queue = daemon.out.get(key)
        if not queue:
            return None
        if item is None:
            item = queue.popleft()
        elif item in queue:
            queue.remove(item)
        else:
            return None
        if not queue:
            del daemon.out[key]
        daemon.count -= 1
        lengths = daemon.lengths[key[0]]
        lengths[len(key[1])] -= 1
        if not lengths[len(key[1])]:
            del lengths[len(key[1])]
        if item.timer is not None:
            item.timer.cancel()
        return item

    def _expire(self, daemon: _Daemon, key: tuple[str, tuple[bytes, ...]], item: Outstanding) -> None:
        if self._take(daemon, key, item) is not None:
            self.stats["timeouts"] += 1
            item.lost(f"daemon {daemon.number}: no answer within {self.timeout} s")

    def _lose_all(self, daemon: _Daemon, why: str) -> None:
        for key in list(daemon.out):
            while (item := self._take(daemon, key)) is not None:
                self.stats["lost_on_disconnect"] += 1
                item.lost(f"daemon {daemon.number}: {why}")

    # ------------------------------------------------------------ connections
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._next += 1
        daemon = _Daemon(self._next, writer)
        why = "disconnected"
        try:
            if self._closing:
                why = "the server is closing"
                return
            if len(self._daemons) >= self.max_daemons:
                self.stats["refused_too_many"] += 1
                self._warn("connect", "daemon %d refused: %d daemons already connected",
                           daemon.number, len(self._daemons))
                return
            self._daemons.append(daemon)
            why = await self._converse(daemon, reader)
        except asyncio.CancelledError:
            # only close() cancels a connection: the task ends normally, since the stream
            # server (Python 3.11) logs a cancelled connection task as an error
            why = "the server is closing"
        finally:
            self._gone(daemon, why)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._connections.discard(task)

    def _gone(self, daemon: _Daemon, why: str) -> None:
        if daemon in self._daemons:
            self._daemons.remove(daemon)
            log.info("upcall daemon %d gone (%s)", daemon.number, why)
        self._lose_all(daemon, why)

    async def _converse(self, daemon: _Daemon, reader: asyncio.StreamReader) -> str:
        try:
            async with asyncio.timeout(self.hello_timeout):
                first = await reader.readline()
        except TimeoutError:
            self.stats["no_hello"] += 1
            self._warn("connect", "daemon %d said no hello within %s s: closed",
                       daemon.number, self.hello_timeout)
            return "no hello"
        except ValueError:
            return self._overlong(daemon)
        if not first or not self._hello(daemon, first):
            return "no hello"
        while True:
            try:
                data = await reader.readline()
            except ValueError:
                return self._overlong(daemon)
            if not data:
                return "disconnected"
            if not data.endswith(b"\n"):
                return "disconnected in the middle of a line"
            self._reply(daemon, data)

    def _overlong(self, daemon: _Daemon) -> str:
        self.stats["overlong"] += 1
        self._warn("malformed", "daemon %d sent a line over %d bytes: closed",
                   daemon.number, self.max_line)
        return "line too long"

    def _hello(self, daemon: _Daemon, data: bytes) -> bool:
        words = data.split()
        if not words or words[0] != b"hello":
            self.stats["no_hello"] += 1
            self._warn("connect", "daemon %d: first line is not hello: %r: closed",
                       daemon.number, data[:200])
            return False
        names = {w.decode("ascii", "replace") for w in words[1:]}
        if names - self.known:
            self._warn("unknown", "daemon %d: unknown caches ignored: %s",
                       daemon.number, " ".join(sorted(names - self.known)))
        daemon.caches = frozenset(names & self.known)
        if not daemon.caches:
            self.stats["no_hello"] += 1
            self._warn("connect", "daemon %d: hello names no known cache: closed",
                       daemon.number)
            return False
        log.info("upcall daemon %d answers %s", daemon.number, " ".join(sorted(daemon.caches)))
        return True

    def _reply(self, daemon: _Daemon, data: bytes) -> None:
        cache, _, line = data.partition(b" ")
        name = cache.decode("ascii", "replace")
        if name not in daemon.caches:
            self.stats["unknown_cache"] += 1
            self._warn("unknown", "daemon %d: reply for cache %r it did not say hello for "
                       "refused", daemon.number, name[:64])
            return
        try:
            words = split_line(line, self.max_line)
        except LineError as e:
            self.stats["malformed"] += 1
            self._warn("malformed", "daemon %d: malformed %s reply refused: %s",
                       daemon.number, name, e)
            return
        for n in sorted(daemon.lengths.get(name, ())):
            item = self._take(daemon, (name, tuple(words[:n])))
            if item is not None:
                self.stats["replies"] += 1
                item.answer(line)
                return
        self.stats["unasked"] += 1
        self._warn("unasked", "daemon %d: %s reply for a key not asked of it refused: %r",
                   daemon.number, name, line[:200])

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        self._logs[kind].warning(asyncio.get_running_loop().time(), msg, *args)
