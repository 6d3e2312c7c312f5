"""Data ops through COMPOUND: READ, WRITE, COMMIT (RFC 7530 §16.3, §16.23, §16.36) and the
stateid checks they make (§9.1.4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nfs4_fixtures import (
    ANON,
    BYPASS,
    DENY_WRITE,
    RW,
    R,
    W,
    World,
    expect,
    export_root,
    getattrs,
    make_file,
    make_world,
    mkdir,
    new_clientid,
    open_file,
    ops,
    others_io_is_refused,
    user,
)

from pynfsd.client.nfs4 import in_process, op
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.server import NFSServer

UNSTABLE4, FILE_SYNC4 = 0, 2


async def test_write_and_read_with_the_anonymous_stateid(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    (_, wr) = await c.check([op.putfh(f), op.write(ANON, 0, b"hello world")])
    assert wr.count == 11 and wr.committed == FILE_SYNC4
    (_, rd) = await c.check([op.putfh(f), op.read(ANON, 6, 100)])
    assert (rd.data, rd.eof) == (b"world", True)
    (_, part) = await c.check([op.putfh(f), op.read(ANON, 0, 5)])
    assert (part.data, part.eof) == (b"hello", False)
    (_, past) = await c.check([op.putfh(f), op.read(ANON, 1000, 10)])
    assert (past.data, past.eof) == (b"", True)


async def test_write_with_the_bypass_stateid_is_an_anonymous_write(w: World) -> None:
    """RFC 7530 §9.1.4.3: a WRITE with the READ bypass stateid is treated as with the
    anonymous stateid: it writes, and a deny-write share reservation refuses it."""

    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await c.check([op.putfh(f), op.write(ANON, 0, b"abc")])
    (_, rd) = await c.check([op.putfh(f), op.read(BYPASS, 0, 3)])
    assert rd.data == b"abc"
    (_, wr) = await c.check([op.putfh(f), op.write(BYPASS, 0, b"x")])
    assert wr.count == 1
    (_, rd) = await c.check([op.putfh(f), op.read(ANON, 0, 3)])
    assert rd.data == b"xbc"
    clientid = await new_clientid(c)
    o = await open_file(c, root, clientid, b"o", b"g", access=R, deny=DENY_WRITE)
    await expect(c, [op.putfh(o.fh), op.write(BYPASS, 0, b"x")], N.NFS4ERR_LOCKED)


async def test_read_and_write_with_open_stateids(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    rw = await open_file(c, root, clientid, b"o", b"f", access=RW)
    await c.check([op.putfh(rw.fh), op.write(rw.stateid, 0, b"data")])
    (_, rd) = await c.check([op.putfh(rw.fh), op.read(rw.stateid, 0, 10)])
    assert rd.data == b"data"


async def test_write_with_a_read_only_open_is_openmode(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    ro = await open_file(c, root, clientid, b"o", b"f", access=R)
    await expect(c, [op.putfh(ro.fh), op.write(ro.stateid, 0, b"x")], N.NFS4ERR_OPENMODE)
    wo = await open_file(c, root, clientid, b"o2", b"f", access=W)
    await c.check([op.putfh(wo.fh), op.write(wo.stateid, 0, b"x")])


async def test_io_with_a_stateid_for_another_file_is_bad_stateid(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    a = await open_file(c, root, clientid, b"o", b"a")
    b = await open_file(c, root, clientid, b"o", b"b", seqid=a.seqid)
    await expect(c, [op.putfh(b.fh), op.read(a.stateid, 0, 1)], N.NFS4ERR_BAD_STATEID)
    await expect(c, [op.putfh(b.fh), op.write(a.stateid, 0, b"x")], N.NFS4ERR_BAD_STATEID)


async def test_io_with_made_up_or_old_stateids(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    o = await open_file(c, root, clientid, b"o", b"f", access=R)
    # A second OPEN by the same owner upgrades the open and bumps its seqid (§9.1.4.2).
    again = await open_file(
        c, root, clientid, b"o", b"f", access=RW, seqid=o.seqid, create=False
    )
    assert again.stateid.other == o.stateid.other
    assert again.stateid.seqid == o.stateid.seqid + 1
    await expect(c, [op.putfh(o.fh), op.read(o.stateid, 0, 1)], N.NFS4ERR_OLD_STATEID)
    ahead = N.stateid4(again.stateid.seqid + 5, again.stateid.other)
    await expect(c, [op.putfh(o.fh), op.read(ahead, 0, 1)], N.NFS4ERR_BAD_STATEID)
    made_up = N.stateid4(1, o.stateid.other[:8] + b"\x7f\x7f\x7f\x7f")
    await expect(c, [op.putfh(o.fh), op.read(made_up, 0, 1)], N.NFS4ERR_BAD_STATEID)
    await c.check([op.putfh(o.fh), op.read(again.stateid, 0, 1)])


async def test_stateid_of_another_server_boot_is_stale_stateid(w: World, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    o = await open_file(c, root, clientid, b"o", b"f")
    other = make_world(tmp_path / "other")
    try:
        c2 = other.client()
        root2 = await export_root(c2)
        f2 = await make_file(c2, root2)
        await expect(c2, [op.putfh(f2), op.read(o.stateid, 0, 1)], N.NFS4ERR_STALE_STATEID)
    finally:
        other.close()


async def test_io_after_close_is_refused(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    o = await open_file(c, root, clientid, b"o", b"f")
    await c.check([op.putfh(o.fh), op.close(o.seqid, o.stateid)])
    res = await c.compound([op.putfh(o.fh), op.read(o.stateid, 0, 1)])
    assert res.status in (N.NFS4ERR_BAD_STATEID, N.NFS4ERR_OLD_STATEID)


async def test_anonymous_write_against_a_deny_write_share_is_locked(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    clientid = await new_clientid(c)
    o = await open_file(c, root, clientid, b"o", b"f", access=R, deny=DENY_WRITE)
    await expect(c, [op.putfh(o.fh), op.write(ANON, 0, b"x")], N.NFS4ERR_LOCKED)
    await c.check([op.putfh(o.fh), op.read(ANON, 0, 1)])


async def test_anonymous_io_checks_file_permissions(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await c.check([op.putfh(f), ops.setattr({N.FATTR4_OWNER: b"1000", N.FATTR4_MODE: 0o600})])
    other = w.client(user(2000))
    await expect(other, [op.putfh(f), op.read(ANON, 0, 1)], N.NFS4ERR_ACCESS)
    await expect(other, [op.putfh(f), op.write(ANON, 0, b"x")], N.NFS4ERR_ACCESS)
    owner = w.client(user(1000))
    await owner.check([op.putfh(f), op.write(ANON, 0, b"x"), op.read(ANON, 0, 1)])


async def test_io_with_another_users_open_stateid_checks_file_permissions(w: World) -> None:
    """RFC 7530 §16.16.5: the server must check access on the READs and WRITEs themselves,
    so the owner's open stateid does not let another user read, write or truncate."""

    owner, other = w.client(user(1000)), w.client(user(2000))
    root = await export_root(w.client())
    await w.client().check([op.putfh(root), ops.setattr({N.FATTR4_MODE: 0o777})])
    o = await open_file(owner, root, await new_clientid(owner), b"o", b"f", access=RW)
    await owner.check([op.putfh(o.fh), ops.setattr({N.FATTR4_MODE: 0o600}, o.stateid)])
    await owner.check([op.putfh(o.fh), op.write(o.stateid, 0, b"owner's")])
    await others_io_is_refused(other, o)
    await owner.check([op.putfh(o.fh), ops.setattr({N.FATTR4_MODE: 0o400}, o.stateid)])
    (_, rd) = await owner.check([op.putfh(o.fh), op.read(o.stateid, 0, 100)])
    assert rd.data == b"owner's"
    await owner.check([op.putfh(o.fh), op.write(o.stateid, 7, b"!")])  # owner override


