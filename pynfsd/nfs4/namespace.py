"""The namespace half of the Vfs: who the caller is, and which objects it reaches.

Theory of operation: a `Namespace` (the base class of `pynfsd.nfs4.vfs.Vfs`, made per
COMPOUND) holds the client's view of the exports and the RPC credential.  It squashes the
credential per export (root_squash/all_squash/anonuid) into the identity the worker threads
take for backend calls (`VfsHost.runner`), checks the request's security flavour and port
against an export (NFS4ERR_WRONGSEC, NFS4ERR_PERM) and whether it is writable (NFS4ERR_ROFS),
and applies the POSIX permission model for backends that leave it to the caller (`permit`).
It turns filehandles into `Obj`s (NFS4ERR_STALE for exports this client may not use), reads
attributes (pure pseudo directories from `VfsHost.pseudo_attrs`), and walks the namespace:
LOOKUP, LOOKUPP and READDIR through the pseudo-fs, from one export into another, and into
filesystems mounted inside an export (`pynfsd.nfs4.crossing`; a mount not crossed is logged
once through `VfsHost.hidden_mounts`).  OSErrors become NFS4 errors here.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pynfsd.exports.mounts import mounts_below
from pynfsd.exports.pseudofs import PseudoNode
from pynfsd.exports.types import ClientExport
from pynfsd.fs import perm
from pynfsd.fs.backend import Attrs, Backend, DirEntry, FileType, MountPoint
from pynfsd.fs.creds import Identity
from pynfsd.nfs4 import errors
from pynfsd.nfs4.crossing import Submount
from pynfsd.nfs4.fh import KIND_PSEUDO, decode_fh, export_fh, pseudo_fh
from pynfsd.nfs4.vfstypes import MANAGE_GIDS, ClientView, FhPath, Listed, NotCrossed, Obj, VfsHost
from pynfsd.rpc.flavors import AUTH_NONE, sec_name

if TYPE_CHECKING:
    from pynfsd.rpc.auth import Credential

T = TypeVar("T")



def flavour_name(cred: Credential) -> str:
    """The exports(5) sec= name of the request's flavour (pseudoflavour for RPCSEC_GSS)."""
    return sec_name(cred.sec_flavor) or "?"



