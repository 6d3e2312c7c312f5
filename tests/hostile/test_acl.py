"""The bounds of ACLs against a real server process: a SETATTR of one ACE past `MAX_ACES`
is NFS4ERR_FBIG (as knfsd's NFS4_ACL_MAX), an ACE count the bytes cannot hold is
NFS4ERR_BADXDR, and a filesystem ACL whose encoding passes `MAX_ACL_BYTES` is left out of
GETATTR (with a warning) instead of growing the reply; the server's memory stays bounded and
other clients are served."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import decode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.acl import MAX_ACES, MAX_ACL_BYTES
from pynfsd.nfs4.bitmap import set_to_bitmap
from tests.serverproc import BlockingRpc, ServerProcess, lookup_path

ANON = N.stateid4(0, b"\0" * 12)
RSS_GROWTH_KIB = 16 << 10
#: One ACE on the wire: ALLOW READ_DATA to OWNER@.
ACE = struct.pack(">IIII", N.ACE4_ACCESS_ALLOWED_ACE_TYPE, 0, N.ACE4_READ_DATA, 6) + b"OWNER@\0\0"


@pytest.fixture
def export(tmp_path: Path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    (path / "f").write_bytes(b"data")
    return path


def _run(srv: ServerProcess, ops: list[N.nfs_argop4]) -> N.COMPOUND4res:
    with BlockingRpc(srv.port) as conn:
        return decode_compound(conn.compound(ops))


def _setattr_acl(count: int, body: bytes) -> N.nfs_argop4:
    attrs = N.fattr4(set_to_bitmap([N.FATTR4_ACL]), struct.pack(">I", count) + body)
    return N.nfs_argop4(N.OP_SETATTR, N.SETATTR4args(ANON, attrs))


def test_one_ace_past_the_bound_is_fbig(server: ServerProcess, export: Path) -> None:
    here = [*lookup_path(export), op.lookup(b"f")]
    before = server.rss_kib()
    res = _run(server, [*here, _setattr_acl(MAX_ACES, ACE * MAX_ACES)])
    assert res.status == N.NFS4_OK
    res = _run(server, [*here, _setattr_acl(MAX_ACES + 1, ACE * (MAX_ACES + 1))])
    assert res.status == N.NFS4ERR_FBIG
    assert res.resarray[-1].resop == N.OP_SETATTR
    res = _run(server, [*here, _setattr_acl(0xFFFFFFFF, ACE * 3)])
    assert res.status == N.NFS4ERR_BADXDR  # a count the bytes cannot hold
    assert server.rss_kib() - before < RSS_GROWTH_KIB
    server.healthy()


@pytest.mark.skipif(shutil.which("setfacl") is None, reason="needs setfacl (scripts/acl-deps.sh)")
def test_a_filesystem_acl_past_the_reply_bound_is_left_out(
    server: ServerProcess, export: Path
) -> None:
    # 400 named users each read-only under a rwx group: a DENY and an ALLOW each (~19 KB)
    entries = "\n".join(f"u:{100000 + i}:r" for i in range(400))
    subprocess.run(["setfacl", "-m", "g::rwx", "-M", "-", str(export / "f")], input=entries,
                   text=True, check=True)  # fmt: skip
    mark = server.log_mark()
    here = [*lookup_path(export), op.lookup(b"f")]
    res = _run(server, [*here, op.getattr(N.FATTR4_ACL, N.FATTR4_ACLSUPPORT, N.FATTR4_MODE)])
    assert res.status == N.NFS4_OK
    got = res.resarray[-1].value.value.obj_attributes
    assert got.attrmask == set_to_bitmap([N.FATTR4_ACLSUPPORT, N.FATTR4_MODE])
    assert len(got.attr_vals) < 64
    server.wait_log(f"encodes past {MAX_ACL_BYTES} bytes", since=mark)
    server.healthy()
