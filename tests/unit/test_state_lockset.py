"""The compact lock representation: `LockSet` against the list reference model (§9.3, §16.12),
the per-file `RangeIndex` against a brute-force conflict search, and the state manager on a
file shared by more lock sets than `INDEX_AT` (so conflict checks go through the index)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from state_support import make_world, new_client, open_confirmed

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.locks import INDEX_AT, FileState
from pynfsd.nfs4.state.lockset import HeldLock, LockSet, Range, apply_lock, subtract
from pynfsd.nfs4.state.owners import LockOwner, LockState
from pynfsd.nfs4.state.types import (
    LENGTH_TO_EOF,
    NFS4_UINT64_MAX,
    ByteRange,
    LockDenied,
)

MAX = NFS4_UINT64_MAX
READ, WRITE = 1, 2

# offsets near zero and near the top of the 64-bit space, so merges at MAX are exercised
offsets = st.one_of(st.integers(0, 64), st.integers(MAX - 64, MAX))


@st.composite
def ranges(draw: st.DrawFn) -> ByteRange:
    a, b = draw(offsets), draw(offsets)
    return ByteRange(min(a, b), max(a, b))


ops = st.lists(st.tuples(st.sampled_from(["lock", "unlock"]), ranges(), st.booleans()), max_size=40)


def as_held(ls: LockSet) -> list[HeldLock]:
    return [HeldLock(ByteRange(s, e), w) for s, e, w in ls.ranges()]


@settings(max_examples=300, deadline=None)
@given(ops)
def test_lockset_matches_the_reference_model(steps: list[tuple[str, ByteRange, bool]]) -> None:
    model: list[HeldLock] = []
    compact = LockSet()
    for op, rng, write in steps:
        if op == "lock":
            model = apply_lock(model, rng, write)
            compact.apply(rng.start, rng.end, write)
        else:
            model = subtract(model, rng)
            compact.remove(rng.start, rng.end)
        assert as_held(compact) == model
        assert compact.has_write() == any(h.write for h in model)
        assert compact.has_read() == any(not h.write for h in model)


def test_lockset_change_reports_only_the_touched_neighbours() -> None:
    ls = LockSet()
    for start in range(0, 100, 10):
        ls.apply(start, start + 4, True)
    old, new = ls.apply(22, 33, False)  # overlaps [20,24] and [30,34]
    assert old == [(20, 24, True), (30, 34, True)]
    assert new == [(20, 21, True), (22, 33, False), (34, 34, True)]
    old, new = ls.apply(35, 39, True)  # touches [34,34] and [40,44] of its type: merged
    assert old == [(34, 34, True), (40, 44, True)] and new == [(34, 44, True)]
    old, new = ls.remove(0, 1)
    assert old == [(0, 4, True)] and new == [(2, 4, True)]
    assert ls.conflict(22, 22, write=False) is None  # a read range does not block a reader
    assert ls.conflict(21, 22, write=False) == (20, 21, True)
    assert ls.conflict(23, 23, write=True) == (22, 33, False)


def brute_conflict(sets: list[LockState], start: int, end: int, write: bool, skip: int) -> bool:
    return any(
        s <= end and start <= e and (write or w)
        for i, ls in enumerate(sets)
        if i != skip
        for s, e, w in ls.ranges()
    )


def make_file(n: int) -> tuple[FileState, list[LockState]]:
    w = make_world()
    c = new_client(w.sm)
    open_confirmed(w.sm, c, b"oo", b"f")
    client = w.sm.clients.confirmed[c]
    os = client.open_owners[b"oo"].opens[b"f"]
    fs = FileState()
    sets = []
    for i in range(n):
        ls = LockState(i + 100, 1, LockOwner(client, b"lo%d" % i), os)
        fs.add_lock_state(ls)
        sets.append(ls)
    return fs, sets


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 3 * INDEX_AT),
    st.lists(st.tuples(st.integers(0, 100), ranges(), st.booleans(), st.booleans()), max_size=60),
)
def test_file_conflicts_match_brute_force(
    n: int, steps: list[tuple[int, ByteRange, bool, bool]]
) -> None:
    fs, sets = make_file(n)
    for k, rng, write, unlock in steps:
        if k >= 95 and len(sets) > 1:
            fs.remove_lock_state(sets.pop(k % len(sets)))  # its ranges leave the index too
            continue
        who = k % len(sets)
        expect = brute_conflict(sets, rng.start, rng.end, write, who)
        skip = (sets[who].owner.client.clientid, sets[who].owner.owner)
        hit = fs.find_conflict(rng, write, skip)
        assert (hit is not None) == expect
        if hit is not None:
            ls, (s, e, w) = hit
            assert ls is not sets[who] and (s, e, w) in set(ls.ranges())
            assert s <= rng.end and rng.start <= e and (write or w)
        elif unlock:
            fs.unlock(sets[who], rng)
        else:
            fs.lock(sets[who], rng, write)


def index_ranges(fs: FileState) -> set[tuple[int, Range]]:
    assert fs.index is not None
    return {
        (id(ls), (s, e, bool(key & 1)))
        for key, tier in fs.index.tiers.items()
        for s, e, ls in zip(tier.starts, tier.ends, tier.sets, strict=True)
    }


def test_index_follows_every_change_and_goes_when_few_sets_remain() -> None:
    fs, sets = make_file(INDEX_AT)
    assert fs.index is not None
    fs.lock(sets[0], ByteRange(0, 99), False)
    fs.lock(sets[0], ByteRange(40, 59), True)
    fs.lock(sets[1], ByteRange(200, MAX), True)
    fs.unlock(sets[1], ByteRange(300, 399))
    expect = {(id(ls), r) for ls in sets for r in ls.ranges()}
    assert index_ranges(fs) == expect and len(expect) == 5
    for ls in sets[: INDEX_AT // 2 + 1]:
        fs.remove_lock_state(ls)
    assert fs.index is None and len(sets[0]) == 0


def test_shared_file_conflicts_through_the_index() -> None:
    w = make_world()
    lsids = []
    clients = [new_client(w.sm, b"c%d" % i) for i in range(3 * INDEX_AT)]
    for i, c in enumerate(clients):
        sid = open_confirmed(w.sm, c, b"oo", b"f")
        lsids.append(w.sm.lock_new(sid, b"lo", 1, b"f", WRITE, i * 64, 16))
    assert w.sm.files.by_key[b"f"].index is not None
    with pytest.raises(E.NFS4ERR_DENIED) as info:
        w.sm.lock_existing(lsids[0], b"f", WRITE, 5 * 64 + 15, LENGTH_TO_EOF)
    assert info.value.value == LockDenied(5 * 64, 16, WRITE, clients[5], b"lo")
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lockt(clients[0], b"lo", b"f", READ, 7 * 64 + 3, 1)
    w.sm.lockt(clients[7], b"lo", b"f", WRITE, 7 * 64, 16)  # its own lock
    lsid = w.sm.locku(lsids[7], WRITE, 7 * 64, 16)
    w.sm.lock_existing(lsids[0], b"f", WRITE, 7 * 64, 16)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_existing(lsid, b"f", READ, 7 * 64, 1)
    w.sm.revoke_client(clients[0])
    lsid = w.sm.lock_existing(lsid, b"f", WRITE, 7 * 64, 16)  # client 0's locks went
    w.sm.lock_existing(lsid, b"f", WRITE, 0, 16)
