"""The export resolver: the one place the NFS layer asks "what may this client use?".

Theory of operation: the NFS layer holds an :class:`ExportResolver` and awaits
``exports_for(client_addr)`` whenever it needs a client's exports (PUTROOTFH, crossing into an
export, SECINFO, revalidating a filehandle). The call may suspend: the static resolver runs a
reverse DNS lookup on a `Runner` (a worker thread), and a future export cache with kernel-style upcalls can make
the request wait for an answer without changing its callers. Nothing is cached here, so a
client's view can never go stale; the exports table itself is immutable (reload = new resolver).

Every export gets a 64-bit ``fsid``: the ``fsid=`` number when one is given (``fsid=0`` and
``fsid=root`` are the pseudo-root, ``PSEUDO_ROOT_FSID``); for a UUID (``fsid=<uuid>``, or the
uuid of the filesystem that rpc.mountd and the embedded resolver put in their nfsd.export
answers for an export without ``fsid=``, `pynfsd.exports.fsuuid`) a hash of the UUID and the
path, so the filehandle stays the same across restarts and whichever of the two answered,
and two exports of one filesystem (one filesystem uuid) still get two fsids; without either,
a hash of the path.  Derived values have the top bit set: below 2**32 they would read as an
``fsid=`` number.  (The nfsd.fh key knfsd asks for a UUID export is another thing, made from
the UUID itself: `pynfsd.exports.kernelform.fh_key`.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Protocol

from pynfsd.blocking import Runner, default_runner

from .match import ReverseLookup, best_match, identify, needs_names, system_checked_names
from .netgroup import Innetgr, system_innetgr
from .types import ClientExport, ExportEntry, ExportOptions, ExportsError

#: fsid of the NFSv4 pseudo-root (an ``fsid=0``/``fsid=root`` export, or the synthesised root).
PSEUDO_ROOT_FSID = 0
_DERIVED_BIT = 1 << 63
_HEX = frozenset("0123456789abcdefABCDEF")


class ExportResolver(Protocol):
    """What the NFS layer uses for every export lookup."""

    async def exports_for(self, client_addr: str) -> tuple[ClientExport, ...]:
        """The exports ``client_addr`` may use, each with the options that apply to it."""
        ...


def derived_fsid(tag: bytes, data: bytes) -> int:
    """A 64-bit fsid hashed from ``data``, top bit set (never a number ``fsid=`` can write)."""
    digest = hashlib.blake2b(tag + b"\0" + data, digest_size=8).digest()
    return int.from_bytes(digest, "big") | _DERIVED_BIT


def uuid_fold(text: str, size: int) -> bytes:
    """rpc.mountd's ``get_uuid``: the hex digits of ``text`` (others skipped) xor-folded into
    ``size`` bytes; knfsd's ``mk_fsid`` folds a 16-byte uuid the same way."""
    out = bytearray(size)
    digits = [int(c, 16) for c in text if c in _HEX]
    for i, digit in enumerate(digits):
        j = i % (2 * size)
        out[j // 2] ^= digit << 4 if j % 2 == 0 else digit
    return bytes(out)


def export_fsid(path: str, options: ExportOptions) -> int:
    """The integer fsid of an export: numeric ``fsid=``, 0 for the root, else a stable hash."""
    if options.pseudo_root:
        return PSEUDO_ROOT_FSID
    if isinstance(options.fsid, int):
        return options.fsid
    if isinstance(options.fsid, str):
        return derived_fsid(b"uuid", uuid_fold(options.fsid, 16) + os.fsencode(path))
    return derived_fsid(b"path", os.fsencode(path))


def check_fsids(entries: Sequence[ExportEntry]) -> None:
    """Two different paths must never share an ``fsid=`` number or uuid (knfsd's filehandles,
    and pynfsd's nfsd.fh keys, would be ambiguous)."""
    owner: dict[object, str] = {}
    for entry in entries:
        for _, options in entry.clients:
            fsid: object = export_fsid(entry.path, options)
            if isinstance(options.fsid, str) and not options.pseudo_root:
                fsid = uuid_fold(options.fsid, 16)
            other = owner.setdefault(fsid, entry.path)
            if other != entry.path:
                raise ExportsError(f"{entry.path}: fsid {options.fsid} already used by {other}")


class StaticExportResolver:
    """Resolves against a fixed exports table; name lookups run on `runner`.

    ``reverse_lookup`` gives the names to trust for an address (forward-checked system
    names by default); ``innetgr`` answers netgroup membership."""

    def __init__(
        self,
        entries: Iterable[ExportEntry],
        reverse_lookup: ReverseLookup = system_checked_names,
        runner: Runner | None = None,
        innetgr: Innetgr = system_innetgr,
    ) -> None:
        self.entries: tuple[ExportEntry, ...] = tuple(entries)
        check_fsids(self.entries)
        self.reverse_lookup = reverse_lookup
        self.innetgr = innetgr
        self.runner = runner or default_runner()
        self._specs = [s for e in self.entries for s, _ in e.clients]
        self._needs_names = needs_names(self._specs)

    async def exports_for(self, client_addr: str) -> tuple[ClientExport, ...]:
        if not self._needs_names:
            return self.exports_for_names(client_addr)
        client = await self.runner.run(
            identify, client_addr, self._specs, self.reverse_lookup, self.innetgr)
        return self.exports_for_names(client.addr, client.names, client.netgroups)

    def exports_for_names(
        self, client_addr: str, names: Sequence[str] = (),
        netgroups: frozenset[str] = frozenset(),
    ) -> tuple[ClientExport, ...]:
        """The sans-IO core of :meth:`exports_for`, given the client's host names and
        netgroups."""
        found: list[ClientExport] = []
        for entry in self.entries:
            options = best_match(entry.clients, client_addr, names, netgroups)
            if options is not None:
                found.append(ClientExport(entry.path, options, export_fsid(entry.path, options)))
        return tuple(found)
