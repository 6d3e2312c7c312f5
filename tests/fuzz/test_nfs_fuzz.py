"""Fuzz a running `pynfsd serve` process with bad COMPOUNDs (RFC 7530 §15.2, §16.2).

Every reply must be GARBAGE_ARGS or a COMPOUND4res the generated decoder accepts, never
NFS4ERR_SERVERFAULT or SYSTEM_ERR, and the connection must survive.  After each test a fresh
client's PUTROOTFH+GETATTR succeeds and the server log holds no traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynfsd.client.nfs4 import decode_compound, encode_compound, op, unchecked
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import GarbageArgsError
from pynfsd.xdr.runtime import Packer
from tests.serverproc import BlockingRpc, ServerProcess, assert_log_clean

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ANON = N.stateid4(0, b"\0" * 12)
NAME_ERRORS = {N.NFS4ERR_BADNAME, N.NFS4ERR_BADCHAR, N.NFS4ERR_NAMETOOLONG, N.NFS4ERR_INVAL, N.NFS4ERR_NOENT}


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "export" / "d").mkdir(parents=True)
    (root / "export" / "f").write_bytes(b"hello\n" * 100)
    return root / "export"


@pytest.fixture(scope="module")
def server(export: Path) -> Iterator[ServerProcess]:
    with ServerProcess([f"{export} *(rw,no_root_squash,insecure,fsid=0)"], export.parent / "state") as srv:
        yield srv


@pytest.fixture()
def conn(server: ServerProcess) -> Iterator[BlockingRpc]:
    mark = server.log_mark()
    with BlockingRpc(server.port) as c:
        yield c
    server.healthy()
    assert_log_clean(server.log_text(since=mark))


@pytest.fixture(scope="module")
def clientid(server: ServerProcess) -> int:
    """A confirmed client id (RFC 7530 §16.33, §16.34) for OPEN templates."""
    with BlockingRpc(server.port) as c:
        res = decode_compound(c.compound([op.setclientid(os.urandom(8), b"fuzz-owner")]))
        ok = res.resarray[0].value.value
        res = decode_compound(c.compound([op.setclientid_confirm(ok.clientid, ok.setclientid_confirm)]))
        assert res.status == N.NFS4_OK
        return int(ok.clientid)


def check_reply(conn: BlockingRpc, args: bytes) -> N.COMPOUND4res | None:
    """Send `args`; None for GARBAGE_ARGS, else the decoded COMPOUND4res (checked for sanity)."""
    try:
        results = conn.compound_raw(args)
    except GarbageArgsError:
        return None
    res = decode_compound(results)  # the generated decoder: any malformed reply raises
    assert res.status != N.NFS4ERR_SERVERFAULT
    assert all(r.value.status != N.NFS4ERR_SERVERFAULT for r in res.resarray)
    if res.resarray:  # §15.2: the COMPOUND status is that of the last op evaluated
        assert res.resarray[-1].value.status == res.status
        assert all(r.value.status == N.NFS4_OK for r in res.resarray[:-1])
    return res


# ------------------------------------------------------------------ (a) random bytes


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_as_compound_args(conn: BlockingRpc, data: bytes) -> None:
    res = check_reply(conn, data)
    if res is not None and res.status == N.NFS4_OK:
        assert all(r.resop in N.nfs_opnum4_names for r in res.resarray)


@FUZZ
@given(count=st.integers(0, 2**32 - 1), body=st.binary(max_size=512))
def test_random_ops_after_valid_header(conn: BlockingRpc, count: int, body: bytes) -> None:
    p = Packer()
    p.pack_opaque(b"fz")
    p.pack_uint(0)
    p.pack_uint(count)
    res = check_reply(conn, p.get_buffer() + body)
    assert res is not None, "a well-formed COMPOUND header must not get GARBAGE_ARGS"
    assert res.tag == b"fz"
    assert len(res.resarray) <= count
    if res.status in (N.NFS4ERR_BADXDR, N.NFS4ERR_OP_ILLEGAL) and res.resarray[-1].resop == N.OP_ILLEGAL:
        assert res.resarray[-1].value.status == res.status


def test_minor_version_mismatch(conn: BlockingRpc) -> None:
    for minor in (1, 2, 0xFFFFFFFF):
        res = check_reply(conn, encode_compound([op.putrootfh()], b"t", minor))
        assert res is not None and res.status == N.NFS4ERR_MINOR_VERS_MISMATCH  # RFC 7530 §16.2.3
        assert res.resarray == [] and res.tag == b"t"


# ------------------------------------------------------------------ (b) mutated valid COMPOUNDs


def templates(clientid: int) -> list[list[N.nfs_argop4]]:
    owner = b"fuzz-open-owner"
    return [
        [op.putrootfh(), op.getfh(), op.getattr(N.FATTR4_TYPE, N.FATTR4_SIZE, N.FATTR4_FILEID)],
        [op.putrootfh(), op.lookup(b"f"), op.getattr(N.FATTR4_SIZE, N.FATTR4_OWNER, N.FATTR4_ACL)],
        [op.putrootfh(), op.readdir(attrs=[N.FATTR4_TYPE, N.FATTR4_FILEHANDLE, N.FATTR4_MODE])],
        [op.putrootfh(), op.lookup(b"f"), op.read(ANON, 0, 64)],
        [op.putrootfh(), op.lookup(b"f"), op.write(ANON, 0, b"fuzzdata", N.FILE_SYNC4)],
        [op.putrootfh(), op.open(1, clientid, owner, b"opened", create=unchecked()), op.getfh()],
        [op.setclientid(b"v" * 8, b"fuzz-mutant"), op.renew(clientid)],
        [op.putrootfh(), op.savefh(), op.lookup(b"d"), op.restorefh(), op.access(0x3F)],
        [op.putrootfh(), op.lookup(b"d"), op.mkdir(b"m"), op.lookupp(), op.rename(b"f", b"f")],
        [op.putrootfh(), op.lookup(b"f"), op.lockt(N.WRITE_LT, 0, 10, clientid, b"lo")],
    ]


def op_offsets(ops: list[N.nfs_argop4], tag: bytes = b"") -> list[int]:
    """Byte offset of each op's opnum word in `encode_compound(ops, tag)`."""
    at = 4 + (len(tag) + 3) // 4 * 4 + 8
    offsets = []
    for a in ops:
        offsets.append(at)
        p = Packer()
        N.pack_nfs_argop4(p, a)
        at += len(p.get_buffer())
    return offsets


