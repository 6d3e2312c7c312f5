"""Byte-range locks: ranges (§16.10.4), split/merge/upgrade/downgrade (§9.2, §9.3), conflicts,
LOCKT (§16.11), LOCKU (§16.12), RELEASE_LOCKOWNER (§16.37) and blocking fairness (§9.4)."""

from __future__ import annotations

import pytest
from state_support import ENFORCED, LEASE, World, make_world, new_client, open_confirmed

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state import Stateid
from pynfsd.nfs4.state.lockset import HeldLock, apply_lock, merge, subtract
from pynfsd.nfs4.state.owners import LockOwner
from pynfsd.nfs4.state.types import (
    LENGTH_TO_EOF,
    NFS4_UINT64_MAX,
    ByteRange,
    LockDenied,
    byte_range,
)

READ, WRITE, READW, WRITEW = 1, 2, 3, 4
MAX = NFS4_UINT64_MAX


def held(*spec: tuple[int, int, bool]) -> list[HeldLock]:
    return [HeldLock(ByteRange(s, e), w) for s, e, w in spec]


# -- range arithmetic -------------------------------------------------------------------------


def test_byte_range_rules() -> None:
    assert byte_range(5, 10) == ByteRange(5, 14)
    assert byte_range(7, LENGTH_TO_EOF) == ByteRange(7, MAX)
    assert byte_range(1, MAX) == ByteRange(1, MAX)  # length all ones means to EOF
    assert byte_range(MAX, 1) == ByteRange(MAX, MAX)
    assert byte_range(2, MAX - 1) == ByteRange(2, MAX)  # ends exactly at the last byte
    assert ByteRange(7, MAX).length == LENGTH_TO_EOF and ByteRange(5, 14).length == 10
    for offset, length in ((0, 0), (3, MAX - 1), (MAX, 2), (-1, 1)):
        with pytest.raises(E.NFS4ERR_INVAL):
            byte_range(offset, length)


def test_subtract_splits_a_range() -> None:
    assert subtract(held((0, 99, True)), ByteRange(10, 19)) == held((0, 9, True), (20, 99, True))
    assert subtract(held((0, MAX, False)), ByteRange(0, 9)) == held((10, MAX, False))
    assert subtract(held((5, 9, True)), ByteRange(0, MAX)) == []


def test_merge_joins_touching_ranges_of_one_type_only() -> None:
    assert merge(held((10, 19, True), (0, 9, True))) == held((0, 19, True))
    assert merge(held((0, 9, True), (10, 19, False))) == held((0, 9, True), (10, 19, False))
    assert merge(held((0, MAX, False), (MAX, MAX, False))) == held((0, MAX, False))


def test_apply_lock_upgrades_and_downgrades_sub_ranges() -> None:
    up = apply_lock(held((0, 99, False)), ByteRange(40, 59), True)
    assert up == held((0, 39, False), (40, 59, True), (60, 99, False))
    assert apply_lock(up, ByteRange(40, 59), False) == held((0, 99, False))


# -- LOCK ---------------------------------------------------------------------------------------


def setup_two(w: World) -> tuple[int, Stateid, int, Stateid]:
    a, b = new_client(w.sm, b"a"), new_client(w.sm, b"b")
    return a, open_confirmed(w.sm, a, b"oo", b"f"), b, open_confirmed(w.sm, b, b"oo", b"f")


def test_new_lock_owner_gets_seqid_one_and_existing_bumps() -> None:
    w = make_world()
    _, sa, _, _ = setup_two(w)
    lsid = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    assert lsid.seqid == 1 and lsid.other != sa.other
    lo = w.sm.owner_for_stateid(lsid)
    assert isinstance(lo, LockOwner) and lo.check_seqid(2) is None
    assert w.sm.lock_existing(lsid, b"f", WRITE, 20, 10).seqid == 2


