"""A bounded, thread-safe LRU cache of open file descriptors, keyed by handle.

Each entry holds an ``O_PATH`` descriptor for the object and, lazily, an I/O descriptor
(regular files). Users borrow entries (reference counted); an entry evicted or invalidated
while borrowed is closed only when its last borrower returns it, so a descriptor is never
closed (and its number reused for another file) under a running read or write.

An entry also remembers, for at most ``MAX_GRANTS`` identities, the ctime at which the kernel
last granted each access -- read (or execute) for a regular file, search for a directory --
so the local backend's event-loop paths (READ, LOOKUP) need no credential switch while the
ctime is unchanged; and likewise the kernel's whole answer to ACCESS (read, write, execute)
for each identity. The oldest is forgotten first.

An answer is remembered only once its ctime has *settled*: ctime comes from a coarse clock
(a timer tick, 1-10 ms; whole seconds on some filesystems), so a change made by another
process on this host within the same tick as the ctime seen before asking could leave the
ctime unchanged and the remembered answer wrong. An answer whose ctime is older than
``SETTLE_NS`` (``SETTLE_COARSE_NS`` for a whole-second ctime) is safe: any later change
stamps a later ctime. Younger ones are answered by the kernel each time.

Except where the filesystem has *multigrain* timestamps (Linux 6.13 on: ext4, xfs, btrfs and
tmpfs set ``FS_MGTIME``; Documentation/filesystems/multigrain-ts.rst): once a ctime has been
read by ``stat`` (which flags the inode ``I_CTIME_QUERIED``), the next change of the inode
takes a fine-grained time and so a visibly different ctime. Every answer here is taken after
an ``fstat`` of the object read the ctime it is remembered at, so on such a filesystem
(``fine_ctime``, checked once per export) it is remembered at once.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, TypeVar

from pynfsd.fs.creds import Identity

MAX_GRANTS: Final = 8
_T = TypeVar("_T")
SETTLE_NS: Final = 100_000_000  # 0.1 s: ten 10 ms ticks, with room for a thread descheduled
SETTLE_COARSE_NS: Final = 2_100_000_000  # a whole-second ctime: 1 s or 2 s (FAT) granularity


#: Filesystems (as /proc/self/mountinfo names them) with multigrain timestamps, and the kernel
#: that gave them: a change after a stat that read the ctime always shows a new ctime.
MULTIGRAIN_FS: Final = frozenset({"ext4", "xfs", "btrfs", "tmpfs"})
MULTIGRAIN_SINCE: Final = (6, 13)


def fine_ctime(fs_type: str | None, release: str | None = None) -> bool:
    """Whether ``fs_type`` has multigrain timestamps under the running kernel (``release``,
    as ``uname -r`` gives it), so that answers need not wait for their ctime to settle."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release if release is None else release)
    return fs_type in MULTIGRAIN_FS and m is not None and (
        (int(m.group(1)), int(m.group(2))) >= MULTIGRAIN_SINCE)


def settled(ctime_ns: int, now_ns: int | None = None) -> bool:
    """Whether an answer seen at ``ctime_ns`` may be remembered (see the module docstring)."""
    age = (time.time_ns() if now_ns is None else now_ns) - ctime_ns
    return age > (SETTLE_COARSE_NS if ctime_ns % 1_000_000_000 == 0 else SETTLE_NS)


