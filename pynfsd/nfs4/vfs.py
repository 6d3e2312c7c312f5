"""The policy wrapper around the filesystem backends (docs/HABITS.md, "Policy wraps the backend").

Theory of operation: handlers never touch a backend directly.  A `Vfs` is made per COMPOUND
from the client's view of the exports (which exports it may use, joined into a pseudo-fs), the
RPC credential and the server's `VfsHost` (`pynfsd.nfs4.vfstypes`: backends, worker threads,
pseudo-fs attributes, mount table; the Vfs never knows the server).  It turns filehandles into
`Obj`s, and applies every policy in one place: the export a handle belongs to and whether this
client may use it, security flavours (NFS4ERR_WRONGSEC), squashing (root_squash/all_squash/
anonuid), read-only exports (NFS4ERR_ROFS), permissions, pseudo directories, and crossing from
one export into another or into a filesystem mounted inside it (`pynfsd.nfs4.crossing`).
Blocking backend calls run in the worker threads, never on the event loop, acting as the
squashed identity (`pynfsd.fs.creds`); OSErrors become NFS4 errors here.  The identities,
filehandles, attributes, lookups and listings are the base class `Namespace`
(`pynfsd.nfs4.namespace`); this module adds ACCESS, the changes to the namespace (create,
remove, rename, link), data (read, write, commit) and SETATTR.

Permissions: a backend that `enforces_permissions` (the local one: the kernel decides under
the caller's identity, ACLs included) is trusted with every decision, and is asked
(`Backend.access`) only where the protocol needs an answer without the operation: ACCESS and
OPEN of an existing file.  For the others (the in-memory backend) `permit` applies the POSIX
model of `pynfsd.fs.perm` here.  READ, WRITE and SETATTR(size) are checked on every call,
whatever the stateid, with the owner override (RFC 7530 §16.16.5).  READ and a read-only OPEN
of a regular file the caller may execute are allowed (knfsd's read-if-execute, `perm.may_read`).
READDIR of a directory the caller may read but not search lists the names; each entry then
carries NFS4ERR_ACCESS instead of attributes (`Listed.status`, encoded as rdattr_error).

ACLs (RFC 7530 §6): an export serves them when its filesystem holds POSIX ACLs and it is not
exported `no_acl` (`acl_supported`); they are the backend's POSIX ACLs mapped as knfsd maps
them (`pynfsd.nfs4.acl`).  Setting one is refused with NFS4ERR_ATTRNOTSUPP where ACLs are not
served or POSIX cannot hold it; the backend sets the mode with it.
"""

from __future__ import annotations

import errno
from typing import Any

from pynfsd.fs import perm, posixacl
from pynfsd.fs.backend import Attrs, Backend, FileType, FsStat
from pynfsd.gen.nfs4 import (  # RFC 7530 §16.1 ACCESS4 bits
    ACCESS4_DELETE,
    ACCESS4_EXECUTE,
    ACCESS4_EXTEND,
    ACCESS4_LOOKUP,
    ACCESS4_MODIFY,
    ACCESS4_READ,
)
from pynfsd.nfs4 import errors
from pynfsd.nfs4.acl import Ace, AclUnrepresentable, nfs4_to_posix, posix_to_nfs4
from pynfsd.nfs4.fh import export_fh
from pynfsd.nfs4.namespace import Namespace, enforcing
from pynfsd.nfs4.vfstypes import Obj

NO_ACL = "no_acl"  # exports(5): ACLs are not served


