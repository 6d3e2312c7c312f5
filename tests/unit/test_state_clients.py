"""Client ids and leases: every case of RFC 7530 §16.33.5 / §16.34.5, RENEW, expiry, reboot."""

from __future__ import annotations

import pytest
from state_support import (
    ENFORCED,
    LEASE,
    CountingRng,
    ManualClock,
    make_world,
    new_client,
    open_confirmed,
)

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state import StateManager
from pynfsd.nfs4.state.clients import MAX_TOMBSTONES
from pynfsd.nfs4.state.leases import enforced_lease


def has_opens(sm: StateManager, clientid: int) -> bool:
    return any(c.opens for c in sm.client_list() if c.clientid == clientid)


# -- SETCLIENTID (§16.33.5) ---------------------------------------------------------------


def test_new_client_is_unconfirmed_until_confirm() -> None:
    w = make_world()
    clientid, confirm = w.sm.setclientid(b"v1", b"x", "alice", "cb", "10.0.0.1.8.1")
    assert len(confirm) == 8
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.renew(clientid)
    w.sm.setclientid_confirm(clientid, confirm, "alice")
    w.sm.renew(clientid)


def test_same_verifier_is_callback_update_keeping_clientid_and_state() -> None:
    w = make_world()
    c = new_client(w.sm, b"x", "alice")
    open_confirmed(w.sm, c, b"oo", b"f")
    c2, t = w.sm.setclientid(b"verf0001", b"x", "alice", "new-cb", "10.0.0.2.8.1")
    assert c2 == c
    w.sm.setclientid_confirm(c2, t, "alice")
    assert has_opens(w.sm, c)
    assert w.sm.clients.confirmed[c].callback == "new-cb"


def test_callback_update_is_not_applied_before_confirm() -> None:
    w = make_world()
    c = new_client(w.sm, b"x", "alice")
    w.sm.setclientid(b"verf0001", b"x", "alice", "new-cb", "10.0.0.2.8.1")
    assert w.sm.clients.confirmed[c].callback is None
    w.sm.renew(c)  # the confirmed record stays usable


def test_new_verifier_gets_new_clientid_and_keeps_state_until_confirm() -> None:
    w = make_world()
    c = new_client(w.sm, b"x")
    open_confirmed(w.sm, c, b"oo", b"f")
    d, t = w.sm.setclientid(b"rebooted", b"x", "root", None, "10.0.0.1.8.1")
    assert d != c
    assert has_opens(w.sm, c)  # the server does NOT remove state at SETCLIENTID
    w.sm.setclientid_confirm(d, t, "root")
    assert not any(ci.clientid == c for ci in w.sm.client_list())  # §16.34.5 MUST remove
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.renew(c)
    w.sm.renew(d)


def test_stateids_of_a_rebooted_client_are_expired() -> None:
    w = make_world()
    c = new_client(w.sm, b"x")
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    lsid = w.sm.lock_new(sid, b"lo", 1, b"f", 2, 0, 10, clientid=c)
    d, t = w.sm.setclientid(b"rebooted", b"x", "root", None, "a")
    w.sm.check_io_stateid(sid, b"f", write=True)  # still valid until the confirm
    w.sm.setclientid_confirm(d, t, "root")
    for old in (sid, lsid):
        with pytest.raises(E.NFS4ERR_EXPIRED):
            w.sm.check_io_stateid(old, b"f", write=False)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.close(sid, b"f")
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.renew(c)  # the old client id itself is just unknown, as knfsd answers


def test_reboot_tombstones_are_bounded() -> None:
    w = make_world()
    new_client(w.sm, b"x")
    for n in range(MAX_TOMBSTONES + 10):
        d, t = w.sm.setclientid(n.to_bytes(8, "big"), b"x", "root", None, "a")
        w.sm.setclientid_confirm(d, t, "root")
    assert len(w.sm.clients.tombstones) == MAX_TOMBSTONES