def test_conflict_across_owners_is_denied_with_the_conflicting_lock() -> None:
    w = make_world()
    a, sa, _, sb = setup_two(w)
    w.sm.lock_new(sa, b"lo-a", 1, b"f", WRITE, 100, 50)
    with pytest.raises(E.NFS4ERR_DENIED) as info:
        w.sm.lock_new(sb, b"lo-b", 1, b"f", READ, 120, 1)
    assert info.value.value == LockDenied(100, 50, WRITE, a, b"lo-a")
    w.sm.lock_new(sb, b"lo-b", 2, b"f", READ, 150, LENGTH_TO_EOF)  # adjacent is fine


def test_same_client_different_lock_owners_conflict() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    w.sm.lock_new(sid, b"lo-1", 1, b"f", WRITE, 0, 10)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_new(sid, b"lo-2", 1, b"f", WRITE, 5, 1)


def test_read_locks_share() -> None:
    w = make_world()
    _, sa, _, sb = setup_two(w)
    w.sm.lock_new(sa, b"lo", 1, b"f", READ, 0, LENGTH_TO_EOF)
    w.sm.lock_new(sb, b"lo", 1, b"f", READW, 0, 10)


def test_upgrade_is_denied_while_another_owner_reads() -> None:
    w = make_world()
    _, sa, _, sb = setup_two(w)
    la = w.sm.lock_new(sa, b"lo", 1, b"f", READ, 0, 100)
    lb = w.sm.lock_new(sb, b"lo", 1, b"f", READ, 50, 10)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_existing(la, b"f", WRITE, 0, 100)
    la = w.sm.lock_existing(la, b"f", WRITE, 0, 50)  # the sub-range nobody else reads
    w.sm.locku(lb, READ, 50, 10)
    w.sm.lock_existing(la, b"f", WRITE, 0, 100)


def test_downgrade_lets_other_readers_in() -> None:
    w = make_world()
    _, sa, _, sb = setup_two(w)
    la = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 100)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_new(sb, b"lo", 1, b"f", READ, 10, 1)
    w.sm.lock_existing(la, b"f", READ, 0, 100)
    w.sm.lock_new(sb, b"lo", 2, b"f", READ, 10, 1)


def test_split_by_unlock_and_merge_by_relock() -> None:
    w = make_world()
    _, sa, _, sb = setup_two(w)
    la = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 100)
    la = w.sm.locku(la, READ, 40, 20)  # any lock type is accepted by LOCKU
    lb = w.sm.lock_new(sb, b"lo", 1, b"f", WRITE, 40, 20)  # the hole
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_existing(lb, b"f", WRITE, 39, 1)
    w.sm.locku(lb, WRITE, 40, 20)
    w.sm.lock_existing(la, b"f", WRITE, 40, 20)
    assert w.sm.counts().locks == 1  # merged back into one range


def test_write_lock_needs_write_access() -> None:
    w = make_world()
    c = new_client(w.sm)
    rsid = open_confirmed(w.sm, c, b"oo", b"f", access=1)
    with pytest.raises(E.NFS4ERR_OPENMODE):
        w.sm.lock_new(rsid, b"lo", 1, b"f", WRITE, 0, 1)
    wsid = w.sm.open(c, b"oo", b"g", 2, 0).stateid
    with pytest.raises(E.NFS4ERR_OPENMODE):
        w.sm.lock_new(wsid, b"lo", 2, b"g", READ, 0, 1)


def test_bad_lock_arguments() -> None:
    w = make_world()
    _, sa, _, _ = setup_two(w)
    with pytest.raises(E.NFS4ERR_INVAL):
        w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 0)
    with pytest.raises(E.NFS4ERR_INVAL):
        w.sm.lock_new(sa, b"lo", 1, b"f", 5, 0, 1)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.lock_new(sa, b"lo", 1, b"other-file", WRITE, 0, 1)


