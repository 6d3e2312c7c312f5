"""The embedded resolver: the default way to fill the four kernel caches, in the server process.

Theory of operation.  The export and credential caches (`auth.unix.ip`, `nfsd.export`,
`nfsd.fh`, `auth.unix.gid`) are filled by upcalls: a request line in the kernel's format out,
a reply line back (`pynfsd.cache.lines`).  `EmbeddedWay` answers them as rpc.mountd does,
from the exports table and the system's databases, without a separate daemon:

* `auth.unix.ip` (`nfsd ADDR`): the client's *domain*, the comma-joined, sorted list of the
  client specifications of the whole table that cover the address, as written (`*`,
  `192.168.0.0/24`, `*.example.com`, `@ng`, `host.example.com`): mountd's client name.  None
  covers it: a negative entry.  A domain longer than `MAX_DOMAIN` bytes is replaced by the
  address itself (mountd's `use_ipaddr`).
* `nfsd.export` (`DOMAIN PATH`): the options of the best spec of that path (exports(5)
  precedence) among those in the domain's list, in the kernel's form (`kernelform`); for an
  address domain, the best spec covering that address.  An export without `fsid=` carries
  the uuid rpc.mountd would give it (`fsuuid.with_fs_uuid`: the filesystem's blkid uuid or
  statfs fsid), so its filehandles are the same whichever of the two answered.  Not
  exported to it: negative.  A domain that is an address is always read as one; this agrees
  with the list reading, since a list that is one address arises only when nothing but that
  host spec covers the address.
  A path below an export with `crossmnt` (a filesystem mounted inside it) that is not
  exported to the domain itself gets that export's options without its fsid, uuid and
  locations (rpc.mountd's "different filesystem" answer).
* `nfsd.fh` (`DOMAIN FSIDTYPE FSID`): the path of the export the domain may use whose fsid has
  that key (`kernelform.fh_key`: for an export with a uuid, its own or its filesystem's,
  `FSID_UUID8` only on a mount point and `FSID_UUID4_INUM` only with the directory's inode,
  as rpc.mountd's `match_fsid`); else negative.  A uuid key is matched as mountd does, by
  trying each export (a statfs, and blkid, for those without `fsid=`).
* `auth.unix.gid` (`UID`): every group of the user (`getpwuid`, then `getgrouplist`, at most
  `NGROUPS_MAX`); an unknown uid is negative.

`send` runs on the event loop and never blocks: it decodes the request, and a task computes
the answer on a `Runner` (by default a pool of its own, `DEFAULT_WORKERS` threads, so a slow
DNS or directory server never holds up filesystem work), then encodes the reply with expiry
`now + ttl` (mountd's 30 minutes) and calls `answer` on the loop, exactly once; `lost` only
for a request it cannot read, a failure (a name service raising, or a bug: logged at most
once a minute, with the number suppressed) or when closed first; neither is ever called
from inside `send`.  Host names
come from a reverse lookup with forward check and netgroups from glibc's `innetgr`
(`pynfsd.exports.match.identify`), in the worker.

`reload` swaps in a new table (`Table`, immutable).  An answer computed while a reload
happened is computed again from the new table, so no entry made from the old table is
stored after the caller's flush.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import posixpath
import pwd
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pynfsd.blocking import BlockingPool, Runner
from pynfsd.cache import lines as L
from pynfsd.cache.qword import NGROUPS_MAX, LineError
from pynfsd.rpc.connections import RateLimitedLog

from .fsuuid import with_fs_uuid
from .kernelform import (
    FSID_NUM,
    fh_key,
    fsid_of_key,
    has_uuid,
    info_from_options,
    path_facts,
)
from .match import (
    ClientId,
    ForwardLookup,
    ReverseLookup,
    best_by,
    best_spec,
    checked_names,
    identify,
    matching_specs,
    system_forward_lookup,
    system_reverse_lookup,
)
from .netgroup import Innetgr, system_innetgr
from .resolver import check_fsids, export_fsid
from .types import ClientSpec, ExportEntry, ExportOptions

log = logging.getLogger("pynfsd.exports.embedded")

#: uid -> every group of the user, None for an unknown uid (may block).
GroupLookup = Callable[[int], "tuple[int, ...] | None"]
#: address -> the `ClientId` matching needs (blocking).
Identify = Callable[[str], ClientId]

DEFAULT_TTL = 1800  # seconds an answer is valid (rpc.mountd's DEFAULT_TTL)
DEFAULT_WORKERS = 4
MAX_DOMAIN = 1000  # bytes of a joined domain; longer: the address is the domain
_RECOMPUTE = 3  # answers computed again when a reload happened meanwhile


def system_getgrouplist(uid: int) -> tuple[int, ...] | None:
    """Every group of `uid` from the system's databases (blocking); None if unknown."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return None
    return tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))[:NGROUPS_MAX]


