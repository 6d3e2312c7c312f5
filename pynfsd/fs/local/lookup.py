"""The local backend's lookups: names, parents, links' targets, access, mount points.

Theory of operation
-------------------
``lookup`` opens a single name relative to the directory's descriptor (``O_PATH``,
``O_NOFOLLOW``) and publishes its handle; ``parent`` opens ``..`` and checks, as root, that it
is still inside the export.

``lookup_cached`` answers on the event loop, without a worker thread's round trip (which
costs more CPU than the lookup itself), when that cannot block and needs no credential: the
directory is open here on a filesystem that keeps open inodes in memory, the caller was
granted search permission on it (by a ``lookup`` the kernel allowed under the caller's
identity) since its ctime last changed, and ``openat2`` with ``RESOLVE_CACHED`` finds the
name in the dentry cache (else it fails with EAGAIN instead of reading the disk). A
permission change (mode, owner, ACL) changes the ctime, and so does every name added or
removed, so a grant never outlives the decision it stands for. Whatever it cannot answer so
(a mount point, a name not cached, an old kernel) goes to the worker.

Mount points: objects on other filesystems are never reached through this backend. ``lookup``
of a mount point is ``EXDEV``; ``mount_point`` then tells where it is (the path the kernel
gives the mounted root's descriptor), the fileid of the directory it covers (the ``d_ino``
that ``getdents`` reports for the name, the only view user space has of that directory) and
the filesystem's key (``statfs`` ``f_fsid``, else the device number, plus the path);
``readdir`` returns such entries with ``DirEntry.mount`` set. Crossing is the caller's choice.
"""

from __future__ import annotations

import errno
import os
import stat

from pynfsd.fs import creds, linux, perm
from pynfsd.fs.backend import Attrs, FsStat, MountPoint
from pynfsd.fs.creds import Identity
from pynfsd.fs.fdcache import CachedObject
from pynfsd.fs.local.objects import O_PATH, LocalObjects, proc
from pynfsd.fs.names import check_name, oserror

MAX_COVERED = 1024  # mount points whose covered directory's fileid is remembered
# a single name, in the dentry cache, neither a mount point nor a link followed
_CACHED_CHILD = linux.RESOLVE_CACHED | linux.RESOLVE_BENEATH | linux.RESOLVE_NO_XDEV


def _covered_fileid(dir_fd: int, name: bytes) -> int:
    """The ``d_ino`` of ``name`` in ``dir_fd``: for a mount point, the covered directory's."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        while batch := linux.getdents64(fd):
            for entry, _, ino in batch:
                if entry == name:
                    return ino
    finally:
        os.close(fd)
    raise oserror(errno.ENOENT, repr(name))


def kernel_access(fd: int) -> int:
    """The ``perm`` bits the calling thread's identity has on the object ``fd`` names."""
    granted = 0
    for bit, mode in ((perm.READ, os.R_OK), (perm.WRITE, os.W_OK), (perm.EXEC, os.X_OK)):
        try:
            if creds.faccess_fd(fd, mode):
                granted |= bit
        except OSError as e:
            if e.errno != errno.EROFS:
                raise
    return granted


