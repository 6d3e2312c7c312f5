"""The sans-IO parts of cluster recovery: the grace epochs (begin, join, lift), the record and
node formats, which clients a node that needs grace waits for, `ClusterGrace` as the state
manager's grace tracker, `pynfsd status` lines, and `etcd://` URLs."""

from __future__ import annotations

import pytest

from pynfsd.nfs4.state.store import record_id, record_name
from pynfsd.recovery import cluster as C
from pynfsd.recovery.etcdkv import EtcdUrl, grpc_target
from tests.clock import ManualClock


def test_begin_starts_a_new_epoch_or_joins_the_running_one() -> None:
    db = C.GraceDb()
    assert not db.in_grace and db.current == 1
    first = C.begin(db, now=100.0, duration=90)
    assert (first.current, first.recovery, first.until) == (2, 1, 190.0)
    joined = C.begin(first, now=150.0, duration=90)  # a second node starts during grace
    assert (joined.current, joined.recovery, joined.until) == (2, 1, 240.0)
    assert C.begin(joined, now=100.0, duration=10).until == 240.0  # never earlier
    after = C.lifted(joined)
    assert not after.in_grace and after.current == 2
    assert C.begin(after, now=300.0, duration=90).current == 3


def test_grace_lifts_when_no_node_needs_it_or_time_is_over() -> None:
    db = C.begin(C.GraceDb(), now=0.0, duration=90)
    assert not C.may_lift(db, ["a"], now=10.0)
    assert C.may_lift(db, [], now=10.0)
    assert C.may_lift(db, ["a"], now=90.0)
    assert not C.may_lift(C.lifted(db), [], now=10.0)


def test_formats_round_trip_and_reject_garbage() -> None:
    db = C.GraceDb(3, 2, 12.5)
    assert C.GraceDb.decode(db.encode()) == db
    assert C.GraceDb.decode(None) == C.GraceDb()
    rec = C.Record(b"\x00Linux NFSv4.0 host", "nfs/host@REALM", 1.5, "a", 2)
    assert C.Record.decode(rec.encode()) == rec
    with pytest.raises(ValueError):
        C.Record.decode(b'{"version": 2}')
    info = C.NodeInfo("a", "grace", 2, True, 42, 1.0, 3)
    assert C.NodeInfo.decode(info.encode()) == info
    assert record_id(b"x") != record_id(b"y") and len(record_id(b"x")) == 32
    assert record_name(b"x") == record_id(b"x") + ".rec"  # the file store's name for it


@pytest.mark.parametrize("data", [
    b"", b"[]", b"null", b"{", b'"text"', b"{}", b'{"version": 1}',
    b'{"version": 1, "ownerid": 5, "principal": "p", "time": 1, "node": "a", "epoch": 1}',
    b'{"version": 1, "ownerid": "zz", "principal": "p", "time": 1, "node": "a", "epoch": 1}',
    b'{"version": 1, "ownerid": "00", "principal": "p", "time": null, "node": "a", "epoch": 1}',
    b'{"name": "a", "state": "serving", "epoch": [1]}', b'{"current": "x", "recovery": 0}',
    b"\xff\xfe",
])
def test_garbage_in_etcd_is_a_value_error_for_every_decoder(data: bytes) -> None:
    """What another writer left under the prefix is logged and ignored, never a crash."""
    for decode in (C.Record.decode, C.NodeInfo.decode):
        with pytest.raises(ValueError):
            decode(data)
    if data:  # an absent grace record is the initial one
        with pytest.raises(ValueError):
            C.GraceDb.decode(data)


def test_expected_clients_are_our_own_and_those_of_departed_nodes() -> None:
    records = [C.Record(b"mine", "p", 0, "a", 1), C.Record(b"of-dead-c", "p", 0, "c", 1),
               C.Record(b"of-live-b", "p", 0, "b", 1), C.Record(b"new", "p", 0, "a", 2)]
    assert C.expected_clients(records, "a", ["a", "b"], epoch=2) == [b"mine", b"of-dead-c"]


