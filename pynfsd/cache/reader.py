"""The channel way: daemons such as rpc.mountd reading and writing `rpc/<cache>/channel` files.

Theory of operation.  The kernel hands a cache miss to whoever has the cache's `channel` file
open: the request line is queued, a reader in poll()/select() wakes, reads it (one whole line
per read) and writes the reply line back (one reply per write).  With no reader the request is
not made and the key becomes negative for a while.  `ChannelWay` is that, as one more `Way`
(`ways.py`) in a cache's chain; the files themselves are served by `pynfsd.nfsdfs`.

* `open_reader(cache)` / `close_reader(cache)` count the opens of the cache's channel file.
  `ready(cache)` is True only while one is open (and the cache has fewer than `max_outstanding`
  requests out), so with no reader the router gives the request to the next way of the chain,
  as the kernel falls back to a negative entry.
* `send` queues the request line (the same key asked twice is queued once, with both
  callbacks) and calls `on_request(cache)`, the wiring's hook that wakes pollers.
  `read(cache)` hands out the oldest unread line, b"" with none.
* `write(cache, data)` takes one reply line.  It is decoded with the cache's `Format` to find
  the request it answers (the request line of its key): that request's `answer` gets the line
  (the router stores it through `Channel.write`).  A line answering no request (exportfs's
  test entries, a daemon's own refresh) goes to `Channel.write` directly, which stores it,
  drops it when already expired, or refuses it with EINVAL when nobody asked for the key;
  a malformed line or one over `max_line` bytes is refused with EINVAL too (counted and
  logged at most once per `LOG_INTERVAL` per kind).  Nothing changes on a refusal.
* A request not answered within `timeout` seconds, read or not, is *lost*: the router falls
  back to the next way (the requests parked on the key have meanwhile had NFS4ERR_DELAY if
  the cache's wait is shorter).  When the last reader of a cache closes its channel file, the
  cache's outstanding requests are lost at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pynfsd.cache.channel import AUTH_UNIX_GID, AUTH_UNIX_IP, NFSD_EXPORT, NFSD_FH, Channel, Format
from pynfsd.cache.qword import MAX_LINE, LineError
from pynfsd.cache.ways import CACHE_NAMES, Answer, Lost, Outstanding
from pynfsd.rpc.connections import LOG_INTERVAL, RateLimitedLog

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0  # seconds a reader may take to answer one request
MAX_OUTSTANDING = 4096  # requests queued or read and unanswered, per cache
FORMATS: dict[str, Format[Any, Any]] = {
    f.name: f for f in (AUTH_UNIX_IP, NFSD_EXPORT, NFSD_FH, AUTH_UNIX_GID)}


@dataclass
class _Pipe:
    """One cache's channel: its readers, unread and read requests."""

    readers: int = 0
    unread: OrderedDict[bytes, list[Outstanding]] = field(default_factory=OrderedDict)
    asked: dict[bytes, list[Outstanding]] = field(default_factory=dict)

    def outstanding(self) -> int:
        return len(self.unread) + len(self.asked)


