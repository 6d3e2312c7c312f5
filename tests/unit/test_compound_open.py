"""OPEN, OPEN_CONFIRM, OPEN_DOWNGRADE, CLOSE through COMPOUND (RFC 7530 §9.1.7-§9.1.11, §9.9,
§16.2, §16.16, §16.18, §16.19)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nfs4_fixtures import (
    ANON,
    DENY_NONE,
    DENY_READ,
    DENY_WRITE,
    RW,
    R,
    W,
    World,
    attrs_of,
    expect,
    export_root,
    fattr,
    getattrs,
    last,
    lookup_fh,
    make_world,
    mkdir,
    new_clientid,
    open_file,
    ops,
    readdir_all,
    user,
)

from pynfsd.client.nfs4 import Nfs4Client, op, unchecked
from pynfsd.gen import nfs4 as N

CONFIRM = 0x2


async def _setup(w: World) -> tuple[Nfs4Client, bytes, int]:
    c = w.client()
    return c, await export_root(c), await new_clientid(c)


def _create(
    seqid: int,
    clientid: int,
    name: bytes,
    mode: int,
    how: object,
    owner: bytes = b"o",
    access: int = RW,
    deny: int = DENY_NONE,
) -> N.nfs_argop4:
    return ops.open_create(seqid, clientid, owner, name, mode, how, access=access, deny=deny)


# ------------------------------------------------------------ create modes (§16.16.5)


async def test_unchecked_creates_a_new_file(w: World) -> None:
    c, root, cid = await _setup(w)
    mode = fattr({N.FATTR4_MODE: 0o640})
    vals = await c.check(
        [
            op.putfh(root),
            _create(1, cid, b"f", N.UNCHECKED4, mode),
            op.getfh(),
            op.getattr(N.FATTR4_TYPE, N.FATTR4_MODE),
        ]
    )
    resok = vals[1]
    assert resok.cinfo.after > resok.cinfo.before
    assert resok.rflags & CONFIRM  # a new open-owner must confirm (§9.1.11)
    assert resok.attrset == mode.attrmask
    assert resok.delegation.delegation_type == N.OPEN_DELEGATE_NONE
    assert await lookup_fh(c, root, b"f") == vals[2].object
    assert attrs_of(vals[3]) == {N.FATTR4_TYPE: N.NF4REG, N.FATTR4_MODE: 0o640}


async def test_unchecked_on_an_existing_file_keeps_it(w: World) -> None:
    c, root, cid = await _setup(w)
    first = await open_file(c, root, cid, b"o", b"f")
    await c.check([op.putfh(first.fh), op.write(ANON, 0, b"content")])
    second = await open_file(c, root, cid, b"o2", b"f")
    assert second.fh == first.fh
    got = await getattrs(c, first.fh, N.FATTR4_SIZE, N.FATTR4_MODE)
    assert got == {N.FATTR4_SIZE: 7, N.FATTR4_MODE: 0o644}


async def test_unchecked_with_size_zero_truncates_an_existing_file(w: World) -> None:
    c, root, cid = await _setup(w)
    first = await open_file(c, root, cid, b"o", b"f")
    await c.check([op.putfh(first.fh), op.write(ANON, 0, b"content")])
    trunc = fattr({N.FATTR4_SIZE: 0, N.FATTR4_MODE: 0o600})
    await c.check([op.putfh(root), _create(1, cid, b"f", N.UNCHECKED4, trunc, b"o2")])
    got = await getattrs(c, first.fh, N.FATTR4_SIZE, N.FATTR4_MODE)
    assert got == {N.FATTR4_SIZE: 0, N.FATTR4_MODE: 0o644}  # mode is not used (§16.16.5)


async def test_guarded_on_an_existing_file_is_exist(w: World) -> None:
    c, root, cid = await _setup(w)
    guarded = fattr({N.FATTR4_MODE: 0o600})
    await c.check([op.putfh(root), _create(1, cid, b"f", N.GUARDED4, guarded)])
    res = await expect(
        c, [op.putfh(root), _create(1, cid, b"f", N.GUARDED4, guarded, b"p")], N.NFS4ERR_EXIST
    )
    assert last(res) is None


async def test_exclusive_create_and_its_retransmission(w: World) -> None:
    c, root, cid = await _setup(w)
    verf = b"12345678"
    a = await c.check([op.putfh(root), _create(1, cid, b"x", N.EXCLUSIVE4, verf), op.getfh()])
    assert a[1].attrset == [
        0,
        (1 << (N.FATTR4_TIME_ACCESS - 32)) | (1 << (N.FATTR4_TIME_MODIFY - 32)),
    ]
    # A retransmission whose reply was lost (new owner, so no replay cache): same file.
    b = await c.check(
        [op.putfh(root), _create(1, cid, b"x", N.EXCLUSIVE4, verf, b"p2"), op.getfh()]
    )
    assert b[2].object == a[2].object
    await expect(
        c,
        [op.putfh(root), _create(1, cid, b"x", N.EXCLUSIVE4, b"87654321", b"p3")],
        N.NFS4ERR_EXIST,
    )
    await expect(
        c,
        [op.putfh(root), _create(1, cid, b"x", N.GUARDED4, fattr({}), b"p4")],
        N.NFS4ERR_EXIST,
    )


async def test_exclusive_over_a_file_created_otherwise_is_exist(w: World) -> None:
    c, root, cid = await _setup(w)
    await open_file(c, root, cid, b"o", b"f")
    await expect(
        c,
        [op.putfh(root), _create(1, cid, b"f", N.EXCLUSIVE4, b"\0" * 8, b"p")],
        N.NFS4ERR_EXIST,
    )


async def test_nocreate_of_a_missing_file_is_noent(w: World) -> None:
    c, root, cid = await _setup(w)
    await expect(c, [op.putfh(root), op.open(1, cid, b"o", b"nope")], N.NFS4ERR_NOENT)


async def test_open_of_a_directory_is_isdir(w: World) -> None:
    c, root, cid = await _setup(w)
    await mkdir(c, root, b"d")
    await expect(c, [op.putfh(root), op.open(1, cid, b"o", b"d")], N.NFS4ERR_ISDIR)
    await expect(
        c, [op.putfh(root), op.open(1, cid, b"o", b"d", create=unchecked())], N.NFS4ERR_ISDIR
    )


async def test_open_of_a_symlink_is_symlink(w: World) -> None:
    c, root, cid = await _setup(w)
    await c.check([op.putfh(root), op.symlink(b"l", b"target")])
    await expect(c, [op.putfh(root), op.open(1, cid, b"o", b"l")], N.NFS4ERR_SYMLINK)
    await expect(
        c, [op.putfh(root), op.open(1, cid, b"o", b"l", create=unchecked())], N.NFS4ERR_SYMLINK
    )


async def test_open_in_a_file_is_notdir(w: World) -> None:
    c, root, cid = await _setup(w)
    f = await open_file(c, root, cid, b"o", b"f")
    await expect(c, [op.putfh(f.fh), op.open(1, cid, b"p", b"x")], N.NFS4ERR_NOTDIR)


@pytest.mark.parametrize(("access", "deny"), [(0, 0), (4, 0), (1, 4)])
async def test_open_with_bad_share_bits_is_inval_and_creates_nothing(
    w: World, access: int, deny: int
) -> None:
    c, root, cid = await _setup(w)
    bad = op.open(1, cid, b"o", b"f", access=access, deny=deny, create=unchecked())
    await expect(c, [op.putfh(root), bad], N.NFS4ERR_INVAL)
    assert await readdir_all(c, root) == []


async def test_open_names_are_checked(w: World) -> None:
    c, root, cid = await _setup(w)
    cases = [
        (b"", N.NFS4ERR_INVAL),
        (b"..", N.NFS4ERR_BADNAME),
        (b"a/b", N.NFS4ERR_BADCHAR),
        (b"z" * 256, N.NFS4ERR_NAMETOOLONG),
    ]
    for i, (name, status) in enumerate(cases):
        # a fresh owner each time: reusing seqid 1 on one owner would be a replay
        bad = op.open(1, cid, b"o%d" % i, name, create=unchecked())
        await expect(c, [op.putfh(root), bad], status)


async def test_open_with_unknown_clientid_is_stale_clientid(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    await expect(
        c,
        [op.putfh(root), op.open(1, 0x1234, b"o", b"f", create=unchecked())],
        N.NFS4ERR_STALE_CLIENTID,
    )


async def test_open_for_write_without_permission_is_access(w: World) -> None:
    c, root, cid = await _setup(w)
    await open_file(c, root, cid, b"o", b"f")  # mode 0644, owned by root
    u = w.client(user(1000))
    ucid = await new_clientid(u, b"user-client")
    await expect(u, [op.putfh(root), op.open(1, ucid, b"u", b"f", access=W)], N.NFS4ERR_ACCESS)
    await open_file(u, root, ucid, b"u2", b"f", access=R, create=False)


async def test_open_create_in_a_pseudo_directory_is_rofs(tmp_path: Path) -> None:
    w = make_world(tmp_path, ["/srv/export *(rw,no_root_squash)"])

    try:
        c = w.client()
        cid = await new_clientid(c)
        await expect(
            c, [op.putrootfh(), op.open(1, cid, b"o", b"f", create=unchecked())], N.NFS4ERR_ROFS
        )
    finally:
        w.close()


# ------------------------------------------------------------ OPEN_CONFIRM and seqids (§9.1.7)


async def test_open_confirm_flow(w: World) -> None:
    c, root, cid = await _setup(w)
    vals = await c.check(
        [op.putfh(root), op.open(7, cid, b"o", b"f", create=unchecked()), op.getfh()]
    )
    sid, fh = vals[1].stateid, vals[2].object
    assert vals[1].rflags & CONFIRM
    await expect(c, [op.putfh(fh), op.open_confirm(sid, 7)], N.NFS4ERR_BAD_SEQID)
    # the bad seqid cancelled the unconfirmed open (§16.18.5): start again
    vals = await c.check(
        [op.putfh(root), op.open(9, cid, b"o", b"f", create=unchecked()), op.getfh()]
    )
    sid = vals[1].stateid
    (_, conf) = await c.check([op.putfh(fh), op.open_confirm(sid, 10)])
    assert conf.open_stateid.other == sid.other
    assert conf.open_stateid.seqid == sid.seqid + 1
    # a confirmed owner opens without confirmation
    (_, again) = await c.check(
        [op.putfh(root), op.open(11, cid, b"o", b"g", create=unchecked())]
    )
    assert not again.rflags & CONFIRM


async def test_open_confirm_on_another_file_is_bad_stateid(w: World) -> None:
    c, root, cid = await _setup(w)
    vals = await c.check([op.putfh(root), op.open(1, cid, b"o", b"f", create=unchecked())])
    await expect(
        c, [op.putfh(root), op.open_confirm(vals[1].stateid, 2)], N.NFS4ERR_BAD_STATEID
    )


async def test_open_replay_returns_the_same_reply(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f")
    req = [op.putfh(root), op.open(o.seqid, cid, b"o", b"g", create=unchecked()), op.getfh()]
    first = await c.check(req)
    again = await c.check(req)
    assert again[1] == first[1] and again[2] == first[2]
    await expect(
        c,
        [op.putfh(root), op.open(o.seqid + 5, cid, b"o", b"h", create=unchecked())],
        N.NFS4ERR_BAD_SEQID,
    )
    await c.check([op.putfh(root), op.open(o.seqid + 1, cid, b"o", b"h", create=unchecked())])


async def test_close_replay_and_use_after_close(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f")
    req = [op.putfh(o.fh), op.close(o.seqid, o.stateid)]
    (_, closed) = await c.check(req)
    (_, replay) = await c.check(req)
    assert replay == closed
    res = await c.compound([op.putfh(o.fh), op.close(o.seqid + 1, o.stateid)])
    assert res.status in (N.NFS4ERR_BAD_STATEID, N.NFS4ERR_OLD_STATEID)


async def test_close_with_wrong_file_or_bad_seqid(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f")
    await expect(c, [op.putfh(o.fh), op.close(o.seqid + 3, o.stateid)], N.NFS4ERR_BAD_SEQID)
    await expect(c, [op.putfh(root), op.close(o.seqid, o.stateid)], N.NFS4ERR_BAD_STATEID)
    # neither BAD_SEQID nor BAD_STATEID advances the owner's seqid (§9.1.7)
    await c.check([op.putfh(o.fh), op.close(o.seqid, o.stateid)])


# ------------------------------------------------------------ shares (§9.9)


async def test_share_deny_conflicts_between_two_clients(w: World) -> None:
    c, root, cid = await _setup(w)
    other = w.client(peer=("127.0.0.2", 900))
    cid2 = await new_clientid(other, b"client-2")
    await open_file(c, root, cid, b"o", b"f", access=R, deny=DENY_WRITE)
    await expect(
        other, [op.putfh(root), op.open(1, cid2, b"p", b"f", access=W)], N.NFS4ERR_SHARE_DENIED
    )
    await expect(
        other,
        [op.putfh(root), op.open(1, cid2, b"p", b"f", access=R, deny=DENY_READ)],
        N.NFS4ERR_SHARE_DENIED,
    )
    await open_file(other, root, cid2, b"q", b"f", access=R, create=False)


async def test_share_conflicts_apply_to_the_same_client_too(w: World) -> None:
    c, root, cid = await _setup(w)
    await open_file(c, root, cid, b"o", b"f", access=RW, deny=DENY_WRITE)
    await expect(
        c,
        [op.putfh(root), op.open(1, cid, b"other-owner", b"f", access=W)],
        N.NFS4ERR_SHARE_DENIED,
    )


async def test_close_releases_the_share(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f", access=RW, deny=DENY_WRITE)
    await c.check([op.putfh(o.fh), op.close(o.seqid, o.stateid)])
    await open_file(c, root, cid, b"p", b"f", access=W, create=False)


# ------------------------------------------------------------ OPEN_DOWNGRADE (§16.19)


async def test_open_downgrade(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f", access=R)
    up = await open_file(
        c, root, cid, b"o", b"f", access=W, deny=DENY_WRITE, create=False, seqid=o.seqid
    )
    # The modes must be the union of some of the OPENs (§16.19.4): {(R, NONE), (W, WRITE)}.
    not_union = ops.open_downgrade(up.stateid, up.seqid, RW, DENY_NONE)
    await expect(c, [op.putfh(o.fh), not_union], N.NFS4ERR_INVAL)
    seqid = up.seqid + 1  # INVAL is not one of the statuses that keep the seqid (§9.1.7)
    down_to_read = ops.open_downgrade(up.stateid, seqid, R, DENY_NONE)
    (_, down) = await c.check([op.putfh(o.fh), down_to_read])
    sid = down.open_stateid
    assert sid.other == o.stateid.other and sid.seqid == up.stateid.seqid + 1
    await expect(c, [op.putfh(o.fh), op.write(sid, 0, b"x")], N.NFS4ERR_OPENMODE)
    other = w.client(peer=("127.0.0.3", 900))
    cid2 = await new_clientid(other, b"client-2")
    await open_file(other, root, cid2, b"p", b"f", access=W, create=False)  # deny is gone
    replay = await c.check([op.putfh(o.fh), down_to_read])
    assert replay[1] == down
    await expect(
        c,
        [op.putfh(o.fh), ops.open_downgrade(sid, seqid + 5, R, DENY_NONE)],
        N.NFS4ERR_BAD_SEQID,
    )


async def test_truncating_open_respects_deny_write_of_another_client(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f", access=RW, deny=DENY_WRITE)
    await c.check([op.putfh(o.fh), op.write(o.stateid, 0, b"precious")])
    other = w.client(peer=("127.0.0.3", 900))
    cid2 = await new_clientid(other, b"client-2")
    trunc = fattr({N.FATTR4_SIZE: 0})
    await expect(
        other,
        [op.putfh(root), _create(1, cid2, b"f", N.UNCHECKED4, trunc, b"p", access=W)],
        N.NFS4ERR_SHARE_DENIED,
    )
    await expect(
        other,
        [op.putfh(root), _create(1, cid2, b"f", N.UNCHECKED4, trunc, b"q", access=R)],
        N.NFS4ERR_INVAL,
    )
    assert (await getattrs(c, o.fh, N.FATTR4_SIZE))[N.FATTR4_SIZE] == 8


async def test_open_downgrade_on_the_wrong_file_is_bad_stateid(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f", access=RW)
    await expect(
        c,
        [op.putfh(root), ops.open_downgrade(o.stateid, o.seqid, R, DENY_NONE)],
        N.NFS4ERR_BAD_STATEID,
    )


async def test_upgrade_then_both_stateids_work_in_one_open(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f", access=R)
    up = await open_file(c, root, cid, b"o", b"f", access=W, create=False, seqid=o.seqid)
    await c.check([op.putfh(up.fh), op.write(up.stateid, 0, b"ok")])
    await c.check([op.putfh(up.fh), op.close(up.seqid, up.stateid)])


async def test_reclaim_outside_the_grace_period_is_no_grace(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f")
    claim = N.open_claim4(N.CLAIM_PREVIOUS, N.OPEN_DELEGATE_NONE)
    args = N.OPEN4args(
        1, R, DENY_NONE, N.open_owner4(cid, b"r"), N.openflag4(N.OPEN4_NOCREATE, None), claim
    )
    await expect(c, [op.putfh(o.fh), N.nfs_argop4(N.OP_OPEN, args)], N.NFS4ERR_NO_GRACE)


async def test_same_seqid_for_another_operation_is_bad_seqid(w: World) -> None:
    c, root, cid = await _setup(w)
    o = await open_file(c, root, cid, b"o", b"f")
    await c.check([op.putfh(o.fh), ops.open_downgrade(o.stateid, o.seqid, RW, DENY_NONE)])
    # a CLOSE with the seqid just used by OPEN_DOWNGRADE is not its retransmission
    await expect(c, [op.putfh(o.fh), op.close(o.seqid, o.stateid)], N.NFS4ERR_BAD_SEQID)


@pytest.mark.parametrize(
    ("objtype", "value"),
    [(N.NF4FIFO, None), (N.NF4SOCK, None), (N.NF4CHR, N.specdata4(1, 3)),
     (N.NF4BLK, N.specdata4(8, 0))],
    ids=["fifo", "socket", "chr", "blk"],
)
async def test_open_of_a_special_file_is_symlink(w: World, objtype: int, value: object) -> None:
    """RFC 7530 §16.16.5: not a directory and not a regular file: NFS4ERR_SYMLINK."""

    c, root, cid = await _setup(w)
    await c.check([op.putfh(root), ops.create(objtype, b"s", value)])
    await expect(c, [op.putfh(root), op.open(1, cid, b"o", b"s")], N.NFS4ERR_SYMLINK)
    create = op.open(1, cid, b"p", b"s", create=unchecked())
    await expect(c, [op.putfh(root), create], N.NFS4ERR_SYMLINK)


async def test_stateids_of_a_rebooted_client_are_expired(w: World) -> None:
    """A new verifier confirmed for the same client id string: the old incarnation's
    stateids get NFS4ERR_EXPIRED (as knfsd and Ganesha answer), its client id STALE."""

    c, root, clientid = await _setup(w)
    o = await open_file(c, root, clientid, b"oo", b"f")
    rebooted = await new_clientid(c, verf=b"booted-2")
    assert rebooted != clientid
    await expect(c, [op.putfh(o.fh), op.read(o.stateid, 0, 1)], N.NFS4ERR_EXPIRED)
    await expect(c, [op.putfh(o.fh), op.close(o.seqid, o.stateid)], N.NFS4ERR_EXPIRED)
    await expect(c, [op.renew(clientid)], N.NFS4ERR_STALE_CLIENTID)
    await open_file(c, root, rebooted, b"oo", b"f")  # the new incarnation starts afresh


async def test_close_of_a_file_renamed_over_succeeds(w: World) -> None:
    """The open keeps the replaced file alive until its CLOSE (as knfsd); then it is stale."""

    c, root, clientid = await _setup(w)
    o = await open_file(c, root, clientid, b"oo", b"f")
    await open_file(c, root, clientid, b"o2", b"g")
    await c.check([op.putfh(root), op.savefh(), op.rename(b"g", b"f")])
    await c.check([op.putfh(o.fh), op.read(o.stateid, 0, 1)])
    await c.check([op.putfh(o.fh), op.close(o.seqid, o.stateid)])
    await expect(c, [op.putfh(o.fh)], N.NFS4ERR_STALE)
