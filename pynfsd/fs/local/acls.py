"""The local backend's POSIX ACLs: the kernel's ``system.posix_acl_*`` xattrs.

Theory of operation
-------------------
ACLs are read and written through the xattrs the kernel itself offers for them, on the
object's ``/proc/self/fd`` path, as the caller: the kernel checks that the caller owns the
object, sets the mode from a new access ACL (dropping an ACL that says no more than the mode)
and clears the setgid bit as for chmod. The kernel keeps them consistent afterwards: chmod
rewrites the ACL, and a file created in a directory with a default ACL inherits it (the
mode asked for masks it, and ``namespace`` then leaves that mode: ``has_default_acl``). A removed default ACL is a
``removexattr``; a missing one is ``ENODATA``, read as "none".

Whether the filesystem holds ACLs at all is asked once, of the export root (``EOPNOTSUPP``
from reading its access ACL: mounted with ``noacl``, or a filesystem without them); every
object of the backend is on that filesystem. Symlinks have no ACL. The xattr bytes are
decoded by ``pynfsd.fs.posixacl`` (bounded; anything malformed is ``EIO``).
"""

from __future__ import annotations

import errno
import os
import stat

from pynfsd.fs import posixacl as P
from pynfsd.fs.backend import Attrs
from pynfsd.fs.local.objects import LocalObjects, proc
from pynfsd.fs.names import oserror

_ABSENT = (errno.ENODATA,)


def _read(path: str, name: str) -> P.PosixAcl | None:
    try:
        data = os.getxattr(path, name)
    except OSError as e:
        if e.errno in _ABSENT:
            return None
        raise
    try:
        return P.decode_xattr(data)
    except P.AclError as e:
        raise oserror(errno.EIO, f"{name}: {e}") from None


def has_default_acl(dir_fd: int) -> bool:
    """Whether the directory ``dir_fd`` has a default ACL (new objects inherit it)."""
    try:
        os.getxattr(proc(dir_fd), P.XATTR_DEFAULT)
        return True
    except OSError as e:
        if e.errno in (*_ABSENT, errno.EOPNOTSUPP):
            return False
        raise


class LocalAcls(LocalObjects):
    """POSIX ACLs of the local backend."""

    _acls: bool | None = None

    def acl_support(self) -> bool:
        if self._acls is None:
            try:
                os.getxattr(self._root_fd, P.XATTR_ACCESS)
                self._acls = True
            except OSError as e:
                self._acls = e.errno in _ABSENT
        return self._acls

    def get_acl(self, h: bytes) -> tuple[P.PosixAcl | None, P.PosixAcl | None]:
        with self._borrow(h) as obj:
            st = self._live(obj)
            if stat.S_ISLNK(st.st_mode) or not self.acl_support():
                raise oserror(errno.EOPNOTSUPP, "no ACL here")
            path = proc(obj.fd)
            access = _read(path, P.XATTR_ACCESS)
            default = _read(path, P.XATTR_DEFAULT) if stat.S_ISDIR(st.st_mode) else None
            return access, default

    def set_acl(self, h: bytes, access: P.PosixAcl, default: P.PosixAcl | None) -> Attrs:
        with self._borrow(h) as obj:
            st = self._live(obj)
            if stat.S_ISLNK(st.st_mode) or not self.acl_support():
                raise oserror(errno.EOPNOTSUPP, "no ACL here")
            path = proc(obj.fd)
            obj.forget_grants()  # decisions made under the old ACL
            os.setxattr(path, P.XATTR_ACCESS, P.encode_xattr(access))
            if stat.S_ISDIR(st.st_mode):
                if default is not None:
                    os.setxattr(path, P.XATTR_DEFAULT, P.encode_xattr(default))
                else:
                    try:
                        os.removexattr(path, P.XATTR_DEFAULT)
                    except OSError as e:
                        if e.errno not in _ABSENT:
                            raise
            self._modified(st)
            return self._attrs(os.fstat(obj.fd))
