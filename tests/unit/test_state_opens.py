"""Opens: seqids and replay (§9.1.7-§9.1.11), share reservations (§9.9), up/downgrade (§9.11),
CLOSE (§16.2) and stateid validation for I/O (§9.1.4)."""

from __future__ import annotations

import pytest
from state_support import (
    ENFORCED,
    make_world,
    new_client,
    open_confirmed,
    sequenced_open,
)

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state import ANONYMOUS_STATEID, READ_BYPASS_STATEID, Stateid
from pynfsd.nfs4.state.owners import OpenOwner
from pynfsd.nfs4.state.store import NullClientStore
from pynfsd.nfs4.state.types import ReplayedResult, next_seqid, seqid_earlier

R, W, RW = 1, 2, 3
OP_OPEN, OP_CLOSE = 18, 4


def owner_of(sm: object, sid: Stateid) -> OpenOwner:
    oo = sm.owner_for_stateid(sid)  # type: ignore[attr-defined]
    assert isinstance(oo, OpenOwner)
    return oo


# -- seqids and replay (§9.1.3, §9.1.7, §9.1.8) ---------------------------------------------


def test_seqid_arithmetic_wraps_to_one() -> None:
    assert next_seqid(0xFFFFFFFF) == 1
    assert seqid_earlier(0xFFFFFFF0, 3)
    assert not seqid_earlier(3, 0xFFFFFFF0)
    assert seqid_earlier(1, 2) and not seqid_earlier(2, 2)


def test_new_owner_takes_any_seqid_then_requires_the_next() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f", seqid=41)  # OPEN 41, OPEN_CONFIRM 42
    oo = owner_of(w.sm, sid)
    assert oo.check_seqid(43) is None
    for bad in (41, 44, 0):
        with pytest.raises(E.NFS4ERR_BAD_SEQID):
            oo.check_seqid(bad)


def test_retransmission_returns_the_stored_reply() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    oo = owner_of(w.sm, sid)
    assert oo.check_seqid(3, OP_CLOSE) is None
    oo.record_result(3, "the CLOSE reply", 0, OP_CLOSE)
    assert oo.check_seqid(3, OP_CLOSE) == ReplayedResult(3, "the CLOSE reply", 0, OP_CLOSE)
    with pytest.raises(E.NFS4ERR_BAD_SEQID):
        oo.check_seqid(3, OP_OPEN)  # §9.1.9: same seqid, another operation


def test_errors_advance_the_seqid_except_those_listed() -> None:
    w = make_world()
    c = new_client(w.sm)
    oo = owner_of(w.sm, open_confirmed(w.sm, c, b"oo", b"f"))
    oo.record_result(3, E.NFS4ERR_SHARE_DENIED(), E.NFS4ERR_SHARE_DENIED.status)
    assert oo.check_seqid(4) is None
    replay = oo.check_seqid(3)
    assert replay is not None and replay.status == E.NFS4ERR_SHARE_DENIED.status
    for err in (E.NFS4ERR_BAD_STATEID, E.NFS4ERR_STALE_STATEID, E.NFS4ERR_BAD_SEQID):
        oo.record_result(4, err(), err.status)
        assert oo.check_seqid(4) is None  # §9.1.7: not advanced


# -- OPEN and OPEN_CONFIRM (§16.16, §16.18) -------------------------------------------------


def test_new_owner_needs_confirm_and_confirmed_owner_does_not() -> None:
    w = make_world()
    c = new_client(w.sm)
    oo = w.sm.open_owner(c, b"oo", 1)
    res = w.sm.open(c, b"oo", b"f", RW, 0)
    oo.record_result(1, res, 0)
    assert res.needs_confirm and res.stateid.seqid == 1
    confirmed = w.sm.open_confirm(res.stateid, b"f")
    oo.record_result(2, confirmed, 0)
    assert confirmed == Stateid(2, res.stateid.other)
    again = w.sm.open(c, b"oo", b"g", R, 0)
    assert not again.needs_confirm and again.stateid.seqid == 1


