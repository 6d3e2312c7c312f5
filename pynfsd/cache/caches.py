"""The server's four caches, assembled: `auth.unix.ip`, `nfsd.export`, `nfsd.fh`, `auth.unix.gid`.

Theory of operation.  `ServerCaches` builds, for each of the kernel's caches, a `Cache`
(`core.py`) bounded by `CacheLimits.max_entries`, a `Deferral` (`deferral.py`) whose upcall is a
`Router` (`ways.py`) over the cache's chain of ways, and a `Channel` (`channel.py`) through
which every answer is decoded, checked and stored.  One `Waiters` table is shared by the four
Deferrals, so the bounds on parked requests (`max_deferred` in all, `max_deferred_per_client`
per client address) are server-wide.

The chain of each cache comes from `--upcall CACHE=WAY[,WAY...]` (`parse_upcall_spec`) and the
ways the server runs (`build_chains`).  A cache not named gets the default chain: `channel`
if the control tree is mounted (`--nfsd-fs`; ready only while a reader has the cache's channel
file open), `daemon` if a daemon socket is configured, then `command` if `--upcall-command`
is given, then `embedded`.  An answer that is refused, or a way that cannot answer, falls back along the
chain; when none is left the requests waiting for the key get NFS4ERR_DELAY (`CacheDelay`).

`run()` ticks every Deferral once a second (deadlines of parked requests, periodic cleaning);
`flush`, `content` and `status` are what `pynfsd cache flush|show` and the metrics read.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pynfsd.cache import lines as L
from pynfsd.cache.channel import AUTH_UNIX_GID, AUTH_UNIX_IP, NFSD_EXPORT, NFSD_FH, Channel, Format
from pynfsd.cache.core import DEFAULT_MAX_ENTRIES, DEFAULT_UPCALL_TIMEOUT, Cache
from pynfsd.cache.deferral import CLEAN_INTERVAL, Deferral
from pynfsd.cache.waiters import DEFAULT_MAX_PER_CLIENT, DEFAULT_MAX_TOTAL, DEFAULT_WAIT, Waiters
from pynfsd.cache.ways import CACHE_NAMES, WAY_NAMES, Router, Way

__all__ = ["CACHE_NAMES", "CacheLimits", "ServerCaches", "build_chains", "parse_upcall_spec"]

DEFAULT_CHAIN = ("channel", "daemon", "command", "embedded")


@dataclass(frozen=True)
class CacheLimits:
    """The caches' bounds (each one a `pynfsd serve` option)."""

    max_entries: int = DEFAULT_MAX_ENTRIES  # per cache (--cache-max-entries)
    wait: float = DEFAULT_WAIT  # seconds a request stays parked (--cache-wait)
    max_deferred: int = DEFAULT_MAX_TOTAL  # parked requests in all (--max-deferred)
    max_deferred_per_client: int = DEFAULT_MAX_PER_CLIENT  # (--max-deferred-per-client)
    upcall_timeout: float = 10.0  # one command or daemon request (--upcall-timeout)
    max_commands: int = 8  # command upcalls running at once

    def __post_init__(self) -> None:
        if min(self.max_entries, self.max_deferred, self.max_deferred_per_client,
               self.max_commands) < 1 or self.wait <= 0 or self.upcall_timeout <= 0:
            raise ValueError("cache limits must be positive")


