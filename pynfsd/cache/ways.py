"""The ways of filling a cache, and the router that gives a cache's upcalls to them in order.

Theory of operation.  A *way* answers request lines of the kernel's caches (`lines.py`) with
reply lines: the embedded resolver (`exports/embedded.py`), a command run per request
(`command.py`), a long-running daemon connected to a Unix socket (`daemon.py`) or the readers
of the `channel` files of the FUSE control tree (`reader.py`).  Every way
has the same small interface, `Way`: `ready(cache)` says whether it can take a request of that
cache now, and `send(cache, request, answer, lost)` takes one.  `send` runs on the event loop
and never blocks; later, on the event loop, the way calls exactly one of `answer(line)` (one
reply line for this request) or `lost(reason)` (it could not answer), once, and never from
inside `send` itself.

A `Router` is one cache's `Deferral` upcall.  The cache has a *chain* of ways, chosen by the
administrator (`--upcall CACHE=daemon,embedded`).  `upcall(key)` encodes the request line
(`Format.encode_request`) and gives it to the first way of the chain that is `ready`; with none
ready it says False and the key becomes negative for a while, as in the kernel when no daemon
has the channel open.  Then:

* `answer(line)` goes through `Channel.write`: decoded, checked as the kernel checks, stored,
  and the requests parked on the key woken.  A line the channel refuses (EINVAL: garbage, or
  a key nobody asked about), or an answer that leaves the key still pending (it answered some
  other key, or was already expired), counts as a failure of that way;
* on a failure or `lost`, the router logs (at most once per `LOG_INTERVAL` per kind, with the
  number suppressed) and gives the request to the next ready way *after* that one in the
  chain (fallback).  With none left the key is *abandoned* (`Deferral.abandon`): its upcall
  is forgotten, so the next lookup asks again, and its parked requests get `CacheDelay` (the
  NFSv4 caller's NFS4ERR_DELAY) at once.

A key whose upcall is no longer out when a way reports back (answered meanwhile, flushed out
of the cache, timed out by the cache) ends its attempt there: nobody waits for it any more.
Each attempt keeps a flag so that a second report of a misbehaving way is ignored.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from pynfsd.cache.channel import Channel
from pynfsd.rpc.connections import LOG_INTERVAL, RateLimitedLog

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Answer = Callable[[bytes], None]  # one reply line in the kernel's format, for this request
Lost = Callable[[str], None]  # this way could not answer (the reason, for the log)

CACHE_NAMES = ("auth.unix.ip", "nfsd.export", "nfsd.fh", "auth.unix.gid")
WAY_NAMES = ("channel", "daemon", "command", "embedded")


@dataclass(eq=False)  # compared by identity: two requests for one key are two records
class Outstanding:
    """One request a way has taken and not yet reported: whom to tell, and its timeout."""

    answer: Answer
    lost: Lost
    timer: asyncio.TimerHandle | None = None


class Way(Protocol):
    """One way of answering request lines; see the module docstring."""

    name: str  # "channel", "daemon", "command", "embedded"

    def ready(self, cache: str) -> bool: ...

    def send(self, cache: str, request: bytes, answer: Answer, lost: Lost) -> None: ...

    async def close(self) -> None: ...


class _Attempt:
    """One request given to one way: reports after the first are ignored."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def first(self) -> bool:
        if self.done:
            return False
        self.done = True
        return True


class Router(Generic[K, V]):
    """One cache's upcall: its chain of ways, fallback and abandon; see the module docstring."""

    def __init__(self, channel: Channel[K, V], chain: Sequence[Way],
                 log_interval: float = LOG_INTERVAL) -> None:
        self.channel = channel
        self.chain = tuple(chain)
        self.name = channel.format.name
        self.stats: Counter[str] = Counter()
        self._log = {kind: RateLimitedLog(log_interval, log)
                     for kind in ("lost", "refused", "unsettled", "abandoned")}

    def upcall(self, key: K) -> bool:
        """The `Deferral`'s upcall: True when a way took the request."""
        request = self.channel.format.encode_request(key)
        if self._send(key, request, 0):
            self.stats["upcalls"] += 1
            return True
        self.stats["no_way"] += 1
        return False

    def _send(self, key: K, request: bytes, start: int) -> bool:
        for index in range(start, len(self.chain)):
            way = self.chain[index]
            if way.ready(self.name):
                attempt = _Attempt()
                way.send(self.name, request,
                         partial(self._answered, attempt, key, request, index),
                         partial(self._lost, attempt, key, request, index))
                self.stats[f"sent_{way.name}"] += 1
                return True
        return False

    def _answered(self, attempt: _Attempt, key: K, request: bytes, index: int,
                  line: bytes) -> None:
        if not attempt.first():
            return
        way = self.chain[index].name
        if self.channel.write(line) != 0:
            self.stats[f"refused_{way}"] += 1
            self._warn("refused", "%s: the %s way's reply was refused (%s): %r",
                       self.name, way, errno.errorcode[errno.EINVAL], line[:200])
            self._next(key, request, index)
        elif self.channel.deferral.cache.pending(key):
            self.stats[f"unsettled_{way}"] += 1
            self._warn("unsettled", "%s: the %s way's reply did not answer %r: %r",
                       self.name, way, request, line[:200])
            self._next(key, request, index)
        else:
            self.stats[f"answered_{way}"] += 1

    def _lost(self, attempt: _Attempt, key: K, request: bytes, index: int, why: str) -> None:
        if not attempt.first():
            return
        way = self.chain[index].name
        self.stats[f"lost_{way}"] += 1
        self._warn("lost", "%s: the %s way did not answer %r: %s", self.name, way, request, why)
        self._next(key, request, index)

    def _next(self, key: K, request: bytes, index: int) -> None:
        """Fall back to the ways after `index`, or abandon the key."""
        if not self.channel.deferral.cache.pending(key):
            return
        if self._send(key, request, index + 1):
            self.stats["fallbacks"] += 1
            return
        self.stats["abandoned"] += 1
        self._warn("abandoned", "%s: no way answered %r; its requests get NFS4ERR_DELAY",
                   self.name, request)
        self.channel.deferral.abandon(key)

    def _warn(self, kind: str, msg: str, *args: Any) -> None:
        self._log[kind].warning(self.channel.deferral.cache.now_exact(), msg, *args)