class CachedObject:
    """Descriptors of one object; ``fd`` is ``O_PATH``, ``io_fd`` is -1 until opened.

    ``write_lock`` serializes writes to the object's data: the kernel serializes buffered
    writes to one inode anyway, and worker threads waiting here sleep, where threads
    racing for the inode lock spin (measured: 4-5x the system CPU per MiB written with 8
    WRITEs to one file in flight).
    """

    __slots__ = ("key", "fd", "io_fd", "io_writable", "ino", "refs", "dead", "write_lock", "grants",
                 "access")

    def __init__(self, key: bytes, fd: int, ino: int) -> None:
        self.key = key
        self.fd = fd
        self.io_fd = -1
        self.io_writable = False
        self.ino = ino
        self.refs = 0
        self.dead = False
        self.write_lock = threading.Lock()
        # identity -> ctime_ns when read (a file) or search (a directory) was granted
        self.grants: dict[Identity, int] = {}
        # identity -> (ctime_ns, the access bits the kernel granted at that ctime)
        self.access: dict[Identity, tuple[int, int]] = {}

    def forget_grants(self) -> None:
        """Drop every remembered decision (a mode, owner or ACL change made here: also when
        the ctime does not visibly move)."""
        self.grants.clear()
        self.access.clear()

    def close(self) -> None:
        for fd in (self.fd, self.io_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.io_fd = -1


class FdCache:
    """LRU of ``CachedObject`` with at most ``capacity`` entries (two fds each at most)."""

    def __init__(self, capacity: int, fine_ctime: bool = False) -> None:
        self._capacity = max(1, capacity)
        self.fine_ctime = fine_ctime  # multigrain ctimes: no settling (module docstring)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, CachedObject] = OrderedDict()

    def get(self, key: bytes) -> CachedObject | None:
        """Borrow the entry for ``key`` if cached."""
        with self._lock:
            obj = self._entries.get(key)
            if obj is not None:
                self._entries.move_to_end(key)
                obj.refs += 1
            return obj

    def put(self, key: bytes, fd: int, ino: int) -> CachedObject:
        """Cache ``fd`` (ownership passes to the cache) and borrow the entry for ``key``."""
        with self._lock:
            obj = self._entries.get(key)
            if obj is not None:
                os.close(fd)  # another thread cached the same object first
            else:
                obj = self._entries[key] = CachedObject(key, fd, ino)
                self._evict()
            obj.refs += 1
            return obj

    def borrow(self, obj: CachedObject) -> CachedObject:
        """Borrow an entry already held (borrowed) elsewhere, cached or not."""
        with self._lock:
            obj.refs += 1
            return obj

    def release(self, obj: CachedObject) -> None:
        """Return a borrowed entry."""
        with self._lock:
            obj.refs -= 1
            if obj.dead and obj.refs == 0:
                obj.close()

    def io_fd(self, obj: CachedObject, opener: Callable[[int], tuple[int, bool]]) -> int:
        """The entry's I/O descriptor, opened once with ``opener(fd) -> (fd, writable)``."""
        with self._lock:
            if obj.io_fd < 0:
                obj.io_fd, obj.io_writable = opener(obj.fd)
            return obj.io_fd

    def grant(self, obj: CachedObject, who: Identity, ctime_ns: int) -> None:
        """Remember that ``who`` may read (a file) or search (a directory) ``obj`` while its
        ctime is ``ctime_ns`` (once that ctime has settled)."""
        self._remember(obj.grants, who, ctime_ns, ctime_ns)

    def remember_access(self, obj: CachedObject, who: Identity, ctime_ns: int, bits: int) -> None:
        """Remember the access bits the kernel granted ``who`` on ``obj`` at ``ctime_ns`` (once
        that ctime has settled)."""
        self._remember(obj.access, who, ctime_ns, (ctime_ns, bits))

    def _remember(self, table: dict[Identity, _T], who: Identity, ctime_ns: int, value: _T) -> None:
        """``table[who] = value`` as the newest of at most ``MAX_GRANTS``, if ``ctime_ns`` settled
        (or needs not: ``fine_ctime``)."""
        if not (self.fine_ctime or settled(ctime_ns)):
            return
        with self._lock:
            table.pop(who, None)
            table[who] = value
            while len(table) > MAX_GRANTS:
                del table[next(iter(table))]

    def _drop(self, obj: CachedObject) -> None:
        """Remove from the table; close now or when the last borrower is done."""
        self._entries.pop(obj.key, None)
        obj.dead = True
        if obj.refs == 0:
            obj.close()

    def _evict(self) -> None:
        while len(self._entries) > self._capacity:
            oldest = next(iter(self._entries.values()))
            self._drop(oldest)

    def invalidate(self, key: bytes) -> None:
        with self._lock:
            obj = self._entries.get(key)
            if obj is not None:
                self._drop(obj)

    def invalidate_ino(self, ino: int) -> None:
        """Drop entries for inode ``ino`` (after its last link is removed)."""
        with self._lock:
            for obj in [o for o in self._entries.values() if o.ino == ino]:
                self._drop(obj)

    def __len__(self) -> int:
        return len(self._entries)

    def close_all(self) -> None:
        with self._lock:
            for obj in list(self._entries.values()):
                self._drop(obj)
