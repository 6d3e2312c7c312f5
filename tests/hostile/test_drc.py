"""The duplicate request cache against a real server process: retransmissions with the same
xid on a new connection get the original reply byte for byte and the operation runs once, a
different caller is never replayed to, and a flood of distinct non-idempotent calls keeps the
cache within --drc-size (its own byte count and the process's RSS) while others are served."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pynfsd import admin
from pynfsd.client.nfs4 import decode_compound, encode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred, decode_reply, encode_call
from pynfsd.rpc.record import encode_record
from tests.serverproc import (
    NFS_PROGRAM,
    NFS_V4,
    NFSPROC4_COMPOUND,
    BlockingRpc,
    ServerProcess,
    lookup_path,
)

ROOT = AuthSysCred(0, 0)
ANON_STATEID = N.stateid4(0, b"\0" * 12)
CAP = 1 << 20  # --drc-size of the flood test
READ_SIZE = 3000  # each flooded reply carries this much file data: under the 4 KiB entry limit


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    (path / "data").write_bytes(b"z" * READ_SIZE)
    return path


def call_record(xid: int, ops: Sequence[N.nfs_argop4], cred: AuthSysCred = ROOT) -> bytes:
    call = encode_call(xid, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, encode_compound(ops),
                       cred.opaque_auth())
    return encode_record(call)


def on_new_connection(srv: ServerProcess, record: bytes) -> bytes:
    """Send one call record on a fresh connection (a new source port); the reply record."""
    with BlockingRpc(srv.port) as conn:
        conn.sock.sendall(record)
        return conn.recv_record()


def status_of(reply: bytes) -> int:
    return decode_compound(decode_reply(reply)[1]).status


def drc_status(srv: ServerProcess) -> dict[str, Any]:
    st = admin.call(str(srv.state_dir), {"cmd": "status"})
    assert isinstance(st["drc"], dict)
    return st["drc"]


def test_retransmitted_mkdir_and_remove_replay_the_first_reply(
    server: ServerProcess, export: Path
) -> None:
    here = lookup_path(export)
    mkdir = call_record(0x5151, [*here, op.mkdir(b"d"), op.getfh()])
    first = on_new_connection(server, mkdir)
    assert status_of(first) == N.NFS4_OK
    assert on_new_connection(server, mkdir) == first  # not NFS4ERR_EXIST
    assert (export / "d").is_dir()

    remove = call_record(0x5152, [*here, op.remove(b"d")])
    first = on_new_connection(server, remove)
    assert status_of(first) == N.NFS4_OK
    assert on_new_connection(server, remove) == first  # not NFS4ERR_NOENT
    assert not (export / "d").exists()

    drc = drc_status(server)
    assert drc["hits"] == 2 and drc["stored"] >= 2
    server.healthy()


def test_the_same_xid_from_another_caller_is_not_replayed(
    server: ServerProcess, export: Path
) -> None:
    ops = [*lookup_path(export), op.mkdir(b"mine")]
    first = on_new_connection(server, call_record(0x6161, ops, ROOT))
    assert status_of(first) == N.NFS4_OK
    other = on_new_connection(server, call_record(0x6161, ops, AuthSysCred(0, 0, (4,))))
    assert status_of(other) == N.NFS4ERR_EXIST  # it ran: another identity gets its own answer
    assert drc_status(server)["hits"] == 0
    server.healthy()


def flood(srv: ServerProcess, calls: int, first_xid: int, ops: Sequence[N.nfs_argop4]) -> None:
    """`calls` distinct (by xid) COMPOUNDs, pipelined 32 at a time on one connection."""
    args = encode_compound(ops)
    cred = ROOT.opaque_auth()
    with BlockingRpc(srv.port) as conn:
        for start in range(first_xid, first_xid + calls, 32):
            batch = range(start, min(start + 32, first_xid + calls))
            conn.sock.sendall(b"".join(
                encode_record(encode_call(x, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args, cred))
                for x in batch))
            for _ in batch:
                assert status_of(conn.recv_record()) == N.NFS4ERR_NOENT


@pytest.mark.parametrize("server", [("--drc-size", str(CAP))], indirect=True)
def test_a_flood_of_distinct_calls_stays_within_the_cap(
    server: ServerProcess, export: Path
) -> None:
    # READ (anonymous stateid) then a REMOVE that fails: a ~3 KiB reply the cache must keep.
    data_fh = [*lookup_path(export / "data"), op.read(ANON_STATEID, 0, READ_SIZE)]
    ops = [*data_fh, *lookup_path(export), op.remove(b"absent")]
    flood(server, 500, 0x10000, ops)  # warm up: the cache is part full, the heap grown
    rss_before = server.rss_kib()
    calls = 8000  # ~26 MiB of replies: 25 times the cap
    flood(server, calls, 0x20000, ops)
    rss_growth = server.rss_kib() - rss_before

    drc = drc_status(server)
    assert drc["max_bytes"] == CAP
    assert CAP - 4096 < drc["bytes"] <= CAP  # full, and never more
    assert drc["evicted_size"] >= calls - drc["entries"]
    assert rss_growth < 8 * 1024, f"RSS grew {rss_growth} KiB"

    last = call_record(0x20000 + calls - 1, ops)  # still cached: replayed
    oldest = call_record(0x20000, ops)  # evicted: runs again
    for record in (last, oldest):
        assert status_of(on_new_connection(server, record)) == N.NFS4ERR_NOENT
    assert drc_status(server)["hits"] == drc["hits"] + 1
    server.healthy()