def test_unconfirmed_open_is_unusable_for_io() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = sequenced_open(w.sm, c, b"oo", 1, b"f")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.check_io_stateid(sid, b"f", write=False)


def test_open_confirm_of_confirmed_owner_is_bad_stateid() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.open_confirm(sid, b"f")


def test_open_confirm_with_bad_seqid_cancels_the_open() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = sequenced_open(w.sm, c, b"oo", 1, b"f", RW, 3)
    oo = owner_of(w.sm, sid)
    with pytest.raises(E.NFS4ERR_BAD_SEQID):
        oo.check_seqid(5)
    other = new_client(w.sm, b"other")
    open_confirmed(w.sm, other, b"oo", b"f", RW, 3)  # the cancelled deny is gone
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.open_confirm(sid, b"f")


def test_second_open_on_unconfirmed_owner_replaces_the_first() -> None:
    w = make_world()
    c = new_client(w.sm)
    first = sequenced_open(w.sm, c, b"oo", 1, b"f", RW, 3)
    second = sequenced_open(w.sm, c, b"oo", 9, b"g")
    assert w.sm.counts().opens == 1
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.open_confirm(first, b"f")
    assert w.sm.open_confirm(second, b"g").seqid == 2


def test_retransmitted_first_open_is_replayed_not_reset() -> None:
    w = make_world()
    c = new_client(w.sm)
    sequenced_open(w.sm, c, b"oo", 1, b"f")
    oo = w.sm.open_owner(c, b"oo", 1)
    replay = oo.check_seqid(1)
    assert replay is not None and replay.seqid == 1
    assert w.sm.counts().opens == 1


def test_unconfirmed_opens_are_cancelled_after_a_lease() -> None:
    w = make_world()
    c = new_client(w.sm)
    sequenced_open(w.sm, c, b"oo", 1, b"f", RW, 3)
    w.clock.advance(ENFORCED / 2)
    w.sm.renew(c)
    w.clock.advance(ENFORCED / 2 + 1)
    w.sm.renew(c)
    w.sm.sweep()
    assert w.sm.counts().opens == 0


def test_bad_share_arguments_are_inval() -> None:
    w = make_world()
    c = new_client(w.sm)
    for access, deny in ((0, 0), (4, 0), (1, 4)):
        with pytest.raises(E.NFS4ERR_INVAL):
            w.sm.open(c, b"oo", b"f", access, deny)


def test_open_with_unknown_clientid_is_stale() -> None:
    w = make_world()
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.open_owner(99, b"oo", 1)
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.open(99, b"oo", b"f", R, 0)


# -- share reservations (§9.9) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "ok"),
    [
        ((R, 0), (R, 0), True),
        ((R, W), (R, 0), True),
        ((R, W), (W, 0), False),
        ((R, 0), (R, W), True),
        ((W, 0), (R, W), False),
        ((RW, 0), (R, R), False),
        ((R, R), (W, W), True),
    ],
)
def test_share_reservations_across_clients(
    first: tuple[int, int], second: tuple[int, int], ok: bool
) -> None:
    w = make_world()
    a, b = new_client(w.sm, b"a"), new_client(w.sm, b"b")
    open_confirmed(w.sm, a, b"oo", b"f", *first)
    if ok:
        open_confirmed(w.sm, b, b"oo", b"f", *second)
    else:
        with pytest.raises(E.NFS4ERR_SHARE_DENIED):
            w.sm.open(b, b"oo", b"f", *second)


def test_share_check_includes_the_same_owner() -> None:
    w = make_world()
    c = new_client(w.sm)
    open_confirmed(w.sm, c, b"oo", b"f", R, W)
    with pytest.raises(E.NFS4ERR_SHARE_DENIED):
        w.sm.open(c, b"oo", b"f", W, 0)