OPNUMS = st.one_of(
    st.integers(0, 80),
    st.integers(40, 75),
    st.just(N.OP_ILLEGAL),
    st.integers(0, 2**32 - 1),
)
LENGTHS = st.one_of(
    st.sampled_from([0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC, 1 << 20, 4097, 1025, 257]),
    st.integers(0, 2**32 - 1),
)


@st.composite
def mutations(draw: st.DrawFn, ops: list[N.nfs_argop4]) -> bytes:
    data = bytearray(encode_compound(ops))
    offsets = op_offsets(ops)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "truncate", "inflate", "inflate", "opnum", "count"]))
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[max(at, 12) :]
        elif kind == "inflate" and len(data) >= 16:
            word = max(at // 4 * 4, 12)  # past the header: mostly hit op arguments
            data[word : word + 4] = draw(LENGTHS).to_bytes(4, "big")
        elif kind == "opnum":
            word = draw(st.sampled_from(offsets))
            data[word : word + 4] = draw(OPNUMS).to_bytes(4, "big")
        elif kind == "count" and len(data) >= 12:
            data[8:12] = draw(LENGTHS).to_bytes(4, "big")  # numops of an empty-tag COMPOUND
    return bytes(data)


@FUZZ
@given(data=st.data())
def test_mutated_valid_compounds(conn: BlockingRpc, clientid: int, data: st.DataObject) -> None:
    ops = data.draw(st.sampled_from(templates(clientid)))
    check_reply(conn, data.draw(mutations(ops)))


@FUZZ
@given(data=st.data())
def test_valid_compounds_with_one_foreign_opnum(conn: BlockingRpc, clientid: int, data: st.DataObject) -> None:
    ops = data.draw(st.sampled_from(templates(clientid)))
    i = data.draw(st.integers(0, len(ops) - 1))
    opnum = data.draw(st.one_of(st.integers(40, 75), st.just(N.OP_ILLEGAL), st.integers(76, 2**32 - 1), st.sampled_from([0, 1, 2])))
    raw = bytearray(encode_compound(ops))
    at = op_offsets(ops)[i]
    raw[at : at + 4] = opnum.to_bytes(4, "big")
    res = check_reply(conn, bytes(raw))
    assert res is not None
    assert res.status == N.NFS4ERR_OP_ILLEGAL or len(res.resarray) <= i  # §15.2.4: stops there
    if res.status == N.NFS4ERR_OP_ILLEGAL:
        assert len(res.resarray) == i + 1 and res.resarray[-1].resop == N.OP_ILLEGAL


# ------------------------------------------------------------------ (c) hostile names

HOSTILE = st.one_of(
    st.sampled_from([b"..", b".", b"/", b"a/b", b"../escape", b"/etc", b"a\0b", b"\0", b"",
                     b"x" * 256, b"y" * 1000, b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"..\0"]),
    st.builds(lambda a, bad, b: a + bad + b, st.binary(max_size=8), st.sampled_from([b"/", b"\0", b".."]),
              st.binary(max_size=8)),
    st.binary(min_size=256, max_size=300),
    st.binary(min_size=1, max_size=12),
)


def expected_name_error(name: bytes) -> bool:
    """Names the server must refuse (RFC 7530 §12.7, §12.8); others may succeed."""
    return not name or len(name) > 255 or b"/" in name or b"\0" in name or name in (b".", b"..")


def name_ops(kind: str, name: bytes, clientid: int) -> list[N.nfs_argop4]:
    if kind == "lookup":
        return [op.putrootfh(), op.lookup(name)]
    if kind == "mkdir":
        return [op.putrootfh(), op.lookup(b"hostile"), op.mkdir(name)]
    if kind == "symlink":
        return [op.putrootfh(), op.lookup(b"hostile"), op.symlink(name, b"/etc")]
    if kind == "open":
        return [op.putrootfh(), op.lookup(b"hostile"), op.open(0, clientid, os.urandom(8), name, create=unchecked())]
    if kind == "rename_to":
        return [op.putrootfh(), op.lookup(b"hostile"), op.savefh(), op.rename(b"victim", name)]
    return [op.putrootfh(), op.lookup(b"hostile"), op.savefh(), op.rename(name, b"victim2")]


def snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.iterdir()}


