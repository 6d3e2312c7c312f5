"""What the server allows its connections to hold: a count, idle time, partial-record bytes.

Theory of operation (sans-IO: the transport reports events, passes `now`, and closes the
connections this table names):

* **Connection cap.**  `admit` refuses a connection once `max_connections` are open; the
  transport then closes it at once (the client sees a reset, not a hang in the listen
  backlog).  Established connections are untouched.  Refusals are counted and logged at most
  once per `LOG_INTERVAL` seconds, with the number refused since the last line.

* **Idle timeout.**  A connection is idle when no call is in progress or queued and it has
  completed no record for `idle_timeout` seconds.  Bytes of a record that never completes are
  not activity, so a peer sending one byte a second is closed like a silent one.  `idle(now)`
  lists them for one periodic sweep per server (no per-byte timers).  Like knfsd's
  (about 6 minutes), the timeout closes only the TCP connection: leases and state live on and
  the client reconnects.

* **Partial-record budget.**  The memory held by partially received records (`RecordReader
  .held`, so views pinning larger objects count in full) is summed over all connections and
  kept under `partial_budget`.  When an update would exceed it, the connections whose current
  record *began* longest ago are closed first until the sum fits, possibly the reporting
  connection itself.  The age of a record is used, not the time of its last byte, because a
  slow sender keeps its last byte fresh but cannot make an old record young: slow senders are
  therefore the first to go, and an honest client, whose record arrives at network speed,
  is cut only if it is itself the slowest.  Pausing reads instead was rejected: a paused
  reader still holds its bytes, so slow senders could keep the budget full indefinitely
  and starve everyone else.  Records are kept in a dict in the order they began, so the
  oldest is found in O(1).

The worst case is therefore `partial_budget` bytes of partial records in total, whatever the
number of connections, plus per-connection queues bounded by the transport.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C", bound=Hashable)
Clock = Callable[[], float]

LOG_INTERVAL = 60.0  # seconds between two WARNING lines of the same kind


class RateLimitedLog:
    """A WARNING at most every `interval` seconds, telling how many were suppressed; on
    `logger` (this module's by default)."""

    __slots__ = ("interval", "logger", "_next", "_suppressed")

    def __init__(self, interval: float = LOG_INTERVAL, logger: logging.Logger = log) -> None:
        self.interval = interval
        self.logger = logger
        self._next: float | None = None
        self._suppressed = 0

    def warning(self, now: float, msg: str, *args: object) -> None:
        if self._next is not None and now < self._next:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last message)" if self._suppressed else ""
        self.logger.warning(msg + more, *args)
        self._next, self._suppressed = now + self.interval, 0


@dataclass(slots=True)
class _Entry:
    last_active: float
    calls: int = 0  # calls in progress or queued
    held: int = 0  # bytes held by the partial record


class ConnectionTable(Generic[C]):
    """The open connections and the three bounds above; see the module docstring."""

    def __init__(self, max_connections: int, idle_timeout: float, partial_budget: int) -> None:
        if max_connections < 1 or idle_timeout < 0 or partial_budget < 0:
            raise ValueError("max_connections >= 1, idle_timeout >= 0, partial_budget >= 0")
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout  # 0: never
        self.partial_budget = partial_budget
        self.admitted = 0
        self.refused = 0
        self.evicted = 0
        self.idle_closed = 0
        self.partial_held = 0
        self._entries: dict[C, _Entry] = {}
        self._partial: dict[C, None] = {}  # connections inside a record, oldest record first
        self._refusals = RateLimitedLog()
        self._evictions = RateLimitedLog()

    def __len__(self) -> int:
        return len(self._entries)

    def status(self) -> dict[str, int | float]:
        """The bounds and what they did, for `pynfsd status`."""
        return {"open": len(self._entries), "max": self.max_connections,
                "idle_timeout": self.idle_timeout, "partial_bytes": self.partial_held,
                "partial_budget": self.partial_budget, "admitted": self.admitted,
                "refused": self.refused,
                "idle_closed": self.idle_closed, "evicted": self.evicted}

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._entries))

    def admit(self, conn: C, peer: tuple[str, int], now: float) -> bool:
        """Register `conn`, or return False (and count, and maybe log) past the cap."""
        if len(self._entries) >= self.max_connections:
            self.refused += 1
            self._refusals.warning(
                now, "refusing connection from %s port %d: %d connections open "
                "(--max-connections); %d refused so far",
                *peer, len(self._entries), self.refused)
            return False
        self._entries[conn] = _Entry(now)
        self.admitted += 1
        return True

    def remove(self, conn: C) -> None:
        entry = self._entries.pop(conn, None)
        if entry is not None:
            self.partial_held -= entry.held
        self._partial.pop(conn, None)

    def calls(self, conn: C, calls: int, now: float) -> None:
        """`conn` now has `calls` calls in progress or queued; a change is activity."""
        entry = self._entries.get(conn)
        if entry is not None and entry.calls != calls:
            entry.calls, entry.last_active = calls, now

    def received(self, conn: C, held: int, in_record: bool, completed: int, now: float) -> list[C]:
        """`conn` fed bytes: it completed `completed` records and now holds `held` bytes of a
        partial record (`in_record`).  Returns the connections to close for the budget."""
        entry = self._entries.get(conn)
        if entry is None:
            return []
        if completed:
            entry.last_active = now
            self._partial.pop(conn, None)  # a new record, if any, begins now
        self.partial_held += held - entry.held
        entry.held = held
        if not in_record:
            self._partial.pop(conn, None)
        elif conn not in self._partial:
            self._partial[conn] = None
        return self._over_budget(now)

    def _over_budget(self, now: float) -> list[C]:
        victims: list[C] = []
        while self.partial_held > self.partial_budget and self._partial:
            victim = next(iter(self._partial))
            victims.append(victim)
            self.remove(victim)
        if victims:
            self.evicted += len(victims)
            self._evictions.warning(
                now, "partial records over the budget of %d bytes (--partial-record-budget): "
                "closed %d connection(s) with the oldest incomplete record", self.partial_budget,
                len(victims))
        return victims

    def idle(self, now: float) -> list[C]:
        """Connections idle for `idle_timeout` (none when it is 0); removed from the table."""
        if not self.idle_timeout:
            return []
        deadline = now - self.idle_timeout
        # RFC 7530 §3.1.1: a request MUST NOT be dropped, so a connection with a call is never idle
        idle = [c for c, e in self._entries.items() if e.calls == 0 and e.last_active <= deadline]
        for conn in idle:
            self.remove(conn)
        self.idle_closed += len(idle)
        return idle


def sweep_interval(idle_timeout: float) -> float:
    """How often the transport should call `idle`: a quarter of the timeout, 0.05 s to 30 s."""
    return min(max(idle_timeout / 4, 0.05), 30.0)
