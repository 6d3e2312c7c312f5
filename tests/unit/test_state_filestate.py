"""Per-file bookkeeping that keeps OPEN and LOCK cheap on shared files: the count of opens
with a deny mode (share checks are skipped when it is zero, §9.9) and the list of opens by
unconfirmed owners that a cancelled owner's opens are reaped from (§16.18.5)."""

from __future__ import annotations

import pytest
from state_support import make_world, new_client, open_confirmed, sequenced_open

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state import ANONYMOUS_STATEID
from pynfsd.nfs4.state.locks import FileState

READ, WRITE, BOTH = 1, 2, 3


def denying(fs: FileState) -> int:
    return sum(1 for os in fs.opens if os.deny)


def test_deny_count_follows_open_upgrade_downgrade_and_close() -> None:
    w = make_world()
    a, b = new_client(w.sm, b"a"), new_client(w.sm, b"b")
    sa = open_confirmed(w.sm, a, b"oo", b"f", access=READ)
    fs = w.sm.files.by_key[b"f"]
    assert fs.denying == denying(fs) == 0
    sa = w.sm.open(a, b"oo", b"f", READ, WRITE).stateid  # upgrade adds DENY_WRITE
    assert fs.denying == denying(fs) == 1
    with pytest.raises(E.NFS4ERR_SHARE_DENIED):
        w.sm.open(b, b"oo", b"f", WRITE, 0)
    with pytest.raises(E.NFS4ERR_LOCKED):
        w.sm.check_io_stateid(ANONYMOUS_STATEID, b"f", write=True)
    sa = w.sm.open_downgrade(sa, READ, 0, b"f")
    assert fs.denying == denying(fs) == 0
    sb = open_confirmed(w.sm, b, b"oo", b"f", access=WRITE)
    w.sm.check_io_stateid(ANONYMOUS_STATEID, b"f", write=True)
    with pytest.raises(E.NFS4ERR_SHARE_DENIED):  # the request's own deny is still checked
        w.sm.open(a, b"oo2", b"f", READ, WRITE)
    w.sm.close(sb, b"f")
    w.sm.open(a, b"oo2", b"f", READ, WRITE)
    assert fs.denying == denying(fs) == 1
    w.sm.revoke_client(a)
    assert b"f" not in w.sm.files.by_key


def test_cancelled_owner_opens_are_reaped_from_pending() -> None:
    w = make_world()
    a, b = new_client(w.sm, b"a"), new_client(w.sm, b"b")
    sa = sequenced_open(w.sm, a, b"oo", 1, b"f", BOTH, WRITE)  # unconfirmed owner
    fs = w.sm.files.by_key[b"f"]
    assert [os.owner.owner for os in fs.pending] == [b"oo"]
    oo = w.sm.owner_for_stateid(sa)
    with pytest.raises(E.NFS4ERR_BAD_SEQID):
        oo.check_seqid(7)  # cancels the unconfirmed owner (§16.18.4)
    open_confirmed(w.sm, b, b"oo", b"f", access=WRITE)  # the cancelled open no longer denies
    fs = w.sm.files.by_key[b"f"]  # reaping emptied the old one: b's open is in the live one
    assert [os.owner.client.clientid for os in fs.opens] == [b]
    assert fs.denying == 0
    w.sm.open(a, b"oo3", b"f", READ, 0)
    assert [os.owner.owner for os in fs.pending] == [b"oo3"]  # b's, confirmed, was pruned
    with pytest.raises(E.NFS4ERR_SHARE_DENIED):
        w.sm.open(a, b"oo4", b"f", READ, WRITE)  # b's WRITE open is seen


def test_dropping_a_client_removes_its_waiters() -> None:
    w = make_world()
    a, b, c = (new_client(w.sm, name) for name in (b"a", b"b", b"c"))
    sa, sb, sc = (open_confirmed(w.sm, x, b"oo", b"f") for x in (a, b, c))
    la = w.sm.lock_new(sa, b"lo", 1, b"f", WRITE, 0, 10)
    with pytest.raises(E.NFS4ERR_DENIED):
        w.sm.lock_new(sb, b"lo", 1, b"f", 4, 0, 10)  # WRITEW_LT: b queues (§9.4)
    assert w.sm.files.waiting == {w.sm.files.by_key[b"f"]}
    w.sm.locku(la, WRITE, 0, 10)
    w.sm.revoke_client(b)
    assert w.sm.files.waiting == set()
    w.sm.lock_new(sc, b"lo", 1, b"f", WRITE, 0, 10)  # no waiter left ahead of c
