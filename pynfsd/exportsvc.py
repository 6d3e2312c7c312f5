"""The export service of `pynfsd serve`: the caches, the ways that fill them, reloads.

Theory of operation.  `ExportService.start` builds, from the command line, the four caches
(`pynfsd.cache.caches.ServerCaches`) and for each the chain of ways that fill them: the daemon
channel (`--upcall-daemon`, a Unix socket under the state directory), the command
(`--upcall-command PROG`), the readers of the control tree's channel files (`--nfsd-fs DIR`,
first in the default chain) and the embedded resolver that answers from the exports table
(always last, unless `--upcall CACHE=WAYS` says otherwise); then the `ExportViews` the NFS
layer reads.  With no option it is the embedded resolver alone: the README's first command
needs nothing else.

A reload (`pynfsd exportfs -r` through the control socket, or SIGHUP) reads the sources the
server was started with again (`--exports`, `--export`), off the event loop; a table that
does not parse or names a missing directory is refused with the `file:line` message and the
running table stays.  Otherwise the embedded resolver takes the new table, the views its
paths, and every cache is flushed: the next request of every client asks again, so a removed
export's filehandles get NFS4ERR_STALE (nfsd.fh knows them no more), a changed `sec=` gets
NFS4ERR_WRONGSEC, and ro/rw apply to the next request; clients of unchanged exports notice
nothing (their handles carry the same fsids).  Requests already running finish with the view
they started with.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pynfsd.blocking import default_runner
from pynfsd.cache.caches import (
    CACHE_NAMES,
    CacheLimits,
    ServerCaches,
    build_chains,
    parse_upcall_spec,
)
from pynfsd.cache.command import CommandWay
from pynfsd.cache.daemon import DaemonWay
from pynfsd.cache.reader import ChannelWay
from pynfsd.cache.ways import Way
from pynfsd.exports.describe import export_lines
from pynfsd.exports.embedded import EmbeddedWay
from pynfsd.exports.resolver import StaticExportResolver
from pynfsd.exports.types import ExportEntry, ExportsError
from pynfsd.nfs4.views import ExportViews

log = logging.getLogger("pynfsd.exports")

UPCALL_SOCKET = "upcall.sock"  # the daemon channel, under the state directory
_D = CacheLimits()

Loader = Callable[[], Sequence[ExportEntry]]


def add_arguments(s: argparse.ArgumentParser, positive: Any, seconds: Any) -> None:
    """The cache and upcall options of `pynfsd serve`."""
    g = s.add_argument_group("export and credential caches")
    g.add_argument("--manage-gids", action="store_true",
                   help="take AUTH_SYS callers' groups from this server's group database "
                        "(auth.unix.gid) on every export, not only on manage-gids exports")
    g.add_argument("--upcall-command", metavar="PROG",
                   help="fill the caches by running PROG CACHE WORDS... (reply line on stdout)")
    g.add_argument("--upcall-daemon", action="store_true",
                   help=f"accept a cache daemon on <state-dir>/{UPCALL_SOCKET}")
    g.add_argument("--upcall", action="append", default=[], metavar="CACHE=WAY[,WAY]",
                   help="the ways that fill CACHE, in order (daemon, command, embedded); "
                        f"caches: {', '.join(CACHE_NAMES)}")
    g.add_argument("--upcall-timeout", type=seconds, default=_D.upcall_timeout, metavar="S",
                   help=f"seconds one command or daemon request may take (default {_D.upcall_timeout:g})")
    g.add_argument("--cache-max-entries", type=positive, default=_D.max_entries, metavar="N",
                   help=f"entries per cache (default {_D.max_entries})")
    g.add_argument("--cache-wait", type=seconds, default=_D.wait, metavar="S",
                   help="seconds a request waits for a cache answer before NFS4ERR_DELAY "
                        f"(default {_D.wait:g})")
    g.add_argument("--max-deferred", type=positive, default=_D.max_deferred, metavar="N",
                   help=f"requests waiting for cache answers, in all (default {_D.max_deferred})")
    g.add_argument("--max-deferred-per-client", type=positive,
                   default=_D.max_deferred_per_client, metavar="N",
                   help="requests one client address may have waiting "
                        f"(default {_D.max_deferred_per_client})")


def limits_of(args: argparse.Namespace) -> CacheLimits:
    return CacheLimits(max_entries=int(args.cache_max_entries), wait=float(args.cache_wait),
                       max_deferred=int(args.max_deferred),
                       max_deferred_per_client=int(args.max_deferred_per_client),
                       upcall_timeout=float(args.upcall_timeout))


def check_arguments(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """The --upcall chains as given (ValueError naming the option when they are wrong)."""
    order = parse_upcall_spec(args.upcall)
    offered = {"embedded"} | ({"command"} if args.upcall_command else set()) | (
        {"daemon"} if args.upcall_daemon else set()) | (
        {"channel"} if getattr(args, "nfsd_fs", None) else set())
    for cache, ways in order.items():
        for way in ways:
            if way not in offered:
                flag = {"command": "--upcall-command PROG", "daemon": "--upcall-daemon",
                        "channel": "--nfsd-fs DIR"}[way]
                raise ValueError(f"--upcall {cache}={','.join(ways)}: {way} needs {flag}")
    if args.upcall_command and not os.access(args.upcall_command, os.X_OK):
        raise ValueError(f"--upcall-command {args.upcall_command}: not an executable file")
    return order


def default_order(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(w for w, on in (("channel", bool(getattr(args, "nfsd_fs", None))),
                                 ("daemon", args.upcall_daemon),
                                 ("command", bool(args.upcall_command)),
                                 ("embedded", True)) if on)


@dataclass
class ExportService:
    """The caches, their ways and the views of one server; see the module docstring."""

    entries: tuple[ExportEntry, ...]
    load: Loader
    embedded: EmbeddedWay
    caches: ServerCaches
    views: ExportViews
    extra_ways: list[Way] = field(default_factory=list)
    reloads: int = 0

    @property
    def channel_way(self) -> ChannelWay | None:
        """The readers of the control tree's channel files (with `--nfsd-fs`)."""
        return next((w for w in self.extra_ways if isinstance(w, ChannelWay)), None)

    @classmethod
    async def start(cls, args: argparse.Namespace, entries: Sequence[ExportEntry],
                    load: Loader, max_mounts: int) -> ExportService:
        order = check_arguments(args)
        limits = limits_of(args)
        embedded = EmbeddedWay(entries, runner=default_runner())
        ways: dict[str, Way] = {"embedded": embedded}
        if args.upcall_command:
            ways["command"] = CommandWay(args.upcall_command, limits.upcall_timeout,
                                         limits.max_commands)
        if args.upcall_daemon:
            daemon = DaemonWay(os.path.join(args.state_dir, UPCALL_SOCKET),
                               timeout=limits.upcall_timeout)
            await daemon.start()
            ways["daemon"] = daemon
        channel = ChannelWay(timeout=limits.upcall_timeout) if getattr(
            args, "nfsd_fs", None) else None
        if channel is not None:
            ways["channel"] = channel
        full = {name: order.get(name, default_order(args)) for name in CACHE_NAMES}
        caches = ServerCaches(build_chains(full, ways), limits)
        if channel is not None:
            channel.bind(caches.channels)
        views = ExportViews(caches, tuple(e.path for e in entries),
                            manage_gids=args.manage_gids, max_mounts=max_mounts)
        for name, chain in full.items():
            log.info("cache %s: filled by %s", name, ", ".join(chain))
        extra = [w for n, w in ways.items() if n != "embedded"]
        return cls(tuple(entries), load, embedded, caches, views, extra)

    # ------------------------------------------------------------ reload
    async def reload(self) -> dict[str, Any]:
        """`exportfs -r`: the new table in force and the caches flushed (ExportsError: the
        old table stays)."""
        entries = tuple(await default_runner().run(self._checked))
        old = {e.path: e for e in self.entries}
        new = {e.path: e for e in entries}
        self.entries = entries
        self.embedded.reload(entries)
        self.views.reload(new)
        self.caches.flush()
        self.views.forget()
        self.reloads += 1
        summary = {
            "exports": len(entries),
            "added": sorted(new.keys() - old.keys()),
            "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(p for p in new.keys() & old.keys() if new[p] != old[p]),
        }
        log.info("exports reloaded: %d export(s); added %s, removed %s, changed %s",
                 len(entries), summary["added"] or "none", summary["removed"] or "none",
                 summary["changed"] or "none")
        return summary

    def _checked(self) -> Sequence[ExportEntry]:
        entries = self.load()
        StaticExportResolver(entries)  # the fsid checks: two paths never share one
        return entries

    async def reload_logged(self) -> None:
        """SIGHUP: reload, logging a refused table instead of raising."""
        try:
            await self.reload()
        except (ExportsError, OSError) as e:
            log.error("exports not reloaded, the old table stays: %s", e)

    # ------------------------------------------------------------ admin
    def show(self) -> list[str]:
        """`exportfs -v`: every export with all its options."""
        return [line for entry in self.entries for line in export_lines(entry)]

    def admin_commands(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """The control socket's `exportfs` and `cache` requests."""
        return {"exportfs": self._exportfs, "cache": self._cache}

    def _exportfs(self, request: dict[str, Any]) -> Any:
        action = request.get("action")
        if action == "reload":
            return self._reload_or_error()
        if action in (None, "show"):
            return self.show()
        raise ValueError("exportfs takes -r (reload) or -v (show)")

    async def _reload_or_error(self) -> dict[str, Any]:
        try:
            return await self.reload()
        except (ExportsError, OSError) as e:
            raise ValueError(f"exports not reloaded, the old table stays: {e}") from None

    def _cache(self, request: dict[str, Any]) -> Any:
        action, name = request.get("action"), request.get("name")
        names = CACHE_NAMES if name is None else (name,)
        if any(n not in CACHE_NAMES for n in names):
            raise ValueError(f"no cache {name!r} (caches: {', '.join(CACHE_NAMES)})")
        if action == "flush":
            for n in names:
                self.caches.flush(n)
            self.views.forget()
            return list(names)
        if action == "show":
            return {n: self.caches.content(n).decode("utf-8", "replace") for n in names}
        if action == "status":
            return self.caches.status()
        raise ValueError("cache takes show, flush or status")

    async def close(self) -> None:
        await self.caches.close()
