"""The NFSv4 change attribute of the local backend, derived from ctime.

Scheme: ``change = ctime_ns + boot_count * STEP (+ bumps)``.

* Modifications made on disk by other means change ctime, hence ``change``.
* ctime is coarse (a timer tick) on many kernels, so two modifications through the backend
  may leave it unchanged. Each backend modification therefore calls ``bump(fileid,
  ctime_before)``, which records ``(ctime_before, current value + 1)`` in memory: as long as
  ctime stays the same, the recorded value is reported; when ctime moves on, the value
  becomes ``max(new base, recorded + 1)``. So every backend modification yields a new value
  and values never decrease while the server runs. Records are dropped once the value equals
  the plain ctime-derived base again, so only files modified twice within one tick use memory.
* Across restarts the in-memory bumps are lost; the persistent ``boot_count`` (incremented at
  every start) lifts all values by ``STEP`` = 2**16, which exceeds the bumps any file can take
  within one ctime tick, so the first value after a restart is above every value issued
  before it for the same or a later ctime. (Clients therefore revalidate caches once after a
  restart.) If the system clock is set back, values can repeat, as with plain ctime.
"""

from __future__ import annotations

import threading

STEP = 1 << 16
MASK = (1 << 64) - 1


class ChangeTracker:
    """Per-fileid change values (thread-safe)."""

    def __init__(self, boot_count: int) -> None:
        self._offset = boot_count * STEP
        self._lock = threading.Lock()
        self._records: dict[int, tuple[int, int]] = {}

    def _value(self, fileid: int, ctime_ns: int) -> int:
        base = ctime_ns + self._offset
        rec = self._records.get(fileid)
        if rec is None or rec[0] == ctime_ns:
            return base if rec is None else rec[1]
        value = base if base > rec[1] else rec[1] + 1
        if value == base:
            del self._records[fileid]
        else:
            self._records[fileid] = (ctime_ns, value)
        return value

    def observe(self, fileid: int, ctime_ns: int) -> int:
        """The change value of an object whose ctime is ``ctime_ns``."""
        if fileid not in self._records:
            # most objects have no record (READDIR observes every entry): no lock needed, as
            # a record added meanwhile by ``bump`` is for a modification ordered after this
            return (ctime_ns + self._offset) & MASK
        with self._lock:
            return self._value(fileid, ctime_ns) & MASK

    def bump(self, fileid: int, ctime_before: int) -> None:
        """Record a modification of an object whose ctime was ``ctime_before`` beforehand."""
        with self._lock:
            self._records[fileid] = (ctime_before, self._value(fileid, ctime_before) + 1)

    def forget(self, fileid: int) -> None:
        with self._lock:
            self._records.pop(fileid, None)
