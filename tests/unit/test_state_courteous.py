"""The courteous server (RFC 7530 §9.6.3.1, §9.6.3.2): a lapsed client keeps its state until
another client conflicts with it; a manual clock drives the leases."""

from __future__ import annotations

from pathlib import Path

import pytest
from state_support import ENFORCED, World, make_world, new_client, open_confirmed

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state import ANONYMOUS_STATEID, Stateid
from pynfsd.nfs4.state.leases import COURTESY_LIMIT
from pynfsd.nfs4.state.store import FileClientStore, record_name

READ, WRITE = 1, 2  # READ_LT, WRITE_LT
RW, DENY_NONE, DENY_WRITE = 3, 0, 2


def lapsed_holder(w: World, deny: int = DENY_NONE) -> tuple[int, Stateid, Stateid]:
    """Client A holds an open of "f" and a write lock on [0, 10), then its lease lapses."""
    a = new_client(w.sm, b"A")
    sa = open_confirmed(w.sm, a, b"oo", b"f", RW, deny)
    la = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    w.clock.advance(ENFORCED + 1)
    return a, sa, la


def test_lapsed_client_keeps_its_lock_until_another_client_conflicts() -> None:
    w = make_world()
    a, sa, la = lapsed_holder(w)
    b = new_client(w.sm, b"B")
    sb = open_confirmed(w.sm, b, b"oo", b"f")
    w.sm.lock_new(sb, b"lo", 1, b"f", WRITE, 20, 10)  # no conflict: A keeps its state
    assert w.sm.counts().locks == 2
    lb = w.sm.lock_new(sb, b"lo2", 1, b"f", WRITE, 5, 1)  # conflicts: A's lease is cancelled
    assert lb.seqid == 1
    for use in (lambda: w.sm.renew(a), lambda: w.sm.check_io_stateid(la, b"f", write=True)):
        with pytest.raises(E.NFS4ERR_EXPIRED):  # §9.6.3.2
            use()
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.owner_for_stateid(sa)


def test_client_coming_back_before_a_conflict_keeps_everything() -> None:
    w = make_world()
    a, sa, la = lapsed_holder(w)
    w.sm.renew(a)  # back before anyone conflicted: renewed (§9.6.3.1)
    b = new_client(w.sm, b"B")
    sb = open_confirmed(w.sm, b, b"oo", b"f")
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_new(sb, b"lo", 1, b"f", WRITE, 5, 1)
    assert w.sm.lock_existing(la, b"f", WRITE, 0, 20).seqid == la.seqid + 1


def test_using_a_stateid_brings_a_courteous_client_back() -> None:
    w = make_world()
    a, sa, _ = lapsed_holder(w)
    w.sm.check_io_stateid(sa, b"f", write=True)
    assert not w.sm.client_list()[0].courteous
    w.clock.advance(ENFORCED - 1)
    w.sm.renew(a)


def test_share_reservation_conflict_cancels_a_courteous_client_only() -> None:
    w = make_world()
    a = new_client(w.sm, b"A")
    sa = open_confirmed(w.sm, a, b"oo", b"f", RW, DENY_WRITE)
    b = new_client(w.sm, b"B")
    with pytest.raises(E.NFS4ERR_SHARE_DENIED):  # A is live: the reservation holds
        w.sm.open(b, b"oo", b"f", RW, DENY_NONE)
    w.clock.advance(ENFORCED / 2)
    w.sm.renew(b)
    w.clock.advance(ENFORCED / 2)
    w.sm.open(b, b"oo", b"f", RW, DENY_NONE)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.check_io_stateid(sa, b"f", write=False)


def test_lockt_does_not_report_a_courteous_lock() -> None:
    w = make_world()
    a, _, la = lapsed_holder(w)
    b = new_client(w.sm, b"B")
    w.sm.lockt(b, b"lo", b"f", WRITE, 0, 10)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(a)


def test_anonymous_write_against_a_courteous_deny_proceeds() -> None:
    w = make_world()
    a, *_ = lapsed_holder(w, deny=DENY_WRITE)
    w.sm.check_io_stateid(ANONYMOUS_STATEID, b"f", write=True)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(a)


def test_setclientid_by_another_principal_cancels_a_courteous_client() -> None:
    w = make_world()
    a = new_client(w.sm, b"x", "alice")
    open_confirmed(w.sm, a, b"oo", b"f")
    with pytest.raises(E.NFS4ERR_CLID_INUSE):  # §9.1.2 while the lease is live
        w.sm.setclientid(b"v2", b"x", "bob", None, "a")
    w.clock.advance(ENFORCED + 1)
    d, t = w.sm.setclientid(b"v2", b"x", "bob", None, "a")
    w.sm.setclientid_confirm(d, t, "bob")
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(a)


def test_callback_update_by_a_courteous_client_keeps_its_state() -> None:
    w = make_world()
    a = new_client(w.sm, b"x")
    sid = open_confirmed(w.sm, a, b"oo", b"f")
    w.clock.advance(ENFORCED + 1)
    c, s = w.sm.setclientid(b"verf0001", b"x", "root", None, "a")  # same verifier
    assert c == a
    w.sm.setclientid_confirm(c, s, "root")
    w.sm.check_io_stateid(sid, b"f", write=True)


def test_sweep_moves_holders_to_courtesy_and_cancels_idle_clients() -> None:
    w = make_world()
    a, _, _ = lapsed_holder(w)
    idle = new_client(w.sm, b"idle")
    w.clock.advance(ENFORCED + 1)
    assert w.sm.sweep() == 1  # the idle client; A has state and is kept
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(idle)
    (info,) = w.sm.client_list()
    assert info.ownerid == b"A" and info.courteous and info.locks == 1


def test_courtesy_ends_after_its_limit() -> None:
    w = make_world()
    a, _, _ = lapsed_holder(w)
    w.clock.advance(COURTESY_LIMIT - ENFORCED)
    assert w.sm.sweep() == 0
    w.clock.advance(ENFORCED)
    assert w.sm.sweep() == 1
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(a)


def test_courtesy_is_lazily_bounded_too() -> None:
    w = make_world(courtesy_limit=60)
    a, _, _ = lapsed_holder(w)
    w.clock.advance(60)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(a)


def test_too_many_courteous_clients_drop_the_longest_lapsed() -> None:
    w = make_world(max_courteous=1)
    first = new_client(w.sm, b"first")
    open_confirmed(w.sm, first, b"oo", b"f")
    w.clock.advance(10)
    second = new_client(w.sm, b"second")
    open_confirmed(w.sm, second, b"oo", b"g")
    w.clock.advance(ENFORCED + 1)
    assert w.sm.sweep() == 1
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(first)
    w.sm.renew(second)


def test_cancelled_courteous_client_loses_its_stable_record(tmp_path: Path) -> None:
    store = FileClientStore(tmp_path)
    w = make_world(store=store)
    a, _, _ = lapsed_holder(w)
    store.flush()
    assert (tmp_path / record_name(b"A")).exists()
    w.sm.sweep()
    store.flush()
    assert (tmp_path / record_name(b"A")).exists()  # courtesy: still holds state
    b = new_client(w.sm, b"B")
    sb = open_confirmed(w.sm, b, b"oo", b"f")
    w.sm.lock_new(sb, b"lo", 1, b"f", WRITE, 0, 10)
    store.flush()
    assert not (tmp_path / record_name(b"A")).exists()  # §9.6.3.4.1: it may not reclaim
    assert (tmp_path / record_name(b"B")).exists()
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(a)