def test_new_locker_for_an_owner_with_state_on_this_open_extends_it() -> None:
    """As knfsd: served with the lock-owner's next seqid, NFS4ERR_BAD_SEQID otherwise."""
    w = make_world()
    _, sa, _, _ = setup_two(w)
    first = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 1)
    with pytest.raises(E.NFS4ERR_BAD_SEQID):
        w.sm.lock_new(sa, b"lo", 3, b"f", WRITE, 5, 1)  # §16.10.5
    again = w.sm.lock_new(sa, b"lo", 2, b"f", WRITE, 5, 1)
    assert (again.other, again.seqid) == (first.other, first.seqid + 1)
    assert w.sm.counts().lock_states == 1 and w.sm.counts().locks == 2


def test_new_locker_of_another_client_than_the_open_is_bad_stateid() -> None:
    w = make_world()
    a, sa, b, _ = setup_two(w)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 1, clientid=b)
    w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 1, clientid=a)


def test_new_locker_on_another_open_checks_the_lock_seqid() -> None:
    w = make_world()
    c = new_client(w.sm)
    sf = open_confirmed(w.sm, c, b"oo", b"f")
    sg = w.sm.open(c, b"oo", b"g", 3, 0).stateid
    w.sm.lock_new(sf, b"lo", 7, b"f", WRITE, 0, 1)
    with pytest.raises(E.NFS4ERR_BAD_SEQID):
        w.sm.lock_new(sg, b"lo", 9, b"g", WRITE, 0, 1)
    assert w.sm.lock_new(sg, b"lo", 8, b"g", WRITE, 0, 1).seqid == 1


def test_denied_new_locker_leaves_no_lock_owner_behind() -> None:
    w = make_world()
    a, sa, b, sb = setup_two(w)
    w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 1)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_new(sb, b"lo", 1, b"f", WRITE, 0, 1)
    w.sm.release_lockowner(b, b"lo")
    assert w.sm.counts().lock_states == 1


def test_old_and_bad_lock_stateids() -> None:
    w = make_world()
    _, sa, _, _ = setup_two(w)
    l1 = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 1)
    l2 = w.sm.lock_existing(l1, b"f", WRITE, 5, 1)
    with pytest.raises(E.NFS4ERR_OLD_STATEID):
        w.sm.locku(l1, WRITE, 0, 1)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.locku(Stateid(l2.seqid + 1, l2.other), WRITE, 0, 1)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.lock_existing(sa, b"f", WRITE, 0, 1)  # an open stateid as lock_stateid


def test_lock_stateid_survives_unlocking_everything() -> None:
    w = make_world()
    _, sa, _, _ = setup_two(w)
    lsid = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    lsid = w.sm.locku(lsid, WRITE, 0, LENGTH_TO_EOF)
    assert w.sm.counts().locks == 0
    assert w.sm.lock_existing(lsid, b"f", READ, 3, 3).seqid == lsid.seqid + 1  # §9.1.4.4


def test_expired_holders_do_not_block() -> None:
    w = make_world()
    a, sa, b, sb = setup_two(w)
    w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    w.clock.advance(ENFORCED - 1)
    w.sm.renew(b)
    w.clock.advance(1)
    w.sm.lock_new(sb, b"lo", 1, b"f", WRITE, 0, 10)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.check_io_stateid(sa, b"f", write=False)


# -- LOCKT --------------------------------------------------------------------------------------


def test_lockt_reports_conflicts_of_other_owners_only() -> None:
    w = make_world()
    a, sa, b, _ = setup_two(w)
    w.sm.lockt(b, b"lo", b"f", WRITE, 0, 10)
    w.sm.lock_new(sa, b"lo-a", 1, b"f", READ, 5, 10)
    with pytest.raises(E.NFS4ERR_DENIED) as info:
        w.sm.lockt(b, b"lo", b"f", WRITEW, 0, 6)
    assert info.value.value == LockDenied(5, 10, READ, a, b"lo-a")
    w.sm.lockt(b, b"lo", b"f", READ, 0, 6)
    w.sm.lockt(a, b"lo-a", b"f", WRITE, 0, 100)  # own locks are not examined
    w.sm.lockt(b, b"lo", b"no-such-file", WRITE, 0, 1)


