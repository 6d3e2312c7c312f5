"""The generic cache's rules with a manual wall clock: lookup outcomes, expiry, negative
entries, refresh ahead, flush, atomic replacement, the size bound, cleaning, listing."""

from __future__ import annotations

import pytest

from pynfsd.cache.core import (
    NEGATIVE,
    NEGATIVE_WHEN_NO_DAEMON,
    Cache,
    Outcome,
    State,
    UpdateResult,
)
from tests.clock import ManualClock

T0 = 1_700_000_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(float(T0))


def make(clock: ManualClock, **kw: object) -> Cache[str, str]:
    return Cache("test", clock=clock, **kw)  # type: ignore[arg-type]


def filled(cache: Cache[str, str], key: str, value: str, expiry: int) -> None:
    assert cache.lookup(key).outcome is Outcome.UPCALL
    assert cache.update(key, value, expiry) is UpdateResult.STORED


def test_miss_asks_for_one_upcall_then_pending(clock: ManualClock) -> None:
    c = make(clock)
    assert c.state("a") is State.MISSING
    assert c.lookup("a").outcome is Outcome.UPCALL
    assert c.state("a") is State.PENDING
    assert c.lookup("a").outcome is Outcome.PENDING
    assert c.lookup("a").outcome is Outcome.PENDING
    assert c.stats["upcalls"] == 1 and c.stats["misses"] == 3


def test_update_fills_and_hits(clock: ManualClock) -> None:
    c = make(clock)
    filled(c, "a", "domain-a", T0 + 100)
    found = c.lookup("a")
    assert found.outcome is Outcome.HIT and found.entry is not None
    assert found.entry.value == "domain-a" and not found.refresh
    assert found.entry.refreshed == T0 and found.entry.expiry == T0 + 100
    assert c.state("a") is State.VALID and c.stats["hits"] == 1


def test_expiry_is_inclusive_then_upcall_again(clock: ManualClock) -> None:
    c = make(clock)
    filled(c, "a", "x", T0 + 10)
    clock.now = T0 + 10  # expiry >= now: still usable (past half its life: refresh asked)
    assert c.lookup("a").outcome is Outcome.HIT
    c.update("a", "x", T0 + 10)
    clock.now = T0 + 11
    assert c.state("a") is State.EXPIRED
    assert c.lookup("a").outcome is Outcome.UPCALL


def test_negative_entry(clock: ManualClock) -> None:
    c = make(clock)
    c.lookup("a")
    assert c.update("a", NEGATIVE, T0 + 60) is UpdateResult.STORED
    found = c.lookup("a")
    assert found.outcome is Outcome.NEGATIVE and found.entry is not None
    assert found.entry.negative and found.entry.value is None
    assert c.state("a") is State.NEGATIVE and c.stats["negative_hits"] == 1


def test_refresh_ahead_past_half_life_serves_the_old_entry(clock: ManualClock) -> None:
    c = make(clock)
    filled(c, "a", "old", T0 + 100)
    clock.now = T0 + 50  # exactly half: not yet
    assert not c.lookup("a").refresh
    clock.now = T0 + 51
    first = c.lookup("a")
    assert first.outcome is Outcome.HIT and first.refresh and first.entry is not None
    again = c.lookup("a")  # one refresh upcall at a time
    assert again.outcome is Outcome.HIT and not again.refresh
    assert c.stats["refreshes"] == 1
    c.update("a", "new", T0 + 200)
    assert c.lookup("a").entry.value == "new"  # type: ignore[union-attr]
    assert first.entry.value == "old"


def test_replacement_is_a_new_object_and_old_readers_keep_their_view(clock: ManualClock) -> None:
    c = make(clock)
    filled(c, "a", "v1", T0 + 100)
    old = c.lookup("a").entry
    assert old is not None
    c.update("a", "v2", T0 + 300)
    new = c.lookup("a").entry
    assert new is not None and new is not old
    assert (old.value, old.expiry) == ("v1", T0 + 100)
    assert (new.value, new.expiry) == ("v2", T0 + 300)
    with pytest.raises(AttributeError):
        old.value = "v3"  # type: ignore[misc]