class ChannelWay:
    """The channel files' readers as a way; see the module docstring."""

    name = "channel"

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, *,
                 max_outstanding: int = MAX_OUTSTANDING, max_line: int = MAX_LINE,
                 caches: Iterable[str] = CACHE_NAMES,
                 log_interval: float = LOG_INTERVAL) -> None:
        self.timeout = timeout
        self.max_outstanding = max_outstanding
        self.max_line = max_line
        self.stats: Counter[str] = Counter()
        self.on_request: Callable[[str], None] = lambda cache: None
        self._pipes = {name: _Pipe() for name in caches}
        self._channels: Mapping[str, Channel[Any, Any]] = {}
        self._logs = {k: RateLimitedLog(log_interval, log) for k in ("refused", "lost")}

    def bind(self, channels: Mapping[str, Channel[Any, Any]]) -> None:
        """The caches' channels, through which unasked replies are stored."""
        self._channels = channels

    # ------------------------------------------------------------ readers
    def open_reader(self, cache: str) -> None:
        self._pipes[cache].readers += 1

    def close_reader(self, cache: str) -> None:
        pipe = self._pipes[cache]
        pipe.readers = max(0, pipe.readers - 1)
        if pipe.readers == 0:
            outs = [o for group in (*pipe.unread.values(), *pipe.asked.values()) for o in group]
            pipe.unread.clear()
            pipe.asked.clear()
            for out in outs:
                self._lose(out, "the channel's last reader closed it")

    def readers(self, cache: str) -> int:
        return self._pipes[cache].readers

    def pending(self, cache: str) -> int:
        """Request lines not read yet (a poller is readable while > 0)."""
        return len(self._pipes[cache].unread)

    # ------------------------------------------------------------ Way
    def ready(self, cache: str) -> bool:
        pipe = self._pipes.get(cache)
        return pipe is not None and pipe.readers > 0 and pipe.outstanding() < self.max_outstanding

    def send(self, cache: str, request: bytes, answer: Answer, lost: Lost) -> None:
        pipe = self._pipes[cache]
        out = Outstanding(answer, lost)
        out.timer = asyncio.get_running_loop().call_later(
            self.timeout, self._expire, cache, request, out)
        if request in pipe.asked:
            pipe.asked[request].append(out)
            return
        pipe.unread.setdefault(request, []).append(out)
        self.stats["requests"] += 1
        self.on_request(cache)

    async def close(self) -> None:
        for cache, pipe in self._pipes.items():
            pipe.readers = 1
            self.close_reader(cache)

    # ------------------------------------------------------------ the file
    def read(self, cache: str) -> bytes:
        """The oldest unread request line, whole, or b"" when none is waiting."""
        pipe = self._pipes[cache]
        if not pipe.unread:
            return b""
        request, outs = pipe.unread.popitem(last=False)
        pipe.asked.setdefault(request, []).extend(outs)
        self.stats["reads"] += 1
        return request

    def write(self, cache: str, data: bytes, now: float) -> int:
        """One reply line: 0, or the errno the writer gets (EINVAL)."""
        if len(data) > self.max_line:
            return self._refuse(now, "%s: reply of %d bytes refused (at most %d)",
                                cache, len(data), self.max_line)
        fmt = FORMATS[cache]
        try:
            request = fmt.encode_request(fmt.decode_reply(data).key)
        except LineError:
            return self._store(cache, data)  # counted and logged by the channel
        pipe = self._pipes[cache]
        outs = pipe.asked.pop(request, None) or pipe.unread.pop(request, None)
        if not outs:
            return self._store(cache, data)
        self.stats["answered"] += 1
        for out in outs:
            if out.timer is not None:
                out.timer.cancel()
            out.answer(data)
        return 0

    def _store(self, cache: str, data: bytes) -> int:
        channel = self._channels.get(cache)
        if channel is None:
            return errno.EINVAL
        result = channel.write(data)
        self.stats["unasked_stored" if result == 0 else "refused"] += 1
        return result

    def _refuse(self, now: float, msg: str, *args: Any) -> int:
        self.stats["refused"] += 1
        self._logs["refused"].warning(now, msg, *args)
        return errno.EINVAL

    # ------------------------------------------------------------ losing
    def _expire(self, cache: str, request: bytes, out: Outstanding) -> None:
        pipe = self._pipes[cache]
        for table in (pipe.unread, pipe.asked):
            outs = table.get(request)
            if outs and out in outs:
                outs.remove(out)
                if not outs:
                    del table[request]
        self.stats["timeouts"] += 1
        self._lose(out, f"no answer within {self.timeout:g}s")

    def _lose(self, out: Outstanding, why: str) -> None:
        if out.timer is not None:
            out.timer.cancel()
        self.stats["lost"] += 1
        out.lost(why)
