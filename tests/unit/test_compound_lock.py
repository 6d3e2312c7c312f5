"""Byte-range locks through COMPOUND: LOCK, LOCKT, LOCKU, RELEASE_LOCKOWNER
(RFC 7530 §9.4, §16.10-16.12, §16.37), between two clients."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from nfs4_fixtures import (
    LEASE,
    RW,
    Opened,
    R,
    W,
    World,
    expect,
    export_root,
    last,
    mkdir,
    new_clientid,
    open_file,
    ops,
)

from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.state.leases import enforced_lease

READ_LT, WRITE_LT = N.READ_LT, N.WRITE_LT
EOF = N.NFS4_UINT64_MAX


@dataclass
class Party:
    c: Nfs4Client
    clientid: int
    opened: Opened


async def _two_parties(w: World, access: int = RW) -> tuple[Party, Party, bytes]:
    a = w.client(peer=("127.0.0.1", 800))
    b = w.client(peer=("127.0.0.2", 800))
    root = await export_root(a)
    ca, cb = await new_clientid(a, b"client-a"), await new_clientid(b, b"client-b")
    oa = await open_file(a, root, ca, b"oa", b"f", access=access)
    ob = await open_file(b, root, cb, b"ob", b"f", access=access, create=False)
    return Party(a, ca, oa), Party(b, cb, ob), root


async def _lock(p: Party, locktype: int, offset: int, length: int, owner: bytes) -> N.stateid4:
    """LOCK with a new lock-owner; returns the lock stateid (the open seqid advances)."""
    o = p.opened
    args = ops.lock_new(locktype, offset, length, o.seqid, o.stateid, 1, p.clientid, owner)
    (_, resok) = await p.c.check([op.putfh(o.fh), args])
    o.seqid += 1
    sid: N.stateid4 = resok.lock_stateid
    return sid


async def test_lock_conflict_between_two_clients_reports_the_holder(w: World) -> None:
    a, b, _ = await _two_parties(w)
    await _lock(a, WRITE_LT, 100, 50, b"lo-a")
    o = b.opened
    res = await expect(
        b.c,
        [
            op.putfh(o.fh),
            ops.lock_new(WRITE_LT, 120, 10, o.seqid, o.stateid, 1, b.clientid, b"lo-b"),
        ],
        N.NFS4ERR_DENIED,
    )
    denied = last(res)
    assert (denied.offset, denied.length, denied.locktype) == (100, 50, WRITE_LT)
    assert (denied.owner.clientid, denied.owner.owner) == (a.clientid, b"lo-a")


async def test_lockt_reports_conflicts_without_taking_locks(w: World) -> None:
    a, b, _ = await _two_parties(w)
    await _lock(a, WRITE_LT, 0, 10, b"lo-a")
    fh = b.opened.fh
    res = await expect(
        b.c, [op.putfh(fh), op.lockt(READ_LT, 5, 1, b.clientid, b"lo-b")], N.NFS4ERR_DENIED
    )
    assert last(res).owner.owner == b"lo-a" and last(res).length == 10
    await b.c.check([op.putfh(fh), op.lockt(WRITE_LT, 10, EOF, b.clientid, b"lo-b")])
    # the holder's own lock-owner does not conflict with itself
    await a.c.check([op.putfh(fh), op.lockt(WRITE_LT, 0, 10, a.clientid, b"lo-a")])


async def test_read_locks_share_and_write_locks_exclude(w: World) -> None:
    a, b, _ = await _two_parties(w)
    await _lock(a, READ_LT, 0, EOF, b"lo-a")
    await _lock(b, READ_LT, 0, 100, b"lo-b")
    o = b.opened
    await expect(
        b.c,
        [
            op.putfh(o.fh),
            ops.lock_new(WRITE_LT, 0, 1, o.seqid, o.stateid, 1, b.clientid, b"lo-b2"),
        ],
        N.NFS4ERR_DENIED,
    )


async def test_locku_lets_the_other_client_in(w: World) -> None:
    a, b, _ = await _two_parties(w)
    sid = await _lock(a, WRITE_LT, 0, 10, b"lo-a")
    (_, after) = await a.c.check([op.putfh(a.opened.fh), op.locku(WRITE_LT, 2, sid, 0, 10)])
    assert after.other == sid.other and after.seqid == sid.seqid + 1
    await _lock(b, WRITE_LT, 0, 10, b"lo-b")


async def test_existing_lock_owner_and_its_seqids(w: World) -> None:
    a, _, _ = await _two_parties(w)
    sid = await _lock(a, WRITE_LT, 0, 10, b"lo-a")
    fh = a.opened.fh
    more = [op.putfh(fh), ops.lock_existing(WRITE_LT, 20, 10, sid, 2)]
    (_, res2) = await a.c.check(more)
    sid2 = res2.lock_stateid
    assert sid2.other == sid.other and sid2.seqid == sid.seqid + 1
    (_, replay) = await a.c.check(more)  # retransmission: the same reply
    assert replay == res2
    await expect(
        a.c, [op.putfh(fh), ops.lock_existing(WRITE_LT, 40, 1, sid2, 7)], N.NFS4ERR_BAD_SEQID
    )
    await expect(a.c, [op.putfh(fh), op.locku(WRITE_LT, 9, sid2, 0, 10)], N.NFS4ERR_BAD_SEQID)
    await a.c.check([op.putfh(fh), op.locku(WRITE_LT, 3, sid2, 0, 10)])


async def test_lock_replay_with_a_new_lock_owner(w: World) -> None:
    a, _, _ = await _two_parties(w)
    o = a.opened
    req = [
        op.putfh(o.fh),
        ops.lock_new(WRITE_LT, 0, 1, o.seqid, o.stateid, 1, a.clientid, b"lo"),
    ]
    (_, first) = await a.c.check(req)
    (_, again) = await a.c.check(req)
    assert again == first


async def test_write_lock_on_a_read_only_open_is_openmode(w: World) -> None:
    a, _, _ = await _two_parties(w, access=R)
    o = a.opened
    await expect(
        a.c,
        [
            op.putfh(o.fh),
            ops.lock_new(WRITE_LT, 0, 1, o.seqid, o.stateid, 1, a.clientid, b"lo"),
        ],
        N.NFS4ERR_OPENMODE,
    )
    a.opened.seqid += 1  # OPENMODE is not one of the statuses that keep the seqid (§9.1.7)
    await _lock(a, READ_LT, 0, 1, b"lo2")


@pytest.mark.parametrize(("offset", "length"), [(0, 0), (10, EOF - 5), (EOF, 2)])
async def test_bad_lock_ranges_are_inval(w: World, offset: int, length: int) -> None:
    a, _, _ = await _two_parties(w)
    o = a.opened
    await expect(
        a.c,
        [
            op.putfh(o.fh),
            ops.lock_new(WRITE_LT, offset, length, o.seqid, o.stateid, 1, a.clientid, b"lo"),
        ],
        N.NFS4ERR_INVAL,
    )
    await expect(
        a.c,
        [op.putfh(o.fh), op.lockt(WRITE_LT, offset, length, a.clientid, b"lo")],
        N.NFS4ERR_INVAL,
    )


async def test_close_with_locks_held_is_locks_held(w: World) -> None:
    a, _, _ = await _two_parties(w)
    sid = await _lock(a, WRITE_LT, 0, 10, b"lo-a")
    o = a.opened
    await expect(a.c, [op.putfh(o.fh), op.close(o.seqid, o.stateid)], N.NFS4ERR_LOCKS_HELD)
    await a.c.check([op.putfh(o.fh), op.locku(WRITE_LT, 2, sid, 0, 10)])
    await a.c.check([op.putfh(o.fh), op.close(o.seqid + 1, o.stateid)])


async def test_release_lockowner(w: World) -> None:
    a, b, _ = await _two_parties(w)
    sid = await _lock(a, WRITE_LT, 0, 10, b"lo-a")
    fh = a.opened.fh
    await expect(a.c, [ops.release_lockowner(a.clientid, b"lo-a")], N.NFS4ERR_LOCKS_HELD)
    await a.c.check([op.putfh(fh), op.locku(WRITE_LT, 2, sid, 0, 10)])
    await a.c.check([ops.release_lockowner(a.clientid, b"lo-a")])
    # the released owner's stateid is gone
    res = await a.c.compound([op.putfh(fh), ops.lock_existing(WRITE_LT, 0, 1, sid, 3)])
    assert res.status == N.NFS4ERR_BAD_STATEID
    await a.c.check([ops.release_lockowner(a.clientid, b"never-used")])
    await expect(b.c, [ops.release_lockowner(0x77, b"x")], N.NFS4ERR_STALE_CLIENTID)


async def test_lockt_with_unknown_clientid_is_stale_clientid(w: World) -> None:
    a, _, _ = await _two_parties(w)
    await expect(
        a.c,
        [op.putfh(a.opened.fh), op.lockt(READ_LT, 0, 1, 0x99, b"x")],
        N.NFS4ERR_STALE_CLIENTID,
    )


@pytest.mark.parametrize("which", ["lock", "lockt", "locku"])
async def test_locking_a_directory_is_isdir(w: World, which: str) -> None:
    a, _, root = await _two_parties(w)
    d = await mkdir(a.c, root, b"d")
    o = a.opened
    sid = await _lock(a, WRITE_LT, 0, 1, b"lo")
    args = {
        "lock": ops.lock_new(WRITE_LT, 0, 1, o.seqid, o.stateid, 1, a.clientid, b"lo2"),
        "lockt": op.lockt(WRITE_LT, 0, 1, a.clientid, b"lo"),
        "locku": op.locku(WRITE_LT, 2, sid, 0, 1),
    }[which]
    await expect(a.c, [op.putfh(d), args], N.NFS4ERR_ISDIR)
    pseudo = (await a.c.check([op.putrootfh(), op.getfh()]))[1].object
    await expect(a.c, [op.putfh(pseudo), args], N.NFS4ERR_ISDIR)


async def test_lock_with_a_stateid_of_another_file_is_bad_stateid(w: World) -> None:
    a, _, root = await _two_parties(w)
    g = await open_file(a.c, root, a.clientid, b"og", b"g")
    o = a.opened
    await expect(
        a.c,
        [
            op.putfh(g.fh),
            ops.lock_new(WRITE_LT, 0, 1, o.seqid, o.stateid, 1, a.clientid, b"lo"),
        ],
        N.NFS4ERR_BAD_STATEID,
    )


# -- lease expiry (§9.5, §9.6.3.1) and the checks of open_to_lock_owner4 (§16.10.5) ----------


async def test_a_silent_clients_lock_blocks_others_for_the_lease_plus_the_margin_only(
    w: World,
) -> None:
    a, b, _ = await _two_parties(w)
    await _lock(a, WRITE_LT, 0, 10, b"lo-a")  # then A stops renewing
    o = b.opened
    w.clock.advance(enforced_lease(LEASE) - 0.1)  # 91.9 s: A's lease still runs
    await expect(
        b.c,
        [
            op.putfh(o.fh),
            ops.lock_new(WRITE_LT, 0, 10, o.seqid, o.stateid, 1, b.clientid, b"lo-b"),
        ],
        N.NFS4ERR_DENIED,
    )
    o.seqid += 1  # NFS4ERR_DENIED advances the open-owner's seqid (§9.1.7)
    w.clock.advance(0.2)  # 92.1 s: A is courteous and yields to the conflict
    await _lock(b, WRITE_LT, 0, 10, b"lo-b")
    await expect(a.c, [op.renew(a.clientid)], N.NFS4ERR_EXPIRED)


async def test_open_to_lock_owner_naming_another_client_is_bad_stateid(w: World) -> None:
    a, b, _ = await _two_parties(w)
    o = a.opened
    await expect(
        a.c,
        [
            op.putfh(o.fh),
            ops.lock_new(WRITE_LT, 0, 10, o.seqid, o.stateid, 1, b.clientid, b"lo"),
        ],
        N.NFS4ERR_BAD_STATEID,
    )
    await _lock(a, WRITE_LT, 0, 10, b"lo")  # the seqid did not advance (§9.1.7)
    await _lock(b, READ_LT, 20, 10, b"lo")  # and B's lock-owner "lo" is its own


async def test_lock_unlock_across_an_open_upgrade_and_downgrade(w: World) -> None:
    """OPEN(read), LOCK(read), OPEN(write), LOCKU, OPEN_DOWNGRADE(write), LOCK(write), each
    LOCK naming the lock-owner as new with its next lock seqid (as pynfs LOCK24 does)."""

    c = w.client()
    root = await export_root(c)
    cid = await new_clientid(c)
    o = await open_file(c, root, cid, b"oo", b"f", access=R)
    lk = ops.lock_new(READ_LT, 0, EOF, o.seqid, o.stateid, 0, cid, b"lo")
    (_, first) = await c.check([op.putfh(o.fh), lk])
    (_, up) = await c.check([op.putfh(root), op.open(o.seqid + 1, cid, b"oo", b"f", access=W)])
    lsid = first.lock_stateid
    (_, lsid) = await c.check([op.putfh(o.fh), op.locku(READ_LT, 1, lsid, 0, EOF)])
    down = ops.open_downgrade(up.stateid, o.seqid + 2, W, 0)
    (_, dg) = await c.check([op.putfh(o.fh), down])
    lk = ops.lock_new(WRITE_LT, 0, EOF, o.seqid + 3, dg.open_stateid, 2, cid, b"lo")
    (_, again) = await c.check([op.putfh(o.fh), lk])
    assert again.lock_stateid.other == lsid.other  # the lock-owner's state for this open
    assert again.lock_stateid.seqid == lsid.seqid + 1
    stale = ops.lock_new(WRITE_LT, 0, 1, o.seqid + 4, dg.open_stateid, 2, cid, b"lo")
    await expect(c, [op.putfh(o.fh), stale], N.NFS4ERR_BAD_SEQID)  # not the next seqid
