"""The local backend's namespace changes: creation, remove, rename, hard links.

Theory of operation
-------------------
Every change is made by the kernel as the caller, relative to the directory's descriptor, so
sticky directories, setgid inheritance and protected hard links apply as for a local user.
New objects get their owner from the kernel; a thread acting as root may ask for another
owner (the backend contract), and then the created object, checked to be the one just made
(type, and root-owned), is chowned through its descriptor. The mode asked for is then set as
chmod(2) by the caller would, since the umask and mkdir(2) may have removed bits -- unless
the directory has a default ACL: the kernel then ignored the umask and gave the new object
the inherited ACL masked by the mode asked for, which stays as knfsd leaves it.

An object about to lose its last link is kept open first if NFSv4 opens hold it
(``LocalObjects._keep_if_held``); one that lost it is evicted from the descriptor cache.

A client creating or removing files one after another asks ACCESS of the directory and
LOOKUP in it before each (its cached answers lapse with the directory's change attribute).
Where answers need not settle (``fdcache.fine_ctime``), the worker that created, removed or
renamed a name also asks the kernel the caller's access to the directory at its new ctime
(``_ask_access``), so those come from memory instead of a round trip each -- when that
caller's access to it was asked before (a client that sends no ACCESS pays nothing).
"""

from __future__ import annotations

import errno
import os
import stat

from pynfsd.fs import creds, linux
from pynfsd.fs.backend import Attrs, FileType
from pynfsd.fs.fdcache import CachedObject
from pynfsd.fs.local.acls import has_default_acl
from pynfsd.fs.local.lookup import LocalLookup
from pynfsd.fs.local.objects import proc
from pynfsd.fs.names import check_name, check_target, oserror

_NODE_FMT = {
    FileType.BLK: stat.S_IFBLK, FileType.CHR: stat.S_IFCHR, FileType.SOCK: stat.S_IFSOCK,
    FileType.FIFO: stat.S_IFIFO,
}  # fmt: skip