class Vfs(Namespace):
    """Per-COMPOUND access to the client's exports with every policy applied."""

    async def statfs(self, obj: Obj) -> FsStat:
        if obj.backend is None:
            return FsStat(0, 0, 0, 0, 0, 0, 255)
        return await self._run(obj.export, obj.backend.statfs, obj.handle)

    async def access(self, obj: Obj, want: int) -> tuple[int, int]:
        """ACCESS (RFC 7530 §16.1): (supported, granted) ACCESS4 bits."""
        attrs = await self.getattr(obj)
        if attrs.type == FileType.DIR:
            supported = want & (
                ACCESS4_READ | ACCESS4_LOOKUP | ACCESS4_MODIFY | ACCESS4_EXTEND | ACCESS4_DELETE
            )
        else:
            supported = want & (ACCESS4_READ | ACCESS4_MODIFY | ACCESS4_EXTEND | ACCESS4_EXECUTE)
        if obj.is_pseudo:
            return supported, supported & (ACCESS4_READ | ACCESS4_LOOKUP)
        bits = await self._granted(obj, attrs, perm.ALL)
        granted = 0
        if bits & perm.READ:
            granted |= ACCESS4_READ
        if bits & perm.EXEC:
            granted |= ACCESS4_LOOKUP | ACCESS4_EXECUTE
        writable = obj.export is not None and obj.export.options.rw
        if bits & perm.WRITE and writable:
            granted |= ACCESS4_MODIFY | ACCESS4_EXTEND | ACCESS4_DELETE
        return supported, supported & granted

    async def _granted(self, obj: Obj, attrs: Attrs, want: int) -> int:
        """The subset of `want` (perm bits) the identity has: the backend's answer when it
        enforces permissions (the kernel's, ACLs included), else the POSIX model's."""
        if not enforcing(obj):
            return self._posix_granted(obj, attrs, want)
        if obj.granted is not None and obj.granted[0] is attrs:
            return obj.granted[1] & want  # asked earlier in this COMPOUND
        be, h, who = obj.be(), obj.handle, self.identity(obj.export)
        bits = await self._quick_or_run(
            obj, lambda: be.access_cached(h, perm.ALL, who), be.access, h, perm.ALL
        )
        obj.granted = (attrs, bits)  # the ACCESS after an OPEN needs no second round trip
        return bits & want

    async def readlink(self, obj: Obj) -> bytes:
        return await self._run(obj.export, obj.be().readlink, obj.handle)

    async def _dir_for_change(self, d: Obj) -> Attrs:
        """Checks before creating or removing in d: writable export, a directory, w+x access."""
        self.check_writable(d)
        attrs = await self.getattr(d)
        if attrs.type != FileType.DIR:
            raise errors.NFS4ERR_NOTDIR()
        self.permit(d, attrs, perm.WRITE | perm.EXEC)
        return attrs

    def _child(self, d: Obj, handle: bytes, attrs: Attrs | None = None) -> Obj:
        assert d.export is not None
        d.attrs = None  # the directory changed
        return Obj(export_fh(d.export.fsid, handle), d.export, d.backend, handle, attrs=attrs)

    def _owner_for_new(self, d: Obj, dattrs: Attrs) -> tuple[int, int]:
        ident = self.identity(d.export)
        gid = dattrs.gid if dattrs.mode & 0o2000 else ident.gid  # setgid directories
        return ident.uid, gid

    async def create_file(
        self, d: Obj, name: bytes, mode: int, exclusive: bool
    ) -> tuple[Obj, Attrs, bool]:
        """OPEN(create): on a backend that enforces permissions, the worker that creates the
        file also asks the kernel the caller's access to it, for the ACCESS (or the access
        check of an OPEN of an existing file) later in this COMPOUND: one round trip, not two."""
        dattrs = await self._dir_for_change(d)
        uid, gid = self._owner_for_new(d, dattrs)
        be = d.be()
        args = (d.handle, name, mode, uid, gid, exclusive)
        if not enforcing(d):
            h, attrs, created = await self._run(d.export, be.create_file, *args)
            return self._child(d, h, attrs), attrs, created
        h, attrs, created, bits = await self._run(d.export, _create_and_access, be, args)
        child = self._child(d, h, attrs)
        if bits is not None:
            child.granted = (attrs, bits)
        return child, attrs, created

    async def make(
        self, d: Obj, name: bytes, ftype: FileType, mode: int, target: bytes, rdev: tuple[int, int]
    ) -> tuple[Obj, Attrs]:
        """CREATE of a non-regular object (directory, symlink, device, socket, FIFO)."""
        dattrs = await self._dir_for_change(d)
        uid, gid = self._owner_for_new(d, dattrs)
        be = d.be()
        if ftype == FileType.DIR:
            if dattrs.mode & 0o2000:
                mode |= 0o2000
            h, attrs = await self._run(d.export, be.mkdir, d.handle, name, mode, uid, gid)
        elif ftype == FileType.LNK:
            h, attrs = await self._run(d.export, be.symlink, d.handle, name, target, uid, gid)
        else:
            args = (d.handle, name, ftype, mode, rdev, uid, gid)
            h, attrs = await self._run(d.export, be.mknod, *args)
        return self._child(d, h, attrs), attrs

    async def _check_sticky(self, d: Obj, dattrs: Attrs, name: bytes) -> None:
        """In a sticky directory only the owner of the entry or the directory may remove it."""
        if not dattrs.mode & 0o1000 or enforcing(d):
            return
        ident = self.identity(d.export)
        if ident.uid in (0, dattrs.uid):
            return
        _, attrs = await self._run(d.export, d.be().lookup, d.handle, name)
        if attrs.uid != ident.uid:
            raise errors.NFS4ERR_ACCESS()

    async def remove(self, d: Obj, name: bytes) -> None:
        dattrs = await self._dir_for_change(d)
        await self._check_sticky(d, dattrs, name)
        d.attrs = None
        await self._run(d.export, d.be().remove, d.handle, name)

    async def rename(self, src: Obj, old: bytes, dst: Obj, new: bytes) -> None:
        if src.export is None or dst.export is None or src.export.fsid != dst.export.fsid:
            raise errors.NFS4ERR_XDEV()
        sattrs = await self._dir_for_change(src)
        await self._dir_for_change(dst)
        await self._check_sticky(src, sattrs, old)
        src.attrs = dst.attrs = None
        try:
            await self._call(src.export, src.be().rename, src.handle, old, dst.handle, new)
        except OSError as e:
            if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                # RFC 7530 §16.27.4: an incompatible or non-empty target is NFS4ERR_EXIST
                # (both directories were checked above, so ENOTDIR is about the target).
                raise errors.NFS4ERR_EXIST() from None
            raise errors.from_oserror(e) from None

    async def link(self, obj: Obj, d: Obj, name: bytes) -> None:
        if obj.export is None or d.export is None or obj.export.fsid != d.export.fsid:
            raise errors.NFS4ERR_XDEV()
        await self._dir_for_change(d)
        attrs = await self.getattr(obj)
        if attrs.type == FileType.DIR:
            raise errors.NFS4ERR_ISDIR()
        d.attrs = obj.attrs = None  # the directory and the link count change
        await self._run(d.export, d.be().link, obj.handle, d.handle, name)

    # ------------------------------------------------------------ data
    async def _io_permit(self, obj: Obj, want: int) -> None:
        """Access checked on every READ/WRITE/truncate, whatever the stateid, with the owner
        override (RFC 7530 §16.16.5: "the server still must do appropriate access checking on
        the READs and WRITEs themselves"); an enforcing backend checks it in the call."""
        if enforcing(obj):
            return
        attrs = await self._file_attrs(obj)
        if want == perm.READ and perm.may_read(attrs, self._posix_granted(obj, attrs, perm.ALL)):
            return  # read-if-execute (pynfsd.fs.perm)
        self.permit(obj, attrs, want, owner_override=True)

    async def read(self, obj: Obj, offset: int, count: int) -> tuple[bytes | bytearray, bool]:
        await self._io_permit(obj, perm.READ)
        be, h, who = obj.be(), obj.handle, self.identity(obj.export)
        try:
            return await self._quick_or_run(
                obj, lambda: be.read_cached(h, offset, count, who), be.read, h, offset, count
            )
        except errors.NFS4ERR_INVAL:
            await self._file_attrs(obj)  # the precise error for a non-file: ISDIR, SYMLINK
            raise

    async def write(self, obj: Obj, offset: int, data: bytes, sync: bool) -> int:
        self.check_writable(obj)
        await self._io_permit(obj, perm.WRITE)
        obj.attrs = None
        try:
            return await self._run(obj.export, obj.be().write, obj.handle, offset, data, sync)
        except errors.NFS4ERR_INVAL:
            await self._file_attrs(obj)
            raise

    async def commit(self, obj: Obj) -> None:
        await self._file_attrs(obj)
        await self._run(obj.export, obj.be().commit, obj.handle)

    async def _file_attrs(self, obj: Obj) -> Attrs:
        attrs = await self.getattr(obj)
        if attrs.type == FileType.DIR:
            raise errors.NFS4ERR_ISDIR()
        if attrs.type == FileType.LNK:
            raise errors.NFS4ERR_SYMLINK()
        if attrs.type != FileType.REG:
            raise errors.NFS4ERR_INVAL()
        return attrs

    async def check_open_access(self, obj: Obj, attrs: Attrs, read: bool, write: bool) -> None:
        """OPEN of an existing file: the access it asks for must be allowed (§16.16.5); a
        read-only OPEN of a regular file the caller may execute is (read-if-execute,
        `perm.may_read`: knfsd's ``do_open_permission`` asks with NFSD_MAY_READ_IF_EXEC)."""
        want = (perm.READ if read else 0) | (perm.WRITE if write else 0)
        if write:
            self.check_writable(obj)
        if not want or await self._granted(obj, attrs, want) == want:
            return
        if want == perm.READ and perm.may_read(attrs, await self._granted(obj, attrs, perm.EXEC)):
            return
        raise errors.NFS4ERR_ACCESS()

    async def setattr(self, obj: Obj, **changes: Any) -> Attrs:
        """SETATTR with the ownership rules of chmod/chown/truncate/utimes (made by the kernel
        for an enforcing backend)."""
        self.check_writable(obj)
        attrs = await self.getattr(obj)
        if not enforcing(obj):
            await self._check_setattr(obj, attrs, changes)
        obj.attrs = None
        obj.attrs = await self._run(obj.export, self._do_setattr, obj, changes)
        return obj.attrs

    async def _check_setattr(self, obj: Obj, attrs: Attrs, changes: dict[str, Any]) -> None:
        ident = self.identity(obj.export)
        is_owner = ident.uid in (0, attrs.uid)
        if changes.get("mode") is not None and not is_owner:
            raise errors.NFS4ERR_PERM()
        uid, gid = changes.get("uid"), changes.get("gid")
        if uid is not None and uid != attrs.uid and ident.uid != 0:
            raise errors.NFS4ERR_PERM()
        if gid is not None and gid != attrs.gid and ident.uid != 0:
            if not is_owner or gid not in (ident.gid, *ident.gids):
                raise errors.NFS4ERR_PERM()
        if changes.get("size") is not None:
            if attrs.type == FileType.DIR:
                raise errors.NFS4ERR_ISDIR()
            self.permit(obj, attrs, perm.WRITE, owner_override=True)
        await self._check_times(obj, attrs, changes, is_owner)

    async def _check_times(
        self, obj: Obj, attrs: Attrs, changes: dict[str, Any], is_owner: bool
    ) -> None:
        from pynfsd.fs.backend import SET_TO_NOW

        times = [changes.get("atime"), changes.get("mtime")]
        if is_owner or all(t is None for t in times):
            return
        if any(t is not None and t is not SET_TO_NOW for t in times):
            raise errors.NFS4ERR_PERM()
        self.permit(obj, attrs, perm.WRITE)

    # ------------------------------------------------------------ ACLs
    async def acl_supported(self, obj: Obj) -> bool:
        """Whether `obj`'s export serves ACLs: POSIX ACLs on its filesystem, not `no_acl`."""
        if obj.backend is None or obj.export is None or obj.export.options.has(NO_ACL):
            return False
        return await self._run(obj.export, obj.backend.acl_support)

    async def get_acl(self, obj: Obj) -> list[Ace] | None:
        """The NFSv4 ACL of `obj` (None where ACLs are not served): its POSIX ACLs, or its
        mode when it has none (RFC 7530 §6.4.2)."""
        if not await self.acl_supported(obj):
            return None
        attrs = await self.getattr(obj)
        access = default = None
        if attrs.type != FileType.LNK:
            access, default = await self._run(obj.export, obj.be().get_acl, obj.handle)
        access = access or posixacl.from_mode(attrs.mode)
        return posix_to_nfs4(access, default, attrs.type == FileType.DIR)

    async def set_acl(self, obj: Obj, aces: list[Ace]) -> Attrs:
        """SETATTR(acl): the POSIX ACLs `aces` map to; the mode follows (RFC 7530 §6.4.1.2)."""
        self.check_writable(obj)
        attrs = await self.getattr(obj)
        if attrs.type == FileType.LNK or not await self.acl_supported(obj):
            raise errors.NFS4ERR_ATTRNOTSUPP("no ACLs here")
        try:
            access, default = nfs4_to_posix(aces, attrs.type == FileType.DIR)
        except AclUnrepresentable as e:
            raise errors.NFS4ERR_ATTRNOTSUPP(str(e)) from None
        if not enforcing(obj) and self.identity(obj.export).uid not in (0, attrs.uid):
            raise errors.NFS4ERR_PERM("only the owner may set an ACL")
        obj.attrs = None
        try:
            obj.attrs = await self._call(obj.export, obj.be().set_acl, obj.handle, access, default)
        except OSError as e:
            if e.errno == errno.EOPNOTSUPP:
                raise errors.NFS4ERR_ATTRNOTSUPP(str(e)) from None
            raise errors.from_oserror(e) from None
        return obj.attrs

    @staticmethod
    def _do_setattr(obj: Obj, changes: dict[str, Any]) -> Attrs:
        return obj.be().setattr(obj.handle, **changes)


def _create_and_access(
    be: Backend, args: tuple[bytes, bytes, int, int, int, bool]
) -> tuple[bytes, Attrs, bool, int | None]:
    """On a worker: ``create_file`` and the kernel's answer to the caller's whole access to
    the file (None if it cannot be told now: the create stands, the ACCESS asks again)."""
    h, attrs, created = be.create_file(*args)
    try:
        bits: int | None = be.access(h, perm.ALL)
    except OSError:
        bits = None
    return h, attrs, created, bits