def test_reboot_confirm_releases_share_reservations() -> None:
    w = make_world()
    c = new_client(w.sm, b"x")
    open_confirmed(w.sm, c, b"oo", b"f", access=3, deny=3)
    d, t = w.sm.setclientid(b"rebooted", b"x", "root", None, "a")
    w.sm.setclientid_confirm(d, t, "root")
    other = new_client(w.sm, b"y")
    open_confirmed(w.sm, other, b"oo", b"f", access=3, deny=3)


def test_unconfirmed_record_is_replaced_when_confirmed_exists() -> None:
    w = make_world()
    c = new_client(w.sm, b"x")
    d, t = w.sm.setclientid(b"v2", b"x", "root", None, "a")
    e, r = w.sm.setclientid(b"v3", b"x", "root", None, "a")
    assert len({c, d, e}) == 3 and r != t
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.setclientid_confirm(d, t, "root")
    w.sm.setclientid_confirm(e, r, "root")
    w.sm.renew(e)


def test_unconfirmed_record_is_replaced_when_no_confirmed_exists() -> None:
    w = make_world()
    c, s = w.sm.setclientid(b"v1", b"x", "root", None, "a")
    d, t = w.sm.setclientid(b"v1", b"x", "root", None, "a")
    assert d != c and t != s
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.setclientid_confirm(c, s, "root")
    w.sm.setclientid_confirm(d, t, "root")


def test_clid_inuse_for_other_principal_when_state_exists() -> None:
    w = make_world()
    c = new_client(w.sm, b"x", "alice")
    open_confirmed(w.sm, c, b"oo", b"f")
    with pytest.raises(E.NFS4ERR_CLID_INUSE) as info:
        w.sm.setclientid(b"v2", b"x", "mallory", None, "10.0.0.9.8.1")
    assert info.value.value == ("tcp", "127.0.0.1.8.1")
    assert has_opens(w.sm, c)


def test_other_principal_allowed_when_no_state() -> None:
    w = make_world()
    c = new_client(w.sm, b"x", "alice")
    d, t = w.sm.setclientid(b"v2", b"x", "bob", None, "a")
    assert d != c
    w.sm.setclientid_confirm(d, t, "bob")
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.renew(c)


def test_other_principal_allowed_when_lease_expired() -> None:
    w = make_world()
    c = new_client(w.sm, b"x", "alice")
    open_confirmed(w.sm, c, b"oo", b"f")
    w.clock.advance(ENFORCED + 1)
    d, t = w.sm.setclientid(b"v2", b"x", "bob", None, "a")  # §9.1.2 MUST allow
    w.sm.setclientid_confirm(d, t, "bob")
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(c)


def test_clid_inuse_payload_uses_tcp6_for_ipv6() -> None:
    w = make_world()
    c, s = w.sm.setclientid(b"v1", b"x", "alice", None, "::1.8.1")
    w.sm.setclientid_confirm(c, s, "alice")
    open_confirmed(w.sm, c, b"oo", b"f")
    with pytest.raises(E.NFS4ERR_CLID_INUSE) as info:
        w.sm.setclientid(b"v2", b"x", "bob", None, "a")
    assert info.value.value == ("tcp6", "::1.8.1")


# -- SETCLIENTID_CONFIRM (§16.34.5) ----------------------------------------------------------


def test_confirm_callback_update_with_other_principal_is_clid_inuse() -> None:
    w = make_world()
    c = new_client(w.sm, b"x", "alice")
    c2, t = w.sm.setclientid(b"verf0001", b"x", "alice", "cb2", "a")
    with pytest.raises(E.NFS4ERR_CLID_INUSE):
        w.sm.setclientid_confirm(c2, t, "bob")
    assert w.sm.clients.confirmed[c].callback is None


def test_confirm_retry_of_confirmed_record_is_ok_and_keeps_state() -> None:
    w = make_world()
    c, s = w.sm.setclientid(b"v1", b"x", "alice", None, "a")
    w.sm.setclientid_confirm(c, s, "alice")
    open_confirmed(w.sm, c, b"oo", b"f")
    w.sm.setclientid_confirm(c, s, "alice")
    assert has_opens(w.sm, c)
    with pytest.raises(E.NFS4ERR_CLID_INUSE):
        w.sm.setclientid_confirm(c, s, "bob")


