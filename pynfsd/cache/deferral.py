"""The asyncio skin of a cache: `await deferral.get(key, client)` waits for an upcall's answer.

Theory of operation.  `Deferral` ties one `Cache` (`core.py`) to one `Waiters` table
(`waiters.py`) and to the caller's `upcall(key) -> bool`, which queues a request line for the
daemon and says whether one is listening.  `get` looks the key up:

* a usable entry (positive or negative) is returned at once; if it is past half its life an
  upcall is sent as well (refresh ahead, the entry is still served);
* nothing usable: an upcall is sent unless one is out already (with no daemon listening the
  key becomes negative, as in the kernel, and that is the answer), then the request parks on
  the key with a future and a deadline `wait` seconds away.  Other requests, of this client
  and others, run on meanwhile;
* the future completes when `update` (or `upcall_failed`) fills the key: the key is looked
  up again and its entry returned.  It fails with `CacheDelay` when the deadline passes
  (`tick`), when the waiter was displaced by a fairer share, when the pending key was evicted
  or its upcall lost or abandoned (`abandon`: every way failed), or when parking was refused
  at once.  The NFSv4 caller answers
  NFS4ERR_DELAY, as knfsd does, and the client retries.

Requests of one client waiting for the same key share one parked slot (`_Shared`): a client
that opens with a burst of calls waits once, not once per call, so the per-client bound counts
what the client waits *for* (the distinct answers it needs: one address, several users'
groups...), and the number of its calls waiting is bounded by the transport's calls in
progress per connection.  The slot is given back when its last sharer leaves; a sharer that
is cancelled (its connection closed) leaves the others waiting.

Deadlines are read on the cache's injected clock and enforced by `tick()`, which the server
runs from its periodic cleaner (`run_cleaner` does that with a real sleep); tests call it after
moving a manual clock.  `tick` also cleans the cache (`Cache.clean`, a full pass) once every
`SWEEP_INTERVAL` seconds.  Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pynfsd.cache.core import Cache, Entry, Negative, Outcome, UpdateResult
from pynfsd.cache.waiters import DEFAULT_WAIT, Waiters

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
C = TypeVar("C", bound=Hashable)

CLEAN_INTERVAL = 1.0  # seconds between two runs of `tick` in `run_cleaner`
SWEEP_INTERVAL = 30.0  # seconds between two cleanings of the cache by `tick`


class CacheDelay(Exception):
    """No answer in time (or no room to wait): the NFSv4 caller answers NFS4ERR_DELAY."""


@dataclass
class _Shared:
    """One parked slot, shared by the requests of one client waiting for one key."""

    future: asyncio.Future[None]
    ticket: int
    sharers: int = 0


class Deferral(Generic[K, V, C]):
    """A cache with upcalls and parked requests; see the module docstring."""

    def __init__(self, cache: Cache[K, V], waiters: Waiters[K, C, asyncio.Future[None]],
                 upcall: Callable[[K], bool], wait: float = DEFAULT_WAIT) -> None:
        self.cache = cache
        self.waiters = waiters
        self.wait = wait
        self._upcall = upcall
        self._next_sweep = cache.now_exact()
        self._shared: dict[tuple[K, C], _Shared] = {}
        cache.on_drop = self._drop

    async def get(self, key: K, client: C) -> Entry[V]:
        """The usable entry of `key` (check `.negative`), or `CacheDelay`."""
        entry = self._lookup(key)
        if entry is not None:
            return entry
        await self._park(key, client)
        entry = self.cache.peek(key)
        if entry is None:
            raise CacheDelay(f"{self.cache.name}: no answer for {key!r}")
        return entry

    def _lookup(self, key: K) -> Entry[V] | None:
        found = self.cache.lookup(key)
        if found.outcome is Outcome.UPCALL or found.refresh:
            if not self._upcall(key):
                self.cache.upcall_failed(key)
                self._wake(key)
                return found.entry or self.cache.peek(key)
        return found.entry

    async def _park(self, key: K, client: C) -> None:
        slot = self._shared.get((key, client))
        if slot is None or slot.future.done():
            slot = self._shared[(key, client)] = self._new_slot(key, client)
        slot.sharers += 1
        try:
            await asyncio.shield(slot.future)
        finally:
            slot.sharers -= 1
            if not slot.sharers:
                if self._shared.get((key, client)) is slot:
                    del self._shared[(key, client)]
                self.waiters.cancel(slot.ticket)

    def _new_slot(self, key: K, client: C) -> _Shared:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self.cache.now_exact() + self.wait
        parked = self.waiters.park(key, client, future, deadline)
        if parked.displaced is not None:
            _fail(parked.displaced, f"{self.cache.name}: displaced by a fairer share")
        if parked.ticket is None:
            raise CacheDelay(f"{self.cache.name}: too many requests waiting ({parked.refused})")
        return _Shared(future, parked.ticket)

    def update(self, key: K, value: V | Negative, expiry: int) -> UpdateResult:
        """Store a daemon's answer and wake whoever waits for it."""
        result = self.cache.update(key, value, expiry)
        if result is UpdateResult.STORED:
            self._wake(key)
        return result

    def upcall_failed(self, key: K) -> None:
        self.cache.upcall_failed(key)
        self._wake(key)

    def abandon(self, key: K) -> None:
        """No way could answer `key`: the next lookup asks again, and whoever waits for it is
        told NFS4ERR_DELAY at once (`CacheDelay`) rather than at its deadline."""
        self.cache.abandon(key)
        self._drop(key)

    def tick(self) -> int:
        """Time out waiters whose deadline has come, and clean the cache every
        `SWEEP_INTERVAL` seconds; how many timed out."""
        now = self.cache.now_exact()
        late = self.waiters.expire(now)
        for future in late:
            _fail(future, f"{self.cache.name}: no answer within {self.wait} s")
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            self.cache.clean()
        return len(late)

    async def run_cleaner(self, interval: float = CLEAN_INTERVAL) -> None:
        """`tick` every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.tick()

    def _wake(self, key: K) -> None:
        for future in self.waiters.wake(key):
            if not future.done():
                future.set_result(None)

    def _drop(self, key: K) -> None:
        for future in self.waiters.wake(key):
            _fail(future, f"{self.cache.name}: the request for {key!r} was dropped")


def _fail(future: asyncio.Future[None], why: str) -> None:
    if not future.done():
        future.set_exception(CacheDelay(why))
