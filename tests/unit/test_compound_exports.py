"""Export policy through COMPOUND: read-only exports (NFS4ERR_ROFS), root_squash, all_squash,
anonuid/anongid, AUTH_NONE, and clients no export matches (exports(5); RFC 7530 §3, §16.22)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nfs4_fixtures import (
    ANON,
    RW,
    R,
    World,
    client_time,
    expect,
    export_root,
    fattr,
    getattrs,
    make_world,
    mkdir,
    new_clientid,
    open_file,
    ops,
    user,
)

from pynfsd.client.nfs4 import Nfs4Client, op, unchecked
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.auth import Credential

WRITER = ("127.0.0.1", 800)
READER = ("127.0.0.2", 800)


@pytest.fixture
def ro(tmp_path: Path) -> Iterator[World]:
    """/export is rw for 127.0.0.1 and read-only for 127.0.0.2 (same files)."""
    world = make_world(
        tmp_path, ["/export 127.0.0.1(rw,no_root_squash) 127.0.0.2(ro,no_root_squash)"]
    )
    yield world
    world.close()


async def _populate(w: World) -> tuple[bytes, bytes, bytes]:
    """As the writer: a directory d, a file f with data, and a file g; fhs of root, d, f."""
    c = w.client(peer=WRITER)
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    cid = await new_clientid(c, b"writer")
    f = await open_file(c, root, cid, b"o", b"f")
    await c.check([op.putfh(f.fh), op.write(ANON, 0, b"data")])
    await open_file(c, root, cid, b"o", b"g", seqid=f.seqid)
    return root, d, f.fh


def _modifying_ops(root: bytes, d: bytes, f: bytes, cid: int) -> dict[str, list[N.nfs_argop4]]:
    return {
        "CREATE": [op.putfh(root), op.mkdir(b"new")],
        "CREATE-symlink": [op.putfh(root), op.symlink(b"l", b"t")],
        "REMOVE": [op.putfh(root), op.remove(b"g")],
        "RENAME": [op.putfh(root), op.savefh(), op.rename(b"g", b"h")],
        "LINK": [op.putfh(f), op.savefh(), op.putfh(d), ops.link(b"f2")],
        "SETATTR-mode": [op.putfh(f), ops.setattr({N.FATTR4_MODE: 0o600})],
        "SETATTR-size": [op.putfh(f), ops.setattr({N.FATTR4_SIZE: 0})],
        "SETATTR-time": [op.putfh(f), ops.setattr({N.FATTR4_TIME_MODIFY_SET: client_time(1)})],
        "WRITE": [op.putfh(f), op.write(ANON, 0, b"x")],
        "OPEN-create": [op.putfh(root), op.open(1, cid, b"r1", b"new", create=unchecked())],
        "OPEN-write": [op.putfh(root), op.open(1, cid, b"r2", b"f", access=RW)],
    }


_MODIFYING = [
    "CREATE", "CREATE-symlink", "REMOVE", "RENAME", "LINK", "SETATTR-mode", "SETATTR-size",
    "SETATTR-time", "WRITE", "OPEN-create", "OPEN-write",
]  # fmt: skip


@pytest.mark.parametrize("name", _MODIFYING)
async def test_read_only_export_refuses_every_modifying_op(ro: World, name: str) -> None:
    root, d, f = await _populate(ro)
    reader = ro.client(peer=READER)
    cid = await new_clientid(reader, b"reader")
    await expect(reader, _modifying_ops(root, d, f, cid)[name], N.NFS4ERR_ROFS)


async def test_read_only_export_still_reads(ro: World) -> None:
    root, _, f = await _populate(ro)
    reader = ro.client(peer=READER)
    cid = await new_clientid(reader, b"reader")
    o = await open_file(reader, root, cid, b"r", b"f", access=R, create=False)
    (_, rd) = await reader.check([op.putfh(o.fh), op.read(o.stateid, 0, 10)])
    assert rd.data == b"data"
    names = await reader.check([op.putfh(root), op.readdir()])
    assert names[1].reply.entries is not None
    # the writer's modifications still work: the policy is per client
    await ro.client(peer=WRITER).check([op.putfh(f), op.write(ANON, 0, b"D")])


async def _world_writable_root(w: World) -> bytes:
    """The export root, made mode 0777 directly in the backend (test setup, no squashing)."""
    root = await export_root(w.client(user(4242)))
    be = next(iter(w.backends.values()))
    be.setattr(be.root(), mode=0o777)
    return root


async def _owner_of(c: Nfs4Client, fh: bytes) -> tuple[bytes, bytes]:
    got = await getattrs(c, fh, N.FATTR4_OWNER, N.FATTR4_OWNER_GROUP)
    return got[N.FATTR4_OWNER], got[N.FATTR4_OWNER_GROUP]


async def test_root_squash_maps_root_to_nobody(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,root_squash)"])

    try:
        root = await _world_writable_root(w)
        c = w.client()  # uid 0
        d = await mkdir(c, root, b"by-root")
        assert await _owner_of(c, d) == (b"65534", b"65534")
        cid = await new_clientid(c)
        f = await open_file(c, root, cid, b"o", b"file-by-root")
        assert await _owner_of(c, f.fh) == (b"65534", b"65534")
        u = w.client(user(1000, 100))
        assert await _owner_of(u, await mkdir(u, root, b"by-user")) == (b"1000", b"100")
        # squashed root cannot chown: it is not root any more
        await expect(c, [op.putfh(d), ops.setattr({N.FATTR4_OWNER: b"0"})], N.NFS4ERR_PERM)
    finally:
        w.close()


async def test_root_squash_also_squashes_group_zero(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,root_squash)"])

    try:
        root = await _world_writable_root(w)
        u = w.client(user(1000, 0, [0, 5]))
        assert await _owner_of(u, await mkdir(u, root, b"g0")) == (b"1000", b"65534")
    finally:
        w.close()


async def test_no_root_squash_keeps_root(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,no_root_squash)"])

    try:
        c = w.client()
        root = await export_root(c)
        assert await _owner_of(c, await mkdir(c, root, b"d")) == (b"0", b"0")
    finally:
        w.close()


async def test_all_squash_with_anonuid(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,all_squash,anonuid=1234,anongid=4321)"])

    try:
        root = await _world_writable_root(w)
        for cred in (user(1000), user(0), user(7, 7, [1, 2])):
            c = w.client(cred)
            d = await mkdir(c, root, b"d%d" % cred.uid)
            assert await _owner_of(c, d) == (b"1234", b"4321")
    finally:
        w.close()


async def test_auth_none_is_anonymous(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,sec=none:sys,no_root_squash)"])

    try:
        root = await _world_writable_root(w)
        c = w.client(Credential(0, 0, 0, (), None, ""))
        d = await mkdir(c, root, b"anon")
        assert await _owner_of(c, d) == (b"65534", b"65534")
    finally:
        w.close()


async def test_squashed_root_gets_no_root_privileges(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export 127.0.0.1(rw,no_root_squash) 127.0.0.2(rw,root_squash)"])

    try:
        admin = w.client(peer=WRITER)
        root = await export_root(admin)
        d = await mkdir(admin, root, b"private", 0o700)
        squashed = w.client(peer=READER)
        await expect(squashed, [op.putfh(d), op.lookup(b"x")], N.NFS4ERR_ACCESS)
        await expect(squashed, [op.putfh(d), op.readdir()], N.NFS4ERR_ACCESS)
        await expect(admin, [op.putfh(d), op.lookup(b"x")], N.NFS4ERR_NOENT)
    finally:
        w.close()


async def test_client_that_no_export_matches_gets_no_filehandle(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export 10.1.2.0/24(rw)"])

    try:
        outsider = w.client(peer=("192.0.2.7", 800))
        res = await expect(outsider, [op.putrootfh(), op.getfh()], N.NFS4ERR_ACCESS)
        assert len(res.resarray) == 1
        await expect(outsider, [ops.putpubfh(), op.getfh()], N.NFS4ERR_ACCESS)
        insider = w.client(peer=("10.1.2.3", 800))
        root = await export_root(insider)
        await expect(outsider, [op.putfh(root), op.getattr(N.FATTR4_TYPE)], N.NFS4ERR_STALE)
    finally:
        w.close()


async def test_create_with_owner_attribute_on_root_squash(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,root_squash)"])

    try:
        root = await _world_writable_root(w)
        c = w.client()
        attrs = fattr({N.FATTR4_MODE: 0o755, N.FATTR4_OWNER: b"0"})
        await expect(c, [op.putfh(root), ops.create(N.NF4DIR, b"d", None, attrs)], N.NFS4ERR_PERM)
    finally:
        w.close()
