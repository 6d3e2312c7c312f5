"""The duplicate request cache (DRC): replies to non-idempotent calls, replayed to retransmissions.

Theory of operation: a client that lost a reply sends the call again with the same xid, often
on a new connection.  Running a REMOVE or a CREATE twice turns its NFS4_OK into NFS4ERR_NOENT or
NFS4ERR_EXIST, so the RPC dispatcher asks this cache first.  A call is keyed as knfsd keys it
(`nfsd_cache_key_cmp`): the client's IP address (not its port), xid, program, version,
procedure, the length of the (unwrapped) arguments and a checksum of their first
`CHECKSUM_BYTES`, plus the caller's identity as its auth flavour states it (AUTH_SYS ids; the
RPCSEC_GSS context handle and service), so that a reply is only ever replayed to the caller
and context that got it.  The key is one 16-byte BLAKE2b digest of all of these, so every
entry costs the same few hundred bytes beside its reply.

`begin(key)` answers with the cached results (replay them), `IN_PROGRESS` (the original is
still running: drop the retransmission, its reply is on its way) or `NEW` (run the call, then
call `finish`).  `finish(key, results)` stores results the procedure marked cacheable (at most
`max_reply` bytes) or forgets the call.  Results are stored *before* the auth flavour protects
them: a retransmission is wrapped again under its own credential (RPCSEC_GSS retransmissions
carry a new sequence number, so verifier and integrity/privacy must be the new call's).

Eviction is one mechanism in `_evict`, run before every lookup and after every store: entries
leave oldest first while they are older than `max_age` seconds (knfsd's 120 s) or while the
cache holds more than `max_bytes` (each entry counted as its reply plus `ENTRY_OVERHEAD`, the
measured cost of the key, the bookkeeping and the bytes object).  Calls in progress are only
digests in a set; the transport bounds how many run at once.  The clock is injected.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from enum import Enum

DEFAULT_MAX_BYTES = 16 << 20
DEFAULT_MAX_AGE = 120.0  # seconds; knfsd's RC_EXPIRE
DEFAULT_MAX_REPLY = 4096  # larger results (READ, READDIR data) are never cached
CHECKSUM_BYTES = 256  # knfsd's RC_CSUMLEN
ENTRY_OVERHEAD = 320  # bytes per entry besides the reply (measured: tests/unit/test_rpc_drc.py)

_HEADER = struct.Struct(">IIIIQ")  # xid, prog, vers, proc, argument length
_U32 = struct.Struct(">I")
_blake2b = hashlib.blake2b


class Verdict(Enum):
    NEW = "new"  # not seen: run it and call finish()
    IN_PROGRESS = "in_progress"  # the original still runs: drop this one


DrcKey = bytes


def drc_key(
    addr: str, xid: int, prog: int, vers: int, proc: int, args: memoryview, identity: bytes
) -> DrcKey:
    """The digest of everything a retransmission repeats (see the module docstring)."""
    host = addr.encode()
    head = _HEADER.pack(xid, prog, vers, proc, len(args))
    # One digest call over the parts joined: each variable part is preceded by its length.
    return _blake2b(b"".join((head, _U32.pack(len(host)), host, _U32.pack(len(identity)),
                              identity, args[:CHECKSUM_BYTES])), digest_size=16).digest()


class ReplyCache:
    """Bounded by age and bytes; `stats` counts hits, drops, stores and evictions."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        max_reply: int = DEFAULT_MAX_REPLY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_reply = max_reply
        self.bytes = 0
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._done: OrderedDict[DrcKey, tuple[float, bytes]] = OrderedDict()  # oldest first
        self._busy: set[DrcKey] = set()

    def __len__(self) -> int:
        return len(self._done)

    def begin(self, key: DrcKey) -> bytes | Verdict:
        """The cached results for `key`, or what to do with the call."""
        self._evict(self._clock())
        hit = self._done.get(key)
        if hit is not None:
            self.stats["hits"] += 1
            return hit[1]
        if key in self._busy:
            self.stats["in_progress_drops"] += 1
            return Verdict.IN_PROGRESS
        self._busy.add(key)
        return Verdict.NEW

    def finish(self, key: DrcKey, results: Sequence[bytes | bytearray | memoryview] | None) -> None:
        """The call `begin` answered NEW is over; keep `results` unless None or too large."""
        self._busy.discard(key)
        if results is None:
            return
        size = sum(len(r) for r in results)
        if size > self.max_reply:
            self.stats["too_large"] += 1
            return
        reply = b"".join(results)
        self._done[key] = (self._clock(), reply)
        self.bytes += len(reply) + ENTRY_OVERHEAD
        self.stats["stored"] += 1
        self._evict(self._clock())

    def _evict(self, now: float) -> None:
        """Forget the oldest entries while they are too old or the cache is over its bytes."""
        done = self._done
        while done:
            stored, reply = next(iter(done.values()))
            if now - stored >= self.max_age:
                self.stats["evicted_age"] += 1
            elif self.bytes > self.max_bytes:
                self.stats["evicted_size"] += 1
            else:
                return
            done.popitem(last=False)
            self.bytes -= len(reply) + ENTRY_OVERHEAD

    def status(self) -> dict[str, int | float]:
        """What `pynfsd status` shows."""
        return {
            "entries": len(self._done),
            "in_progress": len(self._busy),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "max_age": self.max_age,
            **{k: self.stats[k] for k in
               ("hits", "in_progress_drops", "stored", "too_large", "evicted_age", "evicted_size")},
        }
