"""Metrics, sans-IO: the hot-path counters, the snapshot of the server's parts, the collector's
metric families and text, and the HTTP endpoint's decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pynfsd.admin import format_status
from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N
from pynfsd.metrics.collector import render
from pynfsd.metrics.http import decide, parse_address
from pynfsd.metrics.snapshot import Sources, headline, op_names, take
from pynfsd.metrics.stats import LATENCY_BUCKETS, Stats
from pynfsd.nfs4.state import StateManager
from pynfsd.rpc.auth import AuthRegistry
from pynfsd.rpc.client import AuthSysCred, encode_call
from pynfsd.rpc.drc import ReplyCache
from pynfsd.rpc.server import ConnInfo, RpcServer
from tests.clock import ManualClock
from tests.metrics_support import parse
from tests.unit.nfs4_fixtures import World, export_root, make_world, new_clientid, open_file


def test_latency_buckets_are_upper_bounds_inclusive() -> None:
    stats = Stats(ManualClock())
    for seconds in (0.0, LATENCY_BUCKETS[0], LATENCY_BUCKETS[0] * 1.01, 99.0):
        stats.op_done(N.OP_GETATTR, N.NFS4_OK, seconds)
    lat = stats.ops[(N.OP_GETATTR, N.NFS4_OK)]
    assert lat.count == 4 and sum(lat.buckets) == 4
    assert lat.buckets[0] == 2 and lat.buckets[1] == 1 and lat.buckets[-1] == 1


def test_stats_copy_does_not_move_with_the_counters() -> None:
    clock = ManualClock()
    stats = Stats(clock)
    stats.op_done(N.OP_GETATTR, N.NFS4_OK, 0.001)
    stats.call(1)
    copy = stats.copy()
    stats.op_done(N.OP_GETATTR, N.NFS4_OK, 0.001)
    stats.call(1)
    stats.write_bytes += 10
    assert copy.ops[(N.OP_GETATTR, N.NFS4_OK)].count == 1 and copy.calls == {1: 1}
    assert copy.write_bytes == 0 and copy.ops_total() == 1


def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def sources(w: World, drc: ReplyCache | None = None) -> Sources:
    srv = w.server
    return Sources(srv.services.stats, srv.state, srv.grace, drc, None, None, op_names(srv.ops))


async def test_compound_ops_are_counted_by_op_and_status(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.client()
    root = await export_root(c, b"export")
    await c.compound([op.putfh(root), op.lookup(b"missing")])
    cid = await new_clientid(c)
    o = await open_file(c, root, cid, b"owner", b"f")
    await c.check([op.putfh(o.fh), op.write(o.stateid, 0, b"x" * 1000)])
    await c.check([op.putfh(o.fh), op.read(o.stateid, 0, 4096)])
    snap = take(sources(w))
    ops = snap.stats.ops
    assert ops[(N.OP_LOOKUP, N.NFS4ERR_NOENT)].count == 1
    assert ops[(N.OP_WRITE, N.NFS4_OK)].count == 1 and ops[(N.OP_READ, N.NFS4_OK)].count == 1
    assert ops[(N.OP_OPEN, N.NFS4_OK)].count == 1
    assert snap.stats.write_bytes == 1000 and snap.stats.read_bytes == 1000
    assert snap.clients == {"active": 1, "courtesy": 0, "expired": 0, "unconfirmed": 0}
    assert snap.state["opens"] == 1
    w.close()


async def test_clients_by_lease_state(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.client()
    root = await export_root(c, b"export")
    holder = await new_clientid(c, b"holder")
    await open_file(c, root, holder, b"owner", b"f")
    await new_clientid(c, b"idle")
    await c.check([op.setclientid(b"u" * 8, b"unconfirmed")])
    w.clock.advance(1000)  # both leases lapse: the one with an open is kept in courtesy
    assert take(sources(w)).clients == {"active": 0, "courtesy": 1, "expired": 1,
                                        "unconfirmed": 1}
    assert w.server.expire_lapsed() == 1
    snap = take(sources(w))
    assert snap.clients["expired"] == 0 and snap.clients_dropped == {"expired": 1}
    w.close()


async def test_rpc_calls_by_flavour_and_auth_errors() -> None:
    stats = Stats()
    rpc = RpcServer(AuthRegistry.default(), stats=stats)
    conn = ConnInfo(("127.0.0.1", 1))
    sys_cred = AuthSysCred(1, 1).opaque_auth()
    for xid in range(3):
        await rpc.handle_record(encode_call(xid, 100003, 4, 0, b"", cred=sys_cred), conn)
    await rpc.handle_record(encode_call(9, 100003, 4, 0, b""), conn)  # AUTH_NONE
    bad = encode_call(10, 100003, 4, 0, b"", cred=sys_cred)
    bad = bad[:24] + (77).to_bytes(4, "big") + bad[28:]  # an unknown auth flavour
    await rpc.handle_record(bad, conn)
    assert stats.calls == {1: 3, 0: 1} and stats.auth_errors == {77: 1}


async def test_rendered_text_matches_the_counters(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.client()
    root = await export_root(c, b"export")
    for _ in range(5):
        await c.check([op.putfh(root), op.getattr(N.FATTR4_SIZE)])
    drc = ReplyCache()
    drc.stats["hits"] += 2
    w.server.services.stats.call(1)
    snap = take(sources(w, drc))
    m = parse(render(snap))
    getattr_ok = (("op", "GETATTR"), ("status", "NFS4_OK"))
    assert m["pynfsd_operations_total"][getattr_ok] == 5
    assert m["pynfsd_operation_duration_seconds_count"][getattr_ok] == 5
    buckets = {dict(k)["le"]: v for k, v in m["pynfsd_operation_duration_seconds_bucket"].items()
               if ("op", "GETATTR") in k}
    values = [buckets[repr(b)] for b in LATENCY_BUCKETS] + [buckets["+Inf"]]
    assert values == sorted(values) and values[-1] == 5  # cumulative
    assert m["pynfsd_rpc_calls_total"][(("flavor", "sys"),)] == 1
    assert m["pynfsd_drc_hits_total"][()] == 2
    assert m["pynfsd_clients"][(("state", "active"),)] == 0
    assert m["pynfsd_grace_active"][()] in (0, 1)
    assert m["process_resident_memory_bytes"][()] > 0
    assert "pynfsd_gss_contexts" not in m  # no RPCSEC_GSS flavour here
    assert m["pynfsd_delegations"][()] == 0
    assert m["pynfsd_delegation_recalls_total"][()] == 0
    assert m["pynfsd_delegations_revoked_total"][()] == 0
    w.close()


async def test_status_shows_the_headline(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.client()
    await export_root(c, b"export")
    w.server.services.stats.call(390004)
    head = headline(take(sources(w)))
    assert head["ops"] > 0 and head["rpc_calls"] == {"krb5i": 1}
    text = format_status({"version": "x", "uptime": 1, "clients": 0, "unconfirmed_clients": 0,
                          "opens": 0, "locks": 0, "lease_time": 90, "collisions": 0,
                          "metrics": head})
    assert f"operations: {head['ops']}; RPC calls by flavour: krb5i 1" in text
    assert "clients by state: 0 active, 0 courtesy, 0 expired, 0 unconfirmed" in text
    w.close()


def test_http_decisions() -> None:
    assert decide(b"GET /metrics HTTP/1.1\r\nHost: x") == (200, True)
    assert decide(b"GET /metrics?x=1 HTTP/1.0") == (200, True)
    assert decide(b"HEAD /metrics HTTP/1.1") == (200, False)
    assert decide(b"GET / HTTP/1.1") == (404, True)
    assert decide(b"POST /metrics HTTP/1.1") == (405, True)
    assert decide(b"GET /metrics") == (400, True)
    assert decide(b"\x00\xff garbage") == (400, True)


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9049") == ("127.0.0.1", 9049)
    assert parse_address("[::1]:9") == ("::1", 9)
    assert parse_address("9049") == ("127.0.0.1", 9049)
    for bad in ("host:", ":9049", "h:99999", "h:x"):
        try:
            parse_address(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


async def test_gss_establishments_rejections_and_calls_by_pseudoflavour() -> None:
    from pynfsd.metrics.snapshot import gss_of
    from pynfsd.rpc.client import AuthRejected, decode_reply_verf
    from pynfsd.rpc.flavors import SVC_INTEGRITY
    from pynfsd.rpc.gss_initiator import GssClientError
    from tests.unit.test_rpcsec_gss import ECHO, PROG, VERS, make

    s = make()
    a = await s.auth()
    a.service = SVC_INTEGRITY
    assert await s.echo(a, b"x") == b"x"
    payload = a.data_call(s.wire.next_xid(), 9, PROG, VERS, ECHO, b"x")
    with pytest.raises(AuthRejected):  # a tampered header
        decode_reply_verf(await s.wire.call_record(0, payload[:20] + b"\0\0\0\2" + payload[24:]))
    with pytest.raises(GssClientError):
        await s.auth(first=b"bad")
    rpc = s.wire.server
    gss = gss_of(rpc.auth)
    assert gss is s.flavour
    snap = take(Sources(rpc.stats, make_world_state(), gss=gss))
    m = parse(render(snap))
    assert m["pynfsd_gss_contexts"][()] == 1
    assert m["pynfsd_gss_contexts_established_total"][()] == 1
    assert m["pynfsd_gss_rejections_total"][(("reason", "bad_header_mic"),)] == 1
    assert m["pynfsd_gss_rejections_total"][(("reason", "init_failed"),)] == 1
    assert m["pynfsd_rpc_calls_total"][(("flavor", "krb5i"),)] == 1
    assert m["pynfsd_rpc_auth_errors_total"][(("flavor", "rpcsec_gss"),)] == 1
    assert gss_of(AuthRegistry.default()) is None


def make_world_state() -> StateManager:
    return StateManager(ManualClock(), lambda n: b"\1" * n, server_boot_id=b"boot")


async def test_an_illegal_op_is_counted(tmp_path: Path) -> None:
    w = world(tmp_path)
    c = w.client()
    res = await c.compound([op.putrootfh(), N.nfs_argop4(N.OP_ILLEGAL, None)])
    assert res.status == N.NFS4ERR_OP_ILLEGAL
    m = parse(render(take(sources(w))))
    assert m["pynfsd_operations_total"][(("op", "ILLEGAL"), ("status", "NFS4ERR_OP_ILLEGAL"))] == 1
    assert m["pynfsd_operations_total"][(("op", "PUTROOTFH"), ("status", "NFS4_OK"))] == 1
    w.close()