@FUZZ
@given(name=HOSTILE, kind=st.sampled_from(["lookup", "mkdir", "symlink", "open", "rename_to", "rename_from"]))
def test_hostile_names(conn: BlockingRpc, export: Path, clientid: int, name: bytes, kind: str) -> None:
    (export / "hostile").mkdir(exist_ok=True)
    (export / "hostile" / "victim").touch()
    outside = snapshot(export.parent)
    ops = name_ops(kind, name, clientid)
    res = check_reply(conn, encode_compound(ops))
    assert res is not None
    assert len(res.resarray) == len(ops), f"failed before the named op: {res}"
    last = res.status
    if expected_name_error(name):
        assert last in NAME_ERRORS, (kind, name, N.nfsstat4_names.get(last, last))
    else:
        # an earlier example may have left an object of another type under the same name
        collisions = {N.NFS4ERR_EXIST, N.NFS4ERR_ISDIR, N.NFS4ERR_SYMLINK, N.NFS4ERR_NOTDIR}
        assert last == N.NFS4_OK or last in NAME_ERRORS | collisions, (kind, name, last)
    assert snapshot(export.parent) == outside, "a hostile name created something outside the export"


def test_hostile_names_did_not_escape(export: Path) -> None:
    """Nothing named after the hostile inputs exists above the export or in /."""
    assert not (export.parent / "escape").exists()
    assert not Path("/escape").exists()