Clients = Sequence[tuple[ClientSpec, ExportOptions]]


class Table:
    """One exports table and the answers it gives (sans-IO but for `identify`, called only
    for what needs names)."""

    def __init__(self, entries: Iterable[ExportEntry]) -> None:
        self.entries = tuple(entries)
        check_fsids(self.entries)
        self.by_path = {e.path: e for e in self.entries}
        self.specs = list({s.pattern: s for e in self.entries for s, _ in e.clients}.values())
        self._by_fsid: dict[int, list[ExportEntry]] = {}  # fsid= number (root: 0) -> entries
        for e in self.entries:
            for fsid in {export_fsid(e.path, o) for _, o in e.clients if _numbered(o)}:
                self._by_fsid.setdefault(fsid, []).append(e)

    def domain(self, client: ClientId) -> str | None:
        """auth.unix.ip: the sorted specs covering the client, or its address if too long."""
        patterns = sorted({s.pattern for s in matching_specs(self.specs, client)})
        if not patterns:
            return None
        joined = ",".join(patterns)
        return client.addr if len(joined.encode()) > MAX_DOMAIN else joined

    def chooser(self, domain: str, who: Identify) -> Callable[[Clients], ExportOptions | None]:
        """How a domain picks among an export's clients: by its list of specs, or, for an
        address domain, as that address."""
        try:
            addr = str(ipaddress.ip_address(domain))
        except ValueError:
            names = frozenset(domain.split(","))
            return lambda c: _options(best_by(c, lambda s: s.pattern in names))
        client = who(addr)
        return lambda c: _options(best_spec(c, client))

    def export(self, key: L.ExportKey, who: Identify) -> L.ExportInfo | None:
        """nfsd.export: the kernel form of the options `key.domain` has on `key.path`; for a
        path below an export with `crossmnt` (a filesystem mounted inside it), that
        export's options without its fsid and locations, as rpc.mountd answers."""
        choose = self.chooser(key.domain, who)
        entry = self.by_path.get(key.path)
        options = choose(entry.clients) if entry is not None else None
        if options is not None:
            return info_from_options(key.path, with_fs_uuid(key.path, options))
        for parent in _ancestors(key.path):
            above = self.by_path.get(parent)
            options = choose(above.clients) if above is not None else None
            if options is not None and options.has("crossmnt"):
                return info_from_options(key.path, with_fs_uuid(key.path, _submount(options)))
        return None

    def fh(self, key: L.FhKey, who: Identify) -> str | None:
        """nfsd.fh: the path of the export with that fsid that `key.domain` may use (a
        number from the index; other keys by trying each export, as rpc.mountd)."""
        if key.fsidtype == FSID_NUM:
            fsid = fsid_of_key(key.fsidtype, key.fsid)
            entries = self._by_fsid.get(fsid, []) if fsid is not None else []
        else:
            entries = [e for e in self.entries if not all(_numbered(o) for _, o in e.clients)]
        if not entries:
            return None
        choose = self.chooser(key.domain, who)
        for entry in entries:
            options = choose(entry.clients)
            if options is None:
                continue
            if key.fsidtype != FSID_NUM:
                options = with_fs_uuid(entry.path, options)
            facts = path_facts(entry.path) if has_uuid(options) else None
            if fh_key(options, export_fsid(entry.path, options), facts) == (
                    key.fsidtype, key.fsid):
                return entry.path
        return None


def _numbered(options: ExportOptions) -> bool:
    """Is the export named by an `fsid=` number (FSID_NUM; the root is 0)?"""
    return options.pseudo_root or isinstance(options.fsid, int)


def _ancestors(path: str) -> Iterator[str]:
    """`/a/b/c` -> `/a/b`, `/a`, `/`."""
    while path not in ("/", ""):
        path = posixpath.dirname(path)
        yield path


def _submount(options: ExportOptions) -> ExportOptions:
    """A crossed filesystem's options: its parent's, without what names the parent's own
    filesystem (fsid, uuid, locations)."""
    flags = frozenset(f for f in options.flags if not f.startswith(("refer=", "replicas=")))
    return replace(options, fsid=None, pseudo_root=False, flags=flags)


def _options(found: tuple[ClientSpec, ExportOptions] | None) -> ExportOptions | None:
    return None if found is None else found[1]


@dataclass(frozen=True, slots=True)
class _Kind:
    """One cache's lines: its request decoder, its reply type and encoder."""

    decode: Callable[[bytes], Any]
    reply: Callable[[Any, int, Any], Any]
    encode: Callable[[Any], bytes]


