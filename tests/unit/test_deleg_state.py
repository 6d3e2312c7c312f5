"""Delegations in the state manager (RFC 7530 §10.2-§10.5): grant rules, conflicts and recalls,
DELEGRETURN, revocation, courtesy, CB_GETATTR arithmetic, reclaims; manual clock, fake hooks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state import Stateid, StateManager
from pynfsd.nfs4.state.delegations import (
    ANYONE,
    BLOOM_BITS,
    BLOOM_PERIOD,
    Recalling,
    RecentConflicts,
    Requester,
)
from pynfsd.nfs4.state.owners import Delegation
from pynfsd.nfs4.state.types import (
    OPEN4_SHARE_ACCESS_BOTH,
    OPEN4_SHARE_ACCESS_READ,
    OPEN4_SHARE_ACCESS_WRITE,
)
from tests.clock import ManualClock
from tests.unit.state_support import ENFORCED, World, make_world, new_client, open_confirmed

READ, WRITE, BOTH = OPEN4_SHARE_ACCESS_READ, OPEN4_SHARE_ACCESS_WRITE, OPEN4_SHARE_ACCESS_BOTH
F, G = b"file-F", b"file-G"


@dataclass
class FakeHooks:
    """The callback side: which paths are up or down; what was recalled and what ended."""

    up: set[int] = field(default_factory=set)
    down: set[int] = field(default_factory=set)
    recalled: list[Delegation] = field(default_factory=list)
    ended_: list[Delegation] = field(default_factory=list)

    def callback_up(self, clientid: int) -> bool:
        return clientid in self.up

    def callback_down(self, clientid: int) -> bool:
        return clientid in self.down

    def recall(self, deleg: Delegation) -> None:
        self.recalled.append(deleg)

    def ended(self, deleg: Delegation) -> None:
        self.ended_.append(deleg)


@dataclass
class Setup:
    w: World
    hooks: FakeHooks
    a: int
    b: int

    @property
    def sm(self) -> StateManager:
        return self.w.sm

    def open(self, clientid: int, file_key: bytes, access: int, owner: bytes = b"o") -> Delegation | None:
        """OPEN as the op layer runs it: break conflicts, open, then grant."""
        who = Requester(clientid)
        self.sm.delegations.break_(file_key, bool(access & WRITE), who)
        open_confirmed(self.sm, clientid, owner + file_key, file_key, access)
        client = self.sm.clients.confirmed[clientid]
        return self.sm.delegations.grant(client, file_key, access, 7, 100)


    def delegated(self, access: int) -> Delegation:
        d = self.open(self.a, F, access)
        assert d is not None
        return d

    def recalled(self, access_a: int, access_b: int) -> Delegation:
        """A holds a delegation of F that B's OPEN with `access_b` is recalling."""
        d = self.delegated(access_a)
        with pytest.raises(Recalling):
            self.open(self.b, F, access_b)
        return d


def setup(**kw: object) -> Setup:
    hooks = FakeHooks()
    w = make_world(delegation_hooks=hooks, **kw)
    a = new_client(w.sm, b"client-A")
    b = new_client(w.sm, b"client-B")
    hooks.up |= {a, b}
    return Setup(w, hooks, a, b)


# ------------------------------------------------------------------ grant policy


def test_read_open_gets_a_read_delegation_when_the_path_is_up() -> None:
    s = setup()
    d = s.open(s.a, F, READ)
    assert d is not None and not d.write and d.file_key == F
    assert d.stateid() == Stateid(1, d.stateid().other)
    assert s.sm.counts().delegations == 1 and s.sm.client_list()[0].delegations == 1


def test_write_open_gets_a_write_delegation() -> None:
    s = setup()
    d = s.open(s.a, F, BOTH)
    assert d is not None and d.write and (d.change, d.size) == (7, 100)
    d2 = s.open(s.b, G, WRITE)
    assert d2 is not None and d2.write


@pytest.mark.parametrize("state", ["unknown", "down"])
def test_no_delegation_without_an_up_callback_path(state: str) -> None:
    s = setup()
    s.hooks.up.discard(s.a)
    if state == "down":
        s.hooks.down.add(s.a)
    assert s.open(s.a, F, READ) is None


