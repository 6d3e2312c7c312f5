"""What a client may use, read from the export and credential caches.

Theory of operation.  Every access decision of the NFS layer reads the four caches of
`pynfsd.cache.caches.ServerCaches` and nothing else, as knfsd reads its sunrpc caches:

* `auth.unix.ip`: the client's address → its *domain* (the client name the exports know it by;
  negative: the client gets no export at all);
* `nfsd.export`: (domain, path) → the export's options in the kernel's form, for every path the
  exports table names; the positive answers make the client's `ClientView` (its pseudo-fs);
* `nfsd.fh`: (domain, fsid) → path, asked when a filehandle is put (PUTFH): the handle is
  good only if the path is an export of the client's view; a removed export gives
  NFS4ERR_STALE;
* `auth.unix.gid`: uid → groups, for AUTH_SYS requests when the server runs with
  `--manage-gids` or the export says `manage-gids`; a negative answer (a user the group
  database does not know) keeps the groups the client sent.

A missing or pending entry parks the request (`Deferral.get`, bounded per client and in all);
no answer in time is NFS4ERR_DELAY for the op that needed it (the COMPOUND loop asks at the
first op that uses an export, see `pynfsd.nfs4.compound`).  The asyncio coroutine *is* the
deferred request: it resumes at the same op with its current filehandles and decoded (for
krb5p, decrypted) arguments untouched.

The hot path must not pay for this: a client's resolved view is memoised with the moment its
oldest entry wants a refresh (half its life, as `cache_check`) and the caches' versions; while
both hold, `ready` answers synchronously with no lookup.  Any update, flush or eviction in the
caches read changes their version, and the next request revalidates (hits, no upcall).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pynfsd.blocking import Runner, default_runner
from pynfsd.cache.caches import CACHE_NAMES, ServerCaches
from pynfsd.cache.core import Entry
from pynfsd.cache.deferral import CacheDelay
from pynfsd.cache.lines import ExportKey, FhKey, ip_key
from pynfsd.exports.embedded import EmbeddedWay
from pynfsd.exports.kernelform import client_export, fh_key, has_uuid, path_facts
from pynfsd.exports.mounts import DEFAULT_MAX_MOUNTS
from pynfsd.exports.resolver import StaticExportResolver
from pynfsd.exports.types import ClientExport
from pynfsd.nfs4 import errors
from pynfsd.nfs4.vfstypes import MANAGE_GIDS, ClientView
from pynfsd.rpc.auth import Credential
from pynfsd.rpc.flavors import AUTH_SYS

log = logging.getLogger(__name__)

MAX_VIEWS = 1024  # distinct export sets whose ClientView is kept (shared by their clients)


@dataclass(slots=True)
class Resolved:
    """One client's view and what it came from, memoised per address."""

    domain: str | None
    view: ClientView
    check_at: float  # the first refresh point (or expiry) of the entries read
    version: int  # the caches' versions when it was made
    manages_gids: bool  # some export of the view (or the server) replaces AUTH_SYS groups


@dataclass(slots=True)
class _Groups:
    gids: tuple[int, ...] | None  # None: negative (keep the client's groups)
    check_at: float
    version: int