def test_other_files_do_not_conflict() -> None:
    w = make_world()
    a, b = new_client(w.sm, b"a"), new_client(w.sm, b"b")
    open_confirmed(w.sm, a, b"oo", b"f", RW, RW)
    open_confirmed(w.sm, b, b"oo", b"g", RW, RW)


# -- upgrade and downgrade (§9.11, §16.19) ---------------------------------------------------


def test_upgrade_unions_modes_and_bumps_seqid() -> None:
    w = make_world()
    c, other = new_client(w.sm), new_client(w.sm, b"other")
    sid = open_confirmed(w.sm, c, b"oo", b"f", R, 0)
    up = w.sm.open(c, b"oo", b"f", W, W)
    assert up.stateid == Stateid(sid.seqid + 1, sid.other) and not up.needs_confirm
    w.sm.check_io_stateid(up.stateid, b"f", write=True)
    with pytest.raises(E.NFS4ERR_SHARE_DENIED):
        w.sm.open(other, b"oo", b"f", W, 0)
    open_confirmed(w.sm, other, b"oo", b"f", R, 0)
    with pytest.raises(E.NFS4ERR_OLD_STATEID):
        w.sm.check_io_stateid(sid, b"f", write=False)


def test_downgrade_to_a_union_of_previous_opens() -> None:
    w = make_world()
    c, other = new_client(w.sm), new_client(w.sm, b"other")
    open_confirmed(w.sm, c, b"oo", b"f", R, 0)
    sid = w.sm.open(c, b"oo", b"f", W, W).stateid
    down = w.sm.open_downgrade(sid, R, 0, b"f")
    assert down == Stateid(sid.seqid + 1, sid.other)
    open_confirmed(w.sm, other, b"oo", b"f", W, 0)  # write no longer denied
    with pytest.raises(E.NFS4ERR_OPENMODE):
        w.sm.check_io_stateid(down, b"f", write=True)


def test_downgrade_to_unchanged_modes_still_bumps() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f", RW, 0)
    assert w.sm.open_downgrade(sid, RW, 0).seqid == sid.seqid + 1


@pytest.mark.parametrize(("access", "deny"), [(W, 0), (R, R), (RW, W), (R, W)])
def test_downgrade_outside_the_opens_is_inval(access: int, deny: int) -> None:
    w = make_world()
    c = new_client(w.sm)
    open_confirmed(w.sm, c, b"oo", b"f", R, 0)
    sid = w.sm.open(c, b"oo", b"f", RW, 0).stateid
    if (access, deny) == (R, W):
        w.sm.open_downgrade(sid, R, 0)  # sanity: (R, 0) was an OPEN
        return
    with pytest.raises(E.NFS4ERR_INVAL):
        w.sm.open_downgrade(sid, access, deny)


def test_downgrade_away_from_write_with_write_lock_is_locks_held() -> None:
    w = make_world()
    c = new_client(w.sm)
    open_confirmed(w.sm, c, b"oo", b"f", R, 0)
    sid = w.sm.open(c, b"oo", b"f", RW, 0).stateid
    w.sm.lock_new(sid, b"lo", 1, b"f", 2, 0, 10)
    with pytest.raises(E.NFS4ERR_LOCKS_HELD):
        w.sm.open_downgrade(sid, R, 0)


# -- CLOSE (§16.2, §9.10) --------------------------------------------------------------------


def test_close_releases_the_share_and_invalidates_the_stateid() -> None:
    w = make_world()
    c, other = new_client(w.sm), new_client(w.sm, b"other")
    sid = open_confirmed(w.sm, c, b"oo", b"f", RW, RW)
    closed = w.sm.close(sid, b"f")
    assert closed.other == sid.other
    open_confirmed(w.sm, other, b"oo", b"f", RW, RW)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.check_io_stateid(closed, b"f", write=False)