def test_cluster_grace_tracks_local_reclaims_until_done() -> None:
    clock = ManualClock()
    g = C.ClusterGrace(clock, duration=60, lease=5)
    assert not g.in_grace() and not g.wants_lift()
    g.observe(C.begin(C.GraceDb(), now=clock(), duration=60))
    assert g.status()["seconds_left"] == 60
    g.needs([b"one", b"two"])
    assert g.in_grace() and not g.wants_lift()
    for ownerid in (b"one", b"two"):
        g.client_confirmed(ownerid)
        g.reclaimed(ownerid)
    g.non_reclaim(b"one")
    assert not g.wants_lift()
    g.client_gone(b"two")
    assert g.wants_lift()
    assert g.in_grace()  # the cluster's grace lasts until some node lifts it
    st = g.status()
    assert st["in_grace"] and st["reclaimed"] == 2 and st["epoch"] == 2
    g.observe(C.lifted(g.db))
    assert not g.in_grace() and not g.need and g.local is None


def test_an_older_grace_record_read_late_changes_nothing() -> None:
    g = C.ClusterGrace(ManualClock(), duration=60, lease=5)
    old = C.GraceDb()
    g.observe(C.begin(old, now=0.0, duration=60))
    g.needs([b"client"])
    g.observe(old)  # a tick's read from before the new epoch
    assert g.in_grace() and g.need and g.local is not None


def test_a_node_that_needs_grace_gives_up_when_its_time_is_over() -> None:
    clock = ManualClock()
    g = C.ClusterGrace(clock, duration=60, lease=5)
    g.observe(C.begin(C.GraceDb(), now=0.0, duration=60))
    g.needs([b"never-comes-back"])
    clock.advance(59)
    assert not g.wants_lift()
    clock.advance(1)
    assert g.wants_lift()


def test_status_lines() -> None:
    lines = C.format_cluster({
        "url": "etcd://h:2379/p", "node": "a", "epoch": 3, "recovery_epoch": 2,
        "records": 5, "available": False, "last_error": "timeout", "pending_writes": 1,
        "nodes": [{"name": "a", "state": "grace", "epoch": 3, "need": True, "pid": 7,
                   "records": 2}]})
    assert "in grace (recovering epoch 2)" in lines[0] and "UNREACHABLE: timeout" in lines[0]
    assert "1 record change(s) waiting" in lines[1]
    assert lines[2].strip().startswith("node a: grace, epoch 3, needs grace")


def test_etcd_urls() -> None:
    url = EtcdUrl.parse("etcd://127.0.0.1:2379,127.0.0.2:23790,[::1]/site/nfs/")
    assert url.members == (("127.0.0.1", 2379), ("127.0.0.2", 23790), ("::1", 2379))
    assert url.prefix == "/site/nfs" and url.key("grace") == b"/site/nfs/grace"
    assert EtcdUrl.parse(str(url)) == url
    for bad in ("http://h:1/p", "etcd://h:1", "etcd://h:1/", "etcd://h:x/p", "etcd://:1/p",
                "etcd://h:70000/p"):
        with pytest.raises(ValueError):
            EtcdUrl.parse(bad)
    assert grpc_target((("127.0.0.1", 1), ("127.0.0.1", 2))) == ("ipv4:127.0.0.1:1,127.0.0.1", 2)
    assert grpc_target((("::1", 1),)) == ("ipv6:[::1]", 1)


def test_a_fenced_node_grants_no_new_state() -> None:
    from pynfsd.nfs4 import errors as E

    g = C.ClusterGrace(ManualClock(), duration=60, lease=5)
    g.non_reclaim(b"client")  # a member: new state is fine
    g.fenced = True
    with pytest.raises(E.NFS4ERR_DELAY):
        g.non_reclaim(b"client")
    assert "membership lost" in C.format_cluster({"available": False, "fenced": True})[0]
