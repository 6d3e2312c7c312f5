"""Backend over a real directory tree (Linux, run as root).

Theory of operation
-------------------
Handles wrap the kernel's own persistent file handles (``name_to_handle_at``), so they
survive server restarts and go stale only when the object is removed; ``open_by_handle_at``
turns them back into descriptors. Each handle carries an HMAC (``handles.HandleCodec``)
bound to the export root, so clients cannot forge handles to objects elsewhere on the disk.

Confinement: every operation starts from a descriptor, never a path. Names are single
components (``names.check_name``), opened with ``*at`` calls relative to the directory's
descriptor and ``O_NOFOLLOW``; symlinks are never followed. A directory opened from a
handle is checked to lie under the export root by walking ``..`` descriptors up to the
root's (dev, ino); ``parent()`` of the root is ENOENT.

Mount points: objects on other filesystems are never reached through this backend. ``lookup``
of a mount point is ``EXDEV``; ``mount_point`` then tells where it is (the path the kernel
gives the mounted root's descriptor), the fileid of the directory it covers (the ``d_ino``
that ``getdents`` reports for the name, the only view user space has of that directory) and
the filesystem's key (``statfs`` ``f_fsid``, else the device number, plus the path);
``readdir`` returns such entries with ``DirEntry.mount`` set. Crossing is the caller's choice.
Limitation (as knfsd without subtree_check): a non-directory moved out of the export by a
local user stays reachable through a handle issued earlier.

Descriptors are cached (``fdcache.FdCache``): ``O_PATH`` for every object plus an I/O
descriptor for regular files, reopened through ``/proc/self/fd``. Objects whose link count
dropped to zero are reported ``ESTALE`` and evicted, unless held (``hold``, as NFSv4 opens
hold their files): a held object that loses its last link through this backend keeps a
borrowed entry, so its descriptor stays open and it is served until ``release``.  Holding
costs a descriptor only then, for at most ``max_kept`` files at a time (beyond, a removed
file goes stale as unheld ones do); a held file unlinked behind the backend's back goes stale.

readdir cookies are the filesystem's own ``getdents64`` ``d_off`` positions plus 3 (so never
0, 1 or 2), as knfsd uses them: on ext4 they are hash positions that stay valid while the
directory changes. The directory is opened for reading through ``/proc/self/fd`` (``openat``
of "." would need search permission); each entry is then reached as the caller, and one it may
not reach (a directory it may read but not search) is listed with the errno and its ``d_ino``.
The change attribute is described in ``change``.

Identity: every call runs with the caller's filesystem identity (``creds``: fsuid, fsgid and
groups of the worker thread, without the capabilities a user lacks), so the kernel makes every
permission decision -- ACLs, set-id clearing on write and chown, setgid directory inheritance,
sticky directories, protected hard links, owners of new objects -- exactly as for a local
user. Only what a user cannot do runs as root, in short ``creds.as_root()`` sections: turning
handles into descriptors (``open_by_handle_at`` needs CAP_DAC_READ_SEARCH), checking that a
directory lies inside the export, and opening the cached I/O descriptor. Because that
descriptor is shared by all users, READ, WRITE and truncation ask the kernel first
(``faccessat2(AT_EACCESS)`` under the caller's identity), with knfsd's owner override: the
owner may keep using a file it opened after a chmod. The data is then written under the
caller's identity, so the kernel clears set-id bits. A positive READ decision is remembered
per (object, identity) until the object's ctime changes, so the event-loop read path
(``read_cached``) needs no credential switch.

New objects get their owner from the kernel; a thread acting as root may ask for another
owner (the backend contract), and then the created object, checked to be the one just made
(type, and root-owned), is chowned through its descriptor.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from pynfsd.fs import creds, linux, perm, statedir
from pynfsd.fs.backend import (
    SET_TO_NOW,
    Attrs,
    Backend,
    DirEntry,
    FileType,
    FsStat,
    MountPoint,
    TimeArg,
)
from pynfsd.fs.change import ChangeTracker
from pynfsd.fs.creds import Identity
from pynfsd.fs.fdcache import CachedObject, FdCache
from pynfsd.fs.handles import HandleCodec
from pynfsd.fs.holds import MAX_KEPT, Holds
from pynfsd.fs.names import check_name, check_target, oserror

O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
COOKIE_BIAS = 3  # cookie = d_off + 3: never 0, 1 or 2 (RFC 7530 section 16.24.4)
MAX_OFFSET = (1 << 63) - 1
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)  # Linux 4.14+, Python 3.7+
# Filesystems whose open inodes answer fstat from memory: on these `read_cached` and
# `getattr_cached` may run on the event loop. Elsewhere (FUSE, NFS, CIFS, ...) even fstat can
# wait on a daemon or the network, so every call goes to a worker thread.
_INODES_IN_MEMORY = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs", "ramfs", "overlay", "bcachefs",
     "jfs", "reiserfs", "nilfs2"}
)
MAX_DEPTH = 4096
MAX_COVERED = 1024  # mount points whose covered directory's fileid is remembered
log = logging.getLogger(__name__)
_TYPES = {
    stat.S_IFREG: FileType.REG, stat.S_IFDIR: FileType.DIR, stat.S_IFBLK: FileType.BLK,
    stat.S_IFCHR: FileType.CHR, stat.S_IFLNK: FileType.LNK, stat.S_IFSOCK: FileType.SOCK,
    stat.S_IFIFO: FileType.FIFO,
}  # fmt: skip
_NODE_FMT = {
    FileType.BLK: stat.S_IFBLK, FileType.CHR: stat.S_IFCHR, FileType.SOCK: stat.S_IFSOCK,
    FileType.FIFO: stat.S_IFIFO,
}  # fmt: skip
_STALE = (errno.ESTALE, errno.ENOENT, errno.EINVAL, errno.EOVERFLOW)
# Why a listed name may not be reached, reported per entry rather than failing the listing
# (as knfsd's rdattr_error): no search permission on the directory; a damaged inode.
_UNREACHABLE = (errno.EACCES, errno.EPERM, errno.EIO)


def _proc(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _file_type(st: os.stat_result) -> FileType:
    return _TYPES[stat.S_IFMT(st.st_mode)]


def _require_dir(st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise oserror(errno.ENOTDIR)


def _at_eof(fd: int, end: int, size_seen: int, short: bool) -> bool:
    """Whether a read that ended at ``end`` reached EOF: not when it was full and stopped short
    of the size seen before it (no second fstat mid-file); otherwise by the size now."""
    if not short and end < size_seen:
        return False
    return end >= os.fstat(fd).st_size


def _stat_attrs(st: os.stat_result, change: int) -> Attrs:
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return Attrs(
        _file_type(st), stat.S_IMODE(st.st_mode), st.st_nlink, st.st_uid, st.st_gid,
        st.st_size, st.st_blocks * 512, rdev, st.st_ino, st.st_atime_ns, st.st_mtime_ns,
        st.st_ctime_ns, change,
    )  # fmt: skip


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


def _require_file(st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise oserror(errno.EISDIR)
    if not stat.S_ISREG(st.st_mode):
        raise oserror(errno.EINVAL, "not a regular file")


def _open_io(fd: int) -> tuple[int, bool]:
    """Reopen an ``O_PATH`` descriptor of a regular file for I/O (read-only if must be)."""
    try:
        return os.open(_proc(fd), os.O_RDWR | os.O_CLOEXEC), True
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.ETXTBSY, errno.EACCES, errno.EPERM):
            raise
        return os.open(_proc(fd), os.O_RDONLY | os.O_CLOEXEC), False


def _timespec(t: TimeArg) -> tuple[int, int]:
    if t is None:
        return 0, linux.UTIME_OMIT
    if t is SET_TO_NOW:
        return 0, linux.UTIME_NOW
    return divmod(int(t), 1_000_000_000)  # type: ignore[arg-type]


class LocalBackend(Backend):
    """The directory ``root_path`` as a backend; persistent state lives in ``state_dir``."""

    enforces_permissions = True

    def __init__(
        self, root_path: str, state_dir: str, cache_size: int = 256, max_kept: int = MAX_KEPT
    ) -> None:
        if os.geteuid() == 0 and not creds.supported():
            # without per-thread credentials every call would run with root's permissions
            raise OSError(errno.ENOSYS, "per-thread credentials are not supported here")
        self._root_fd = os.open(root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(self._root_fd)
            self._root_id = (st.st_dev, st.st_ino)
            root_type, root_fh = linux.handle_of_fd(self._root_fd)
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            self._codec = HandleCodec(
                statedir.load_or_create_key(state_dir), root_type.to_bytes(4, "little") + root_fh
            )
            self._root_h = self._codec.encode(root_type, root_fh)
            os.close(linux.open_by_handle_at(self._root_fd, root_type, root_fh, O_PATH))
            self._changes = ChangeTracker(statedir.next_boot_count(state_dir))
            self._nonblocking_stat = linux.fs_type(st.st_dev) in _INODES_IN_MEMORY
        except BaseException:
            os.close(self._root_fd)
            raise
        self._cache = FdCache(cache_size)
        # covered directories' fileids by (dir ino, name, mounted dev, mounted root ino)
        self._covered: dict[tuple[int, bytes, int, int], int] = {}
        self._holds: Holds[CachedObject] = Holds(max_kept)

    # -- handles and descriptors ---------------------------------------------------------

    def _open_handle(self, h: bytes) -> tuple[int, os.stat_result]:
        """Open the object of ``h`` (``O_PATH``) and check it is live and inside the export."""
        handle_type, kernel_handle = self._codec.decode(h)
        with creds.as_root():  # open_by_handle_at(2) needs CAP_DAC_READ_SEARCH
            return self._open_kernel_handle(handle_type, kernel_handle)

    def _open_kernel_handle(self, handle_type: int, kernel_handle: bytes) -> tuple[int, os.stat_result]:
        try:
            fd = linux.open_by_handle_at(self._root_fd, handle_type, kernel_handle, O_PATH)
        except OSError as e:
            if e.errno in _STALE:
                raise oserror(errno.ESTALE) from e
            raise
        try:
            st = os.fstat(fd)
            if st.st_nlink == 0 or st.st_dev != self._root_id[0]:
                raise oserror(errno.ESTALE)
            if stat.S_ISDIR(st.st_mode) and not self._inside_root(fd):
                raise oserror(errno.ESTALE, "directory outside the export")
            return fd, st
        except BaseException:
            os.close(fd)
            raise

    def _inside_root(self, fd: int) -> bool:
        """Whether directory ``fd`` is the root or below it, walking ``..`` descriptors."""
        cur, st = fd, os.fstat(fd)
        try:
            for _ in range(MAX_DEPTH):
                if (st.st_dev, st.st_ino) == self._root_id:
                    return True
                up = os.open("..", O_PATH | os.O_DIRECTORY, dir_fd=cur)
                if cur != fd:
                    os.close(cur)
                cur, prev, st = up, st, os.fstat(up)
                if (st.st_dev, st.st_ino) == (prev.st_dev, prev.st_ino):
                    return False  # reached the filesystem root
            return False
        finally:
            if cur != fd:
                os.close(cur)

    @contextmanager
    def _borrow(self, h: bytes) -> Iterator[CachedObject]:
        obj = self._cache.get(h)
        kept = self._holds.kept(h) if obj is None else None
        if kept is not None:
            obj = self._cache.borrow(kept)  # removed (and evicted) but held
        if obj is None:
            fd, st = self._open_handle(h)
            obj = self._cache.put(h, fd, st.st_ino)
        try:
            yield obj
        finally:
            self._cache.release(obj)

    @contextmanager
    def _if_cached(self, h: bytes) -> Iterator[CachedObject | None]:
        """The object of ``h`` borrowed from the cache when calls on it cannot block (it is
        open, on a filesystem that answers fstat from memory); None otherwise."""
        obj = self._cache.get(h) if self._nonblocking_stat else None
        try:
            yield obj
        finally:
            if obj is not None:
                self._cache.release(obj)

    def _live(self, obj: CachedObject) -> os.stat_result:
        """``fstat`` of a cached object; ESTALE (and evict) once it has been removed."""
        st = os.fstat(obj.fd)
        if st.st_nlink == 0 and self._holds.kept(obj.key) is None:
            self._cache.invalidate(obj.key)
            raise oserror(errno.ESTALE)
        return st

    @contextmanager
    def _dir(self, h: bytes) -> Iterator[tuple[CachedObject, os.stat_result]]:
        with self._borrow(h) as obj:
            st = self._live(obj)
            _require_dir(st)
            yield obj, st

    def _publish(self, fd: int, st: os.stat_result) -> tuple[bytes, Attrs]:
        """Handle and attributes of the object ``fd``; the cache takes ownership of ``fd``."""
        try:
            h = self._codec.encode(*linux.handle_of_fd(fd))
        except BaseException:
            os.close(fd)
            raise
        self._cache.release(self._cache.put(h, fd, st.st_ino))
        return h, self._attrs(st)

    def _attrs(self, st: os.stat_result) -> Attrs:
        return _stat_attrs(st, self._changes.observe(st.st_ino, st.st_ctime_ns))

    def _open_child(self, dir_fd: int, name: bytes) -> tuple[int, os.stat_result]:
        """``O_PATH`` descriptor and stat of ``name`` in ``dir_fd`` (not following links)."""
        fd = os.open(check_name(name), O_PATH, dir_fd=dir_fd)
        st = os.fstat(fd)
        if st.st_dev != self._root_id[0]:
            os.close(fd)
            raise oserror(errno.EXDEV, "mount point")
        return fd, st

    def _modified(self, st: os.stat_result) -> None:
        self._changes.bump(st.st_ino, st.st_ctime_ns)

    # -- Backend: holds (an open file outlives its last link) -----------------------------

    def hold(self, h: bytes) -> None:
        """Note ``h`` (and its inode) as held: costs no descriptor until its last link is
        about to be removed through this backend (``_keep_if_held``)."""
        ino = self._holds.inode_of(h)
        if ino is None:
            with self._borrow(h) as obj:
                ino = obj.ino
        self._holds.hold(h, ino)

    def release(self, h: bytes) -> None:
        kept = self._holds.release(h)
        if kept is not None:
            self._cache.release(kept)  # closed now if no longer cached and not in use

    def _keep_if_held(self, dir_fd: int, name: bytes, st: os.stat_result | None) -> None:
        """Before ``name`` (``st``) loses its last link: if its object is held, keep a
        descriptor of it so that it lives on, served by handle until released."""
        if st is None or st.st_nlink > 1 or stat.S_ISDIR(st.st_mode):
            return
        h, full = self._holds.to_keep(st.st_ino)
        if h is None:
            return
        if full:
            log.warning("%d removed files are held open already: one more goes stale",
                        len(self._holds))
            return
        try:
            fd = os.open(name, O_PATH, dir_fd=dir_fd)
        except OSError:
            return  # gone already: the unlink that follows says so
        try:
            same = self._codec.encode(*linux.handle_of_fd(fd)) == h  # not a reused inode
        except BaseException:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            return
        obj = self._cache.put(h, fd, st.st_ino)
        if not self._holds.keep(h, obj):  # released meanwhile
            self._cache.release(obj)

    # -- Backend: lookups ----------------------------------------------------------------

    def root(self) -> bytes:
        return self._root_h

    def getattr(self, h: bytes) -> Attrs:
        with self._borrow(h) as obj:
            return self._attrs(self._live(obj))

    def getattr_cached(self, h: bytes) -> Attrs | None:
        """``getattr`` of an object whose descriptor is open here, on a filesystem that
        answers fstat from memory; None otherwise (the worker thread then opens it)."""
        with self._if_cached(h) as obj:
            return None if obj is None else self._attrs(self._live(obj))

    def lookup(self, dir_h: bytes, name: bytes) -> tuple[bytes, Attrs]:
        with self._dir(dir_h) as (d, _):
            return self._publish(*self._open_child(d.fd, name))

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
            path = os.readlink(_proc(fd))
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
        """The kernel's answer for the calling thread's identity, ACLs included."""
        granted = 0
        with self._borrow(h) as obj:
            self._live(obj)
            for bit, mode in ((perm.READ, os.R_OK), (perm.WRITE, os.W_OK), (perm.EXEC, os.X_OK)):
                try:
                    if want & bit and creds.faccess_fd(obj.fd, mode):
                        granted |= bit
                except OSError as e:
                    if e.errno != errno.EROFS:
                        raise
        return granted

    def statfs(self, h: bytes) -> FsStat:
        with self._borrow(h) as obj:
            v = os.fstatvfs(obj.fd)
            return FsStat(
                v.f_blocks * v.f_frsize, v.f_bfree * v.f_frsize, v.f_bavail * v.f_frsize,
                v.f_files, v.f_ffree, v.f_favail, v.f_namemax,
            )  # fmt: skip

    # -- Backend: readdir ----------------------------------------------------------------

    def _verifier(self, dir_h: bytes) -> bytes:
        return self._codec.mac(b"readdir\0" + dir_h)[:8]

    def _dir_entry(self, dir_fd: int, name: bytes, d_off: int, d_ino: int) -> DirEntry | None:
        """The entry for ``name`` (``mount`` set on a mount point; ``error`` set when the
        caller may not reach it, see the backend contract), or None if it vanished."""
        cookie = d_off + COOKIE_BIAS
        try:
            fd, st = self._open_child(dir_fd, name)
        except OSError as e:
            if e.errno == errno.EXDEV:
                mount, st = self._mount_at(dir_fd, name, d_ino)
                return DirEntry(name, cookie, b"", _stat_attrs(st, 0), mount, d_ino)
            if e.errno == errno.ENOENT:
                return None
            if e.errno in _UNREACHABLE:
                return DirEntry(name, cookie, b"", None, fileid=d_ino, error=e.errno)
            raise
        try:
            h = self._codec.encode(*linux.handle_of_fd(fd))
        finally:
            os.close(fd)
        return DirEntry(name, cookie, h, self._attrs(st), fileid=d_ino)

    def _scan(self, fd: int, max_entries: int) -> tuple[list[DirEntry], bool]:
        out: list[DirEntry] = []
        while batch := linux.getdents64(fd):
            for name, d_off, d_ino in batch:
                if name in (b".", b".."):
                    continue
                if len(out) >= max_entries:
                    return out, False
                entry = self._dir_entry(fd, name, d_off, d_ino)
                if entry is not None:
                    out.append(entry)
        return out, True

    def readdir(
        self, dir_h: bytes, cookie: int, verifier: bytes, max_entries: int
    ) -> tuple[list[DirEntry], bool, bytes]:
        mine = self._verifier(dir_h)
        if cookie in (1, 2) or cookie < 0 or cookie - COOKIE_BIAS > MAX_OFFSET:
            raise oserror(errno.EINVAL, "bad readdir cookie")  # NFS4ERR_BAD_COOKIE
        if verifier != bytes(8) and verifier != mine:
            raise oserror(errno.EINVAL, "bad readdir verifier")
        with self._dir(dir_h) as (d, _):
            # through /proc, not openat(".") which needs search permission: reading a
            # directory needs only read permission (its entries then come as ``error``)
            fd = os.open(_proc(d.fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if cookie:
                    os.lseek(fd, cookie - COOKIE_BIAS, os.SEEK_SET)
                entries, eof = self._scan(fd, max_entries)
            finally:
                os.close(fd)
        return entries, eof, mine

    # -- Backend: I/O --------------------------------------------------------------------

    def _io(self, obj: CachedObject) -> tuple[int, os.stat_result]:
        st = self._live(obj)
        _require_file(st)
        if obj.io_fd >= 0:
            return obj.io_fd, st
        with creds.as_root():  # shared by every user: opened as root, checked per call
            return self._cache.io_fd(obj, _open_io), st

    def _may(self, obj: CachedObject, st: os.stat_result, *modes: int) -> None:
        """EACCES unless the caller may access ``obj`` with one of ``modes`` -- the kernel's
        decision, ACLs included -- or owns it (knfsd's owner override: the owner keeps the
        access it had when it opened the file, RFC 7530 section 16.16.5 "the server still
        must do appropriate access checking on the READs and WRITEs themselves")."""
        who = creds.current()
        if who.uid == st.st_uid or any(creds.faccess_fd(obj.fd, m) for m in modes):
            return
        raise oserror(errno.EACCES)

    def _may_read(self, obj: CachedObject, st: os.stat_result) -> None:
        """``_may`` read -- or execute: READ of a regular file the caller may execute is
        allowed (read-if-execute, ``perm.may_read``) -- remembered for the event-loop read path until
        ctime changes."""
        who = creds.current()
        if obj.grants.get(who) == st.st_ctime_ns:
            return
        self._may(obj, st, os.R_OK, os.X_OK)
        self._cache.grant(obj, who, st.st_ctime_ns)

    def read(self, h: bytes, offset: int, count: int) -> tuple[bytes, bool]:
        with self._borrow(h) as obj:
            fd, st = self._io(obj)
            self._may_read(obj, st)
            if offset > MAX_OFFSET:
                return b"", True
            data = os.pread(fd, count, offset)
            return data, _at_eof(fd, offset + len(data), st.st_size, len(data) < count)

    def read_cached(
        self, h: bytes, offset: int, count: int, who: Identity = creds.ROOT
    ) -> tuple[bytes | bytearray, bool] | None:
        """The whole read from the page cache (``preadv2`` with ``RWF_NOWAIT``) when the object
        is already open for I/O here and ``who`` was granted read access since its last ctime
        change; None when any of it would wait for the disk or the access is not known.

        This saves the round trip through a worker thread, which costs more CPU than copying
        a megabyte of cached data (measured: ~45 % of a 1 MiB READ's server CPU).
        """
        with self._if_cached(h) as obj:
            if obj is None or obj.io_fd < 0 or _RWF_NOWAIT is None:
                return None
            if count <= 0 or offset > MAX_OFFSET:
                return None  # edge cases: the worker's `read` answers them
            st = self._live(obj)
            _require_file(st)
            if obj.grants.get(who) != st.st_ctime_ns:
                return None  # the worker asks the kernel under who's identity
            if offset >= st.st_size:
                return b"", True
            buf = bytearray(min(count, st.st_size - offset))
            try:
                n = os.preadv(obj.io_fd, [buf], offset, _RWF_NOWAIT)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EOPNOTSUPP, errno.EINVAL):
                    return None  # not all cached, or no RWF_NOWAIT on this filesystem
                raise
            if n < len(buf):
                return None  # partly cached, or the file shrank: the worker reads it whole
            return buf, _at_eof(obj.io_fd, offset + n, st.st_size, n < count)

    def write(self, h: bytes, offset: int, data: bytes, sync: bool) -> int:
        with self._borrow(h) as obj:
            fd, st = self._io(obj)
            self._writable(obj, st)
            if offset + len(data) > MAX_OFFSET:
                raise oserror(errno.EFBIG)
            done = 0
            with obj.write_lock:  # as the caller: the kernel clears set-id bits of non-root
                while done < len(data):
                    done += os.pwrite(fd, data[done:], offset + done)
            if sync:
                os.fsync(fd)  # RFC 7530 section 16.36.4: FILE_SYNC4 data and metadata stable
            if done:
                self._modified(st)
            return done

    def _writable(self, obj: CachedObject, st: os.stat_result) -> None:
        """EACCES unless the caller may write ``obj``; EROFS (or why) if it cannot be written."""
        self._may(obj, st, os.W_OK)
        if not obj.io_writable:
            with creds.as_root():
                os.close(_open_io(obj.fd)[0])  # raises the reason it is read-only
            raise oserror(errno.EROFS)

    def commit(self, h: bytes) -> None:
        with self._borrow(h) as obj:
            fd, _ = self._io(obj)
            os.fsync(fd)  # RFC 7530 section 16.3.4: stable storage before the reply

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
            self._own(fd, os.fstat(fd), mode, uid, gid)
            return os.open(_proc(fd), os.O_PATH | os.O_CLOEXEC)
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
            os.chmod(_proc(fd), want)

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
                return (*self._publish(fd, os.fstat(fd)), True)
            raise oserror(errno.EAGAIN)

    def _adopt(self, dir_fd: int, name: bytes, ifmt: int, mode: int | None, uid: int,
               gid: int) -> tuple[bytes, Attrs]:
        """Give a just-created ``name`` the mode (and, for root, the owner) asked for."""
        fd, st = self._open_child(dir_fd, name)
        try:
            if stat.S_IFMT(st.st_mode) != ifmt or st.st_uid != creds.current().uid:
                raise oserror(errno.EAGAIN, "created object replaced concurrently")
            self._own(fd, st, None if ifmt == stat.S_IFLNK else mode, uid, gid)
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
        self,
        dir_h: bytes,
        name: bytes,
        ftype: FileType,
        mode: int,
        rdev: tuple[int, int],
        uid: int,
        gid: int,
    ) -> tuple[bytes, Attrs]:
        ifmt = _NODE_FMT.get(ftype)
        if ifmt is None:
            raise oserror(errno.EINVAL, f"mknod of {ftype!r}")
        device = os.makedev(*rdev) if ftype in (FileType.BLK, FileType.CHR) else 0
        with self._dir(dir_h) as (d, dst):
            os.mknod(check_name(name), ifmt | (mode & 0o7777), device, dir_fd=d.fd)
            self._modified(dst)
            return self._adopt(d.fd, name, ifmt, mode, uid, gid)

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

    def link(self, h: bytes, dir_h: bytes, name: bytes) -> Attrs:
        with self._borrow(h) as obj, self._dir(dir_h) as (d, dst):
            st = self._live(obj)
            if stat.S_ISDIR(st.st_mode):
                raise oserror(errno.EPERM, "hard link to a directory")
            # through /proc as the caller: linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH, and
            # the kernel applies protected_hardlinks to the caller (proc(5) /proc/pid/fd)
            os.link(_proc(obj.fd), check_name(name), dst_dir_fd=d.fd, follow_symlinks=True)
            self._modified(dst)
            self._modified(st)
            return self._attrs(os.fstat(obj.fd))

    # -- Backend: setattr ----------------------------------------------------------------

    def _truncate(self, obj: CachedObject, size: int) -> None:
        fd, st = self._io(obj)
        self._writable(obj, st)  # RFC 7530 section 16.32: SETATTR(size) is a write
        if size > MAX_OFFSET:
            raise oserror(errno.EFBIG)
        os.ftruncate(fd, size)

    def setattr(
        self,
        h: bytes,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime: TimeArg = None,
        mtime: TimeArg = None,
    ) -> Attrs:
        with self._borrow(h) as obj:
            st = self._live(obj)
            if mode is not None or uid is not None or gid is not None:
                obj.grants.clear()  # also when ctime does not visibly move
            if size is not None:
                self._truncate(obj, size)
            if uid is not None or gid is not None:
                linux.fchown_empty(obj.fd, -1 if uid is None else uid, -1 if gid is None else gid)
            if mode is not None and not stat.S_ISLNK(st.st_mode):
                os.chmod(_proc(obj.fd), mode & 0o7777)
            if atime is not None or mtime is not None:
                linux.utimens_empty(obj.fd, _timespec(atime), _timespec(mtime))
            if any(v is not None for v in (mode, uid, gid, size, atime, mtime)):
                self._modified(st)
            return self._attrs(os.fstat(obj.fd))

    def close(self) -> None:
        for obj in self._holds.drain():
            self._cache.release(obj)
        self._cache.close_all()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1