def test_confirm_unconfirmed_with_other_principal_is_clid_inuse() -> None:
    w = make_world()
    c, s = w.sm.setclientid(b"v1", b"x", "alice", None, "a")
    with pytest.raises(E.NFS4ERR_CLID_INUSE):
        w.sm.setclientid_confirm(c, s, "bob")
    w.sm.setclientid_confirm(c, s, "alice")


def test_confirm_with_unknown_clientid_or_verifier_is_stale() -> None:
    w = make_world()
    c, s = w.sm.setclientid(b"v1", b"x", "alice", None, "a")
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.setclientid_confirm(c, b"wrongver", "alice")
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.setclientid_confirm(c + 1000, s, "alice")


def test_confirm_of_new_incarnation_with_other_principal_and_state_is_clid_inuse() -> None:
    w = make_world()
    c = new_client(w.sm, b"x", "alice")
    d, t = w.sm.setclientid(b"v2", b"x", "bob", None, "a")  # alice has no state yet
    open_confirmed(w.sm, c, b"oo", b"f")  # ... but now she has
    with pytest.raises(E.NFS4ERR_CLID_INUSE):
        w.sm.setclientid_confirm(d, t, "bob")
    assert has_opens(w.sm, c)


def test_unconfirmed_records_lapse() -> None:
    w = make_world()
    c, s = w.sm.setclientid(b"v1", b"x", "alice", None, "a")
    w.clock.advance(ENFORCED + 1)
    w.sm.sweep()
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.setclientid_confirm(c, s, "alice")


def test_client_reboot_resets_owner_sequence_history() -> None:
    w = make_world()
    c = new_client(w.sm, b"x")
    open_confirmed(w.sm, c, b"oo", b"f", seqid=7)
    d, t = w.sm.setclientid(b"rebooted", b"x", "root", None, "a")
    w.sm.setclientid_confirm(d, t, "root")
    owner = w.sm.open_owner(d, b"oo", 1)
    assert owner.last_seqid is None and owner.check_seqid(1) is None


# -- RENEW and leases (§9.5, §16.28) -------------------------------------------------------


def test_renew_unknown_clientid_is_stale() -> None:
    w = make_world()
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        w.sm.renew(12345)


def test_lease_announced_shorter_than_enforced() -> None:
    w = make_world()
    c = new_client(w.sm)
    assert w.sm.lease_time == LEASE and w.sm.enforced_lease > LEASE
    w.clock.advance(LEASE + 1)
    w.sm.renew(c)  # past the announced lease but within the enforced one


@pytest.mark.parametrize(
    ("lease", "enforced"), [(90, 92.0), (20, 22.0), (10, 11.0), (4, 4.4), (1, 1.1)]
)
def test_the_margin_is_ten_percent_and_at_most_two_seconds(lease: int, enforced: float) -> None:
    assert enforced_lease(lease) == pytest.approx(enforced)
    sm = StateManager(ManualClock(), CountingRng(), lease, server_boot_id=b"boot")
    assert sm.enforced_lease == pytest.approx(enforced)


def test_a_silent_client_lapses_at_the_lease_plus_the_margin() -> None:
    w = make_world(courtesy_limit=0)
    c = new_client(w.sm)
    w.clock.advance(ENFORCED - 0.01)
    assert w.sm.sweep() == 0
    w.clock.advance(0.01)
    assert w.sm.sweep() == 1  # 92 s after the last renewal, not 135 s
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(c)


def test_renew_extends_the_lease() -> None:
    w = make_world()
    c = new_client(w.sm)
    for _ in range(5):
        w.clock.advance(ENFORCED - 1)
        w.sm.renew(c)
    assert w.sm.sweep() == 0


