"""Deferral: requests parked on a cache key until its upcall is answered (sans-IO bookkeeping).

Theory of operation.  A request whose cache entry is missing or pending must not block the
server (knfsd's `cache_defer_req`; for NFSv4 the thread waits a few seconds, then answers
NFS4ERR_DELAY).  `Waiters` is the bookkeeping, free of I/O and of asyncio: each parked request
is a *ticket* holding its key, its client, a waiter object of the caller's (an asyncio future,
in `deferral.py`) and a deadline on the injected clock.

* **Bounds.**  At most `max_total` tickets in all (the kernel's `DFR_MAX` is 300) and at most
  `max_per_client` per client.  Past its own bound a client is refused (`Refusal.CLIENT`) and
  the caller answers NFS4ERR_DELAY at once.  When the total is reached, the newcomer is refused
  unless some client holds more than one ticket more than the newcomer does: then that
  client's oldest ticket is *displaced* (its waiter is handed back to be told NFS4ERR_DELAY)
  and the newcomer takes the place.  So the slots are shared max-min fairly: a flood from one
  client cannot keep the others out, and without contention one client may use up to its own
  bound.
* **Waking.**  `wake(key)` hands back every waiter of a key, in the order they parked, when
  the entry is filled (positively or negatively) or dropped; the caller looks the key up
  again.  `expire(now)` hands back the waiters whose deadline has come (deadline <= now), for
  the caller's NFS4ERR_DELAY; `cancel(ticket)` forgets a request that went away.
* **Costs.**  Deadlines sit in a heap with lazy deletion, so parking, waking and expiring are
  O(log n) per ticket; the heap is rebuilt when its dead entries outnumber the live ones,
  so its size stays within twice `max_total`.  Finding the client to displace is a scan of
  the clients that hold tickets (at most `max_total`).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
C = TypeVar("C", bound=Hashable)
W = TypeVar("W")

DEFAULT_MAX_TOTAL = 300  # the kernel's DFR_MAX
DEFAULT_MAX_PER_CLIENT = 30
DEFAULT_WAIT = 5.0  # seconds; knfsd's thread_wait for a request it does not defer


class Refusal(Enum):
    CLIENT = "client"  # the client's own bound
    TOTAL = "total"  # every slot taken, none to take from a client holding more


@dataclass(frozen=True, slots=True)
class Parked(Generic[W]):
    ticket: int | None  # None: refused
    refused: Refusal | None = None
    displaced: W | None = None  # another client's waiter to tell NFS4ERR_DELAY


@dataclass(slots=True)
class _Ticket(Generic[K, C, W]):
    key: K
    client: C
    waiter: W
    deadline: float


class Waiters(Generic[K, C, W]):
    """Parked requests by key and by client; see the module docstring."""

    def __init__(self, max_total: int = DEFAULT_MAX_TOTAL,
                 max_per_client: int = DEFAULT_MAX_PER_CLIENT) -> None:
        if max_total < 1 or max_per_client < 1:
            raise ValueError("max_total >= 1 and max_per_client >= 1")
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.stats: Counter[str] = Counter()
        self._tickets: dict[int, _Ticket[K, C, W]] = {}  # in the order they parked
        self._by_key: dict[K, list[int]] = {}
        self._by_client: Counter[C] = Counter()
        self._heap: list[tuple[float, int]] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self._tickets)

    def parked(self, client: C) -> int:
        return self._by_client[client]

    def keys(self) -> int:
        return len(self._by_key)

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][1] not in self._tickets:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    # ------------------------------------------------------------ park
    def park(self, key: K, client: C, waiter: W, deadline: float) -> Parked[W]:
        """Park `waiter` on `key` until `deadline`, or refuse (see the module docstring)."""
        if self._by_client[client] >= self.max_per_client:
            self.stats["refused_client"] += 1
            return Parked(None, Refusal.CLIENT)
        displaced = None
        if len(self._tickets) >= self.max_total:
            victim = self._victim(client)
            if victim is None:
                self.stats["refused_total"] += 1
                return Parked(None, Refusal.TOTAL)
            displaced = self._remove(victim).waiter
            self.stats["displaced"] += 1
        ticket = self._next
        self._next += 1
        self._tickets[ticket] = _Ticket(key, client, waiter, deadline)
        self._by_key.setdefault(key, []).append(ticket)
        self._by_client[client] += 1
        heapq.heappush(self._heap, (deadline, ticket))
        self.stats["parked"] += 1
        return Parked(ticket, None, displaced)

    def _victim(self, client: C) -> int | None:
        """The oldest ticket of the client holding the most, if it holds more than one more
        than `client` does."""
        mine = self._by_client[client]
        top = max(self._by_client.items(), key=lambda kv: kv[1], default=None)
        if top is None or top[1] <= mine + 1:
            return None
        return next(t for t, tk in self._tickets.items() if tk.client == top[0])

    # ------------------------------------------------------------ leave
    def wake(self, key: K) -> list[W]:
        """Every waiter of `key`, oldest first; they are no longer parked."""
        tickets = self._by_key.get(key, [])
        woken = [self._remove(t).waiter for t in list(tickets)]
        self.stats["woken"] += len(woken)
        return woken

    def expire(self, now: float) -> list[W]:
        """The waiters whose deadline has come; they are no longer parked."""
        out: list[W] = []
        while self._heap and self._heap[0][0] <= now:
            _, ticket = heapq.heappop(self._heap)
            if ticket in self._tickets:
                out.append(self._remove(ticket).waiter)
        self.stats["timed_out"] += len(out)
        return out

    def cancel(self, ticket: int) -> bool:
        """Forget a parked request (it went away); False if it had already left."""
        if ticket not in self._tickets:
            return False
        self._remove(ticket)
        self.stats["cancelled"] += 1
        return True

    def _remove(self, ticket: int) -> _Ticket[K, C, W]:
        tk = self._tickets.pop(ticket)
        same_key = self._by_key[tk.key]
        same_key.remove(ticket)
        if not same_key:
            del self._by_key[tk.key]
        self._by_client[tk.client] -= 1
        if not self._by_client[tk.client]:
            del self._by_client[tk.client]
        if len(self._heap) > 2 * len(self._tickets) + 16:
            self._heap = [(d, t) for d, t in self._heap if t in self._tickets]
            heapq.heapify(self._heap)
        return tk

    def status(self) -> dict[str, int]:
        """Counters, with `parked` the requests parked now (`parked_total`: ever)."""
        return {**self.stats, "parked_total": self.stats["parked"], "parked": len(self._tickets),
                "max_total": self.max_total, "max_per_client": self.max_per_client}