def test_read_delegations_are_shared_but_refused_beside_another_clients_writer() -> None:
    s = setup()
    assert s.open(s.a, F, READ) is not None
    assert s.open(s.b, F, READ) is not None  # both hold read delegations
    c = new_client(s.sm, b"client-C")
    s.hooks.up.add(c)
    open_confirmed(s.sm, c, b"w", G, WRITE)  # C writes G
    client_a = s.sm.clients.confirmed[s.a]
    assert s.sm.delegations.grant(client_a, G, READ, 1, 1) is None


def test_write_delegation_refused_when_another_client_has_the_file_open() -> None:
    s = setup()
    open_confirmed(s.sm, s.b, b"r", F, READ)
    assert s.open(s.a, F, BOTH) is None
    # the client's own other opens do not stop it
    open_confirmed(s.sm, s.a, b"mine", G, READ)
    assert s.open(s.a, G, BOTH) is not None


def test_no_second_delegation_of_a_file_to_one_client() -> None:
    s = setup()
    assert s.open(s.a, F, READ) is not None
    assert s.open(s.a, F, READ, owner=b"other-owner") is None


def test_turned_off_and_in_grace_nothing_is_granted() -> None:
    s = setup()
    s.sm.delegations.enabled = False
    assert s.open(s.a, F, READ) is None
    grace = [True]
    s2 = setup(in_grace=lambda: grace[0])
    client = s2.sm.clients.confirmed[s2.a]
    assert s2.sm.delegations.grant(client, F, READ, 1, 1) is None
    grace[0] = False
    assert s2.sm.delegations.grant(client, F, READ, 1, 1) is not None


def test_per_client_and_global_limits() -> None:
    s = setup()
    s.sm.delegations.max_per_client = 2
    s.sm.delegations.max_total = 3
    assert s.open(s.a, b"f1", READ) and s.open(s.a, b"f2", READ)
    assert s.open(s.a, b"f3", READ) is None  # A is at its limit
    assert s.open(s.b, b"f4", READ) is not None
    assert s.open(s.b, b"f5", READ) is None  # all three are out
    assert s.sm.delegations.count == 3


def test_a_recently_conflicted_file_gets_no_delegation_for_a_while() -> None:
    s = setup()
    d = s.recalled(READ, WRITE)
    s.sm.delegations.delegreturn(d.stateid(), F)
    client_a = s.sm.clients.confirmed[s.a]
    assert s.sm.delegations.grant(client_a, F, READ, 1, 1) is None  # F conflicted recently
    assert s.sm.delegations.grant(client_a, G, READ, 1, 1) is not None  # another file: fine
    s.w.clock.advance(2 * BLOOM_PERIOD)
    assert s.sm.delegations.grant(client_a, F, READ, 1, 1) is not None


def test_recent_conflicts_decay_and_keep_a_fixed_size() -> None:
    clock = ManualClock()
    r = RecentConflicts(clock)
    for i in range(10000):
        r.add(b"fh-%d" % i)
    assert b"fh-1" in r
    assert all(v < (1 << BLOOM_BITS) for v in r._sets)  # two words of BLOOM_BITS bits
    clock.advance(BLOOM_PERIOD)
    r.add(b"new")
    assert b"fh-1" in r  # still in the older filter
    clock.advance(BLOOM_PERIOD)
    assert b"fh-1" not in r and b"new" in r
    clock.advance(BLOOM_PERIOD)
    assert b"new" not in r


# ------------------------------------------------------------------ conflicts and recall


def test_another_clients_write_open_recalls_a_read_delegation_once() -> None:
    s = setup()
    d = s.delegated(READ)
    s.open(s.b, F, READ)  # reading does not conflict (B gets its own read delegation)
    assert s.hooks.recalled == []
    with pytest.raises(Recalling) as e:
        s.open(s.b, F, WRITE, owner=b"w")
    assert e.value.status == E.NFS4ERR_DELAY.status and e.value.delegations == (d,)
    with pytest.raises(Recalling):
        s.open(s.b, F, WRITE, owner=b"w")
    assert s.hooks.recalled == [d]  # one CB_RECALL, however often B retries
    s.sm.delegations.delegreturn(d.stateid(), F)
    assert s.hooks.ended_ == [d]
    s.open(s.b, F, WRITE, owner=b"w")  # B's own read delegation is no conflict


def test_any_open_of_another_client_recalls_a_write_delegation() -> None:
    s = setup()
    d = s.recalled(BOTH, READ)
    assert s.hooks.recalled == [d]