_KINDS = {
    "auth.unix.ip": _Kind(L.decode_ip_request, L.IpReply, L.encode_ip_reply),
    "nfsd.export": _Kind(L.decode_export_request, L.ExportReply, L.encode_export_reply),
    "nfsd.fh": _Kind(L.decode_fh_request, L.FhReply, L.encode_fh_reply),
    "auth.unix.gid": _Kind(L.decode_gid_request, L.GidReply, L.encode_gid_reply),
}


class EmbeddedWay:
    """Answers the four caches' upcalls in the process (see the module docstring)."""

    name = "embedded"

    def __init__(
        self, entries: Iterable[ExportEntry], *, runner: Runner | None = None,
        reverse_lookup: ReverseLookup = system_reverse_lookup,
        forward_lookup: ForwardLookup = system_forward_lookup,
        innetgr: Innetgr = system_innetgr, getgrouplist: GroupLookup = system_getgrouplist,
        clock: Callable[[], float] = time.time, ttl: int = DEFAULT_TTL,
        names_of: ReverseLookup | None = None,
    ) -> None:
        self._table = Table(entries)
        self._pool: BlockingPool | None = None
        if runner is None:
            runner = self._pool = BlockingPool(DEFAULT_WORKERS, name="pynfsd-embedded",
                                               switch_creds=False)
        self._runner = runner
        # the names to trust for an address: forward-checked reverse names, or `names_of`'s
        self._names_of = names_of or functools.partial(checked_names, reverse=reverse_lookup,
                                                       forward=forward_lookup)
        self._innetgr = innetgr
        self._getgrouplist = getgrouplist
        self._clock = clock
        self._ttl = ttl
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures = RateLimitedLog(logger=log)
        self._compute: dict[str, Callable[[Table, Any], Any]] = {
            "auth.unix.ip": self._ip, "nfsd.export": self._export, "nfsd.fh": self._fh,
            "auth.unix.gid": self._gid,
        }  # fmt: skip

    @property
    def table(self) -> Table:
        return self._table

    def reload(self, entries: Iterable[ExportEntry]) -> None:
        """Answer from a new exports table from now on (ExportsError: the old one stays)."""
        self._table = Table(entries)

    def ready(self, cache: str) -> bool:
        return True

    def send(self, cache: str, request: bytes, answer: Callable[[bytes], None],
             lost: Callable[[str], None]) -> None:
        """Answer one request line of `cache`: later, on the event loop, exactly one call of
        `answer(reply line)` or `lost(reason)`.  Never blocks."""
        loop = asyncio.get_running_loop()
        kind = _KINDS.get(cache)
        if kind is None:
            loop.call_soon(lost, f"{cache}: not a cache the embedded resolver answers")
            return
        try:
            key = kind.decode(request)
        except LineError as e:
            loop.call_soon(lost, f"{cache}: bad request line: {e}")
            return
        task = loop.create_task(self._answer(cache, kind, key, answer, lost))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, cache: str, kind: _Kind, key: Any, answer: Callable[[bytes], None],
                      lost: Callable[[str], None]) -> None:
        compute = self._compute[cache]
        try:
            for _ in range(_RECOMPUTE):
                table = self._table
                value = await self._runner.run(compute, table, key)
                if table is self._table:
                    break
        except asyncio.CancelledError:
            lost(f"{cache}: the embedded resolver was closed")
            raise
        except Exception as e:  # noqa: BLE001 - a failing name service or a bug: logged, lost
            reason = f"{cache}: {type(e).__name__}: {e}"
            self._failures.warning(self._clock(), "embedded resolver: answering %r failed: %s",
                                   key, reason)
            lost(reason)
            return
        answer(kind.encode(kind.reply(key, int(self._clock()) + self._ttl, value)))

    async def close(self) -> None:
        """Give up the answers still being computed (each gets `lost`) and stop the pool."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown()

    # ------------------------------------------------------------ in a worker thread
    def _who(self, table: Table, addr: str) -> ClientId:
        return identify(addr, table.specs, self._names_of, self._innetgr)

    def _ip(self, table: Table, key: L.IpKey) -> str | None:
        if key.cls != "nfsd":
            return None
        return table.domain(self._who(table, key.ip))

    def _export(self, table: Table, key: L.ExportKey) -> L.ExportInfo | None:
        return table.export(key, functools.partial(self._who, table))

    def _fh(self, table: Table, key: L.FhKey) -> str | None:
        return table.fh(key, functools.partial(self._who, table))

    def _gid(self, _table: Table, uid: int) -> tuple[int, ...] | None:
        return self._getgrouplist(uid)

