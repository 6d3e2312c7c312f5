"""One cache's `channel`, `flush` and `content` files, sans-IO: what a daemon reads and writes.

Theory of operation.  The kernel shows each cache as `/proc/net/rpc/<name>/{channel,flush,
content}`; rpc.mountd and exportfs use them (docs: NFS-UTILS-INTEROP.md).  `Channel` is that
interface without the files: the wiring (a FUSE tree, a socket, an in-process daemon) feeds
it reads and writes.

* **Requests.**  `upcall(key)` is the `Deferral`'s upcall: with a reader open it queues the
  key's request line and says True; with none it says False and the key becomes negative, as
  in the kernel.  A key is queued once while its request is unread, and the queue holds at
  most the cache's `max_entries` keys (the oldest request is dropped past that; its waiters
  time out into NFS4ERR_DELAY and the next lookup asks again), so a flood of keys cannot
  grow it.  `read()` hands out one whole line per read, as rpc.mountd expects (it reads with
  one 32 KiB buffer and takes what it gets as one request).
* **Replies.**  `write(data)` takes one reply line: decoded by the cache's `Format`, stored
  through the `Deferral` (waking the requests parked on the key).  A malformed line, or an
  answer for a key nobody asked about, is refused with EINVAL, counted and logged at most once
  per `LOG_INTERVAL` per kind (with the number suppressed); nothing else changes, and the
  requests waiting for that key time out into NFS4ERR_DELAY.  An answer already expired is
  accepted and dropped, as exportfs's test entries are by the kernel.
* **Flush.**  `write_flush(data)` checks that a number was written, ignores it and flushes
  (`Cache.flush`); `read_flush()` gives the flush time as the kernel shows it.
* **Content.**  `content()` is the header line and one row per key, in the kernel's format
  (a row not usable now, pending keys included, starts with `# `).
"""

from __future__ import annotations

import errno
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pynfsd.cache import lines as L
from pynfsd.cache.core import NEGATIVE, Entry, UpdateResult
from pynfsd.cache.deferral import Deferral
from pynfsd.cache.qword import LineError
from pynfsd.rpc.connections import LOG_INTERVAL, RateLimitedLog

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_FLUSH = re.compile(rb"\s*-?[0-9]+\s*")


@dataclass(frozen=True)
class Format(Generic[K, V]):
    """One cache's lines: its name, request encoder, reply decoder and content rows."""

    name: str
    encode_request: Callable[[K], bytes]
    decode_reply: Callable[[bytes], L.Reply[K, V]]
    content_row: Callable[[L.Reply[K, V], bool], bytes]


AUTH_UNIX_IP: Format[L.IpKey, str] = Format(
    "auth.unix.ip", L.encode_ip_request, L.decode_ip_reply, L.content_ip)
NFSD_EXPORT: Format[L.ExportKey, L.ExportInfo] = Format(
    "nfsd.export", L.encode_export_request, L.decode_export_reply, L.content_export)
NFSD_FH: Format[L.FhKey, str] = Format(
    "nfsd.fh", L.encode_fh_request, L.decode_fh_reply, L.content_fh)
AUTH_UNIX_GID: Format[int, tuple[int, ...]] = Format(
    "auth.unix.gid", L.encode_gid_request, L.decode_gid_reply, L.content_gid)


class Channel(Generic[K, V]):
    """The daemon's side of one cache; see the module docstring."""

    def __init__(self, fmt: Format[K, V], deferral: Deferral[K, V, Any],
                 log_interval: float = LOG_INTERVAL) -> None:
        self.format = fmt
        self.deferral = deferral
        self.readers = 0  # the wiring counts opens of the channel file
        self.stats: Counter[str] = Counter()
        self._queue: OrderedDict[K, bytes] = OrderedDict()
        self._malformed = RateLimitedLog(log_interval, log)
        self._unsolicited = RateLimitedLog(log_interval, log)

    def upcall(self, key: K) -> bool:
        if self.readers < 1:
            self.stats["no_reader"] += 1
            return False
        if key not in self._queue:
            if len(self._queue) >= self.deferral.cache.max_entries:
                self._queue.popitem(last=False)
                self.stats["requests_dropped"] += 1
            self._queue[key] = self.format.encode_request(key)
        return True

    def pending(self) -> int:
        """Request lines not read yet (a reader polls for > 0)."""
        return len(self._queue)

    def read(self) -> bytes:
        """The next request line, whole, or b"" when none is waiting."""
        if not self._queue:
            return b""
        return self._queue.popitem(last=False)[1]

    def write(self, data: bytes) -> int:
        """One reply line; 0, or the errno the writer gets (EINVAL)."""
        now = self.deferral.cache.now_exact()
        try:
            reply = self.format.decode_reply(data)
        except LineError as e:
            self.stats["malformed"] += 1
            self._malformed.warning(now, "%s: malformed reply refused: %s",
                                    self.format.name, e)
            return errno.EINVAL
        value = NEGATIVE if reply.value is None else reply.value
        result = self.deferral.update(reply.key, value, reply.expiry)
        if result is UpdateResult.UNSOLICITED:
            self.stats["unsolicited"] += 1
            self._unsolicited.warning(now, "%s: reply for %r, which nobody asked about, refused",
                                      self.format.name, reply.key)
            return errno.EINVAL
        self.stats["replies"] += 1
        return 0

    def write_flush(self, data: bytes) -> int:
        """`flush`: a number must be written; its value is ignored (the kernel's rule)."""
        if not _FLUSH.fullmatch(data):
            return errno.EINVAL
        self.deferral.cache.flush()
        return 0

    def read_flush(self) -> bytes:
        return b"%d\n" % self.deferral.cache.flush_time

    def content(self) -> bytes:
        rows = [L.CONTENT_HEADERS[self.format.name]]
        for row in self.deferral.cache.content():
            rows.append(self._row(row.key, row.entry, row.usable))
        return b"".join(rows)

    def _row(self, key: K, entry: Entry[V] | None, usable: bool) -> bytes:
        """A pending key without an entry shows as an unusable negative row, as in the kernel."""
        if entry is None:
            return self.format.content_row(L.Reply(key, 0, None), False)
        return self.format.content_row(L.Reply(key, entry.expiry, entry.value), usable)