def test_an_answer_already_expired_is_dropped(clock: ManualClock) -> None:
    """exportfs's test entries (expiry 3) are dropped, as by the kernel."""
    c = make(clock, accept_unsolicited=True)
    assert c.update("-test-client-", "x", 3) is UpdateResult.EXPIRED
    assert c.state("-test-client-") is State.MISSING and len(c) == 0


def test_unsolicited_answers_are_refused_unless_accepted(clock: ManualClock) -> None:
    c = make(clock)
    assert c.update("nobody-asked", "x", T0 + 100) is UpdateResult.UNSOLICITED
    assert len(c) == 0 and c.stats["updates_unsolicited"] == 1
    loose = make(clock, accept_unsolicited=True)
    assert loose.update("primed", "x", T0 + 100) is UpdateResult.STORED
    assert loose.lookup("primed").outcome is Outcome.HIT


def test_flush_invalidates_everything_refreshed_until_now(clock: ManualClock) -> None:
    c = make(clock)
    filled(c, "a", "x", T0 + 1000)
    filled(c, "b", "y", T0 + 1000)
    clock.now = T0 + 5
    assert c.flush() == T0 + 5 and c.flush_time == T0 + 5
    assert c.state("a") is State.MISSING and len(c) == 0
    assert c.lookup("a").outcome is Outcome.UPCALL


def test_entry_stored_in_the_second_of_a_flush_survives_it(clock: ManualClock) -> None:
    c = make(clock)
    c.lookup("a")
    c.flush()  # T0
    c.update("a", "x", T0 + 100)  # same second: refreshed counts as T0 + 1
    entry = c.peek("a")
    assert entry is not None and entry.refreshed == T0 + 1


def test_flush_time_moves_forward_within_one_second(clock: ManualClock) -> None:
    c = make(clock)
    assert c.flush() == T0
    assert c.flush() == T0 + 1  # write_flush: one past the previous flush time
    c.lookup("a")
    c.update("a", "x", T0 + 100)
    assert c.peek("a").refreshed == T0 + 2  # type: ignore[union-attr]


def test_flush_keeps_upcalls_that_are_out(clock: ManualClock) -> None:
    c = make(clock)
    c.lookup("a")
    c.flush()
    assert c.state("a") is State.PENDING
    assert c.update("a", "x", T0 + 10) is UpdateResult.STORED


def test_lost_upcall_is_asked_again_after_the_upcall_timeout(clock: ManualClock) -> None:
    c = make(clock, upcall_timeout=30)
    assert c.lookup("a").outcome is Outcome.UPCALL
    clock.now = T0 + 29
    assert c.lookup("a").outcome is Outcome.PENDING
    clock.now = T0 + 30
    assert c.lookup("a").outcome is Outcome.UPCALL
    assert c.stats["upcalls"] == 2


def test_upcall_failed_makes_a_short_negative_entry(clock: ManualClock) -> None:
    c = make(clock)
    c.lookup("a")
    c.upcall_failed("a")
    found = c.lookup("a")
    assert found.outcome is Outcome.NEGATIVE
    assert found.entry.expiry == T0 + NEGATIVE_WHEN_NO_DAEMON  # type: ignore[union-attr]


def test_upcall_failed_on_a_refresh_keeps_the_usable_entry(clock: ManualClock) -> None:
    c = make(clock)
    filled(c, "a", "x", T0 + 100)
    clock.now = T0 + 80
    assert c.lookup("a").refresh
    c.upcall_failed("a")
    assert c.lookup("a").outcome is Outcome.HIT


def test_size_bound_evicts_least_recently_used(clock: ManualClock) -> None:
    c = make(clock, max_entries=3)
    for k in "abc":
        filled(c, k, k, T0 + 100)
    c.lookup("a")  # a is now the most recently used
    filled(c, "d", "d", T0 + 100)
    assert len(c) == 3 and c.peek("b") is None
    assert {r.key for r in c.content()} == {"a", "c", "d"}
    assert c.stats["evictions"] == 1


