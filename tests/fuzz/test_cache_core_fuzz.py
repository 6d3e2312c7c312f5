"""Property test of the generic cache: any sequence of lookups, updates, flushes, failed
upcalls, cleanings and clock moves keeps its invariants: at most `max_entries` slots, nothing
refreshed at or before the flush time (or expired) is ever served, a served entry is the last
one stored for its key, and a replacement is a new object that leaves the old one as it was."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynfsd.cache.core import NEGATIVE, Cache, Entry, Outcome, UpdateResult
from tests.clock import ManualClock

T0 = 1_700_000_000
KEYS = st.sampled_from([f"k{i}" for i in range(12)])
OPS = st.one_of(
    st.tuples(st.just("lookup"), KEYS),
    st.tuples(st.just("update"), KEYS, st.integers(-3, 40), st.booleans()),
    st.tuples(st.just("flush")),
    st.tuples(st.just("clean")),
    st.tuples(st.just("failed"), KEYS),
    st.tuples(st.just("advance"), st.sampled_from([0.2, 0.5, 1.0, 3.0, 17.0, 31.0])),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 8), st.booleans(), st.lists(OPS, max_size=80))
def test_invariants(bound: int, unsolicited: bool, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    clock = ManualClock(float(T0))
    dropped: list[str] = []
    cache: Cache[str, int] = Cache("fuzz", clock=clock, max_entries=bound,
                                   accept_unsolicited=unsolicited, on_drop=dropped.append)
    stored: dict[str, Entry[int]] = {}  # the last entry stored per key
    snapshots: list[tuple[Entry[int], tuple[object, ...]]] = []
    serial = 0
    for op in ops:
        kind = op[0]
        if kind == "lookup":
            found = cache.lookup(op[1])
            if found.outcome in (Outcome.HIT, Outcome.NEGATIVE):
                entry = found.entry
                assert entry is not None and entry is stored[op[1]]
                assert entry.expiry >= cache.now() and entry.refreshed > cache.flush_time
                assert entry.negative == (found.outcome is Outcome.NEGATIVE)
            else:
                assert found.entry is None
        elif kind == "update":
            serial += 1
            old = cache.peek(op[1])
            value = NEGATIVE if op[3] else serial
            result = cache.update(op[1], value, cache.now() + op[2])
            if result is UpdateResult.STORED:
                new = cache.peek(op[1])
                assert new is not None and new is not old
                stored[op[1]] = new
                snapshots.append((new, (new.value, new.negative, new.expiry, new.refreshed)))
        elif kind == "flush":
            cache.flush()
        elif kind == "clean":
            cache.clean()
        elif kind == "failed":
            cache.upcall_failed(op[1])
            entry = cache.peek(op[1])
            if entry is not None:
                stored[op[1]] = entry
        else:
            clock.advance(op[1])
        assert len(cache) <= bound
        for row in cache.content():
            if row.usable:
                assert row.entry is stored[row.key]
    for entry, fields in snapshots:  # nothing was changed in place
        assert (entry.value, entry.negative, entry.expiry, entry.refreshed) == fields
