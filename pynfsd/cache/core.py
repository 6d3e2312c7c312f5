"""The generic cache behind the export and credential caches (sans-IO, injected wall clock).

Theory of operation.  This is the kernel's sunrpc cache ("Authentication Infrastructure for
Linux kNFSd"; `net/sunrpc/cache.c`) as pynfsd's own.  A `Cache[K, V]` maps a key to a *slot*;
a slot holds at most one `Entry` (a value or a negative answer, its expiry and the time it was
last refreshed) and may carry an outstanding upcall (*pending*, since a time).  Time is
wall-clock epoch seconds, whole seconds as the kernel counts them, read from the injected
clock; nothing here sleeps, reads the real time or does I/O.

* **Lookup.**  `lookup(key)` says what the caller should do: `HIT` (serve `entry.value`),
  `NEGATIVE` (the answer is "no"), `UPCALL` (nothing usable and no upcall out: send one, then
  wait) or `PENDING` (an upcall is already out: wait).  An entry is usable while
  `expiry >= now` and it was refreshed after the flush time (`cache_is_expired`).  As in
  `cache_check`, a usable entry past half its life also asks for a refresh (`Lookup.refresh`):
  the caller sends an upcall but serves the entry meanwhile, so busy keys never stall.  An
  upcall out for longer than `upcall_timeout` counts as lost, and the next lookup asks again.

* **Update.**  `update(key, value | NEGATIVE, expiry)` stores a *new* `Entry` object and
  never modifies one in place (the dentry rule of the paper): a reader holding the old entry
  keeps a consistent view, and `lookup` hands out whichever entry is current.  An answer
  already expired is dropped (`UpdateResult.EXPIRED`, as the kernel drops exportfs's test
  entries).  An answer for a key with no upcall out and no entry is refused
  (`UpdateResult.UNSOLICITED`) unless the cache was made with `accept_unsolicited`: a daemon
  cannot fill the cache with keys nobody asked about.  The caller logs refusals.
  `upcall_failed(key)` (no daemon listening) stores a negative entry for
  `NEGATIVE_WHEN_NO_DAEMON` seconds unless the key's entry is still usable, as
  `try_to_negate_entry` does.  `abandon(key)` (every way asked failed to answer) only forgets
  the upcall, so the next lookup asks again.

* **Flush.**  `flush()` makes the flush time *now* (one past the previous flush time if that
  is not earlier, as `write_flush`), drops every entry refreshed at or before it and returns
  it; `flush_time` is what reading the `flush` file shows.  An entry stored in the second of a
  flush counts as refreshed one second later (`cache_fresh_locked`), so it survives.  Upcalls
  out at the flush stay out: the daemon reads its tables when it answers.

* **Size bound.**  At most `max_entries` slots, pending ones included.  Making room drops
  expired and flushed entries first (a full sweep, run only when the earliest expiry or a
  flush says one is due, so a flood costs O(1) per insert), then the least recently used slot.
  A pending slot is evicted like any other, least recently used first, and its key is handed
  to the `on_drop` callback so that whoever waits for it is told (NFS4ERR_DELAY) rather than
  left until its deadline; a late answer for it is then unsolicited.  This keeps the bound
  exact whatever a client asks for.

* **Cleaning.**  `clean()` is the periodic cleaner (`cache_clean`): it sweeps out expired and
  flushed entries and upcalls out longer than `upcall_timeout` (telling `on_drop`).

* **Listing and stats.**  `content()` lists every slot in a stable order (sorted by the key's
  text) with whether its entry is usable, for the `content` files (`lines.py` formats them).
  `stats` counts hits, negative hits, misses, upcalls, refreshes, updates, evictions, expiries,
  flushes and refusals for the metrics.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Clock = Callable[[], float]

DEFAULT_MAX_ENTRIES = 8192
DEFAULT_UPCALL_TIMEOUT = 30  # seconds an upcall may stay unanswered before it is asked again
NEGATIVE_WHEN_NO_DAEMON = 120  # seconds; the kernel's CACHE_NEW_EXPIRY


class Negative:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEGATIVE"


NEGATIVE: Final = Negative()


class State(Enum):
    MISSING = "missing"
    PENDING = "pending"  # an upcall is out and there is no usable entry
    VALID = "valid"
    NEGATIVE = "negative"
    EXPIRED = "expired"  # an entry past its expiry or flushed, no upcall out


class Outcome(Enum):
    HIT = "hit"
    NEGATIVE = "negative"
    UPCALL = "upcall"  # send an upcall, then wait
    PENDING = "pending"  # an upcall is out: wait


class UpdateResult(Enum):
    STORED = "stored"
    EXPIRED = "expired"  # already expired: dropped
    UNSOLICITED = "unsolicited"  # nobody asked: refused


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    """One answer.  Never modified: a refresh is a new object."""

    value: V | None  # None when negative
    negative: bool
    expiry: int  # wall-clock seconds; usable while expiry >= now
    refreshed: int  # wall-clock seconds; unusable once the flush time reaches it


@dataclass(frozen=True, slots=True)
class Lookup(Generic[V]):
    outcome: Outcome
    entry: Entry[V] | None = None
    refresh: bool = False  # HIT or NEGATIVE past half its life: send an upcall too


@dataclass(frozen=True, slots=True)
class ContentRow(Generic[K, V]):
    key: K
    entry: Entry[V] | None  # None: pending with no entry yet
    usable: bool


@dataclass(slots=True)
class _Slot(Generic[V]):
    entry: Entry[V] | None = None
    pending_since: int | None = None


class Cache(Generic[K, V]):
    """One cache (`auth.unix.ip`, `nfsd.export`, ...); see the module docstring."""

    def __init__(self, name: str, *, clock: Clock = time.time,
                 max_entries: int = DEFAULT_MAX_ENTRIES,
                 upcall_timeout: int = DEFAULT_UPCALL_TIMEOUT,
                 accept_unsolicited: bool = False,
                 on_drop: Callable[[K], None] | None = None) -> None:
        if max_entries < 1 or upcall_timeout < 1:
            raise ValueError("max_entries >= 1 and upcall_timeout >= 1")
        self.name = name
        self.max_entries = max_entries
        self.upcall_timeout = upcall_timeout
        self.accept_unsolicited = accept_unsolicited
        self.on_drop = on_drop
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._slots: OrderedDict[K, _Slot[V]] = OrderedDict()  # least recently used first
        self._flush_time = 0
        self._sweep_due: int | None = None  # earliest time an entry may be expired
        # changes whenever an entry is stored, flushed, evicted or expired: a reader that
        # memoises what it derived from entries (`nfs4/views.py`) compares it to know it is
        # still current
        self.version = 0

    def now(self) -> int:
        """The clock in whole seconds, as entries count time."""
        return int(self._clock())

    def now_exact(self) -> float:
        """The clock as it is, for deadlines."""
        return self._clock()

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def flush_time(self) -> int:
        return self._flush_time

    # ------------------------------------------------------------ rules
    def usable(self, entry: Entry[V], now: int | None = None) -> bool:
        """`cache_is_expired` negated: not past its expiry and refreshed after the flush."""
        t = self.now() if now is None else now
        return entry.expiry >= t and entry.refreshed > self._flush_time

    def state(self, key: K) -> State:
        slot = self._slots.get(key)
        if slot is None:
            return State.MISSING
        now = self.now()
        if slot.entry is not None and self.usable(slot.entry, now):
            return State.NEGATIVE if slot.entry.negative else State.VALID
        if self._pending(slot, now):
            return State.PENDING
        return State.EXPIRED if slot.entry is not None else State.MISSING

    def _pending(self, slot: _Slot[V], now: int) -> bool:
        return slot.pending_since is not None and now - slot.pending_since < self.upcall_timeout

    # ------------------------------------------------------------ lookup
    def lookup(self, key: K) -> Lookup[V]:
        now = self.now()
        slot = self._slots.get(key)
        if slot is not None and slot.entry is not None and self.usable(slot.entry, now):
            self._slots.move_to_end(key)
            return self._hit(slot, slot.entry, now)
        self.stats["misses"] += 1
        if slot is not None and self._pending(slot, now):
            self._slots.move_to_end(key)
            return Lookup(Outcome.PENDING)
        if slot is None:
            slot = self._insert(key, now)
        else:
            self._slots.move_to_end(key)
        slot.pending_since = now
        self.stats["upcalls"] += 1
        return Lookup(Outcome.UPCALL)

    def _hit(self, slot: _Slot[V], entry: Entry[V], now: int) -> Lookup[V]:
        self.stats["negative_hits" if entry.negative else "hits"] += 1
        outcome = Outcome.NEGATIVE if entry.negative else Outcome.HIT
        half_life = (entry.expiry - entry.refreshed) / 2
        if now - entry.refreshed > half_life and not self._pending(slot, now):
            slot.pending_since = now
            self.stats["upcalls"] += 1
            self.stats["refreshes"] += 1
            return Lookup(outcome, entry, refresh=True)
        return Lookup(outcome, entry)

    def peek(self, key: K) -> Entry[V] | None:
        """The usable entry of `key`, without counting or touching the LRU order."""
        slot = self._slots.get(key)
        if slot is None or slot.entry is None or not self.usable(slot.entry):
            return None
        return slot.entry

    # ------------------------------------------------------------ update
    def update(self, key: K, value: V | Negative, expiry: int) -> UpdateResult:
        """Store a new entry for `key` (see the module docstring)."""
        now = self.now()
        slot = self._slots.get(key)
        if expiry < now:
            self.stats["updates_expired"] += 1
            return UpdateResult.EXPIRED
        if slot is None and not self.accept_unsolicited:
            self.stats["updates_unsolicited"] += 1
            return UpdateResult.UNSOLICITED
        if slot is None:
            slot = self._insert(key, now)
        refreshed = max(now, self._flush_time + 1)
        if isinstance(value, Negative):
            slot.entry = Entry(None, True, expiry, refreshed)
        else:
            slot.entry = Entry(value, False, expiry, refreshed)
        slot.pending_since = None
        self._sweep_due = expiry if self._sweep_due is None else min(self._sweep_due, expiry)
        self.version += 1
        self.stats["updates"] += 1
        return UpdateResult.STORED

    def pending(self, key: K) -> bool:
        """An upcall for `key` is out (and not yet counted as lost)."""
        slot = self._slots.get(key)
        return slot is not None and self._pending(slot, self.now())

    def abandon(self, key: K) -> bool:
        """Every way of answering failed: forget the upcall so the next lookup asks again (a
        slot without an entry goes); False if none was out."""
        slot = self._slots.get(key)
        if slot is None or slot.pending_since is None:
            return False
        slot.pending_since = None
        if slot.entry is None:
            del self._slots[key]
        self.stats["abandoned"] += 1
        return True

    def upcall_failed(self, key: K) -> None:
        """No daemon took the upcall: the key becomes negative for a while, unless its entry is
        still usable (a refresh that could not be sent), as `try_to_negate_entry`."""
        slot = self._slots.get(key)
        if slot is None:
            return
        slot.pending_since = None
        if slot.entry is None or not self.usable(slot.entry):
            self.update(key, NEGATIVE, self.now() + NEGATIVE_WHEN_NO_DAEMON)

    # ------------------------------------------------------------ flush, bound, clean
    def flush(self) -> int:
        """`echo $(date +%s) > flush`: every entry refreshed until now becomes invalid."""
        now = self.now()
        self._flush_time = max(now, self._flush_time + 1)
        self.stats["flushes"] += 1
        self.version += 1
        self._sweep_due = now
        self._sweep(now)
        return self._flush_time

    def clean(self) -> int:
        """The periodic cleaner: drop unusable entries and lost upcalls; the number dropped."""
        now = self.now()
        dropped = self._sweep(now)
        lost = [k for k, s in self._slots.items()
                if s.pending_since is not None and not self._pending(s, now)]
        for key in lost:
            slot = self._slots[key]
            slot.pending_since = None
            if slot.entry is None:
                del self._slots[key]
                dropped += 1
            self._dropped(key)
        return dropped

    def _sweep(self, now: int) -> int:
        """Remove entries no longer usable (keeping slots with an upcall out)."""
        if self._sweep_due is None or self._sweep_due > now:
            return 0
        gone, due = [], None
        for key, slot in self._slots.items():
            entry = slot.entry
            if entry is None:
                continue
            if self.usable(entry, now):
                due = entry.expiry if due is None else min(due, entry.expiry)
            elif self._pending(slot, now):
                slot.entry = None
            else:
                gone.append(key)
        for key in gone:
            del self._slots[key]
        if gone:
            self.version += 1
        self._sweep_due = None if due is None else due + 1
        self.stats["expired"] += len(gone)
        return len(gone)

    def _insert(self, key: K, now: int) -> _Slot[V]:
        while len(self._slots) >= self.max_entries:
            if self._sweep(now):
                continue
            victim, old = self._slots.popitem(last=False)
            self.version += 1
            self.stats["evictions"] += 1
            if self._pending(old, now):
                self._dropped(victim)
        slot: _Slot[V] = _Slot()
        self._slots[key] = slot
        return slot

    def _dropped(self, key: K) -> None:
        self.stats["dropped_upcalls"] += 1
        if self.on_drop is not None:
            self.on_drop(key)

    # ------------------------------------------------------------ listing
    def content(self) -> list[ContentRow[K, V]]:
        """Every slot, sorted by the key's text: for the `content` files."""
        now = self.now()
        rows = [ContentRow(k, s.entry, s.entry is not None and self.usable(s.entry, now))
                for k, s in self._slots.items()]
        return sorted(rows, key=lambda r: str(r.key))

    def status(self) -> dict[str, int]:
        return {"entries": len(self._slots), "max_entries": self.max_entries,
                "flush_time": self._flush_time, **self.stats}