def test_close_with_locks_held_fails() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    lsid = w.sm.lock_new(sid, b"lo", 1, b"f", 1, 0, 10)
    with pytest.raises(E.NFS4ERR_LOCKS_HELD):
        w.sm.close(sid, b"f")
    w.sm.locku(lsid, 1, 0, 10)
    w.sm.close(sid, b"f")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.check_io_stateid(lsid, b"f", write=False)  # lock sets go with the open


def test_retransmitted_close_is_replayed_until_the_owner_moves_on() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")  # seqids 1, 2
    oo = owner_of(w.sm, sid)
    assert oo.check_seqid(3) is None
    oo.record_result(3, w.sm.close(sid, b"f"), 0, OP_CLOSE)
    assert owner_of(w.sm, sid).check_seqid(3, OP_CLOSE) is not None  # §9.1.10.1
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.close(sid, b"f")  # a new seqid on a closed stateid
    sequenced_open(w.sm, c, b"oo", 4, b"g")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.owner_for_stateid(sid)


# -- stateid validation (§9.1.4.4) -------------------------------------------------------------


def test_stateid_seqid_old_and_future() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    with pytest.raises(E.NFS4ERR_OLD_STATEID):
        w.sm.close(Stateid(sid.seqid - 1, sid.other), b"f")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.close(Stateid(sid.seqid + 1, sid.other), b"f")


def test_stateid_for_another_file_or_unknown_is_bad() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.close(sid, b"g")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.close(Stateid(1, sid.other[:8] + b"\x00\x00\x01\x00"), b"f")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.close(Stateid(1, b"short"), b"f")


def test_special_stateids_where_an_open_is_required_are_bad() -> None:
    w = make_world()
    for special in (ANONYMOUS_STATEID, READ_BYPASS_STATEID):
        with pytest.raises(E.NFS4ERR_BAD_STATEID):
            w.sm.close(special)
        with pytest.raises(E.NFS4ERR_BAD_STATEID):
            w.sm.owner_for_stateid(special)


def test_malformed_special_stateids_are_bad() -> None:
    w = make_world()
    for sid in (Stateid(1, bytes(12)), Stateid(0, b"\xff" * 12)):
        with pytest.raises(E.NFS4ERR_BAD_STATEID):
            w.sm.check_io_stateid(sid, b"f", write=False)


def test_lock_stateid_where_an_open_is_required_is_bad() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    lsid = w.sm.lock_new(sid, b"lo", 1, b"f", 1, 0, 1)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.close(lsid, b"f")
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.locku(sid, 1, 0, 1)


# -- I/O stateids (§9.1.4.3, §9.1.4.5) -------------------------------------------------------


def test_anonymous_io_is_checked_against_deny_reservations() -> None:
    w = make_world()
    c = new_client(w.sm)
    w.sm.check_io_stateid(ANONYMOUS_STATEID, b"f", write=True)
    open_confirmed(w.sm, c, b"oo", b"f", R, W)
    w.sm.check_io_stateid(ANONYMOUS_STATEID, b"f", write=False)
    with pytest.raises(E.NFS4ERR_LOCKED):
        w.sm.check_io_stateid(ANONYMOUS_STATEID, b"f", write=True)


def test_read_bypass_ignores_deny_read_but_not_deny_write() -> None:
    w = make_world()
    c = new_client(w.sm)
    open_confirmed(w.sm, c, b"oo", b"f", RW, RW)
    with pytest.raises(E.NFS4ERR_LOCKED):
        w.sm.check_io_stateid(ANONYMOUS_STATEID, b"f", write=False)
    w.sm.check_io_stateid(READ_BYPASS_STATEID, b"f", write=False)
    with pytest.raises(E.NFS4ERR_LOCKED):
        w.sm.check_io_stateid(READ_BYPASS_STATEID, b"f", write=True)


