"""Directory ops through COMPOUND: CREATE, REMOVE, RENAME, LINK, READDIR, READLINK
(RFC 7530 §16.4, §16.9, §16.24-27)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nfs4_fixtures import (
    World,
    attrs_of,
    entries,
    expect,
    export_root,
    getattrs,
    last,
    lookup_fh,
    make_file,
    make_world,
    mkdir,
    new_clientid,
    open_file,
    ops,
    readdir_all,
    user,
)

from pynfsd.client.nfs4 import op, unchecked
from pynfsd.gen import nfs4 as N

# ------------------------------------------------------------ CREATE (§16.4)


async def test_create_directory_sets_current_fh_and_cinfo(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    vals = await c.check([op.putfh(root), op.mkdir(b"d", 0o750), op.getfh()])
    resok = vals[1]
    assert resok.cinfo.after > resok.cinfo.before
    assert resok.attrset == [0, 1 << (N.FATTR4_MODE - 32)]
    got = await getattrs(c, vals[2].object, N.FATTR4_TYPE, N.FATTR4_MODE)
    assert got == {N.FATTR4_TYPE: N.NF4DIR, N.FATTR4_MODE: 0o750}
    assert await lookup_fh(c, root, b"d") == vals[2].object


async def test_create_symlink_and_readlink(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    vals = await c.check(
        [
            op.putfh(root),
            op.symlink(b"l", b"../some/where"),
            ops.readlink(),
            op.getattr(N.FATTR4_TYPE),
        ]
    )
    assert vals[2].link == b"../some/where"
    assert attrs_of(vals[3]) == {N.FATTR4_TYPE: N.NF4LNK}


async def test_create_fifo_socket_and_devices(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    for t, name, value in [
        (N.NF4FIFO, b"fifo", None),
        (N.NF4SOCK, b"sock", None),
        (N.NF4CHR, b"chr", N.specdata4(1, 3)),
        (N.NF4BLK, b"blk", N.specdata4(8, 0)),
    ]:
        vals = await c.check(
            [
                op.putfh(root),
                ops.create(t, name, value),
                op.getattr(N.FATTR4_TYPE, N.FATTR4_RAWDEV),
            ]
        )
        got = attrs_of(vals[2])
        assert got[N.FATTR4_TYPE] == t
        if value is not None:
            assert got[N.FATTR4_RAWDEV] == value


async def test_create_regular_file_is_badtype(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), ops.create(N.NF4REG, b"f")], N.NFS4ERR_BADTYPE)


async def test_create_existing_name_is_exist(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await mkdir(c, root, b"d")
    await expect(c, [op.putfh(root), op.mkdir(b"d")], N.NFS4ERR_EXIST)
    await expect(c, [op.putfh(root), op.symlink(b"d", b"x")], N.NFS4ERR_EXIST)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        (b"", N.NFS4ERR_INVAL),
        (b"..", N.NFS4ERR_BADNAME),
        (b"a/b", N.NFS4ERR_BADCHAR),
        (b"n" * 256, N.NFS4ERR_NAMETOOLONG),
    ],
    ids=["empty", "dotdot", "slash", "long"],
)
async def test_create_bad_names(w: World, name: bytes, status: int) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), op.mkdir(name)], status)


async def test_create_symlink_with_empty_target_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(c, [op.putfh(root), op.symlink(b"l", b"")], N.NFS4ERR_INVAL)


async def test_create_in_a_file_is_notdir(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root, b"f")
    await expect(c, [op.putfh(f), op.mkdir(b"d")], N.NFS4ERR_NOTDIR)


async def test_create_without_write_permission_is_access(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(w.client(user(1000)), [op.putfh(root), op.mkdir(b"d")], N.NFS4ERR_ACCESS)


async def test_create_owned_by_the_caller(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"pub", 0o777)
    u = w.client(user(1000, 100))
    sub = await mkdir(u, d, b"mine")
    got = await getattrs(c, sub, N.FATTR4_OWNER, N.FATTR4_OWNER_GROUP)
    assert got == {N.FATTR4_OWNER: b"1000", N.FATTR4_OWNER_GROUP: b"100"}


# ------------------------------------------------------------ REMOVE (§16.26)


async def test_remove_file_and_empty_directory(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await make_file(c, root, b"f")
    await mkdir(c, root, b"d")
    (_, res) = await c.check([op.putfh(root), op.remove(b"f")])
    assert res.cinfo.after > res.cinfo.before
    await c.check([op.putfh(root), op.remove(b"d")])
    assert await readdir_all(c, root) == []


async def test_remove_errors(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    await mkdir(c, d, b"inner")
    await expect(c, [op.putfh(root), op.remove(b"d")], N.NFS4ERR_NOTEMPTY)
    await expect(c, [op.putfh(root), op.remove(b"nope")], N.NFS4ERR_NOENT)
    await expect(c, [op.putfh(root), op.remove(b"")], N.NFS4ERR_INVAL)
    await expect(c, [op.putfh(root), op.remove(b".")], N.NFS4ERR_BADNAME)
    f = await make_file(c, root, b"f")
    await expect(c, [op.putfh(f), op.remove(b"x")], N.NFS4ERR_NOTDIR)
    await expect(w.client(user(7)), [op.putfh(d), op.remove(b"inner")], N.NFS4ERR_ACCESS)


async def test_remove_in_sticky_directory(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    tmp = await mkdir(c, root, b"tmp", 0o1777)
    alice, bob = w.client(user(1000)), w.client(user(1001))
    await mkdir(alice, tmp, b"alices")
    await expect(bob, [op.putfh(tmp), op.remove(b"alices")], N.NFS4ERR_ACCESS)
    await alice.check([op.putfh(tmp), op.remove(b"alices")])


# ------------------------------------------------------------ RENAME (§16.27)


async def test_rename_within_and_across_directories(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    a, b = await mkdir(c, root, b"a"), await mkdir(c, root, b"b")
    f = await make_file(c, a, b"f")
    vals = await c.check(
        [op.putfh(a), op.savefh(), op.putfh(b), op.rename(b"f", b"g"), op.getfh()]
    )
    assert vals[4].object == b  # the current filehandle stays the target directory
    assert vals[3].source_cinfo.after > vals[3].source_cinfo.before
    assert vals[3].target_cinfo.after > vals[3].target_cinfo.before
    assert await lookup_fh(c, b, b"g") == f  # persistent handle survives the rename
    await expect(c, [op.putfh(a), op.lookup(b"f")], N.NFS4ERR_NOENT)


async def test_rename_over_an_existing_file_replaces_it(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root, b"f")
    o = await open_file(c, root, await new_clientid(c, b"maker"), b"o", b"old")
    await c.check([op.putfh(o.fh), op.close(o.seqid, o.stateid)])  # not kept by an open
    await c.check([op.putfh(root), op.savefh(), op.rename(b"f", b"old")])
    assert await lookup_fh(c, root, b"old") == f
    await expect(c, [op.putfh(o.fh)], N.NFS4ERR_STALE)
    assert [e.name for e in await readdir_all(c, root)] == [b"old"]


async def test_rename_incompatible_targets_are_exist(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await make_file(c, root, b"f")
    await mkdir(c, root, b"d")
    full = await mkdir(c, root, b"full")
    await mkdir(c, full, b"x")
    await mkdir(c, root, b"e")
    pre = [op.putfh(root), op.savefh()]
    await expect(c, [*pre, op.rename(b"f", b"d")], N.NFS4ERR_EXIST)
    await expect(c, [*pre, op.rename(b"d", b"f")], N.NFS4ERR_EXIST)
    await expect(c, [*pre, op.rename(b"e", b"full")], N.NFS4ERR_EXIST)
    await c.check([*pre, op.rename(b"e", b"d")])  # empty directory: replaced


async def test_rename_same_file_is_a_no_op(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root, b"f")
    await c.check([op.putfh(f), op.savefh(), op.putfh(root), ops.link(b"f2")])
    await c.check([op.putfh(root), op.savefh(), op.rename(b"f", b"f2")])
    assert await lookup_fh(c, root, b"f") == f == await lookup_fh(c, root, b"f2")


async def test_rename_errors(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    sub = await mkdir(c, d, b"sub")
    pre = [op.putfh(root), op.savefh()]
    await expect(c, [*pre, op.rename(b"nope", b"x")], N.NFS4ERR_NOENT)
    await expect(c, [*pre, op.rename(b"", b"x")], N.NFS4ERR_INVAL)
    await expect(c, [*pre, op.rename(b"d", b"")], N.NFS4ERR_INVAL)
    await expect(c, [*pre, op.rename(b"d", b"..")], N.NFS4ERR_BADNAME)
    await expect(c, [*pre, op.rename(b"d", b"a/b")], N.NFS4ERR_BADCHAR)
    into_self = [op.putfh(root), op.savefh(), op.putfh(sub), op.rename(b"d", b"x")]
    await expect(c, into_self, N.NFS4ERR_INVAL)
    await expect(c, [op.putfh(root), op.rename(b"d", b"x")], N.NFS4ERR_NOFILEHANDLE)
    f = await make_file(c, root, b"f")
    await expect(
        c, [op.putfh(f), op.savefh(), op.putfh(root), op.rename(b"a", b"b")], N.NFS4ERR_NOTDIR
    )


async def test_rename_across_exports_is_xdev(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/a *(rw,no_root_squash)", "/b *(rw,no_root_squash)"])

    try:
        c = w.client()
        a, b = await export_root(c, b"a"), await export_root(c, b"b")
        await mkdir(c, a, b"d")
        await expect(
            c, [op.putfh(a), op.savefh(), op.putfh(b), op.rename(b"d", b"d")], N.NFS4ERR_XDEV
        )
        f = await make_file(c, a, b"f")
        await expect(c, [op.putfh(f), op.savefh(), op.putfh(b), ops.link(b"f")], N.NFS4ERR_XDEV)
    finally:
        w.close()


# ------------------------------------------------------------ LINK (§16.9)


async def test_link_creates_a_second_name(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    f = await make_file(c, root, b"f")
    vals = await c.check([op.putfh(f), op.savefh(), op.putfh(d), ops.link(b"g"), op.getfh()])
    assert vals[4].object == d
    assert vals[3].cinfo.after > vals[3].cinfo.before
    assert await lookup_fh(c, d, b"g") == f
    assert (await getattrs(c, f, N.FATTR4_NUMLINKS))[N.FATTR4_NUMLINKS] == 2


async def test_link_errors(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    f = await make_file(c, root, b"f")
    link_f = [op.putfh(f), op.savefh(), op.putfh(root)]
    await expect(c, [*link_f, ops.link(b"f")], N.NFS4ERR_EXIST)
    await expect(c, [*link_f, ops.link(b"")], N.NFS4ERR_INVAL)
    await expect(c, [*link_f, ops.link(b"..")], N.NFS4ERR_BADNAME)
    await expect(
        c, [op.putfh(d), op.savefh(), op.putfh(root), ops.link(b"d2")], N.NFS4ERR_ISDIR
    )
    await expect(c, [op.putfh(root), ops.link(b"x")], N.NFS4ERR_NOFILEHANDLE)
    await expect(c, [op.putfh(f), op.savefh(), ops.link(b"x")], N.NFS4ERR_NOTDIR)


# ------------------------------------------------------------ READLINK (§16.25)


async def test_readlink_of_non_symlinks_is_inval(w: World) -> None:
    """RFC 7530 §16.25.5: NFS4ERR_INVAL for anything not NF4LNK, a directory too."""

    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root, b"f")
    await expect(c, [op.putfh(root), ops.readlink()], N.NFS4ERR_INVAL)
    await expect(c, [op.putrootfh(), ops.readlink()], N.NFS4ERR_INVAL)  # pseudo-fs dir
    await expect(c, [op.putfh(f), ops.readlink()], N.NFS4ERR_INVAL)


# ------------------------------------------------------------ READDIR (§16.24)


async def test_readdir_of_1000_entries_across_many_calls(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"big")
    names = [b"entry-%04d" % i for i in range(1000)]
    for i in range(0, 1000, 50):
        await c.check([op.putfh(d), *_fifos(names[i : i + 50])])
    calls = 0
    seen: list[bytes] = []
    cookie, verf = 0, b"\0" * 8
    while True:
        _, resok = await c.check(
            [op.putfh(d), op.readdir(cookie, verf, 256, 600, [N.FATTR4_FILEID])]
        )
        calls += 1
        got = entries(resok)
        seen.extend(e.name for e in got)
        assert all(e.cookie > 2 for e in got)
        if resok.reply.eof:
            break
        cookie, verf = got[-1].cookie, resok.cookieverf
    assert calls > 20
    assert sorted(seen) == names and len(set(seen)) == 1000


def _fifos(names: list[bytes]) -> list[N.nfs_argop4]:
    """CREATEs of FIFOs in one directory; each CREATE moves the current fh, so go back."""
    out: list[N.nfs_argop4] = [op.savefh()]
    for n in names:
        out += [ops.create(N.NF4FIFO, n), op.restorefh()]
    return out


async def test_readdir_does_not_list_dot_entries_and_returns_attrs(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root, b"f")
    await mkdir(c, root, b"d")
    ents = await readdir_all(c, root, attrs=[N.FATTR4_TYPE, N.FATTR4_FILEHANDLE])
    got = {e.name: attrs_of(e.attrs) for e in ents}
    assert set(got) == {b"f", b"d"}
    assert got[b"f"] == {N.FATTR4_TYPE: N.NF4REG, N.FATTR4_FILEHANDLE: f}
    assert got[b"d"][N.FATTR4_TYPE] == N.NF4DIR


async def test_readdir_too_small(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await mkdir(c, root, b"a-long-enough-name")
    await expect(c, [op.putfh(root), op.readdir(0, b"\0" * 8, 10, 24)], N.NFS4ERR_TOOSMALL)


async def test_readdir_of_empty_directory_with_small_maxcount(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    (_, resok) = await c.check([op.putfh(root), op.readdir(0, b"\0" * 8, 10, 24)])
    assert entries(resok) == [] and resok.reply.eof


@pytest.mark.parametrize("cookie", [1, 2, 1 << 40])
async def test_readdir_bad_cookie(w: World, cookie: int) -> None:
    c = w.client()
    root = await export_root(c)
    await mkdir(c, root, b"d")
    (_, resok) = await c.check([op.putfh(root), op.readdir()])
    verf = resok.cookieverf
    await expect(c, [op.putfh(root), op.readdir(cookie, verf)], N.NFS4ERR_BAD_COOKIE)


async def test_readdir_with_another_directorys_verifier_is_not_same(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"d")
    await mkdir(c, root, b"e")
    (_, other) = await c.check([op.putfh(d), op.readdir()])
    (_, mine) = await c.check([op.putfh(root), op.readdir(maxcount=60)])
    cookie = entries(mine)[0].cookie
    assert other.cookieverf != mine.cookieverf
    await expect(c, [op.putfh(root), op.readdir(cookie, other.cookieverf)], N.NFS4ERR_NOT_SAME)
    await c.check([op.putfh(root), op.readdir(cookie, mine.cookieverf)])


async def test_readdir_of_a_file_is_notdir(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    f = await make_file(c, root, b"f")
    await expect(c, [op.putfh(f), op.readdir()], N.NFS4ERR_NOTDIR)


async def test_readdir_without_read_permission_is_access(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"private", 0o711)
    await expect(w.client(user(1000)), [op.putfh(d), op.readdir()], N.NFS4ERR_ACCESS)


async def test_readdir_without_search_permission_gives_each_entry_rdattr_error(w: World) -> None:
    """Read but not search permission (0744 for others): the names, each with rdattr_error
    NFS4ERR_ACCESS and mounted_on_fileid, and nothing else; the whole READDIR fails when
    rdattr_error is not asked for (RFC 7530 §16.24.4), as knfsd."""

    c = w.client()
    root = await export_root(c)
    d = await mkdir(c, root, b"listable", 0o744)
    fids = {}
    for name in (b"a", b"b", b"c"):
        f = await make_file(c, d, name)
        fids[name] = (await getattrs(c, f, N.FATTR4_FILEID))[N.FATTR4_FILEID]
    u = w.client(user(1000))
    asked = [N.FATTR4_TYPE, N.FATTR4_RDATTR_ERROR, N.FATTR4_FILEHANDLE,
             N.FATTR4_MOUNTED_ON_FILEID]  # fmt: skip
    got = await readdir_all(u, d, attrs=asked, maxcount=100)
    assert {e.name: attrs_of(e.attrs) for e in got} == {
        n: {N.FATTR4_RDATTR_ERROR: N.NFS4ERR_ACCESS, N.FATTR4_MOUNTED_ON_FILEID: fid}
        for n, fid in fids.items()
    }
    only = await readdir_all(u, d, attrs=[N.FATTR4_RDATTR_ERROR])
    assert [attrs_of(e.attrs) for e in only] == [{N.FATTR4_RDATTR_ERROR: N.NFS4ERR_ACCESS}] * 3
    await expect(u, [op.putfh(d), op.readdir(attrs=[N.FATTR4_SIZE])], N.NFS4ERR_ACCESS)
    await expect(u, [op.putfh(d), op.readdir()], N.NFS4ERR_ACCESS)  # no attributes asked
    mine = await readdir_all(c, d, attrs=[N.FATTR4_RDATTR_ERROR, N.FATTR4_TYPE])
    assert {attrs_of(e.attrs)[N.FATTR4_RDATTR_ERROR] for e in mine} == {N.NFS4_OK}


async def test_readdir_of_write_only_attribute_is_inval(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    res = await expect(
        c, [op.putfh(root), op.readdir(attrs=[N.FATTR4_TIME_ACCESS_SET])], N.NFS4ERR_INVAL
    )
    assert last(res) is None


# ------------------------------------------------------------ names (§12.7)

_NOT_UTF8 = [b"\xff", b"caf\xe9", b"\xc3", b"a\xed\xa0\x80b"]  # bad byte, latin-1, cut, surrogate


@pytest.mark.parametrize("name", _NOT_UTF8, ids=["ff", "latin1", "truncated", "surrogate"])
async def test_names_that_are_not_utf8_are_inval_in_every_op(w: World, name: bytes) -> None:
    """RFC 7530 §12.7: every op taking a component4 refuses invalid UTF-8 with INVAL."""

    c = w.client()
    root = await export_root(c)
    await make_file(c, root, b"f")
    cid = await new_clientid(c, b"utf8")
    at_root, saved = [op.putfh(root)], [op.putfh(root), op.savefh()]
    cases = [
        [*at_root, op.lookup(name)],
        [*at_root, op.mkdir(name)],
        [*at_root, op.open(1, cid, b"o", name, create=unchecked())],
        [*at_root, op.remove(name)],
        [*saved, op.rename(name, b"x")],
        [*saved, op.rename(b"f", name)],
        [*saved, op.lookup(b"f"), op.savefh(), op.putfh(root), ops.link(name)],
        [*at_root, ops.secinfo(name)],
    ]
    for ops_ in cases:
        await expect(c, ops_, N.NFS4ERR_INVAL)
    assert {e.name for e in await readdir_all(c, root)} == {b"f"}


async def test_readdir_maxcount_below_an_empty_reply_is_toosmall(w: World) -> None:
    """RFC 7530 §16.24.4: even an empty directory needs 16 bytes (verifier, eof)."""

    c = w.client()
    empty = await mkdir(c, await export_root(c), b"empty")
    for maxcount in (0, 8, 15):
        await expect(c, [op.putfh(empty), op.readdir(maxcount=maxcount)], N.NFS4ERR_TOOSMALL)
    ok = await c.check([op.putfh(empty), op.readdir(maxcount=16)])
    assert ok[1].reply.entries is None and ok[1].reply.eof