@pytest.mark.parametrize("make", ["read", "write", "commit"])
async def test_io_on_directories_is_isdir(w: World, make: str) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    pseudo = (await c.check([op.putrootfh(), op.getfh()]))[1].object
    io = {"read": op.read(ANON, 0, 1), "write": op.write(ANON, 0, b"x"), "commit": op.commit()}[
        make
    ]
    await expect(c, [op.putfh(d), io], N.NFS4ERR_ISDIR)
    await expect(c, [op.putfh(pseudo), io], N.NFS4ERR_ISDIR)


async def test_io_on_a_symlink(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    vals = await c.check([op.putfh(root), op.symlink(b"l", b"t"), op.getfh()])
    ln = vals[2].object
    for io in (op.read(ANON, 0, 1), op.write(ANON, 0, b"x")):
        res = await c.compound([op.putfh(ln), io])
        assert res.status in (N.NFS4ERR_SYMLINK, N.NFS4ERR_INVAL)


async def test_write_verifier_is_stable_within_a_server_and_changes_with_a_new_one(
    w: World, tmp_path: Path
) -> None:
    (tmp_path / "second").mkdir()
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    (_, a) = await c.check([op.putfh(f), op.write(ANON, 0, b"a", UNSTABLE4)])
    (_, b) = await c.check([op.putfh(f), op.write(ANON, 1, b"b", UNSTABLE4)])
    (_, cm) = await c.check([op.putfh(f), op.commit(0, 0)])
    assert a.writeverf == b.writeverf == cm.writeverf
    other = make_world(tmp_path / "second")
    try:
        c2 = other.client()
        root2 = await export_root(c2)
        f2 = await make_file(c2, root2)
        (_, x) = await c2.check([op.putfh(f2), op.write(ANON, 0, b"a", UNSTABLE4)])
        assert x.writeverf != a.writeverf
    finally:
        other.close()


async def test_write_verifier_comes_from_the_servers_rng(w: World) -> None:
    """The randomness is a parameter: the write verifier is the first 8 bytes drawn."""
    drawn: list[int] = []

    def rng(n: int) -> bytes:
        drawn.append(n)
        return bytes(range(len(drawn), len(drawn) + n))

    server = NFSServer(w.server.config, w.server.resolver, rng=rng)
    try:
        c = in_process(server)
        f = await make_file(c, await export_root(c))
        (_, wr) = await c.check([op.putfh(f), op.write(ANON, 0, b"a", UNSTABLE4)])
        (_, cm) = await c.check([op.putfh(f), op.commit(0, 0)])
        assert drawn[0] == 8
        assert wr.writeverf == cm.writeverf == bytes(range(1, 9))
    finally:
        server.close()


async def test_unstable_write_then_commit(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    (_, wr) = await c.check([op.putfh(f), op.write(ANON, 10, b"xyz", UNSTABLE4)])
    assert wr.committed in (UNSTABLE4, FILE_SYNC4)
    await c.check([op.putfh(f), op.commit(0, 0)])
    got = await getattrs(c, f, N.FATTR4_SIZE)
    assert got[N.FATTR4_SIZE] == 13
    (_, rd) = await c.check([op.putfh(f), op.read(ANON, 0, 13)])
    assert rd.data == b"\0" * 10 + b"xyz"


async def test_commit_range_overflow_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await expect(c, [op.putfh(f), op.commit((1 << 64) - 2, 10)], N.NFS4ERR_INVAL)


async def test_write_beyond_the_maximum_file_size_is_fbig(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    await expect(c, [op.putfh(f), op.write(ANON, (1 << 63) - 2, b"xyz")], N.NFS4ERR_FBIG)


async def test_read_count_is_capped_at_maxread(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root)
    maxread = w.server.config.maxread
    await c.check([op.putfh(f), ops.setattr({N.FATTR4_SIZE: maxread + 100})])
    (_, rd) = await c.check([op.putfh(f), op.read(ANON, 0, maxread + 100)])
    assert len(rd.data) == maxread and not rd.eof