def test_size_bound_drops_expired_entries_before_lru(clock: ManualClock) -> None:
    c = make(clock, max_entries=3)
    filled(c, "a", "a", T0 + 1000)
    filled(c, "short", "s", T0 + 5)
    filled(c, "c", "c", T0 + 1000)
    clock.now = T0 + 10
    filled(c, "d", "d", T0 + 1000)
    assert {r.key for r in c.content()} == {"a", "c", "d"}
    assert c.stats["evictions"] == 0 and c.stats["expired"] == 1


def test_evicting_a_pending_key_tells_its_waiters(clock: ManualClock) -> None:
    dropped: list[str] = []
    c = make(clock, max_entries=2, on_drop=dropped.append)
    c.lookup("p")  # pending, least recently used
    filled(c, "b", "b", T0 + 100)
    c.lookup("q")
    assert dropped == ["p"] and len(c) == 2
    assert c.update("p", "late", T0 + 100) is UpdateResult.UNSOLICITED


def test_a_flood_of_keys_stays_within_the_bound(clock: ManualClock) -> None:
    c = make(clock, max_entries=64)
    for i in range(5000):
        c.lookup(f"k{i}")
        if i % 2:
            c.update(f"k{i}", "v", T0 + 1 + i % 7)
        clock.now += 0.25
        assert len(c) <= 64


def test_clean_drops_expired_and_lost_upcalls(clock: ManualClock) -> None:
    dropped: list[str] = []
    c = make(clock, upcall_timeout=30, on_drop=dropped.append)
    filled(c, "old", "x", T0 + 10)
    filled(c, "live", "y", T0 + 1000)
    c.lookup("lost")
    clock.now = T0 + 31
    assert c.clean() == 2
    assert {r.key for r in c.content()} == {"live"}
    assert dropped == ["lost"]


def test_content_is_sorted_and_says_what_is_usable(clock: ManualClock) -> None:
    c = make(clock)
    filled(c, "b", "vb", T0 + 100)
    filled(c, "a", "va", T0 + 5)
    c.lookup("c")
    clock.now = T0 + 6
    rows = c.content()
    assert [(r.key, r.usable) for r in rows] == [("a", False), ("b", True), ("c", False)]
    assert rows[2].entry is None
    assert c.status()["entries"] == 3


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Cache("x", max_entries=0)


def test_memory_of_a_flood_stays_within_the_entry_bound(clock: ManualClock) -> None:
    """10 times the bound in distinct keys, half answered: the cache holds at most
    `max_entries` slots, about 264 bytes each beside the keys and values (measured)."""
    import gc
    import tracemalloc

    bound = 1024
    c: Cache[int, str] = Cache("flood", clock=clock, max_entries=bound)
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(10 * bound):
            if c.lookup(i).outcome is Outcome.UPCALL and i % 2:
                c.update(i, "domain", T0 + 600)
        used = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(c) == bound
    assert used < bound * 1024


def test_the_version_changes_with_every_stored_flushed_evicted_or_expired_entry(
        clock: ManualClock) -> None:
    c = make(clock, max_entries=2)
    seen = [c.version]

    def changed() -> bool:
        seen.append(c.version)
        return seen[-1] != seen[-2]

    filled(c, "a", "1", T0 + 10)
    assert changed()
    c.lookup("a")
    assert not changed()  # reading changes nothing
    assert c.update("a", "2", T0 + 10) is UpdateResult.STORED
    assert changed()  # replaced
    filled(c, "b", "1", T0 + 10)
    before = c.version
    filled(c, "c", "1", T0 + 100)  # evicts "a"
    assert c.stats["evictions"] == 1 and c.version > before + 1
    assert changed()
    clock.advance(50)
    assert c.clean() == 1  # "b" expired and removed
    assert changed()
    c.flush()
    assert changed()