def test_the_holder_never_conflicts_with_its_own_delegation() -> None:
    s = setup()
    s.delegated(BOTH)
    s.open(s.a, F, READ, owner=b"second-owner")
    s.sm.delegations.break_(F, True, Requester(s.a))
    holder = s.sm.clients.confirmed[s.a]
    by_address = Requester(None, holder.client_addr, holder.principal)
    s.sm.delegations.break_(F, True, by_address)  # a REMOVE of its own, by address
    assert s.hooks.recalled == []
    with pytest.raises(Recalling):
        s.sm.delegations.break_(F, True, Requester(None, "10.9.9.9", holder.principal))
    assert Requester(None, holder.client_addr, None).owns(holder)  # GETATTR: address alone
    assert not Requester(None, holder.client_addr, "sys:1000").owns(holder)


def test_special_stateid_reads_break_write_delegations_only() -> None:
    s = setup()
    r = s.open(s.a, F, READ)
    assert r is not None
    s.sm.delegations.break_(F, False, ANYONE)  # an anonymous READ: no conflict
    with pytest.raises(Recalling):
        s.sm.delegations.break_(F, True, ANYONE)  # an anonymous WRITE
    w = s.open(s.b, G, BOTH)
    with pytest.raises(Recalling) as e:
        s.sm.delegations.break_(G, False, ANYONE)
    assert e.value.delegations == (w,)


def test_an_ignored_recall_is_revoked_after_the_lease() -> None:
    s = setup()
    d = s.recalled(READ, WRITE)
    s.w.clock.advance(ENFORCED - 1)
    s.sm.renew(s.a)  # A is alive, it just does not return the delegation
    s.sm.renew(s.b)
    with pytest.raises(Recalling):
        s.sm.delegations.break_(F, True, Requester(s.b))
    s.w.clock.advance(1)
    s.open(s.b, F, WRITE)  # revoked: B proceeds
    assert s.hooks.ended_ == [d] and not s.sm.clients.confirmed[s.a].delegations
    assert (s.sm.delegations.recalls, s.sm.delegations.revoked) == (1, 1)  # the metrics' counts
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        s.sm.check_io_stateid(d.stateid(), F, False)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        s.sm.delegations.delegreturn(d.stateid(), F)


def test_the_sweep_revokes_recalls_outstanding_past_the_lease() -> None:
    s = setup()
    d = s.recalled(READ, WRITE)
    s.w.clock.advance(ENFORCED / 2)
    s.sm.renew(s.a)
    s.sm.renew(s.b)
    s.sm.sweep()
    assert s.sm.delegations.count == 1
    s.w.clock.advance(ENFORCED / 2)
    s.sm.renew(s.a)
    s.sm.sweep()
    assert s.sm.delegations.count == 0 and s.hooks.ended_ == [d]


def test_path_down_renew_answers_cb_path_down_and_the_delegation_is_revoked() -> None:
    s = setup()
    s.delegated(READ)
    s.sm.renew(s.a)
    s.hooks.up.discard(s.a)
    s.hooks.down.add(s.a)  # the recall failed on the path
    with pytest.raises(Recalling):
        s.open(s.b, F, WRITE)
    with pytest.raises(E.NFS4ERR_CB_PATH_DOWN):
        s.sm.renew(s.a)
    s.sm.renew(s.b)  # B holds no delegation: its path does not matter
    s.w.clock.advance(ENFORCED - 1)
    s.sm.renew(s.b)
    with pytest.raises(E.NFS4ERR_CB_PATH_DOWN):
        s.sm.renew(s.a)  # the client renews (and keeps hearing the path is down)
    s.w.clock.advance(1)
    s.open(s.b, F, WRITE)  # revoked a lease after the recall: B proceeds
    assert s.sm.delegations.count == 0 and s.a in s.sm.clients.confirmed


def test_a_courteous_holder_is_cancelled_by_a_conflict_without_recall() -> None:
    s = setup()
    d = s.delegated(READ)
    s.w.clock.advance(ENFORCED / 2)
    s.sm.renew(s.b)
    s.w.clock.advance(ENFORCED / 2 + 1)
    s.sm.renew(s.b)
    s.sm.sweep()  # A is now courteous: it holds state
    assert [c.courteous for c in s.sm.client_list()] == [True, False]
    s.open(s.b, F, WRITE)
    assert s.hooks.recalled == [] and s.a not in s.sm.clients.confirmed
    with pytest.raises(E.NFS4ERR_EXPIRED):
        s.sm.check_io_stateid(d.stateid(), F, False)


