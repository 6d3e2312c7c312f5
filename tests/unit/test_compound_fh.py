"""Filehandle ops through COMPOUND: PUTFH, PUTROOTFH, PUTPUBFH, GETFH, SAVEFH, RESTOREFH,
LOOKUP, LOOKUPP, SECINFO and the pseudo-fs (RFC 7530 §7, §16.8, §16.13-14, §16.20-22, §16.29-31).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from nfs4_fixtures import (
    ANON,
    World,
    attrs_of,
    expect,
    export_root,
    getattrs,
    lookup_fh,
    make_file,
    make_world,
    mkdir,
    ops,
    readdir_all,
    user,
)

from pynfsd.client.nfs4 import op, unchecked
from pynfsd.gen import nfs4 as N


@pytest.fixture
def pw(tmp_path: Path) -> Iterator[World]:
    """Two exports below shared pseudo directories: /srv/a and /srv/b/c."""
    world = make_world(tmp_path, ["/srv/a *(rw,no_root_squash)", "/srv/b/c *(ro)"])
    yield world
    world.close()


# ------------------------------------------------------------ NOFILEHANDLE (§15.2, §16.x)

_NEEDS_FH = {
    "GETFH": op.getfh(),
    "GETATTR": op.getattr(N.FATTR4_TYPE),
    "LOOKUP": op.lookup(b"x"),
    "LOOKUPP": op.lookupp(),
    "SAVEFH": op.savefh(),
    "ACCESS": op.access(1),
    "READDIR": op.readdir(),
    "READ": op.read(ANON, 0, 1),
    "WRITE": op.write(ANON, 0, b"x"),
    "COMMIT": op.commit(),
    "CREATE": op.mkdir(b"d"),
    "REMOVE": op.remove(b"x"),
    "RENAME": op.rename(b"a", b"b"),
    "LINK": ops.link(b"l"),
    "OPEN": op.open(1, 1, b"o", b"f", create=unchecked()),
    "SETATTR": ops.setattr({N.FATTR4_MODE: 0o600}),
    "VERIFY": ops.verify({N.FATTR4_TYPE: N.NF4DIR}),
    "NVERIFY": ops.nverify({N.FATTR4_TYPE: N.NF4DIR}),
    "READLINK": ops.readlink(),
    "SECINFO": ops.secinfo(b"x"),
    "LOCKT": op.lockt(1, 0, 1, 1, b"o"),
    "OPENATTR": ops.openattr(),
}


@pytest.mark.parametrize("name", sorted(_NEEDS_FH))
async def test_op_without_current_fh_is_nofilehandle(w: World, name: str) -> None:
    res = await expect(w.client(), [_NEEDS_FH[name]], N.NFS4ERR_NOFILEHANDLE)
    assert len(res.resarray) == 1


# ------------------------------------------------------------ PUTFH (§16.20)


@pytest.mark.parametrize(
    "fh",
    [
        b"",
        b"\x01",
        b"\x02\x01" + b"\0" * 20,
        b"\x01\x07" + b"\0" * 20,
        b"\x01\x00" + b"\0" * 5,
        b"\x01\x01" + b"\0" * 8,
    ],
    ids=["empty", "short", "version", "kind", "pseudo-length", "export-no-handle"],
)
async def test_putfh_garbage_is_badhandle(w: World, fh: bytes) -> None:
    await expect(w.client(), [op.putfh(fh)], N.NFS4ERR_BADHANDLE)


async def test_putfh_of_removed_file_is_stale(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    fh = await mkdir(c, root, b"gone")
    await c.check([op.putfh(root), op.remove(b"gone")])
    await expect(c, [op.putfh(fh)], N.NFS4ERR_STALE)
    await expect(c, [op.putfh(fh), op.getattr(N.FATTR4_TYPE)], N.NFS4ERR_STALE)


async def test_putfh_of_unknown_pseudo_node_is_stale(w: World) -> None:
    await expect(w.client(), [op.putfh(b"\x01\x00" + b"\x42" * 16)], N.NFS4ERR_STALE)


async def test_putfh_of_export_the_client_may_not_use_is_stale(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw)", "/private 10.0.0.1(rw)"])

    try:
        insider = w.client(peer=("10.0.0.1", 800))
        fh = await export_root(insider, b"private")
        await expect(w.client(), [op.putfh(fh)], N.NFS4ERR_STALE)
        await insider.check([op.putfh(fh), op.getattr(N.FATTR4_TYPE)])
    finally:
        w.close()


async def test_putfh_with_forged_backend_handle_is_stale(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    forged = root[:-1] + bytes([root[-1] ^ 1])
    await expect(c, [op.putfh(forged)], N.NFS4ERR_STALE)


async def test_getfh_round_trips_through_putfh(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    (_, got) = await c.check([op.putfh(d), op.getfh()])
    assert got.object == d
    vals = await c.check([op.putrootfh(), op.getfh()])
    await c.check([op.putfh(vals[1].object), op.lookup(b"export")])


# ------------------------------------------------------------ SAVEFH / RESTOREFH (§16.29-30)


async def test_restorefh_without_savefh(w: World) -> None:
    await expect(w.client(), [op.putrootfh(), op.restorefh()], N.NFS4ERR_RESTOREFH)


async def test_restorefh_without_any_filehandle(w: World) -> None:
    await expect(w.client(), [op.restorefh()], N.NFS4ERR_RESTOREFH)


async def test_savefh_restorefh_restores_the_saved_object(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    vals = await c.check(
        [op.putfh(root), op.savefh(), op.lookup(b"d"), op.getfh(), op.restorefh(), op.getfh()]
    )
    assert vals[3].object == d and vals[5].object == root


async def test_saved_fh_does_not_survive_the_compound(w: World) -> None:
    c = w.client()
    await c.check([op.putrootfh(), op.savefh()])
    await expect(c, [op.putrootfh(), op.restorefh()], N.NFS4ERR_RESTOREFH)


# ------------------------------------------------------------ LOOKUP (§16.13)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        (b"missing", N.NFS4ERR_NOENT),
        (b"", N.NFS4ERR_INVAL),
        (b".", N.NFS4ERR_BADNAME),
        (b"..", N.NFS4ERR_BADNAME),
        (b"a/b", N.NFS4ERR_BADCHAR),
        (b"/", N.NFS4ERR_BADCHAR),
        (b"a\0b", N.NFS4ERR_BADCHAR),
        (b"x" * 256, N.NFS4ERR_NAMETOOLONG),
    ],
    ids=["noent", "empty", "dot", "dotdot", "slash-inside", "slash", "nul", "long"],
)
async def test_lookup_name_errors(w: World, name: bytes, status: int) -> None:
    c = w.client()
    root = await export_root(c)
    res = await expect(c, [op.putfh(root), op.lookup(name), op.getfh()], status)
    assert len(res.resarray) == 2  # processing stopped at LOOKUP


async def test_lookup_longest_name_is_allowed(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await mkdir(c, root, b"y" * 255)
    await lookup_fh(c, root, b"y" * 255)


async def test_lookup_in_a_file_is_notdir(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root, b"f")
    await expect(c, [op.putfh(f), op.lookup(b"x")], N.NFS4ERR_NOTDIR)


async def test_lookup_in_a_symlink_is_symlink(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    (_, _, got) = await c.check([op.putfh(root), op.symlink(b"l", b"target"), op.getfh()])
    await expect(c, [op.putfh(got.object), op.lookup(b"x")], N.NFS4ERR_SYMLINK)


async def test_lookup_failure_leaves_current_fh_unchanged(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    res = await c.compound([op.putfh(root), op.lookup(b"missing")])
    assert res.status == N.NFS4ERR_NOENT
    # The next COMPOUND is independent; within one, nothing runs after the failure.
    vals = await c.check([op.putfh(root), op.getfh()])
    assert vals[1].object == root


async def test_lookup_in_directory_without_search_permission(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"locked", 0o700)
    await mkdir(c, d, b"inner")
    other = w.client(user(1000))
    await expect(other, [op.putfh(d), op.lookup(b"inner")], N.NFS4ERR_ACCESS)


# ------------------------------------------------------------ LOOKUPP (§16.14)


async def test_lookupp_at_pseudo_root_is_noent(w: World) -> None:
    await expect(w.client(), [op.putrootfh(), op.lookupp()], N.NFS4ERR_NOENT)


async def test_lookupp_of_a_file_is_notdir(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root, b"f")
    await expect(c, [op.putfh(f), op.lookupp()], N.NFS4ERR_NOTDIR)


async def test_lookupp_inside_an_export(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    e = await mkdir(c, d, b"e")
    vals = await c.check([op.putfh(e), op.lookupp(), op.getfh(), op.lookupp(), op.getfh()])
    assert vals[2].object == d and vals[4].object == root


async def test_lookupp_from_export_root_reaches_the_pseudo_root(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    vals = await c.check([op.putrootfh(), op.getfh()])
    up = await c.check([op.putfh(root), op.lookupp(), op.getfh()])
    assert up[2].object == vals[1].object


# ------------------------------------------------------------ pseudo-fs (§7)


async def test_pseudo_fs_navigation_and_back(pw: World) -> None:
    c = pw.client()
    vals = await c.check(
        [
            op.putrootfh(),
            op.getfh(),
            op.lookup(b"srv"),
            op.getfh(),
            op.lookup(b"b"),
            op.getfh(),
            op.lookup(b"c"),
            op.getfh(),
            op.lookupp(),
            op.getfh(),
            op.lookupp(),
            op.getfh(),
            op.lookupp(),
            op.getfh(),
        ]
    )
    root, srv, b, c_fh = (vals[i].object for i in (1, 3, 5, 7))
    assert [vals[i].object for i in (9, 11, 13)] == [b, srv, root]
    assert len({root, srv, b, c_fh}) == 4


async def test_pseudo_dirs_only_show_paths_to_exports(pw: World) -> None:
    c = pw.client()
    await expect(c, [op.putrootfh(), op.lookup(b"etc")], N.NFS4ERR_NOENT)
    await expect(c, [op.putrootfh(), op.lookup(b"srv"), op.lookup(b"x")], N.NFS4ERR_NOENT)


async def test_readdir_of_pseudo_dirs(pw: World) -> None:
    c = pw.client()
    root = await export_root(c, b"srv")
    top = (await c.check([op.putrootfh(), op.getfh()]))[1].object
    assert [e.name for e in await readdir_all(c, top)] == [b"srv"]
    ents = await readdir_all(c, root, attrs=[N.FATTR4_TYPE, N.FATTR4_FSID])
    assert [e.name for e in ents] == [b"a", b"b"]
    assert all(attrs_of(e.attrs)[N.FATTR4_TYPE] == N.NF4DIR for e in ents)


async def test_fsid_differs_between_pseudo_dirs_and_exports(pw: World) -> None:
    c = pw.client()
    srv = await export_root(c, b"srv")
    a = await export_root(c, b"srv", b"a")
    bc = await export_root(c, b"srv", b"b", b"c")
    fsids = [(await getattrs(c, fh, N.FATTR4_FSID))[N.FATTR4_FSID] for fh in (srv, a, bc)]
    assert len({(f.major, f.minor) for f in fsids}) == 3
    sub = await mkdir(c, a, b"sub")
    sub_fsid = (await getattrs(c, sub, N.FATTR4_FSID))[N.FATTR4_FSID]
    assert sub_fsid == fsids[1]


async def test_mounted_on_fileid_of_an_export_root(pw: World) -> None:
    c = pw.client()
    srv = await export_root(c, b"srv")
    a = await export_root(c, b"srv", b"a")
    got = await getattrs(c, a, N.FATTR4_FILEID, N.FATTR4_MOUNTED_ON_FILEID)
    assert got[N.FATTR4_FILEID] != got[N.FATTR4_MOUNTED_ON_FILEID]
    sub = await mkdir(c, a, b"sub")
    inner = await getattrs(c, sub, N.FATTR4_FILEID, N.FATTR4_MOUNTED_ON_FILEID)
    assert inner[N.FATTR4_FILEID] == inner[N.FATTR4_MOUNTED_ON_FILEID]
    # READDIR of the pseudo parent reports the same mounted_on_fileid for the export.
    ents = await readdir_all(c, srv, attrs=[N.FATTR4_MOUNTED_ON_FILEID])
    by_name = {e.name: attrs_of(e.attrs) for e in ents}
    assert by_name[b"a"][N.FATTR4_MOUNTED_ON_FILEID] == got[N.FATTR4_MOUNTED_ON_FILEID]


async def test_pseudo_dirs_are_read_only(pw: World) -> None:
    c = pw.client()
    srv = await export_root(c, b"srv")
    await expect(c, [op.putfh(srv), op.mkdir(b"new")], N.NFS4ERR_ROFS)
    await expect(c, [op.putfh(srv), op.remove(b"a")], N.NFS4ERR_ROFS)


async def test_putpubfh_is_the_root(w: World) -> None:
    c = w.client()
    a = await c.check([op.putrootfh(), op.getfh()])
    b = await c.check([ops.putpubfh(), op.getfh()])
    assert a[1].object == b[1].object


# ------------------------------------------------------------ PUTROOTFH for unknown clients


async def test_putrootfh_for_a_client_no_export_matches(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export 10.9.9.9(rw)"])

    try:
        res = await expect(
            w.client(peer=("192.0.2.1", 800)), [op.putrootfh(), op.getfh()], N.NFS4ERR_ACCESS
        )
        assert len(res.resarray) == 1  # no GETFH ran: no filehandle was obtained
        await w.client(peer=("10.9.9.9", 800)).check([op.putrootfh(), op.getfh()])
    finally:
        w.close()


# ------------------------------------------------------------ SECINFO (§16.31)


async def test_secinfo_lists_the_export_flavours(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,sec=sys:none)"])

    try:
        c = w.client()
        (_, flavours) = await c.check([op.putrootfh(), ops.secinfo(b"export")])
        assert [f.flavor for f in flavours] == [1, 0]
        await expect(c, [op.putrootfh(), ops.secinfo(b"nope")], N.NFS4ERR_NOENT)
        await expect(c, [op.putrootfh(), ops.secinfo(b"..")], N.NFS4ERR_BADNAME)
    finally:
        w.close()


async def test_wrongsec_for_a_flavour_the_export_does_not_allow(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/export *(rw,sec=none)"])

    try:
        c = w.client()  # AUTH_SYS
        root = await export_root(c)  # LOOKUP/GETFH are exempt (§16.31.4)
        await expect(c, [op.putfh(root), op.getattr(N.FATTR4_TYPE)], N.NFS4ERR_WRONGSEC)
    finally:
        w.close()


async def test_secinfo_keeps_the_current_filehandle(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await mkdir(c, root, b"d")
    vals = await c.check([op.putfh(root), ops.secinfo(b"d"), op.getfh()])
    assert vals[2].object == root  # RFC 7530 §16.31.4
