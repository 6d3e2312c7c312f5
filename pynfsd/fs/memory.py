"""In-memory backend for fast protocol tests.

Theory of operation: a table of inodes keyed by inode number (never reused), each directory
holding ``name -> (cookie, ino)``. A directory hands out cookies from a per-directory counter
starting at 3, so an entry's cookie is its insertion order: ``readdir`` after cookie ``c``
returns the live entries with a larger cookie, which keeps listings stable while entries
come and go (a renamed entry gets a new cookie, like a newly added one). Handles are the
inode number plus an HMAC under a random per-instance key, so handles are unforgeable and
those of another instance are stale. ``change`` is a backend-wide counter assigned to an
inode on every modification, so it grows monotonically. One lock serialises all calls.
POSIX ACLs are kept per inode and behave as the kernel's (``pynfsd.fs.posixacl``): setting
one sets the mode, chmod rewrites it, new objects inherit a directory's default ACL.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pynfsd.fs import posixacl as P
from pynfsd.fs.backend import (
    NAME_MAX,
    SET_TO_NOW,
    AttrChanges,
    Attrs,
    Backend,
    DirEntry,
    FileType,
    FsStat,
    TimeArg,
)
from pynfsd.fs.names import check_name, check_target, oserror

FIRST_COOKIE = 3  # 0 means "start"; 1 and 2 are reserved (RFC 7530 section 16.24.4)
LINK_MAX = 65000
_INO = struct.Struct("<Q")
_MAC_LEN = 16
_NODE_TYPES = (FileType.BLK, FileType.CHR, FileType.SOCK, FileType.FIFO)


@dataclass(slots=True, eq=False)
class MemDir:
    """Directory entries with insertion-ordered cookies."""

    entries: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    names: dict[int, bytes] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    next_cookie: int = FIRST_COOKIE

    def add(self, name: bytes, ino: int) -> None:
        cookie = self.next_cookie
        self.next_cookie += 1
        self.entries[name] = (cookie, ino)
        self.names[cookie] = name
        self.order.append(cookie)

    def drop(self, name: bytes) -> None:
        cookie, _ = self.entries.pop(name)
        del self.names[cookie]
        if len(self.order) > 2 * len(self.names) + 64:
            self.order = [c for c in self.order if c in self.names]

    def after(self, cookie: int) -> Iterator[tuple[int, bytes, int]]:
        """Live ``(cookie, name, ino)`` entries with a cookie greater than ``cookie``."""
        lo, hi = 0, len(self.order)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.order[mid] <= cookie:
                lo = mid + 1
            else:
                hi = mid
        for c in self.order[lo:]:
            name = self.names.get(c)
            if name is not None:
                yield c, name, self.entries[name][1]


@dataclass(slots=True, eq=False)
class Inode:
    """One object."""

    ino: int
    type: FileType
    mode: int
    uid: int
    gid: int
    now: int
    change: int
    nlink: int = 1
    data: bytearray = field(default_factory=bytearray)
    target: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    dir: MemDir | None = None
    parent: int = 0
    acl: P.PosixAcl | None = None
    default_acl: P.PosixAcl | None = None
    atime: int = field(init=False)
    mtime: int = field(init=False)
    ctime: int = field(init=False)

    def __post_init__(self) -> None:
        self.atime = self.mtime = self.ctime = self.now

    def entries(self) -> MemDir:
        if self.dir is None:
            raise oserror(errno.ENOTDIR)
        return self.dir

    def space_used(self) -> int:
        if self.type == FileType.REG:
            return len(self.data)
        return 4096 if self.type == FileType.DIR else len(self.target)


class MemoryBackend(Backend):
    """A complete in-memory filesystem (see module docstring)."""

    def __init__(
        self,
        clock: Callable[[], int] = time.time_ns,
        capacity_bytes: int = 1 << 30,
        max_files: int = 1 << 20,
    ) -> None:
        self._clock = clock
        self._capacity = capacity_bytes
        self._max_files = max_files
        self._key = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._inodes: dict[int, Inode] = {}
        self._holds: dict[int, int] = {}  # inode -> holds: kept past its last link until released
        self._next_ino = 2
        self._change = 0
        self._used = 0
        root = self._new(FileType.DIR, 0o755, 0, 0)
        root.parent = root.ino
        self._root = root.ino

    # -- handles -------------------------------------------------------------------------

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_LEN]

    def _handle(self, ino: int) -> bytes:
        body = _INO.pack(ino)
        return body + self._mac(body)

    def _get(self, h: bytes) -> Inode:
        if len(h) != _INO.size + _MAC_LEN:
            raise oserror(errno.ESTALE)
        body, mac = h[: _INO.size], h[_INO.size :]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise oserror(errno.ESTALE)
        node = self._inodes.get(_INO.unpack(body)[0])
        if node is None:
            raise oserror(errno.ESTALE)
        return node

    def _dir(self, h: bytes) -> Inode:
        node = self._get(h)
        node.entries()
        return node

    # -- inode bookkeeping ---------------------------------------------------------------

    def _touch(self, node: Inode, mtime: bool = False) -> None:
        """Record a modification: ctime (and mtime) now, a new change value."""
        now = self._clock()
        node.ctime = now
        if mtime:
            node.mtime = now
        self._change += 1
        node.change = self._change

    def _new(self, ftype: FileType, mode: int, uid: int, gid: int) -> Inode:
        if len(self._inodes) >= self._max_files:
            raise oserror(errno.ENOSPC)
        self._change += 1
        node = Inode(self._next_ino, ftype, mode & 0o7777, uid, gid, self._clock(), self._change)
        if ftype == FileType.DIR:
            node.dir, node.nlink = MemDir(), 2
        self._next_ino += 1
        self._inodes[node.ino] = node
        return node

    def _attrs(self, n: Inode) -> Attrs:
        size = len(n.data) if n.type == FileType.REG else n.space_used()
        return Attrs(
            n.type, n.mode, n.nlink, n.uid, n.gid, size, n.space_used(), n.rdev, n.ino,
            n.atime, n.mtime, n.ctime, n.change,
        )  # fmt: skip

    def _entry(self, parent: Inode, name: bytes) -> Inode:
        found = parent.entries().entries.get(check_name(name))
        if found is None:
            raise oserror(errno.ENOENT, repr(name))
        return self._inodes[found[1]]

    def _insert(self, parent: Inode, name: bytes, build: Callable[[], Inode]) -> Inode:
        """Create the inode made by ``build`` under ``name`` (EEXIST if taken)."""
        entries = parent.entries()
        if check_name(name) in entries.entries:
            raise oserror(errno.EEXIST, repr(name))
        node = self._inherit(parent, build())
        if node.type == FileType.DIR:
            node.parent = parent.ino
            parent.nlink += 1
        entries.add(name, node.ino)
        self._touch(parent, mtime=True)
        return node

    def _unlink(self, parent: Inode, name: bytes, node: Inode) -> None:
        """Drop ``name`` -> ``node`` and one link of ``node``; free it at zero links."""
        parent.entries().drop(name)
        if node.type == FileType.DIR:
            parent.nlink -= 1
            node.nlink = 0
        else:
            node.nlink -= 1
        if node.nlink > 0:
            self._touch(node)
        elif node.ino not in self._holds:
            self._free(node)

    def _free(self, node: Inode) -> None:
        self._used -= len(node.data)
        del self._inodes[node.ino]

    # -- holds (an opened file outlives its last link, as an open descriptor keeps it) ---

    def hold(self, h: bytes) -> None:
        with self._lock:
            ino = self._get(h).ino
            self._holds[ino] = self._holds.get(ino, 0) + 1

    def release(self, h: bytes) -> None:
        with self._lock:
            try:
                node = self._get(h)
            except OSError:
                return
            left = self._holds.pop(node.ino, 0) - 1
            if left > 0:
                self._holds[node.ino] = left
            elif node.nlink == 0 and node.type != FileType.DIR:
                self._free(node)

    # -- Backend -------------------------------------------------------------------------

    def root(self) -> bytes:
        return self._handle(self._root)

    def getattr(self, h: bytes) -> Attrs:
        with self._lock:
            return self._attrs(self._get(h))

    def lookup(self, dir_h: bytes, name: bytes) -> tuple[bytes, Attrs]:
        with self._lock:
            node = self._entry(self._dir(dir_h), name)
            return self._handle(node.ino), self._attrs(node)

    def parent(self, dir_h: bytes) -> tuple[bytes, Attrs]:
        with self._lock:
            node = self._dir(dir_h)
            if node.ino == self._root:
                raise oserror(errno.ENOENT, "parent of the root")
            return self._handle(node.parent), self._attrs(self._inodes[node.parent])

    def _verifier(self, dir_ino: int) -> bytes:
        return self._mac(b"readdir" + _INO.pack(dir_ino))[:8]

    def readdir(
        self, dir_h: bytes, cookie: int, verifier: bytes, max_entries: int
    ) -> tuple[list[DirEntry], bool, bytes]:
        with self._lock:
            node = self._dir(dir_h)
            entries, mine = node.entries(), self._verifier(node.ino)
            if cookie in (1, 2) or cookie >= entries.next_cookie or cookie < 0:
                raise oserror(errno.EINVAL, "bad readdir cookie")
            if verifier != bytes(8) and verifier != mine:
                raise oserror(errno.EINVAL, "bad readdir verifier")
            out: list[DirEntry] = []
            for c, name, ino in entries.after(cookie):
                if len(out) >= max_entries:
                    return out, False, mine
                child = self._inodes[ino]
                out.append(DirEntry(name, c, self._handle(ino), self._attrs(child), fileid=ino))
            return out, True, mine

    def _file(self, h: bytes) -> Inode:
        node = self._get(h)
        if node.type == FileType.DIR:
            raise oserror(errno.EISDIR)
        if node.type != FileType.REG:
            raise oserror(errno.EINVAL, "not a regular file")
        return node

    def read(self, h: bytes, offset: int, count: int) -> tuple[bytes, bool]:
        with self._lock:
            node = self._file(h)
            data = bytes(node.data[offset : offset + count])
            return data, offset + len(data) >= len(node.data)

    def _resize(self, node: Inode, size: int) -> None:
        if size > self._capacity:
            raise oserror(errno.EFBIG)
        grow = size - len(node.data)
        if grow > 0 and self._used + grow > self._capacity:
            raise oserror(errno.ENOSPC)
        if grow > 0:
            node.data.extend(bytes(grow))
        else:
            del node.data[size:]
        self._used += grow

    def write(self, h: bytes, offset: int, data: bytes, sync: bool) -> int:
        with self._lock:
            node = self._file(h)
            if not data:
                return 0
            end = offset + len(data)
            if end > len(node.data):
                self._resize(node, end)
            node.data[offset:end] = data
            self._touch(node, mtime=True)
            return len(data)

    def commit(self, h: bytes) -> None:
        with self._lock:
            self._file(h)

    def create_file(
        self, dir_h: bytes, name: bytes, mode: int, uid: int, gid: int, exclusive: bool
    ) -> tuple[bytes, Attrs, bool]:
        with self._lock:
            parent = self._dir(dir_h)
            found = parent.entries().entries.get(check_name(name))
            if found is None:
                node = self._insert(parent, name, lambda: self._new(FileType.REG, mode, uid, gid))
                return self._handle(node.ino), self._attrs(node), True
            if exclusive:
                raise oserror(errno.EEXIST, repr(name))
            node = self._inodes[found[1]]
            if node.type != FileType.REG:
                code = {FileType.DIR: errno.EISDIR, FileType.LNK: errno.ELOOP}
                raise oserror(code.get(node.type, errno.EINVAL), repr(name))
            return self._handle(node.ino), self._attrs(node), False

    def mkdir(
        self, dir_h: bytes, name: bytes, mode: int, uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        with self._lock:
            parent = self._dir(dir_h)
            node = self._insert(parent, name, lambda: self._new(FileType.DIR, mode, uid, gid))
            return self._handle(node.ino), self._attrs(node)

    def symlink(
        self, dir_h: bytes, name: bytes, target: bytes, uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        with self._lock:
            parent = self._dir(dir_h)
            check_target(target)

            def build() -> Inode:
                node = self._new(FileType.LNK, 0o777, uid, gid)
                node.target = target
                return node

            node = self._insert(parent, name, build)
            return self._handle(node.ino), self._attrs(node)

    def mknod(
        self, dir_h: bytes, name: bytes, ftype: FileType, mode: int, rdev: tuple[int, int],
        uid: int, gid: int
    ) -> tuple[bytes, Attrs]:
        with self._lock:
            parent = self._dir(dir_h)
            if ftype not in _NODE_TYPES:
                raise oserror(errno.EINVAL, f"mknod of {ftype!r}")

            def build() -> Inode:
                node = self._new(ftype, mode, uid, gid)
                if ftype in (FileType.BLK, FileType.CHR):
                    node.rdev = rdev
                return node

            node = self._insert(parent, name, build)
            return self._handle(node.ino), self._attrs(node)

    def readlink(self, h: bytes) -> bytes:
        with self._lock:
            node = self._get(h)
            if node.type != FileType.LNK:
                raise oserror(errno.EINVAL, "not a symlink")
            return node.target

    def remove(self, dir_h: bytes, name: bytes) -> None:
        with self._lock:
            parent = self._dir(dir_h)
            node = self._entry(parent, name)
            if node.dir is not None and node.dir.entries:
                raise oserror(errno.ENOTEMPTY, repr(name))
            self._unlink(parent, name, node)
            self._touch(parent, mtime=True)

    def _is_ancestor(self, anc: Inode, node: Inode) -> bool:
        """Whether directory ``anc`` is ``node`` or one of its ancestors."""
        ino = node.ino
        while True:
            if ino == anc.ino:
                return True
            if ino == self._root:
                return False
            ino = self._inodes[ino].parent

    def _check_replace(self, src: Inode, dst: Inode) -> None:
        """POSIX rules for renaming ``src`` over the existing ``dst``."""
        if src.type == FileType.DIR and dst.type != FileType.DIR:
            raise oserror(errno.ENOTDIR)
        if src.type != FileType.DIR and dst.type == FileType.DIR:
            raise oserror(errno.EISDIR)
        if dst.dir is not None and dst.dir.entries:
            raise oserror(errno.ENOTEMPTY)

    def rename(
        self, src_dir_h: bytes, src_name: bytes, dst_dir_h: bytes, dst_name: bytes
    ) -> None:
        with self._lock:
            sdir, ddir = self._dir(src_dir_h), self._dir(dst_dir_h)
            src = self._entry(sdir, src_name)
            check_name(dst_name)
            if src.type == FileType.DIR and self._is_ancestor(src, ddir):
                raise oserror(errno.EINVAL, "rename of a directory into itself")
            found = ddir.entries().entries.get(dst_name)
            if found is not None:
                dst = self._inodes[found[1]]
                if dst is src:
                    return  # POSIX: same file, nothing to do
                self._check_replace(src, dst)
                self._unlink(ddir, dst_name, dst)
            sdir.entries().drop(src_name)
            if src.type == FileType.DIR:
                sdir.nlink -= 1
                ddir.nlink += 1
                src.parent = ddir.ino
            ddir.entries().add(dst_name, src.ino)
            for node in {sdir.ino: sdir, ddir.ino: ddir}.values():
                self._touch(node, mtime=True)
            self._touch(src)

    def link(self, h: bytes, dir_h: bytes, name: bytes) -> Attrs:
        with self._lock:
            node, parent = self._get(h), self._dir(dir_h)
            if node.type == FileType.DIR:
                raise oserror(errno.EPERM, "hard link to a directory")
            if node.nlink == 0:
                raise oserror(errno.ENOENT, "removed (held open only)")  # as linkat(2)
            if node.nlink >= LINK_MAX:
                raise oserror(errno.EMLINK)
            if check_name(name) in parent.entries().entries:
                raise oserror(errno.EEXIST, repr(name))
            parent.entries().add(name, node.ino)
            node.nlink += 1
            self._touch(parent, mtime=True)
            self._touch(node)
            return self._attrs(node)

    def _set_times(self, node: Inode, atime: TimeArg, mtime: TimeArg) -> None:
        now = self._clock()
        if atime is not None:
            node.atime = now if atime is SET_TO_NOW else int(atime)  # type: ignore[arg-type]
        if mtime is not None:
            node.mtime = now if mtime is SET_TO_NOW else int(mtime)  # type: ignore[arg-type]

    def _chown(self, node: Inode, uid: int | None, gid: int | None) -> None:
        node.uid = node.uid if uid is None else uid
        node.gid = node.gid if gid is None else gid
        if node.type != FileType.DIR:  # chown(2) clears set-id bits on non-directories
            node.mode &= ~(0o4000 | (0o2000 if node.mode & 0o010 else 0))

    def change_attrs(self, h: bytes, c: AttrChanges) -> Attrs:
        with self._lock:
            node = self._get(h)
            if c.size is not None:
                self._resize(self._file(h), c.size)
            if c.uid is not None or c.gid is not None:
                self._chown(node, c.uid, c.gid)
            if c.mode is not None and node.type != FileType.LNK:
                node.mode = c.mode & 0o7777
                node.acl = None if node.acl is None else P.chmod(node.acl, node.mode)
            self._set_times(node, c.atime, c.mtime)
            if c.changes_anything():
                self._touch(node, mtime=c.size is not None and c.mtime is None)
            return self._attrs(node)

    # -- ACLs ----------------------------------------------------------------------------

    def acl_support(self) -> bool:
        return True

    def _acl_node(self, h: bytes) -> Inode:
        node = self._get(h)
        if node.type == FileType.LNK:
            raise oserror(errno.EOPNOTSUPP, "no ACL on a symlink")
        return node

    def get_acl(self, h: bytes) -> tuple[P.PosixAcl | None, P.PosixAcl | None]:
        with self._lock:
            node = self._acl_node(h)
            return node.acl, node.default_acl

    def acl_cached(self, h: bytes) -> P.PosixAcl | None:
        with self._lock:
            return self._get(h).acl

    def set_acl(self, h: bytes, access: P.PosixAcl, default: P.PosixAcl | None) -> Attrs:
        P.check_valid(access)
        if default is not None:
            P.check_valid(default)
        with self._lock:
            node = self._acl_node(h)
            node.mode = node.mode & 0o7000 | P.mode_bits(access)
            node.acl = None if P.is_minimal(access) else access
            if node.type == FileType.DIR:
                node.default_acl = default
            self._touch(node)
            return self._attrs(node)

    def _inherit(self, parent: Inode, node: Inode) -> Inode:
        """``node`` just created in ``parent``: its ACL from the parent's default ACL."""
        if parent.default_acl is not None and node.type != FileType.LNK:
            acl, bits = P.create_masq(parent.default_acl, node.mode)
            node.mode = node.mode & 0o7000 | bits
            node.acl = None if P.is_minimal(acl) else acl
            if node.type == FileType.DIR:
                node.default_acl = parent.default_acl
        return node

    def statfs(self, h: bytes) -> FsStat:
        with self._lock:
            self._get(h)
            free = self._capacity - self._used
            files_free = self._max_files - len(self._inodes)
            return FsStat(self._capacity, free, free, self._max_files, files_free, files_free,
                          NAME_MAX)

    def close(self) -> None:
        with self._lock:
            self._inodes.clear()

