"""A flood of distinct AUTH_SYS credentials against a real server process: the decoded
credentials it remembers stay within `DEFAULT_MAX_CREDENTIALS` (the process's RSS does not
grow with the flood), every call is still answered under its own credential, and another
client is served."""

from __future__ import annotations

from pathlib import Path

import pytest

from pynfsd.client.nfs4 import decode_compound, encode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.auth import DEFAULT_MAX_CREDENTIALS
from pynfsd.rpc.client import AuthSysCred, decode_reply, encode_call
from pynfsd.rpc.record import encode_record
from tests.serverproc import BlockingRpc, ServerProcess, lookup_path

MACHINE = "m" * 255  # the largest credential AUTH_SYS allows: 255-byte name, 16 gids
GIDS = tuple(range(1000, 1016))


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    path.chmod(0o777)  # every flooded uid may make its directory
    return path


def flood(srv: ServerProcess, uids: range, args: bytes | None = None) -> list[bytes]:
    """One call per uid (NULL, or a COMPOUND of `args`), pipelined 64 at a time; the results."""
    proc = 0 if args is None else N.NFSPROC4_COMPOUND
    out: list[bytes] = []
    with BlockingRpc(srv.port) as conn:
        for start in range(uids.start, uids.stop, 64):
            batch = range(start, min(start + 64, uids.stop))
            conn.sock.sendall(b"".join(encode_record(encode_call(
                uid, N.NFS4_PROGRAM, N.NFS_V4, proc, args or b"",
                AuthSysCred(uid, uid, GIDS, MACHINE).opaque_auth())) for uid in batch))
            for uid in batch:
                xid, results = decode_reply(conn.recv_record())
                assert xid == uid
                out.append(results)
    return out


def test_a_flood_of_distinct_credentials_stays_within_the_bound(
    server: ServerProcess, export: Path
) -> None:
    flood(server, range(100_000, 100_000 + 2 * DEFAULT_MAX_CREDENTIALS))  # the bound reached
    rss_before = server.rss_kib()
    calls = 20 * DEFAULT_MAX_CREDENTIALS  # ~24 MiB if each were kept (~1.2 KiB apiece)
    flood(server, range(200_000, 200_000 + calls))
    rss_growth = server.rss_kib() - rss_before
    assert rss_growth < 8 * 1024, f"RSS grew {rss_growth} KiB"

    # Each caller is still itself: a directory made under a credential is owned by its uid,
    # for one remembered (the last of the flood) and one forgotten long ago (the first).
    for uid in (200_000 + calls - 1, 200_000):
        name = f"d{uid}".encode()
        ops = [*lookup_path(export), op.mkdir(name)]
        (res,) = flood(server, range(uid, uid + 1), encode_compound(ops))
        assert decode_compound(res).status == N.NFS4_OK
        assert (export / name.decode()).stat().st_uid == uid
    server.healthy()