class LocalLookup(LocalObjects):
    """Lookups and mount points of the local backend."""

    # -- Backend: lookups ----------------------------------------------------------------

    def lookup(self, dir_h: bytes, name: bytes) -> tuple[bytes, Attrs]:
        with self._dir(dir_h) as (d, st):
            found = self._publish(*self._open_child(d.fd, name))
            self._cache.grant(d, creds.current(), st.st_ctime_ns)  # searched as the caller
            return found

    def lookup_cached(self, dir_h: bytes, name: bytes, who: Identity) -> tuple[bytes, Attrs] | None:
        """``lookup`` by ``who`` from memory, on the event loop; None when it cannot be
        answered so (see the module docstring). ENOENT only for a name the dentry cache
        knows to be absent."""
        if not self._cached_lookups:
            return None
        with self._if_cached(dir_h) as d:
            if d is None:
                return None
            st = self._live(d)
            if not stat.S_ISDIR(st.st_mode) or d.grants.get(who) != st.st_ctime_ns:
                return None
            name = check_name(name)
            try:
                fd = linux.openat2(d.fd, name, O_PATH, _CACHED_CHILD)
            except OSError as e:
                if e.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
                    self._cached_lookups = False  # no openat2 or RESOLVE_CACHED, or seccomp
                if e.errno == errno.ENOENT:
                    raise
                return None  # EAGAIN (not cached), EXDEV (a mount point), ...: the worker
            try:
                cst = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
            if cst.st_dev != self._root_id[0]:
                os.close(fd)
                return None
            return self._publish(fd, cst)

    def mount_point(self, dir_h: bytes, name: bytes) -> MountPoint:
        with self._dir(dir_h) as (d, st):
            return self._mount_at(d.fd, name, None, st.st_ino)[0]

    def _mount_at(
        self, dir_fd: int, name: bytes, covered: int | None, dir_ino: int = 0
    ) -> tuple[MountPoint, os.stat_result]:
        """The filesystem mounted on ``name`` and the stat of its root; see module docstring.
        Without ``covered`` (readdir's ``d_ino``) it is found by scanning the directory once
        and remembered (a bounded table), so repeated lookups of a mount point stay cheap."""
        fd = os.open(check_name(name), O_PATH, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if st.st_dev == self._root_id[0]:
                raise oserror(errno.EAGAIN, "no longer a mount point")
            path = os.readlink(proc(fd))
            fs_id = os.fstatvfs(fd).f_fsid or st.st_dev
        finally:
            os.close(fd)
        if covered is None:
            key = (dir_ino, name, st.st_dev, st.st_ino)
            covered = self._covered.get(key)
            if covered is None:
                covered = _covered_fileid(dir_fd, name)
                if len(self._covered) >= MAX_COVERED:
                    self._covered.clear()
                self._covered[key] = covered
        return MountPoint(path, covered, b"%d\0" % fs_id + os.fsencode(path)), st

    def parent(self, dir_h: bytes) -> tuple[bytes, Attrs]:
        with self._dir(dir_h) as (d, st):
            if (st.st_dev, st.st_ino) == self._root_id:
                raise oserror(errno.ENOENT, "parent of the export root")
            fd = os.open("..", O_PATH | os.O_DIRECTORY, dir_fd=d.fd)
            with creds.as_root():
                inside = self._inside_root(fd)
            if not inside:
                os.close(fd)
                raise oserror(errno.ESTALE, "directory moved out of the export")
            return self._publish(fd, os.fstat(fd))

    def readlink(self, h: bytes) -> bytes:
        with self._borrow(h) as obj:
            if not stat.S_ISLNK(self._live(obj).st_mode):
                raise oserror(errno.EINVAL, "not a symlink")
            return os.readlink(b"", dir_fd=obj.fd)

    def access(self, h: bytes, want: int) -> int:
        """The kernel's answer for the calling thread's identity, ACLs included; the whole
        answer (read, write, execute) is remembered for ``access_cached`` at the ctime seen
        before asking, and so is what it grants ``lookup_cached`` (search, of a directory)
        and ``read_cached`` (read or execute, of a file): the LOOKUP that follows a client's
        ACCESS of a directory needs no round trip of its own."""
        with self._borrow(h) as obj:
            return self._ask_access(obj, self._live(obj)) & want

    def _ask_access(self, obj: CachedObject, st: os.stat_result) -> int:
        """The kernel's whole answer for the calling thread's identity on ``obj``, whose
        ``st`` (an fstat made before asking) gives the ctime it is remembered at."""
        who, granted = creds.current(), kernel_access(obj.fd)
        self._cache.remember_access(obj, who, st.st_ctime_ns, granted)
        if granted & (perm.EXEC if stat.S_ISDIR(st.st_mode) else perm.READ | perm.EXEC):
            self._cache.grant(obj, who, st.st_ctime_ns)
        return granted

    def access_cached(self, h: bytes, want: int, who: Identity) -> int | None:
        """``access`` by ``who`` from the kernel's answer remembered at the object's current
        ctime (a mode, owner or ACL change moves it), on the event loop; else None."""
        with self._if_cached(h) as obj:
            if obj is None:
                return None
            known = obj.access.get(who)
            if known is None or known[0] != self._live(obj).st_ctime_ns:
                return None
            return known[1] & want

    def statfs(self, h: bytes) -> FsStat:
        with self._borrow(h) as obj:
            v = os.fstatvfs(obj.fd)
            return FsStat(
                v.f_blocks * v.f_frsize, v.f_bfree * v.f_frsize, v.f_bavail * v.f_frsize,
                v.f_files, v.f_ffree, v.f_favail, v.f_namemax,
            )  # fmt: skip
