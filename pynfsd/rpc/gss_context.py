"""RPCSEC_GSS server contexts: the sequence window and the bounded context table (RFC 2203 §5.3.3.1).

Theory of operation: each established context has a handle (random bytes from the injected
RNG), the per-packet object, the caller's credentials for each service, an expiry (the
ticket's end time, on the injected wall clock) and a `SeqWindow`.  The window remembers the
highest sequence number seen and, as a bit mask, which of the `size` numbers at and below it
arrived; anything below the window or already seen is refused (the flavour drops it silently).
The table holds at most `max_contexts` entries: a full table first forgets expired contexts,
then the least recently used one (its client gets RPCSEC_GSS_CREDPROBLEM and re-establishes,
as after a server restart).  Contexts still being established (CONTINUE_NEEDED) live in the same
table with a short expiry.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from pynfsd.gss.accept import PerPacket
from pynfsd.rpc.auth import Credential


class SeqWindow:
    """The RFC 2203 §5.3.3.1 replay window over sequence numbers."""

    __slots__ = ("size", "top", "seen", "_mask")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the sequence window must hold at least one number")
        self.size = size
        self.top = -1  # the highest sequence number seen so far (none yet)
        self.seen = 0  # bit i set: sequence number top - i has been seen
        self._mask = (1 << size) - 1

    def acceptable(self, seq: int) -> bool:
        """False when `seq` is below the window or already seen (RFC 2203 §5.3.3.1)."""
        if seq > self.top:
            return True
        offset = self.top - seq
        return offset < self.size and not (self.seen >> offset) & 1

    def record(self, seq: int) -> None:
        """Remember `seq`; a higher number moves the window forward (after the MIC passed)."""
        if seq > self.top:
            shift = seq - self.top
            self.seen = ((self.seen << shift) | 1) & self._mask if shift < self.size else 1
            self.top = seq
        else:
            self.seen |= 1 << (self.top - seq)


@dataclass(slots=True)
class GssContext:
    """One context; `per_packet` is None while establishment is still under way."""

    handle: bytes
    expires: float
    window: SeqWindow
    per_packet: PerPacket | None = None
    initiator: str = ""
    creds: dict[int, Credential] = field(default_factory=dict)  # rpc_gss_service_t → cred
    pending: object = None  # the acceptor's state between INIT and CONTINUE_INIT

    @property
    def established(self) -> bool:
        return self.per_packet is not None


class ContextTable:
    """handle → GssContext, bounded, least recently used first out."""

    def __init__(self, max_contexts: int = 4096) -> None:
        self.max_contexts = max_contexts
        self._by_handle: OrderedDict[bytes, GssContext] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_handle)

    def get(self, handle: bytes) -> GssContext | None:
        ctx = self._by_handle.get(handle)
        if ctx is not None:
            self._by_handle.move_to_end(handle)
        return ctx

    def add(self, ctx: GssContext, now: float) -> int:
        """Insert `ctx`; returns how many contexts were evicted to make room."""
        evicted = 0
        if len(self._by_handle) >= self.max_contexts:
            evicted = self.expire(now)
        while len(self._by_handle) >= self.max_contexts:
            self._by_handle.popitem(last=False)
            evicted += 1
        self._by_handle[ctx.handle] = ctx
        return evicted

    def remove(self, handle: bytes) -> GssContext | None:
        return self._by_handle.pop(handle, None)

    def expire(self, now: float) -> int:
        """Forget every context whose expiry has passed; returns how many."""
        dead = [h for h, c in self._by_handle.items() if c.expires <= now]
        for handle in dead:
            del self._by_handle[handle]
        return len(dead)