def test_openmode_for_write_under_a_read_open() -> None:
    w = make_world()
    c = new_client(w.sm)
    rsid = open_confirmed(w.sm, c, b"oo", b"f", R, 0)
    wsid = w.sm.open(c, b"oo", b"g", W, 0).stateid
    w.sm.check_io_stateid(rsid, b"f", write=False)
    with pytest.raises(E.NFS4ERR_OPENMODE):
        w.sm.check_io_stateid(rsid, b"f", write=True)
    w.sm.check_io_stateid(wsid, b"g", write=False)  # reads allowed under write-only opens


def test_lock_stateid_is_accepted_for_io() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f", RW, 0)
    lsid = w.sm.lock_new(sid, b"lo", 1, b"f", 2, 0, 10)
    w.sm.check_io_stateid(lsid, b"f", write=True)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        w.sm.check_io_stateid(lsid, b"g", write=True)


def test_io_with_a_stateid_renews_the_lease() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    for _ in range(4):
        w.clock.advance(ENFORCED - 1)
        w.sm.check_io_stateid(sid, b"f", write=True)
    w.sm.renew(c)


# -- grace seam (§9.6.2) -----------------------------------------------------------------------


class ReclaimAll(NullClientStore):
    def may_reclaim(self, ownerid: bytes) -> bool:
        return True


def test_grace_allows_only_reclaims() -> None:
    grace = [True]
    w = make_world(in_grace=lambda: grace[0], store=ReclaimAll())
    c = new_client(w.sm)
    with pytest.raises(E.NFS4ERR_GRACE):
        w.sm.open(c, b"oo", b"f", R, 0)
    res = w.sm.open(c, b"oo", b"f", R, 0, reclaim=True)
    assert not res.needs_confirm  # §9.1.11
    grace[0] = False
    with pytest.raises(E.NFS4ERR_NO_GRACE):
        w.sm.open(c, b"oo", b"g", R, 0, reclaim=True)


def test_reclaim_without_stable_record_is_reclaim_bad() -> None:
    w = make_world(in_grace=lambda: True)
    c = new_client(w.sm)
    with pytest.raises(E.NFS4ERR_RECLAIM_BAD):
        w.sm.open(c, b"oo", b"f", R, 0, reclaim=True)


def test_downgrade_forgets_the_opens_it_dropped() -> None:
    w = make_world()
    c = new_client(w.sm)
    open_confirmed(w.sm, c, b"oo", b"f", R, 0)
    sid = w.sm.open(c, b"oo", b"f", W, 0).stateid
    sid = w.sm.open_downgrade(sid, R, 0)
    with pytest.raises(E.NFS4ERR_INVAL):
        w.sm.open_downgrade(sid, W, 0)


# -- open files are held while opened (the backend keeps them past their last link) ---------


class RecordingOpenFiles:
    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def hold(self, file_key: bytes) -> None:
        self.events.append(("hold", file_key))

    def release(self, file_key: bytes) -> None:
        self.events.append(("release", file_key))


def test_a_file_is_held_from_its_first_open_to_its_last_close() -> None:
    files = RecordingOpenFiles()
    w = make_world(open_files=files, courtesy_limit=0)
    a, b = new_client(w.sm, b"a"), new_client(w.sm, b"b")
    sa = open_confirmed(w.sm, a, b"oo", b"f")
    sb = open_confirmed(w.sm, b, b"oo", b"f")
    w.sm.open(a, b"oo", b"f", R, 0)  # an upgrade is no new open
    open_confirmed(w.sm, a, b"o2", b"g")
    assert files.events == [("hold", b"f"), ("hold", b"g")]
    w.sm.close(Stateid(sa.seqid + 1, sa.other), b"f")
    assert files.events[-1] == ("hold", b"g")  # b's open still holds f
    w.sm.close(sb, b"f")
    assert files.events[-1] == ("release", b"f")
    w.clock.advance(ENFORCED)
    w.sm.sweep()  # a's lease lapsed (no courtesy here): its last open goes
    assert files.events[-1] == ("release", b"g") and len(files.events) == 4