class LocalNamespace(LocalLookup):
    """Creation, removal, renaming and hard links of the local backend."""

    # -- Backend: creation ---------------------------------------------------------------

    def _existing_file(self, dir_fd: int, name: bytes) -> tuple[bytes, Attrs, bool]:
        fd, st = self._open_child(dir_fd, name)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            codes = {stat.S_IFDIR: errno.EISDIR, stat.S_IFLNK: errno.ELOOP}
            raise oserror(codes.get(stat.S_IFMT(st.st_mode), errno.EINVAL), repr(name))
        return (*self._publish(fd, st), False)

    def _new_file(self, dir_fd: int, name: bytes, mode: int, uid: int, gid: int) -> int:
        """Create ``name`` exclusively as the caller and return its ``O_PATH`` descriptor."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(check_name(name), flags, mode & 0o7777, dir_fd=dir_fd)
        try:
            self._own(fd, os.fstat(fd), None if has_default_acl(dir_fd) else mode, uid, gid)
            return os.open(proc(fd), os.O_PATH | os.O_CLOEXEC)
        finally:
            os.close(fd)

    @staticmethod
    def _own(fd: int, st: os.stat_result, mode: int | None, uid: int, gid: int) -> None:
        """After the kernel created ``fd``'s object as the caller: the owner asked for (for a
        caller acting as root only), then the mode asked for, as chmod(2) by the caller would
        set it (a directory keeps the setgid bit it inherited; the kernel drops a setgid bit
        the caller may not set), since the process umask and mkdir(2) may have removed bits."""
        if creds.current() == creds.ROOT and (st.st_uid, st.st_gid) != (uid, gid):
            linux.fchown_empty(fd, uid, gid)
            st = os.fstat(fd)
        if mode is None:
            return
        want = mode & 0o7777 | (st.st_mode & 0o2000 if stat.S_ISDIR(st.st_mode) else 0)
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(proc(fd), want)

    def create_file(
        self, dir_h: bytes, name: bytes, mode: int, uid: int, gid: int, exclusive: bool
    ) -> tuple[bytes, Attrs, bool]:
        with self._dir(dir_h) as (d, dst):
            for _ in range(8):
                try:
                    fd = self._new_file(d.fd, name, mode, uid, gid)
                except FileExistsError:
                    if exclusive:
                        raise
                    try:
                        return self._existing_file(d.fd, name)
                    except FileNotFoundError:
                        continue  # removed meanwhile: try creating again
                self._modified(dst)
                self._ask_again(d)
                return (*self._publish(fd, os.fstat(fd)), True)
            raise oserror(errno.EAGAIN)

    def _adopt(self, dir_fd: int, name: bytes, ifmt: int, mode: int | None, uid: int,
               gid: int) -> tuple[bytes, Attrs]:
        """Give a just-created ``name`` the mode (and, for root, the owner) asked for."""
        fd, st = self._open_child(dir_fd, name)
        try:
            if stat.S_IFMT(st.st_mode) != ifmt or st.st_uid != creds.current().uid:
                raise oserror(errno.EAGAIN, "created object replaced concurrently")
            keep = ifmt == stat.S_IFLNK or has_default_acl(dir_fd)
            self._own(fd, st, None if keep else mode, uid, gid)
        except BaseException:
            os.close(fd)
            raise
        return self._publish(fd, os.fstat(fd))

    def mkdir(
        self, dir_h: bytes, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        with self._dir(dir_h) as (d, dst):
            os.mkdir(check_name(name), mode & 0o7777, dir_fd=d.fd)
            self._modified(dst)
            return self._adopt(d.fd, name, stat.S_IFDIR, mode, uid, gid)

    def symlink(
        self, dir_h: bytes, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        with self._dir(dir_h) as (d, dst):
            os.symlink(check_target(target), check_name(name), dir_fd=d.fd)
            self._modified(dst)
            return self._adopt(d.fd, name, stat.S_IFLNK, None, uid, gid)

    def mknod(
        self, dir_h: bytes, name: bytes, ftype: FileType, mode: int, rdev: tuple[int, int],
        uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        ifmt = _NODE_FMT.get(ftype)
        if ifmt is None:
            raise oserror(errno.EINVAL, f"mknod of {ftype!r}")
        device = os.makedev(*rdev) if ftype in (FileType.BLK, FileType.CHR) else 0
        with self._dir(dir_h) as (d, dst):
            os.mknod(check_name(name), ifmt | (mode & 0o7777), device, dir_fd=d.fd)
            self._modified(dst)
            return self._adopt(d.fd, name, ifmt, mode, uid, gid)

    def _ask_again(self, d: CachedObject) -> None:
        """After a name was added to or removed from directory ``d`` by the calling thread's
        identity: its access to ``d`` at the new ctime, remembered when that needs no
        settling (see the module docstring) -- for a caller whose access was asked before
        only (a client that does not send ACCESS does not pay for the answer)."""
        if self._cache.fine_ctime and creds.current() in d.access:
            self._ask_access(d, os.fstat(d.fd))

    # -- Backend: namespace changes ------------------------------------------------------

    def _lstat(self, dir_fd: int, name: bytes) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _gone(self, st: os.stat_result | None) -> None:
        """After ``st``'s object lost a link: drop its cache entries if it is gone."""
        if st is None:
            return
        self._modified(st)
        if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode):
            self._cache.invalidate_ino(st.st_ino)

    def remove(self, dir_h: bytes, name: bytes) -> None:
        with self._dir(dir_h) as (d, dst):
            victim = self._lstat(d.fd, check_name(name))
            self._keep_if_held(d.fd, name, victim)
            try:
                os.unlink(name, dir_fd=d.fd)
            except IsADirectoryError:
                os.rmdir(name, dir_fd=d.fd)
            self._modified(dst)
            self._gone(victim)
            self._ask_again(d)

    def rename(
        self, src_dir_h: bytes, src_name: bytes, dst_dir_h: bytes, dst_name: bytes
    ) -> None:
        with self._dir(src_dir_h) as (s, sst), self._dir(dst_dir_h) as (t, tst):
            moved = self._lstat(s.fd, check_name(src_name))
            replaced = self._lstat(t.fd, check_name(dst_name))
            self._keep_if_held(t.fd, dst_name, replaced)
            os.rename(src_name, dst_name, src_dir_fd=s.fd, dst_dir_fd=t.fd)
            if moved is not None and replaced is not None and moved.st_ino == replaced.st_ino:
                return  # POSIX: renaming a file onto itself (or a hard link of it) does nothing
            for st in (sst, tst, moved):
                if st is not None:
                    self._modified(st)
            self._gone(replaced)
            for d in (s, t) if t is not s else (s,):
                self._ask_again(d)

    def link(self, h: bytes, dir_h: bytes, name: bytes) -> Attrs:
        with self._borrow(h) as obj, self._dir(dir_h) as (d, dst):
            st = self._live(obj)
            if stat.S_ISDIR(st.st_mode):
                raise oserror(errno.EPERM, "hard link to a directory")
            # through /proc as the caller: linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH, and
            # the kernel applies protected_hardlinks to the caller (proc(5) /proc/pid/fd)
            os.link(proc(obj.fd), check_name(name), dst_dir_fd=d.fd, follow_symlinks=True)
            self._modified(dst)
            self._modified(st)
            return self._attrs(os.fstat(obj.fd))
