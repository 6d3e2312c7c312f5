"""Client ids and leases through COMPOUND: SETCLIENTID, SETCLIENTID_CONFIRM, RENEW, and the
delegation ops a server without delegations still answers (RFC 7530 §9.5, §16.5, §16.6,
§16.28, §16.33, §16.34).  Time is the manual clock: leases expire only when a test says so."""

from __future__ import annotations

from pathlib import Path

from nfs4_fixtures import (
    DENY_WRITE,
    LEASE,
    RW,
    W,
    World,
    expect,
    export_root,
    last,
    make_world,
    new_clientid,
    open_file,
    user,
)

from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N

PAST_LEASE = LEASE * 2 + 1  # beyond any enforced lease (announced LEASE, enforced longer)


async def test_setclientid_and_confirm(w: World) -> None:
    c = w.client()
    (resok,) = await c.check([op.setclientid(b"v" * 8, b"my-client")])
    assert len(resok.setclientid_confirm) == 8
    await expect(c, [op.renew(resok.clientid)], N.NFS4ERR_STALE_CLIENTID)  # unconfirmed
    await c.check([op.setclientid_confirm(resok.clientid, resok.setclientid_confirm)])
    await c.check([op.renew(resok.clientid)])
    # a retransmitted confirm is fine (§16.34.5)
    await c.check([op.setclientid_confirm(resok.clientid, resok.setclientid_confirm)])


async def test_setclientid_confirm_with_wrong_verifier_or_id(w: World) -> None:
    c = w.client()
    (resok,) = await c.check([op.setclientid(b"v" * 8, b"my-client")])
    bad = bytes(b ^ 0xFF for b in resok.setclientid_confirm)
    await expect(c, [op.setclientid_confirm(resok.clientid, bad)], N.NFS4ERR_STALE_CLIENTID)
    await expect(
        c,
        [op.setclientid_confirm(resok.clientid ^ 0x5A5A, resok.setclientid_confirm)],
        N.NFS4ERR_STALE_CLIENTID,
    )


async def test_renew_of_unknown_clientid_is_stale_clientid(w: World) -> None:
    await expect(w.client(), [op.renew(0x1234_0000_0001)], N.NFS4ERR_STALE_CLIENTID)


async def test_clientid_of_another_server_instance_is_stale(w: World, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    cid = await new_clientid(w.client())
    other = make_world(tmp_path / "other")
    try:
        await expect(other.client(), [op.renew(cid)], N.NFS4ERR_STALE_CLIENTID)
    finally:
        other.close()


async def test_lease_expires_without_renewal(w: World) -> None:
    c = w.client()
    cid = await new_clientid(c)
    w.clock.advance(PAST_LEASE)
    await expect(c, [op.renew(cid)], N.NFS4ERR_EXPIRED)


async def test_renew_keeps_the_lease(w: World) -> None:
    c = w.client()
    cid = await new_clientid(c)
    for _ in range(5):
        w.clock.advance(LEASE - 5)
        await c.check([op.renew(cid)])


async def test_using_state_renews_the_lease(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    cid = await new_clientid(c)
    o = await open_file(c, root, cid, b"o", b"f")
    for _ in range(4):
        w.clock.advance(LEASE - 5)
        await c.check([op.putfh(o.fh), op.read(o.stateid, 0, 1)])
    await c.check([op.renew(cid)])


async def test_expired_client_loses_its_opens(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    cid = await new_clientid(c)
    o = await open_file(c, root, cid, b"o", b"f", access=RW, deny=DENY_WRITE)
    w.clock.advance(PAST_LEASE)
    other = w.client(peer=("127.0.0.2", 800))
    cid2 = await new_clientid(other, b"client-2")
    await open_file(other, root, cid2, b"p", b"f", access=W, create=False)
    await expect(c, [op.putfh(o.fh), op.read(o.stateid, 0, 1)], N.NFS4ERR_EXPIRED)
    await expect(c, [op.putfh(root), op.open(o.seqid, cid, b"o", b"f")], N.NFS4ERR_EXPIRED)
    # the client starts over with a new client id
    cid3 = await new_clientid(c, b"client-1", b"w" * 8)
    await open_file(c, root, cid3, b"o", b"f", access=RW, create=False)


async def test_client_reboot_drops_the_old_state(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    cid = await new_clientid(c, b"rebooting", b"1" * 8)
    o = await open_file(c, root, cid, b"o", b"f", deny=DENY_WRITE)
    cid2 = await new_clientid(c, b"rebooting", b"2" * 8)  # new verifier: a reboot
    assert cid2 != cid
    await expect(c, [op.putfh(o.fh), op.read(o.stateid, 0, 1)], N.NFS4ERR_EXPIRED)
    await open_file(c, root, cid2, b"o", b"f", access=W, create=False)


async def test_id_in_use_by_another_principal_is_clid_inuse(w: World) -> None:
    c = w.client()
    cid = await new_clientid(c, b"shared-id")
    await open_file(c, await export_root(c), cid, b"o", b"f")  # the record holds state
    intruder = w.client(user(1000), peer=("127.0.0.9", 700))
    res = await expect(intruder, [op.setclientid(b"x" * 8, b"shared-id")], N.NFS4ERR_CLID_INUSE)
    where = last(res)
    assert isinstance(where, N.netaddr4)


async def test_a_callback_address_longer_than_any_real_one_is_kept_as_none(w: World) -> None:
    """SETCLIENTID succeeds, but a 100 KB r_addr is not held in the client record (its
    memory stays bounded), and CLID_INUSE names the client's own address (§16.33.4)."""

    c = w.client()
    (resok,) = await c.check([op.setclientid(b"v" * 8, b"huge-cb", addr="1." * 50_000)])
    await c.check([op.setclientid_confirm(resok.clientid, resok.setclientid_confirm)])
    await open_file(c, await export_root(c), resok.clientid, b"o", b"f")
    intruder = w.client(user(1000), peer=("127.0.0.9", 700))
    res = await expect(intruder, [op.setclientid(b"x" * 8, b"huge-cb")], N.NFS4ERR_CLID_INUSE)
    assert last(res) == N.netaddr4("tcp", "127.0.0.1")
    target = w.server.state.clients.confirmed[resok.clientid].callback
    assert (target.netid, target.uaddr) == ("", "")


async def test_delegpurge_is_notsupp_and_delegreturn_of_an_open_stateid_is_bad(w: World) -> None:
    c = w.client()
    root = await export_root(c)
    cid = await new_clientid(c)
    o = await open_file(c, root, cid, b"o", b"f")
    purge = N.nfs_argop4(N.OP_DELEGPURGE, N.DELEGPURGE4args(cid))
    await expect(c, [purge], N.NFS4ERR_NOTSUPP)
    ret = N.nfs_argop4(N.OP_DELEGRETURN, N.DELEGRETURN4args(o.stateid))
    await expect(c, [op.putfh(o.fh), ret], N.NFS4ERR_BAD_STATEID)
