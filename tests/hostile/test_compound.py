"""Bounded work per COMPOUND against a real server process (RFC 7530 §13.1.3.4, §15.2): a
COMPOUND of 2,100 READs of 1 MiB, of 250,000 cheap ops and of thousands of PUTROOTFH/GETFH/
GETATTR triples each gets NFS4ERR_RESOURCE at the op that goes past a bound, the server's memory
stays bounded, and another client is served meanwhile and afterwards."""

from __future__ import annotations

import select
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import decode_compound, encode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.attrs import SUPPORTED_ATTRS, WRITE_ONLY_ATTRS, decode_fattr4
from pynfsd.nfs4.server import DEFAULT_MAX_REPLY, REPLY_HEADROOM
from pynfsd.rpc.client import decode_reply, encode_call
from pynfsd.rpc.record import encode_record
from tests.serverproc import (
    NFS_PROGRAM,
    NFS_V4,
    NFSPROC4_COMPOUND,
    BlockingRpc,
    ServerProcess,
    lookup_path,
)

MIB = 1 << 20
ANON = N.stateid4(0, b"\0" * 12)
ALL_ATTRS = sorted(SUPPORTED_ATTRS - WRITE_ONLY_ATTRS)
RSS_GROWTH_KIB = 48 << 10  # a few replies' worth; the unbounded server grew by 2 GiB


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    with open(path / "data", "wb") as f:
        f.truncate(2 * MIB)
    return path


def statuses(res: N.COMPOUND4res) -> list[tuple[int, int]]:
    return [(r.resop, r.value.status) for r in res.resarray]


def compound(srv: ServerProcess, ops: Sequence[N.nfs_argop4]) -> tuple[N.COMPOUND4res, int]:
    """One COMPOUND on a fresh connection: the decoded reply and its encoded size."""
    with BlockingRpc(srv.port) as conn:
        raw = conn.compound(ops)
    return decode_compound(raw), len(raw)


# ------------------------------------------------------------------ reply size


@pytest.mark.parametrize("server", [(), ("--max-compound-ops", "5000")], indirect=True,
                         ids=["default", "ops-5000"])
def test_2100_reads_of_1mib_get_resource_at_the_second(server: ServerProcess, export: Path) -> None:
    here = [*lookup_path(export), op.lookup(b"data")]
    reads = [op.read(ANON, 0, MIB)] * 2100
    assert len(encode_compound([*here, *reads])) < 70_000  # a 67 KB call
    before = server.rss_kib()
    res, size = compound(server, [*here, *reads])
    assert res.status == N.NFS4ERR_RESOURCE
    assert statuses(res)[len(here):] == [(N.OP_READ, N.NFS4_OK), (N.OP_READ, N.NFS4ERR_RESOURCE)]
    assert len(res.resarray[len(here)].value.value.data) == MIB
    assert size <= DEFAULT_MAX_REPLY
    assert server.rss_kib() - before < RSS_GROWTH_KIB
    server.healthy()


@pytest.mark.parametrize("server", [("--max-reply-size", str(256 << 10))], indirect=True)
def test_max_reply_size_option_sets_the_bound_and_the_announced_maxread(
    server: ServerProcess, export: Path
) -> None:
    here = [*lookup_path(export), op.lookup(b"data")]
    res, _ = compound(server, [*here, op.getattr(N.FATTR4_MAXREAD, N.FATTR4_MAXWRITE)])
    got = decode_fattr4(res.resarray[-1].value.value.obj_attributes)
    io = (256 << 10) - REPLY_HEADROOM
    assert (got[N.FATTR4_MAXREAD], got[N.FATTR4_MAXWRITE]) == (io, io)
    res, size = compound(server, [*here, op.read(ANON, 0, io), op.read(ANON, io, io)])
    assert statuses(res)[-2:] == [(N.OP_READ, N.NFS4_OK), (N.OP_READ, N.NFS4ERR_RESOURCE)]
    assert size <= 256 << 10
    server.healthy()


def test_a_write_of_maxwrite_fits_the_record_cap(server: ServerProcess, export: Path) -> None:
    here = [*lookup_path(export), op.lookup(b"data")]
    res, _ = compound(server, [*here, op.getattr(N.FATTR4_MAXWRITE)])
    maxwrite = decode_fattr4(res.resarray[-1].value.value.obj_attributes)[N.FATTR4_MAXWRITE]
    res, _ = compound(server, [*here, op.write(ANON, 0, b"w" * maxwrite), op.getattr(N.FATTR4_SIZE)])
    assert res.status == N.NFS4_OK and res.resarray[-2].value.value.count == maxwrite


# ------------------------------------------------------------------ number of ops


def test_250000_cheap_ops_get_resource_at_op_201(server: ServerProcess) -> None:
    before = server.rss_kib()
    res, _ = compound(server, [op.putrootfh()] * 250_000)
    assert statuses(res) == [(N.OP_PUTROOTFH, N.NFS4_OK)] * 200 + [
        (N.OP_PUTROOTFH, N.NFS4ERR_RESOURCE)
    ]
    ok, _ = compound(server, [op.putrootfh()] * 200)
    assert ok.status == N.NFS4_OK and len(ok.resarray) == 200
    assert server.rss_kib() - before < RSS_GROWTH_KIB
    server.healthy()


@pytest.mark.parametrize("server", [("--max-compound-ops", "300000")], indirect=True)
def test_another_client_is_served_during_a_long_compound(server: ServerProcess) -> None:
    """With the op bound raised, a long COMPOUND yields to the event loop: another client's
    call is answered before the long one is."""
    with BlockingRpc(server.port) as long_conn:
        call = encode_call(1, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND,
                           encode_compound([op.putrootfh()] * 250_000), long_conn.cred)
        long_conn.sock.sendall(encode_record(call))
        time.sleep(0.3)  # let the server start on it (not an assertion)
        server.healthy()
        pending, _, _ = select.select([long_conn.sock], [], [], 0)
        assert not pending, "the long COMPOUND was answered before the other client"
        res = decode_compound(decode_reply(long_conn.recv_record())[1])
        assert res.status == N.NFS4ERR_RESOURCE  # past max_reply: 8 bytes per PUTROOTFH
        assert len(res.resarray) > 100_000


# ------------------------------------------------------------------ triples


@pytest.mark.parametrize("server", [(), ("--max-compound-ops", "20000")], indirect=True,
                         ids=["default", "ops-20000"])
def test_thousands_of_putrootfh_getfh_getattr_triples_are_answered(
    server: ServerProcess,
) -> None:
    triple = [op.putrootfh(), op.getfh(), op.getattr(*ALL_ATTRS)]
    res, size = compound(server, triple * 5000)
    assert res.status == N.NFS4ERR_RESOURCE
    assert all(s == N.NFS4_OK for _, s in statuses(res)[:-1])
    assert size <= DEFAULT_MAX_REPLY
    server.healthy()