def test_lockt_errors() -> None:
    w = make_world()
    a = new_client(w.sm)
    with pytest.raises(E.NFS4ERR_INVAL):
        w.sm.lockt(a, b"lo", b"f", WRITE, 1, 0)
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.lockt(a + 1, b"lo", b"f", WRITE, 0, 1)


# -- RELEASE_LOCKOWNER ------------------------------------------------------------------------


def test_release_lockowner() -> None:
    w = make_world()
    a, sa, _, _ = setup_two(w)
    lsid = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    with pytest.raises(E.NFS4ERR_LOCKS_HELD):
        w.sm.release_lockowner(a, b"lo")
    lsid = w.sm.locku(lsid, WRITE, 0, 10)
    w.sm.release_lockowner(a, b"lo")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.locku(lsid, WRITE, 0, 10)
    w.sm.release_lockowner(a, b"never-seen")
    w.sm.close(sa, b"f")


# -- blocking-lock fairness (§9.4) -------------------------------------------------------------


def three_clients(w: World) -> tuple[Stateid, Stateid, Stateid]:
    sids = []
    for name in (b"a", b"b", b"c"):
        c = new_client(w.sm, name)
        sids.append(open_confirmed(w.sm, c, b"oo", b"f"))
    return sids[0], sids[1], sids[2]


def test_denied_blocking_waiter_is_preferred_over_a_newcomer() -> None:
    w = make_world()
    sa, sb, sc = three_clients(w)
    la = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_new(sb, b"lo", 1, b"f", WRITEW, 0, 10)
    w.sm.locku(la, WRITE, 0, 10)
    with pytest.raises(E.NFS4ERR_DENIED) as info:
        w.sm.lock_new(sc, b"lo", 1, b"f", WRITE, 5, 1)
    assert info.value.value.owner == b"lo" and info.value.value.offset == 0
    lb = w.sm.lock_new(sb, b"lo", 2, b"f", WRITEW, 0, 10)
    w.sm.locku(lb, WRITE, 0, 10)
    w.sm.lock_new(sc, b"lo", 2, b"f", WRITE, 5, 1)  # the granted waiter left the queue


def test_waiter_preference_lapses() -> None:
    w = make_world()
    sa, sb, sc = three_clients(w)
    la = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_new(sb, b"lo", 1, b"f", WRITEW, 0, 10)
    w.sm.locku(la, WRITE, 0, 10)
    w.clock.advance(LEASE + 1)
    w.sm.lock_new(sc, b"lo", 1, b"f", WRITE, 0, 10)


def test_non_blocking_retry_leaves_the_queue() -> None:
    w = make_world()
    sa, sb, sc = three_clients(w)
    la = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    for seqid, locktype in ((1, WRITEW), (2, WRITE)):
        with pytest.raises(E.NFS4ERR_DENIED):
            w.sm.lock_new(sb, b"lo", seqid, b"f", locktype, 0, 10)
    w.sm.locku(la, WRITE, 0, 10)
    w.sm.lock_new(sc, b"lo", 1, b"f", WRITE, 0, 10)


def test_waiters_do_not_block_compatible_or_disjoint_requests() -> None:
    w = make_world()
    sa, sb, sc = three_clients(w)
    la = w.sm.lock_new(sa, b"lo", 1, b"f", READ, 0, 10)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_new(sb, b"lo", 1, b"f", WRITEW, 0, 10)
    w.sm.lock_new(sc, b"lo", 1, b"f", WRITE, 10, 10)  # disjoint
    w.sm.locku(la, READ, 0, 10)
    w.sm.lockt(w.sm.clientid_of(sc) or 0, b"lo", b"f", WRITE, 0, 10)  # LOCKT ignores waiters