class ServerCaches:
    """The four caches and their ways; see the module docstring."""

    def __init__(self, chains: Mapping[str, Sequence[Way]], limits: CacheLimits = CacheLimits(),
                 clock: Callable[[], float] = time.time) -> None:
        unknown = set(chains) - set(CACHE_NAMES)
        if unknown:
            raise ValueError(f"unknown cache {sorted(unknown)[0]!r}")
        self.limits = limits
        self.waiters: Waiters[Any, str, asyncio.Future[None]] = Waiters(
            limits.max_deferred, limits.max_deferred_per_client)
        self.channels: dict[str, Channel[Any, Any]] = {}
        self.routers: dict[str, Router[Any, Any]] = {}
        # a lost upcall is asked again after this; every way in a chain has had its turn by then
        self._upcall_timeout = max(DEFAULT_UPCALL_TIMEOUT, math.ceil(
            limits.upcall_timeout * (max(map(len, chains.values()), default=0) + 1)))
        self._ways = _unique(w for chain in chains.values() for w in chain)
        self.ip: Deferral[L.IpKey, str, str] = self._build(AUTH_UNIX_IP, chains, clock)
        self.export: Deferral[L.ExportKey, L.ExportInfo, str] = self._build(NFSD_EXPORT, chains, clock)
        self.fh: Deferral[L.FhKey, str, str] = self._build(NFSD_FH, chains, clock)
        self.gid: Deferral[int, tuple[int, ...], str] = self._build(AUTH_UNIX_GID, chains, clock)

    def _build(self, fmt: Format[Any, Any], chains: Mapping[str, Sequence[Way]],
               clock: Callable[[], float]) -> Deferral[Any, Any, str]:
        cache: Cache[Any, Any] = Cache(fmt.name, clock=clock, max_entries=self.limits.max_entries,
                                       upcall_timeout=self._upcall_timeout)
        holder: list[Router[Any, Any]] = []
        deferral: Deferral[Any, Any, str] = Deferral(
            cache, self.waiters, lambda key: holder[0].upcall(key), self.limits.wait)
        channel: Channel[Any, Any] = Channel(fmt, deferral)
        holder.append(Router(channel, chains.get(fmt.name, ())))
        self.channels[fmt.name] = channel
        self.routers[fmt.name] = holder[0]
        return deferral

    def deferrals(self) -> list[Deferral[Any, Any, str]]:
        return [self.ip, self.export, self.fh, self.gid]

    def _channel(self, name: str) -> Channel[Any, Any]:
        if name not in self.channels:
            raise KeyError(f"no cache {name!r} (known: {', '.join(CACHE_NAMES)})")
        return self.channels[name]

    def flush(self, name: str | None = None) -> None:
        """Flush one cache, or all: every entry refreshed until now is invalid."""
        for channel in [self._channel(name)] if name else self.channels.values():
            channel.deferral.cache.flush()

    def content(self, name: str) -> bytes:
        """The cache's `content` file, in the kernel's format."""
        return self._channel(name).content()

    def status(self) -> dict[str, dict[str, int]]:
        out = {name: {**ch.deferral.cache.status(),
                      **{f"channel_{k}": v for k, v in ch.stats.items()},
                      **{f"upcall_{k}": v for k, v in self.routers[name].stats.items()}}
               for name, ch in self.channels.items()}
        out["deferred"] = self.waiters.status()
        return out

    def tick(self) -> None:
        for deferral in self.deferrals():
            deferral.tick()

    async def run(self, interval: float = CLEAN_INTERVAL) -> None:
        """`tick` every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.tick()

    async def close(self) -> None:
        """Close every way (each once, even if in several chains)."""
        for way in self._ways:
            await way.close()


def _unique(ways: Iterable[Way]) -> list[Way]:
    seen: dict[int, Way] = {}
    for way in ways:
        seen.setdefault(id(way), way)
    return list(seen.values())


def parse_upcall_spec(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """`--upcall CACHE=WAY[,WAY...]` options into a chain of way names per cache; ValueError
    with a one-line message for an unknown cache or way, a repeated cache or way, or an empty
    chain."""
    order: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        cache, sep, rest = spec.partition("=")
        cache = cache.strip()
        if not sep:
            raise ValueError(f"--upcall {spec!r}: expected CACHE=WAY[,WAY...]")
        if cache not in CACHE_NAMES:
            raise ValueError(f"--upcall {spec!r}: unknown cache {cache!r} "
                             f"(known: {', '.join(CACHE_NAMES)})")
        if cache in order:
            raise ValueError(f"--upcall {spec!r}: cache {cache} given twice")
        ways = tuple(w.strip() for w in rest.split(","))
        for way in ways:
            if way not in WAY_NAMES:
                raise ValueError(f"--upcall {spec!r}: unknown way {way!r} "
                                 f"(known: {', '.join(WAY_NAMES)})")
        if len(set(ways)) != len(ways):
            raise ValueError(f"--upcall {spec!r}: a way named twice")
        order[cache] = ways
    return order


def build_chains(order: Mapping[str, tuple[str, ...]],
                 ways: Mapping[str, Way]) -> dict[str, list[Way]]:
    """Each cache's chain: the ways `order` names for it (each must be configured: ValueError
    otherwise), or the default chain of the configured ways."""
    chains: dict[str, list[Way]] = {}
    for cache in CACHE_NAMES:
        if cache in order:
            missing = [w for w in order[cache] if w not in ways]
            if missing:
                raise ValueError(f"--upcall {cache}: way {missing[0]!r} is not configured")
            chains[cache] = [ways[w] for w in order[cache]]
        else:
            chains[cache] = [ways[w] for w in DEFAULT_CHAIN if w in ways]
    return chains