def test_lapsed_lease_gives_expired_and_drops_state() -> None:
    w = make_world(courtesy_limit=0)  # no courtesy (tests/unit/test_state_courteous.py)
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    w.clock.advance(ENFORCED)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(c)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.check_io_stateid(sid, b"f", write=False)
    assert w.sm.counts().opens == 0


def test_sweep_expires_lapsed_clients() -> None:
    w = make_world()
    a = new_client(w.sm, b"a")
    w.clock.advance(ENFORCED / 2)
    b = new_client(w.sm, b"b")
    w.clock.advance(ENFORCED / 2)
    assert w.sm.sweep() == 1
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(a)
    w.sm.renew(b)


def test_pinned_lease_never_expires_and_unpin_renews() -> None:
    w = make_world()
    c = new_client(w.sm)
    with w.sm.lease_held(c):
        w.clock.advance(ENFORCED * 3)
        assert w.sm.sweep() == 0
        w.sm.renew(c)
    w.clock.advance(ENFORCED - 1)
    assert w.sm.sweep() == 0


def test_expired_clients_state_yields_to_another_client_lazily() -> None:
    w = make_world()
    a = new_client(w.sm, b"a")
    open_confirmed(w.sm, a, b"oo", b"f", access=3, deny=3)
    w.clock.advance(ENFORCED)
    b = new_client(w.sm, b"b")
    open_confirmed(w.sm, b, b"oo", b"f", access=3, deny=3)  # no sweep needed
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(a)


def test_ids_from_another_boot_are_stale() -> None:
    w = make_world(b"boot-1")
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    after = make_world(b"boot-2")
    with pytest.raises(E.NFS4ERR_STALE_CLIENTID):
        after.sm.renew(c)
    with pytest.raises(E.NFS4ERR_STALE_STATEID):
        after.sm.check_io_stateid(sid, b"f", write=False)
    with pytest.raises(E.NFS4ERR_STALE_STATEID):
        after.sm.owner_for_stateid(sid)


# -- admin ----------------------------------------------------------------------------------


def test_revoke_client_gives_admin_revoked_for_stateids() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f", access=3, deny=3)
    assert w.sm.revoke_client(c)
    with pytest.raises(E.NFS4ERR_ADMIN_REVOKED):
        w.sm.check_io_stateid(sid, b"f", write=True)
    with pytest.raises(E.NFS4ERR_ADMIN_REVOKED):
        w.sm.owner_for_stateid(sid)
    with pytest.raises(E.NFS4ERR_EXPIRED):
        w.sm.renew(c)
    other = new_client(w.sm, b"other")
    open_confirmed(w.sm, other, b"oo", b"f", access=3, deny=3)
    assert not w.sm.revoke_client(c)


def test_client_list_reports_lease_and_counts() -> None:
    w = make_world()
    c = new_client(w.sm)
    sid = open_confirmed(w.sm, c, b"oo", b"f")
    w.sm.lock_new(sid, b"lo", 1, b"f", 2, 0, 10)
    w.sm.setclientid(b"v", b"pending", "root", None, "a")
    w.clock.advance(10)
    infos = {i.ownerid: i for i in w.sm.client_list()}
    assert infos[b"client-A"].confirmed and infos[b"client-A"].opens == 1
    assert infos[b"client-A"].locks == 1
    assert infos[b"client-A"].lease_left == pytest.approx(ENFORCED - 10)
    assert not infos[b"pending"].confirmed
    counts = w.sm.counts()
    assert (counts.clients, counts.unconfirmed_clients, counts.locks) == (1, 1, 1)


def test_client_store_hooks_are_called() -> None:
    events: list[tuple[str, bytes]] = []

    class Store:
        def client_confirmed(self, ownerid: bytes, principal: str) -> None:
            events.append(("confirmed", ownerid))

        def client_removed(self, ownerid: bytes) -> None:
            events.append(("removed", ownerid))

        def may_reclaim(self, ownerid: bytes) -> bool:
            return True

    w = make_world(store=Store())
    c = new_client(w.sm, b"x")
    w.sm.revoke_client(c)
    assert events == [("confirmed", b"x"), ("removed", b"x")]