@dataclass
class ExportViews:
    """Client views and filehandle checks from the caches (see the module docstring)."""

    caches: ServerCaches
    paths: tuple[str, ...]
    manage_gids: bool = False  # the server-wide --manage-gids
    max_mounts: int = DEFAULT_MAX_MOUNTS
    runner: Runner | None = None  # examines uuid exports' directories (None: the default pool)
    empty: ClientView = field(default_factory=lambda: ClientView.build(()))
    _by_addr: dict[str, Resolved] = field(default_factory=dict)
    _views: dict[tuple[ClientExport, ...], ClientView] = field(default_factory=dict)
    _groups: dict[int, _Groups] = field(default_factory=dict)
    _fh: dict[tuple[str, int], tuple[str | None, float, int]] = field(default_factory=dict)

    # ------------------------------------------------------------ table and flushes
    def reload(self, paths: Iterable[str]) -> None:
        """A new exports table (`exportfs -r`): its paths are asked about from now on."""
        self.paths = tuple(dict.fromkeys(paths))
        self.forget()

    def forget(self) -> None:
        """Drop every memo (after a flush; the caches' versions would say so too)."""
        self._by_addr.clear()
        self._groups.clear()
        self._fh.clear()

    def _version(self) -> int:
        c = self.caches
        return c.ip.cache.version + c.export.cache.version

    # ------------------------------------------------------------ views
    def ready(self, addr: str) -> Resolved | None:
        """The memoised view of `addr` while nothing it was made from has changed."""
        memo = self._by_addr.get(addr)
        if memo is None:
            return None
        if memo.version != self._version() or self.caches.ip.cache.now_exact() >= memo.check_at:
            return None
        return memo

    async def resolve(self, addr: str) -> Resolved:
        """The view of `addr` through the caches; NFS4ERR_DELAY when they do not answer in
        time (the request was parked and timed out, or could not be parked)."""
        memo = self.ready(addr)
        if memo is not None:
            return memo
        try:
            memo = await self._resolve(addr)
        except CacheDelay as e:
            log.debug("%s: %s", addr, e)
            raise errors.NFS4ERR_DELAY(str(e)) from None
        if len(self._by_addr) >= self.caches.ip.cache.max_entries:
            self._by_addr.clear()
        self._by_addr[addr] = memo
        return memo

    async def _resolve(self, addr: str) -> Resolved:
        version = self._version()
        try:
            key = ip_key(addr)
        except ValueError:
            key = None  # not an IP client (a local socket): no domain
        entries: list[Entry[Any]] = []
        domain: str | None = None
        if key is not None:
            ip_entry = await self.caches.ip.get(key, addr)
            entries.append(ip_entry)
            domain = ip_entry.value
        exports: list[ClientExport] = []
        if domain is not None:
            for path in self.paths:
                entry = await self.caches.export.get(ExportKey(domain, path), addr)
                entries.append(entry)
                if entry.value is not None:
                    exports.append(client_export(path, entry.value))
        found = tuple(exports)
        manages = self.manage_gids or any(e.options.has(MANAGE_GIDS) for e in found)
        return Resolved(domain, self._view(found), _check_at(entries), version, manages)

    def _view(self, exports: tuple[ClientExport, ...]) -> ClientView:
        view = self._views.get(exports)
        if view is None:
            if len(self._views) >= MAX_VIEWS:
                self._views.clear()
            view = ClientView.build(exports, self.max_mounts)
            self._views[exports] = view
        return view

    # ------------------------------------------------------------ filehandles
    async def fh_path(self, domain: str | None, export: ClientExport) -> str | None:
        """nfsd.fh: the path of the export `domain` may use with the fsid of `export` (the
        export of its view a handle names); None when there is none (NFS4ERR_DELAY when the
        cache does not answer in time).  The key is the one knfsd asks (`fh_key`); for an
        export with a uuid it depends on its directory, examined on `runner`."""
        if domain is None:
            return None
        fsid = export.fsid
        memo = self._fh.get((domain, fsid))
        version = self.caches.fh.cache.version
        if memo is not None and memo[2] == version and self.caches.fh.cache.now_exact() < memo[1]:
            return memo[0]
        facts = None
        if has_uuid(export.options):
            facts = await (self.runner or default_runner()).run(path_facts, export.path)
        fsidtype, raw = fh_key(export.options, fsid, facts)
        try:
            entry = await self.caches.fh.get(FhKey(domain, fsidtype, raw), domain)
        except CacheDelay as e:
            raise errors.NFS4ERR_DELAY(str(e)) from None
        if len(self._fh) >= self.caches.fh.cache.max_entries:
            self._fh.clear()
        self._fh[(domain, fsid)] = (entry.value, _check_at([entry]), version)
        return entry.value

    # ------------------------------------------------------------ groups
    def groups_ready(self, cred: Credential) -> tuple[int, ...] | None | bool:
        """The managed groups of `cred` when memoised (None: keep the client's), else False."""
        memo = self._groups.get(cred.uid)
        cache = self.caches.gid.cache
        if memo is None or memo.version != cache.version or cache.now_exact() >= memo.check_at:
            return False
        return memo.gids

    async def groups(self, cred: Credential, addr: str) -> tuple[int, ...] | None:
        """auth.unix.gid for an AUTH_SYS caller: every group of its uid on this server, or
        None to keep the groups the client sent (a user the server does not know)."""
        if cred.flavor != AUTH_SYS:
            return None
        ready = self.groups_ready(cred)
        if ready is not False:
            return ready  # type: ignore[return-value]
        version = self.caches.gid.cache.version
        try:
            entry = await self.caches.gid.get(cred.uid, addr)
        except CacheDelay as e:
            raise errors.NFS4ERR_DELAY(str(e)) from None
        if len(self._groups) >= self.caches.gid.cache.max_entries:
            self._groups.clear()
        self._groups[cred.uid] = _Groups(entry.value, _check_at([entry]), version)
        return entry.value


def static_views(resolver: StaticExportResolver, *, max_mounts: int = DEFAULT_MAX_MOUNTS
                 ) -> ExportViews:
    """Views over a fixed exports table, every cache filled by the embedded resolver with the
    resolver's reverse lookup and runner (what tests and embedding programs use)."""
    way = EmbeddedWay(resolver.entries, names_of=resolver.reverse_lookup,
                      innetgr=resolver.innetgr, runner=resolver.runner)
    caches = ServerCaches({name: [way] for name in CACHE_NAMES})
    return ExportViews(caches, tuple(e.path for e in resolver.entries), max_mounts=max_mounts)


def _check_at(entries: Sequence[Entry[Any]]) -> float:
    """When the first of `entries` wants a refresh: half its life, as `cache_check`."""
    points = [e.refreshed + (e.expiry - e.refreshed) / 2 for e in entries]
    return min(points, default=float("inf"))
