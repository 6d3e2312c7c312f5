"""Which objects NFSv4 opens hold, and which of them outlived their last link (the local
backend's bookkeeping; no I/O).

Theory of operation: an open file stays usable through its handle after its last name is
removed, as a local descriptor keeps a file, until its last CLOSE (as knfsd holds the open
file).  `hold`/`release` count the opens of a handle and remember its inode, which costs no
descriptor.  When a held object is about to lose its last link through the backend, the
backend opens a descriptor of it and `keep`s that cache entry here, for at most `max_kept`
objects at a time (beyond, the removed object goes stale as an unheld one does).  The last
`release` hands the kept entry back to be closed.  One lock guards it all: holds are noted on
the event loop, and removals happen on worker threads.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

MAX_KEPT = 256  # held files kept open after their last link went; beyond, they go stale

T = TypeVar("T")  # the backend's cache entry


class Holds(Generic[T]):
    def __init__(self, max_kept: int = MAX_KEPT) -> None:
        self.max_kept = max_kept
        self._holds: dict[bytes, tuple[int, int]] = {}  # held handle -> (inode, holds)
        self._by_ino: dict[int, bytes] = {}  # inode -> held handle
        self._kept: dict[bytes, T] = {}  # held handles whose last link went
        self._lock = threading.Lock()

    def inode_of(self, h: bytes) -> int | None:
        """The inode of a held ``h`` (None when not held: the caller looks it up)."""
        with self._lock:
            held = self._holds.get(h)
        return None if held is None else held[0]

    def hold(self, h: bytes, ino: int) -> None:
        with self._lock:
            held = self._holds.get(h, (ino, 0))
            self._holds[h] = (held[0], held[1] + 1)
            self._by_ino[held[0]] = h

    def release(self, h: bytes) -> T | None:
        """End one hold of ``h``; after the last, its kept entry (to be closed), if any."""
        with self._lock:
            held = self._holds.pop(h, None)
            if held is not None and held[1] > 1:
                self._holds[h] = (held[0], held[1] - 1)
                return None
            if held is not None and self._by_ino.get(held[0]) == h:
                del self._by_ino[held[0]]
            return self._kept.pop(h, None)

    def to_keep(self, ino: int) -> tuple[bytes | None, bool]:
        """The held handle of inode ``ino`` not kept yet (None: nothing to keep), and whether
        the kept objects are at their bound already."""
        with self._lock:
            h = self._by_ino.get(ino)
            if h in self._kept:
                h = None
            return h, len(self._kept) >= self.max_kept

    def keep(self, h: bytes, entry: T) -> bool:
        """Keep ``entry`` for ``h``; False when ``h`` was released (or kept) meanwhile."""
        with self._lock:
            if h not in self._holds or h in self._kept:
                return False
            self._kept[h] = entry
            return True

    def kept(self, h: bytes) -> T | None:
        return self._kept.get(h)

    def __len__(self) -> int:
        return len(self._kept)

    def drain(self) -> list[T]:
        """Every kept entry, forgotten here (the backend closes them)."""
        with self._lock:
            entries = list(self._kept.values())
            self._kept.clear()
            return entries
