"""The local backend's objects: handles to descriptors, the descriptor cache, holds.

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
Limitation (as knfsd without subtree_check): a non-directory moved out of the export by a
local user stays reachable through a handle issued earlier.

Descriptors are cached (``fdcache.FdCache``): ``O_PATH`` for every object plus an I/O
descriptor for regular files, reopened through ``/proc/self/fd``. Objects whose link count
dropped to zero are reported ``ESTALE`` and evicted, unless held (``hold``, as NFSv4 opens
hold their files): a held object that loses its last link through this backend keeps a
borrowed entry, so its descriptor stays open and it is served until ``release``.  Holding
costs a descriptor only then, for at most ``max_kept`` files at a time (beyond, a removed
file goes stale as unheld ones do); a held file unlinked behind the backend's back goes stale.

``LocalObjects`` is the base of the other modules of this package: each adds the calls of
one concept on top of these descriptors (see the package docstring).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from pynfsd.fs import creds, linux, statedir
from pynfsd.fs.backend import Attrs, Backend, FileType
from pynfsd.fs.change import ChangeTracker
from pynfsd.fs.fdcache import CachedObject, FdCache, fine_ctime
from pynfsd.fs.handles import HandleCodec
from pynfsd.fs.holds import MAX_KEPT, Holds
from pynfsd.fs.names import check_name, oserror

O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OFFSET = (1 << 63) - 1
# Filesystems whose open inodes answer fstat from memory: on these `read_cached` and
# `getattr_cached` may run on the event loop. Elsewhere (FUSE, NFS, CIFS, ...) even fstat can
# wait on a daemon or the network, so every call goes to a worker thread.
_INODES_IN_MEMORY = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs", "ramfs", "overlay", "bcachefs",
     "jfs", "reiserfs", "nilfs2"}
)
MAX_DEPTH = 4096
log = logging.getLogger("pynfsd.fs.local")
_TYPES = {
    stat.S_IFREG: FileType.REG, stat.S_IFDIR: FileType.DIR, stat.S_IFBLK: FileType.BLK,
    stat.S_IFCHR: FileType.CHR, stat.S_IFLNK: FileType.LNK, stat.S_IFSOCK: FileType.SOCK,
    stat.S_IFIFO: FileType.FIFO,
}  # fmt: skip
_STALE = (errno.ESTALE, errno.ENOENT, errno.EINVAL, errno.EOVERFLOW)


def proc(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _require_dir(st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise oserror(errno.ENOTDIR)


def stat_attrs(st: os.stat_result, change: int) -> Attrs:
    r = st.st_rdev
    mode = st.st_mode
    return Attrs(
        _TYPES[mode & 0o170000], mode & 0o7777, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
        st.st_blocks * 512, (os.major(r), os.minor(r)) if r else (0, 0), st.st_ino,
        st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, change,
    )  # fmt: skip


class LocalObjects(Backend):
    """The directory ``root_path`` as a backend's objects; persistent state lives in
    ``state_dir``."""

    def __init__(
        self, root_path: str, state_dir: str, cache_size: int = 256, max_kept: int = MAX_KEPT,
        *, key: bytes | None = None,
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
            self._codec = HandleCodec(  # ``key``: shared by a cluster's nodes (pynfsd.recovery)
                key or statedir.load_or_create_key(state_dir),
                root_type.to_bytes(4, "little") + root_fh,
            )
            self._root_h = self._codec.encode(root_type, root_fh)
            os.close(linux.open_by_handle_at(self._root_fd, root_type, root_fh, O_PATH))
            self._changes = ChangeTracker(statedir.next_boot_count(state_dir))
            fs_type = linux.fs_type(st.st_dev)
            self._nonblocking_stat = fs_type in _INODES_IN_MEMORY
            self._cached_lookups = self._nonblocking_stat  # until openat2 turns out missing
        except BaseException:
            os.close(self._root_fd)
            raise
        self._cache = FdCache(cache_size, fine_ctime(fs_type))
        # covered directories' fileids by (dir ino, name, mounted dev, mounted root ino), as
        # ``lookup`` finds them
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

    def where(self, h: bytes) -> tuple[int, int, str]:
        fd, st = self._open_handle(h)
        try:
            return st.st_dev, st.st_ino, os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

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
        return stat_attrs(st, self._changes.observe(st.st_ino, st.st_ctime_ns))

    def _open_child(self, dir_fd: int, name: bytes) -> tuple[int, os.stat_result]:
        """``O_PATH`` descriptor and stat of ``name`` in ``dir_fd`` (not following links)."""
        return self._open_listed(dir_fd, check_name(name))

    def _open_listed(self, dir_fd: int, name: bytes) -> tuple[int, os.stat_result]:
        """``_open_child`` of a name the kernel listed (one component, neither . nor ..)."""
        fd = os.open(name, O_PATH, dir_fd=dir_fd)
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

    # -- Backend: the root and attributes ------------------------------------------------

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

    # -- Backend: end of use -------------------------------------------------------------

    def close(self) -> None:
        for obj in self._holds.drain():
            self._cache.release(obj)
        self._cache.close_all()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1