class Namespace:
    """Per-COMPOUND access to the client's exports: identities, filehandles, attributes,
    lookups and listings, with their policies applied (the base of `Vfs`)."""

    def __init__(self, host: VfsHost, view: ClientView, cred: Credential, port: int = 0, *,
                 fh_path: FhPath | None = None, managed_gids: tuple[int, ...] | None = None,
                 manage_all: bool = False) -> None:
        self.host = host
        self.view = view
        self.cred = cred
        self.port = port
        self.fh_path = fh_path  # nfsd.fh: fsid -> the export's path for this client
        self.managed_gids = managed_gids  # auth.unix.gid's groups of an AUTH_SYS caller
        self.manage_all = manage_all  # --manage-gids: every export, not only manage-gids ones
        self.flavour = flavour_name(cred)
        self._ids: dict[int, Identity] = {}

    # ------------------------------------------------------------ plumbing
    async def _call(self, export: ClientExport | None, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker acting as this request's identity in ``export``."""
        return await self.host.runner.run_as(self.identity(export), fn, *args)

    async def _run(self, export: ClientExport | None, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._call(export, fn, *args)
        except OSError as e:
            raise errors.from_oserror(e) from None

    async def _quick_or_run(
        self, obj: Obj, quick: Callable[[], T | None], fn: Callable[..., T], *args: Any
    ) -> T:
        """``quick()`` on the event loop (a backend's ``*_cached`` call: it never blocks),
        or ``fn(*args)`` on a worker thread when it declines."""
        try:
            value = quick()
        except OSError as e:
            raise errors.from_oserror(e) from None
        return value if value is not None else await self._run(obj.export, fn, *args)

    def identity(self, export: ClientExport | None) -> Identity:
        """Squash the credential as the export says (exports(5) root_squash/all_squash)."""
        key = export.fsid if export is not None else -1
        ident = self._ids.get(key)
        if ident is None:
            ident = self._squash(export)
            self._ids[key] = ident
        return ident

    def _squash(self, export: ClientExport | None) -> Identity:
        c = self.cred
        if export is None:
            return Identity(c.uid, c.gid, tuple(c.gids))
        o = export.options
        anon = Identity(o.anonuid, o.anongid, ())
        if c.flavor == AUTH_NONE or o.squash == "all":
            return anon
        groups = c.gids
        if self.managed_gids is not None and (self.manage_all or o.has(MANAGE_GIDS)):
            groups = self.managed_gids  # the server's group database, not the client's 16
        if o.squash == "root":
            uid = o.anonuid if c.uid == 0 else c.uid
            gid = o.anongid if c.gid == 0 else c.gid
            gids = tuple(o.anongid if g == 0 else g for g in groups)
            return Identity(uid, gid, gids)
        return Identity(c.uid, c.gid, tuple(groups))

    def check_sec(self, obj: Obj) -> None:
        """NFS4ERR_WRONGSEC when the request's flavour is not allowed on obj's export (§3.3)."""
        if obj.export is None:
            return
        if self.flavour not in obj.export.options.sec:
            raise errors.NFS4ERR_WRONGSEC()
        if obj.export.options.secure and self.port >= 1024:
            # exports(5) "secure": requests must come from a reserved port (as knfsd: PERM).
            raise errors.NFS4ERR_PERM("request from an unprivileged port to a 'secure' export")

    def check_writable(self, obj: Obj) -> None:
        if obj.export is None or not obj.export.options.rw:
            raise errors.NFS4ERR_ROFS()

    def permit(self, obj: Obj, attrs: Attrs, want: int, owner_override: bool = False) -> None:
        """POSIX permission check for backends that leave it to the caller (the others decide
        when the call is made); NFS4ERR_ACCESS when any of `want` is denied."""
        if enforcing(obj):
            return
        if owner_override and self.identity(obj.export).uid == attrs.uid:
            return
        if self._posix_granted(obj, attrs, want) != want:
            raise errors.NFS4ERR_ACCESS()

    def _posix_granted(self, obj: Obj, attrs: Attrs, want: int) -> int:
        """The subset of `want` the POSIX model grants this request's identity."""
        ident = self.identity(obj.export)
        acl = obj.backend.acl_cached(obj.handle) if obj.backend is not None else None
        return perm.check_access(attrs, ident.uid, ident.groups, want, acl)

    # ------------------------------------------------------------ filehandles
    def root(self) -> Obj:
        node = self.view.pseudofs.root
        if node.export is not None:
            return self._export_root(node.export, node)
        return Obj(pseudo_fh(node.id), None, None, b"", node)

    def _export_root(self, export: ClientExport, node: PseudoNode | None) -> Obj:
        backend = self.host.backends.backend_for(export)
        handle = backend.root()
        return Obj(export_fh(export.fsid, handle), export, backend, handle, node)

    async def from_fh(self, fh: bytes) -> Obj:
        """PUTFH: a handle this client may use (STALE for unknown or not-allowed exports)."""
        d = decode_fh(fh)
        if d.kind == KIND_PSEUDO:
            node = self.view.pseudofs.find_by_id(d.ident)
            if node is None:
                raise errors.NFS4ERR_STALE()
            if node.export is not None:
                return self._export_root(node.export, node)
            return Obj(fh, None, None, b"", node)
        export = await self._export_by_fsid(d.fsid)
        if export is None:
            raise errors.NFS4ERR_STALE()
        backend = self.host.backends.backend_for(export)
        node = self.view.node_by_fsid.get(export.fsid) if d.ident == backend.root() else None
        return Obj(fh, export, backend, d.ident, node)

    async def _export_by_fsid(self, fsid: int) -> ClientExport | None:
        """The export of a filehandle's fsid: nfsd.fh names its path, which must be an export
        of this client's view (a removed or no longer allowed export: None, NFS4ERR_STALE);
        else a filesystem crossed below a ``crossmnt`` export."""
        export = self.view.by_fsid.get(fsid)
        if export is not None and self.fh_path is not None:
            path = await self.fh_path(export)
            if path != export.path:
                export = None  # the fsid names another path now, or none
        return export or await self._submount_export(fsid)

    # ------------------------------------------------------------ attributes
    async def getattr(self, obj: Obj) -> Attrs:
        attrs = obj.attrs
        if attrs is not None:
            return attrs
        if obj.backend is None:
            attrs = self.host.pseudo_attrs(obj.node)
        else:
            be, h = obj.backend, obj.handle
            attrs = await self._quick_or_run(obj, lambda: be.getattr_cached(h), be.getattr, h)
        obj.attrs = attrs
        return attrs

    def mounted_on_fileid(self, obj: Obj, attrs: Attrs) -> int:
        """For an export root, the fileid of the directory it covers (RFC 7530 §5.8.2.33)."""
        sub = self._submount_root(obj)
        if sub is not None:
            return sub.covered_fileid
        node = obj.node
        if node is not None and node.export is not None and node.parent is not None:
            if obj.backend is not None and obj.handle == obj.backend.root():
                return node.fileid
        return attrs.fileid

    # ------------------------------------------------------------ namespace
    async def lookup(self, d: Obj, name: bytes) -> Obj:
        if d.node is not None:
            child = self.view.pseudofs.lookup(d.node, name)
            if child is not None:
                return await self._enter_node(child)
            if d.is_pseudo:
                raise errors.NFS4ERR_NOENT()
        dattrs = await self.getattr(d)
        if dattrs.type == FileType.LNK:
            raise errors.NFS4ERR_SYMLINK()  # RFC 7530 §16.13.5
        if dattrs.type != FileType.DIR:
            raise errors.NFS4ERR_NOTDIR()
        self.permit(d, dattrs, perm.EXEC)
        return await self._descend(d, name)

    async def _descend(self, d: Obj, name: bytes) -> Obj:
        """The child ``name`` of directory ``d``, crossing into a filesystem mounted there
        when the export allows it; a mount point not crossed is NFS4ERR_NOENT, never
        NFS4ERR_XDEV (not a LOOKUP error, RFC 7530 §15.2)."""
        backend = d.be()
        try:
            found = backend.lookup_cached(d.handle, name, self.identity(d.export))
            if found is None:
                found = await self._call(d.export, backend.lookup, d.handle, name)
            handle, attrs = found
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise errors.from_oserror(e) from None
            mount = await self._run(d.export, backend.mount_point, d.handle, name)
            export = self._crossing(d, mount)
            if export is None:
                raise NotCrossed("a mount point that is not crossed") from None
            return self._export_root(export, self.view.node_by_fsid.get(export.fsid))
        assert d.export is not None
        return Obj(export_fh(d.export.fsid, handle), d.export, backend, handle, attrs=attrs)

    def _crossing(self, d: Obj, mount: MountPoint) -> ClientExport | None:
        """The export beyond a mount point in ``d`` (see `pynfsd.nfs4.crossing`), or None."""
        assert d.export is not None
        export = self.view.crossings.enter(d.export, mount)
        if export is None:
            self.host.hidden_mounts.not_crossed(mount, d.export)
        return export

    def _submount_root(self, obj: Obj) -> Submount | None:
        """The submount whose root ``obj`` is, if it is one."""
        if obj.export is None or obj.backend is None:
            return None
        sub = self.view.crossings.submounts.get(obj.export.fsid)
        return sub if sub is not None and obj.handle == obj.backend.root() else None

    async def _walk(self, export: ClientExport, path: str) -> Obj:
        """The directory at server ``path`` inside ``export``, crossing mounts as LOOKUP."""
        obj = self._export_root(export, self.view.node_by_fsid.get(export.fsid))
        rel = os.path.relpath(path, export.path)
        for comp in rel.split("/") if rel != "." else ():
            obj = await self._descend(obj, os.fsencode(comp))
        return obj

    async def _submount_export(self, fsid: int) -> ClientExport | None:
        """A crossed mount's export by fsid; one unknown since this view was built (a handle
        from before a restart) is looked for below the ``crossmnt`` exports, at most once per
        version of the mount table."""
        cr = self.view.crossings
        export = cr.export(fsid)
        if export is not None or not cr.crossmnt:
            return export
        generation, mounts = await self.host.runner.run(self.host.mounts.current)
        if cr.scanned == generation:
            return None
        epoch = cr.epoch
        for top in cr.crossmnt:
            for point in mounts_below(mounts, top.path):
                try:
                    await self._walk(top, point)
                except errors.NFS4Error:
                    continue  # not reachable by crossing (hidden, or gone meanwhile)
                if (export := cr.export(fsid)) is not None:
                    return export
        if cr.epoch == epoch:  # every mount is registered: no need to look again till a change
            cr.scanned = generation
        return None

    async def _enter_node(self, node: PseudoNode) -> Obj:
        if node.export is not None:
            return self._export_root(node.export, node)
        if node.covering is None:
            return Obj(pseudo_fh(node.id), None, None, b"", node)
        # a directory inside an export on the way to a nested export: walk the backend to it
        try:
            obj = await self._walk(node.covering, node.real_path)
        except NotCrossed:
            # behind a mount point that is not crossed: a pseudo directory leading to the
            # nested export, as knfsd's v4root (RFC 7530 §7.3)
            return Obj(pseudo_fh(node.id), None, None, b"", node)
        obj.node = node
        return obj

    async def lookupp(self, obj: Obj) -> Obj:
        sub = self._submount_root(obj)
        if sub is not None:  # back to the directory holding the mount point
            return await self._walk(sub.parent, os.path.dirname(sub.export.path))
        node = obj.node
        if obj.is_pseudo or (
            node is not None and obj.backend is not None and obj.handle == obj.backend.root()
        ):
            assert node is not None
            parent = self.view.pseudofs.parent(node)
            if parent is None:
                raise errors.NFS4ERR_NOENT()
            return await self._enter_node(parent)
        attrs = await self.getattr(obj)
        if attrs.type != FileType.DIR:
            raise errors.NFS4ERR_NOTDIR()
        backend = obj.be()
        handle, _ = await self._run(obj.export, backend.parent, obj.handle)
        assert obj.export is not None
        parent_obj = Obj(export_fh(obj.export.fsid, handle), obj.export, backend, handle)
        if handle == backend.root():
            parent_obj.node = self.view.node_by_fsid.get(obj.export.fsid)
        return parent_obj

    async def readdir(
        self, d: Obj, cookie: int, verifier: bytes, max_entries: int
    ) -> tuple[list[Listed], bool, bytes]:
        attrs = await self.getattr(d)
        if attrs.type != FileType.DIR:
            raise errors.NFS4ERR_NOTDIR()
        if d.is_pseudo:
            return await self._pseudo_readdir(d, cookie, max_entries)
        self.permit(d, attrs, perm.READ)
        # read but not search permission: names only, as a backend that enforces does it
        searchable = enforcing(d) or self._posix_granted(d, attrs, perm.EXEC) == perm.EXEC
        while True:
            ents, eof, verf = await self._backend_readdir(d, cookie, verifier, max_entries)
            out = await self._listed(d, ents, searchable)
            if out or eof or not ents:
                return out, eof, verf
            cookie, verifier = ents[-1].cookie, verf  # only mount points not crossed: go on

    async def _backend_readdir(
        self, d: Obj, cookie: int, verifier: bytes, max_entries: int
    ) -> tuple[list[DirEntry], bool, bytes]:
        backend = d.be()
        try:
            return await self._call(
                d.export, backend.readdir, d.handle, cookie, verifier, max_entries
            )
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise await self._cookie_error(backend, d, verifier) from None
            raise errors.from_oserror(e) from None

    async def _listed(self, d: Obj, ents: list[DirEntry], searchable: bool) -> list[Listed]:
        """The READDIR entries of ``ents``: a plain reachable object is made here, in line (one
        per entry listed); the others as ``_dir_entry`` says."""
        export, backend = d.export, d.backend
        assert export is not None
        prefix = export_fh(export.fsid, b"")
        out: list[Listed] = []
        for e in ents:
            if e.mount is None and not e.error and searchable:
                obj = Obj(prefix + e.handle, export, backend, e.handle, None, e.attrs)
                out.append(Listed(e.name, e.cookie, obj, e.attrs))
            elif (entry := await self._dir_entry(d, e, searchable)) is not None:
                out.append(entry)
        return out

    async def _dir_entry(self, d: Obj, e: DirEntry, searchable: bool) -> Listed | None:
        """A READDIR entry that is not a plain object: a mount point crossed shows the mounted
        root (its fsid and attributes, as knfsd with crossmnt); one not crossed is left out
        (see crossing). An entry the caller may not reach carries the error (RFC 7530
        §16.24.4)."""
        if e.error or not searchable:
            status = errors.from_errno(e.error or errno.EACCES).status
            return Listed(e.name, e.cookie, None, None, status, e.fileid)
        assert e.mount is not None
        export = self._crossing(d, e.mount)
        on_the_way = d.node.children.get(e.name) if d.node is not None else None
        if export is not None:
            obj = self._export_root(export, self.view.node_by_fsid.get(export.fsid))
        elif on_the_way is not None:  # leads to a nested export: shown as LOOKUP shows it
            obj = await self._enter_node(on_the_way)
        else:
            return None
        return Listed(e.name, e.cookie, obj, await self.getattr(obj))

    async def _cookie_error(self, backend: Backend, d: Obj, verifier: bytes) -> errors.NFS4Error:
        """The backend refused a cookie/verifier pair: a verifier that is no longer the
        directory's is NFS4ERR_NOT_SAME (RFC 7530 §16.24.4 MUST), else NFS4ERR_BAD_COOKIE."""
        if verifier != bytes(8):
            _, _, current = await self._run(d.export, backend.readdir, d.handle, 0, bytes(8), 0)
            if current != verifier:
                return errors.NFS4ERR_NOT_SAME()
        return errors.NFS4ERR_BAD_COOKIE()

    async def _pseudo_readdir(
        self, d: Obj, cookie: int, max_entries: int
    ) -> tuple[list[Listed], bool, bytes]:
        assert d.node is not None
        names = sorted(d.node.children)
        out: list[Listed] = []
        for i, name in enumerate(names[max(0, cookie - 2) :], start=max(0, cookie - 2)):
            if len(out) >= max_entries:
                return out, False, b"\0" * 8
            obj = await self._enter_node(d.node.children[name])
            out.append(Listed(name, i + 3, obj, await self.getattr(obj)))
        return out, True, b"\0" * 8


def enforcing(obj: Obj) -> bool:
    """Whether obj's backend makes the permission decisions itself (see the module docstring)."""
    return obj.backend is not None and obj.backend.enforces_permissions