def test_a_client_with_only_a_delegation_is_courteous() -> None:
    s = setup()
    s.delegated(READ)
    holder = s.sm.clients.confirmed[s.a]
    s.sm.close(holder.open_owners[b"o" + F].opens[F].stateid(), F)
    s.w.clock.advance(ENFORCED + 1)
    s.sm.sweep()
    assert s.a in s.sm.clients.confirmed  # kept: it holds a delegation
    s.sm.renew(s.a)  # came back
    assert holder.delegations


def test_revoking_a_client_drops_its_delegations() -> None:
    s = setup()
    d = s.delegated(READ)
    assert s.sm.revoke_client(s.a)
    assert s.sm.delegations.count == 0 and s.hooks.ended_ == [d]
    assert F not in s.sm.delegations.by_file
    with pytest.raises(E.NFS4ERR_ADMIN_REVOKED):
        s.sm.delegations.delegreturn(d.stateid(), F)


# ------------------------------------------------------------------ stateids


def test_delegation_stateids_for_io() -> None:
    s = setup()
    r = s.open(s.a, F, READ)
    w = s.open(s.b, G, BOTH)
    assert r is not None and w is not None
    s.sm.check_io_stateid(r.stateid(), F, False)
    with pytest.raises(E.NFS4ERR_OPENMODE):
        s.sm.check_io_stateid(r.stateid(), F, True)
    s.sm.check_io_stateid(w.stateid(), G, True)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        s.sm.check_io_stateid(w.stateid(), F, False)  # another file
    with pytest.raises(E.NFS4ERR_OLD_STATEID):
        s.sm.check_io_stateid(Stateid(0, w.stateid().other), G, False)


def test_delegreturn_errors() -> None:
    s = setup()
    d = s.delegated(READ)
    sid = d.stateid()
    open_sid = s.sm.clients.confirmed[s.a].open_owners[b"o" + F].opens[F].stateid()
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        s.sm.delegations.delegreturn(open_sid, F)  # not a delegation stateid
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        s.sm.delegations.delegreturn(sid, G)  # another file
    with pytest.raises(E.NFS4ERR_OLD_STATEID):
        s.sm.delegations.delegreturn(Stateid(0, sid.other), F)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        s.sm.delegations.delegreturn(Stateid(2, sid.other), F)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        s.sm.delegations.delegreturn(Stateid(1, bytes(12)), F)  # special
    other_boot = make_world(b"boot-2").sm
    with pytest.raises(E.NFS4ERR_STALE_STATEID):
        other_boot.delegations.delegreturn(sid, F)
    s.sm.delegations.delegreturn(sid, F)
    with pytest.raises(E.NFS4ERR_BAD_STATEID):
        s.sm.delegations.delegreturn(sid, F)  # returned already


# ------------------------------------------------------------------ CB_GETATTR, reclaim


def test_cb_getattr_change_arithmetic() -> None:
    s = setup()
    d = s.open(s.a, F, BOTH)  # granted at change 7, size 100
    assert d is not None
    dels = s.sm.delegations
    assert dels.modified(d, 100, 7, 1000) is None  # not modified: the server's values hold
    assert dels.modified(d, 150, 7, 2000) == (150, 8, 2000)  # modified: change above the server's
    assert dels.modified(d, 150, 7, 3000) == (150, 8, 2000)  # the same report: the same answer
    assert dels.modified(d, 200, 9, 4000) == (200, 9, 4000)  # a new change: bumped again, now
    assert dels.write_delegation(F, Requester(s.b)) is d
    assert dels.write_delegation(F, Requester(s.a)) is None  # the holder asks itself


def test_reclaim_grants_whatever_the_path_with_recall_when_down() -> None:
    s = setup()
    client = s.sm.clients.confirmed[s.a]
    s.hooks.up.discard(s.a)
    s.sm.delegations.max_per_client = 0
    d, recall = s.sm.delegations.reclaim(client, F, True, 3, 4)
    assert d.write and recall
    again, _ = s.sm.delegations.reclaim(client, F, True, 3, 4)
    assert again is d
    s.hooks.up.add(s.a)
    _, recall = s.sm.delegations.reclaim(client, G, False, 3, 4)
    assert not recall
