"""Property test of the deferral bookkeeping: any sequence of parks, wakes, expiries and
cancels keeps the bounds (in total and per client) and hands every waiter back at most once,
and a refusal happens only when the slots are shared as evenly as they can be."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynfsd.cache.waiters import Refusal, Waiters

KEYS = st.sampled_from("abcd")
CLIENTS = st.sampled_from(["c1", "c2", "c3", "c4", "c5"])
OPS = st.one_of(
    st.tuples(st.just("park"), KEYS, CLIENTS, st.integers(0, 20)),
    st.tuples(st.just("wake"), KEYS),
    st.tuples(st.just("expire"), st.integers(0, 20)),
    st.tuples(st.just("cancel"), st.integers(0, 60)),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 8), st.integers(1, 8), st.lists(OPS, max_size=120))
def test_invariants(total: int, per_client: int, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    w: Waiters[str, str, int] = Waiters(total, per_client)
    handed: list[int] = []
    parked: dict[int, str] = {}  # waiter -> client
    tickets: list[int] = []
    serial = 0
    for op in ops:
        if op[0] == "park":
            serial += 1
            before = {c: w.parked(c) for c in set(parked.values()) | {op[2]}}
            out = w.park(op[1], op[2], serial, float(op[3]))
            if out.ticket is None:
                if out.refused is Refusal.TOTAL:
                    assert len(w) == total
                    assert max(before.values()) <= before[op[2]] + 1
                else:
                    assert before[op[2]] == per_client
            else:
                tickets.append(out.ticket)
                parked[serial] = op[2]
            if out.displaced is not None:
                handed.append(out.displaced)
        elif op[0] == "wake":
            handed += w.wake(op[1])
        elif op[0] == "expire":
            handed += w.expire(float(op[1]))
        elif tickets:
            w.cancel(tickets[op[1] % len(tickets)])
        assert len(w) <= total
        assert all(w.parked(c) <= per_client for c in set(parked.values()))
        assert len(handed) == len(set(handed))
    assert sum(w.parked(c) for c in set(parked.values())) == len(w)
