"""Delegations through COMPOUND (RFC 7530 §10.4, §16.6, §16.16): an in-process server, its real
callback client, and the client library's callback service over loopback TCP; the state's
clock is a manual one, so leases pass without waiting."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pynfsd.client.callback import CallbackService
from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, bitmap, in_process, mode_attr, op
from pynfsd.client.session import ACCESS_BOTH, ACCESS_READ, ClientSession, OpenFile
from pynfsd.exports import StaticExportResolver, parse_export_line
from pynfsd.fs.memory import MemoryBackend
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.callback.path import PathState
from pynfsd.nfs4.server import NFSServer, ServerConfig
from pynfsd.nfs4.state.leases import enforced_lease
from tests.clock import ManualClock

ANON = N.stateid4(0, bytes(12))
LEASE = 90
ENFORCED = enforced_lease(LEASE)


@dataclass
class World:
    server: NFSServer
    clock: ManualClock
    a: ClientSession  # with a callback service: holds delegations
    svc: CallbackService
    b: ClientSession  # another client, another address, no callback
    root: bytes

    async def fh_of(self, name: bytes) -> bytes:
        ok = await self.b.nfs.check([op.putfh(self.root), op.lookup(name), op.getfh()])
        return bytes(ok[-1].object)


async def wait_for(cond: Callable[[], bool]) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@asynccontextmanager
async def world(tmp_path: Path, export_opts: str = "rw,no_root_squash", *,
                delegations: bool = True, policy: str = "return") -> AsyncIterator[World]:
    be = MemoryBackend()
    clock = ManualClock()
    config = ServerConfig(state_dir=str(tmp_path), backend_factory=lambda e, s: be,
                          lease_time=LEASE, grace_time=0, clock=clock, delegations=delegations)
    server = NFSServer(config, StaticExportResolver([parse_export_line(f"/export *({export_opts})")]))
    svc = await CallbackService.start(policy=policy)  # type: ignore[arg-type]
    a = ClientSession(in_process(server, peer=("127.0.0.1", 900)), b"client-A", callback=svc)
    b = ClientSession(in_process(server, peer=("127.0.0.2", 901)), b"client-B")
    await a.establish()
    await b.establish()
    await wait_for(lambda: server.callbacks.path(a.clientid).up)
    root = await b.lookup_path("/export")
    f = await b.open(root, b"f", create=True)
    await b.write(f, 0, b"0123456789")
    await b.close(f)
    try:
        yield World(server, clock, a, svc, b, root)
    finally:
        await svc.close()
        await server.shutdown()


async def until_ok(call: Callable[[], Awaitable[Any]]) -> Any:
    """Retry on NFS4ERR_DELAY as a client does."""
    for _ in range(200):
        try:
            return await call()
        except Nfs4Failure as e:
            if e.status != N.NFS4ERR_DELAY:
                raise
        await asyncio.sleep(0.01)
    raise AssertionError("still NFS4ERR_DELAY")


async def status_of(c: Nfs4Client, ops: list[N.nfs_argop4]) -> int:
    return (await c.compound(ops)).status


async def read_delegated(w: World, access: int = ACCESS_READ) -> OpenFile:
    f = await w.a.open(w.root, b"f", access=access)
    assert f.delegation is not None
    return f


# ------------------------------------------------------------------ grant


async def test_open_for_read_gets_a_read_delegation_and_write_a_write_one(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        f = await read_delegated(w)
        assert f.delegation is not None and not f.delegation.write
        g = await w.a.open(w.root, b"g", create=True)
        assert g.delegation is not None and g.delegation.write
        # the reply as knfsd sends it: no space limit, an ACE that leaves checks to the server
        o = w.a.owner()
        res = await w.a.nfs.check([op.putfh(w.root), op.open(o.seqid, w.a.clientid, o.name, b"h",
                                   create=N.createhow4(N.UNCHECKED4, mode_attr(0o644)))])
        o.seqid += 1
        wd = res[1].delegation.value
        assert wd.space_limit == N.nfs_space_limit4(N.NFS_LIMIT_SIZE, N.NFS4_UINT64_MAX)
        assert wd.permissions == N.nfsace4(0, 0, 0, b"EVERYONE@") and not wd.recall
        # the holder reads and writes with the delegation stateid
        assert await w.a.read(OpenFile(g.fh, g.delegation.stateid, o), 0, 5) == b""
        await w.a.write(OpenFile(g.fh, g.delegation.stateid, o), 0, b"abc")
        await w.a.read(OpenFile(f.fh, f.delegation.stateid, o), 0, 5)
        with pytest.raises(Nfs4Failure) as e:
            await w.a.write(OpenFile(f.fh, f.delegation.stateid, o), 0, b"x")
        assert e.value.status == N.NFS4ERR_OPENMODE


@pytest.mark.parametrize("how", ["server", "export"])
async def test_delegations_turned_off(tmp_path: Path, how: str) -> None:
    opts = "rw,no_root_squash,no_delegations" if how == "export" else "rw,no_root_squash"
    async with world(tmp_path, opts, delegations=how != "server") as w:
        f = await w.a.open(w.root, b"f", access=ACCESS_READ)
        assert f.delegation is None


async def test_no_delegation_while_another_client_writes(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await w.b.open(w.root, b"f", access=ACCESS_BOTH)
        assert (await w.a.open(w.root, b"f", access=ACCESS_READ)).delegation is None


# ------------------------------------------------------------------ recall


async def test_a_writer_recalls_the_read_delegation_and_proceeds_once_returned(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await read_delegated(w)
        await until_ok(lambda: w.b.open(w.root, b"f", access=ACCESS_BOTH, owner=b"w"))
        assert len(w.svc.recalls) == 1 and w.svc.delegations == {}
        assert w.server.state.delegations.count == 0


async def test_an_ignored_recall_is_revoked_after_the_lease(tmp_path: Path) -> None:
    async with world(tmp_path, policy="ignore") as w:
        f = await read_delegated(w)
        assert f.delegation is not None
        with pytest.raises(Nfs4Failure) as e:
            await w.b.open(w.root, b"f", access=ACCESS_BOTH, owner=b"w")
        assert e.value.status == N.NFS4ERR_DELAY
        await wait_for(lambda: len(w.svc.recalls) == 1)
        w.clock.advance(ENFORCED - 1)
        await w.a.renew()  # A is alive; it just keeps the delegation
        await w.b.renew()
        assert await status_of(w.b.nfs, [op.putfh(w.root), op.remove(b"f")]) == N.NFS4ERR_DELAY
        w.clock.advance(1)
        await w.b.open(w.root, b"f", access=ACCESS_BOTH, owner=b"w2")
        sid = f.delegation.stateid
        assert await status_of(w.a.nfs, [op.putfh(f.fh), op.read(sid, 0, 1)]) == \
            N.NFS4ERR_BAD_STATEID
        assert len(w.svc.recalls) == 1


def _conflicts(w: World, fh: bytes) -> dict[str, list[N.nfs_argop4]]:
    setattr_mode = N.nfs_argop4(N.OP_SETATTR, N.SETATTR4args(ANON, mode_attr(0o600)))
    return {
        "remove": [op.putfh(w.root), op.remove(b"f")],
        "rename": [op.putfh(w.root), op.savefh(), op.rename(b"f", b"f2")],
        "rename-over": [op.putfh(w.root), op.savefh(), op.rename(b"other", b"f")],
        "link": [op.putfh(fh), op.savefh(), op.putfh(w.root),
                 N.nfs_argop4(N.OP_LINK, N.LINK4args(b"f-link"))],
        "setattr": [op.putfh(fh), setattr_mode],
        "anonymous-write": [op.putfh(fh), op.write(ANON, 0, b"x")],
    }


@pytest.mark.parametrize("what", ["remove", "rename", "rename-over", "link", "setattr",
                                  "anonymous-write"])
async def test_conflicting_operations_recall(tmp_path: Path, what: str) -> None:
    async with world(tmp_path, policy="ignore") as w:
        other = await w.b.open(w.root, b"other", create=True)
        await w.b.close(other)
        f = await read_delegated(w)
        ops = _conflicts(w, f.fh)[what]
        assert await status_of(w.b.nfs, ops) == N.NFS4ERR_DELAY
        await wait_for(lambda: len(w.svc.recalls) == 1)
        assert bytes(w.svc.recalls[0].fh) == f.fh
        # the holder itself does the same without recalling its own delegation
        assert await status_of(w.a.nfs, _conflicts(w, f.fh)[what]) == N.NFS4_OK
        assert len(w.svc.recalls) == 1


async def test_reads_with_special_stateids_leave_read_delegations_alone(tmp_path: Path) -> None:
    async with world(tmp_path, policy="ignore") as w:
        f = await read_delegated(w)
        await w.b.nfs.check([op.putfh(f.fh), op.read(ANON, 0, 4)])
        await w.b.nfs.check([op.putfh(f.fh), op.getattr(N.FATTR4_SIZE, N.FATTR4_CHANGE)])
        assert w.svc.recalls == [] and w.svc.getattrs == []


async def test_the_holders_own_setattr_with_its_delegation_stateid(tmp_path: Path) -> None:
    async with world(tmp_path, policy="ignore") as w:
        f = await read_delegated(w, ACCESS_BOTH)
        assert f.delegation is not None and f.delegation.write
        size = N.fattr4(bitmap([N.FATTR4_SIZE]), (3).to_bytes(8, "big"))
        setattr_ = N.nfs_argop4(N.OP_SETATTR, N.SETATTR4args(f.delegation.stateid, size))
        await w.a.nfs.check([op.putfh(f.fh), setattr_])
        assert w.svc.recalls == []


async def test_claim_delegate_cur_opens_under_a_delegation_being_recalled(tmp_path: Path) -> None:
    async with world(tmp_path, policy="ignore") as w:
        f = await read_delegated(w)
        assert f.delegation is not None
        await w.a.close(f)
        assert await status_of(w.b.nfs, [op.putfh(w.root), op.remove(b"f")]) == N.NFS4ERR_DELAY
        g = await w.a.open_delegated(w.root, b"f", f.delegation, owner=b"other-owner")
        assert g.delegation is None
        await w.a.delegreturn(f.delegation)
        with pytest.raises(Nfs4Failure) as e:
            await w.a.open_delegated(w.root, b"f", f.delegation, owner=b"third")
        assert e.value.status == N.NFS4ERR_BAD_STATEID


async def test_a_broken_callback_path_renew_says_so_and_the_delegation_is_revoked(
        tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await read_delegated(w)
        await w.svc.close()  # the client's callback service is gone
        assert await status_of(w.b.nfs, [op.putfh(w.root), op.remove(b"f")]) == N.NFS4ERR_DELAY
        await wait_for(lambda: w.server.callbacks.path(w.a.clientid).state is PathState.DOWN)
        with pytest.raises(Nfs4Failure) as e:
            await w.a.renew()
        assert e.value.status == N.NFS4ERR_CB_PATH_DOWN
        w.clock.advance(ENFORCED - 1)
        await w.b.renew()
        with pytest.raises(Nfs4Failure):
            await w.a.renew()  # renewed all the same: A stays a live client
        w.clock.advance(1)
        await w.b.nfs.check([op.putfh(w.root), op.remove(b"f")])
        await w.a.renew()  # no delegation left: the path no longer matters


# ------------------------------------------------------------------ CB_GETATTR


async def test_getattr_by_another_client_asks_the_write_delegation_holder(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        f = await read_delegated(w, ACCESS_BOTH)
        assert f.delegation is not None and f.delegation.write
        (deleg,) = w.server.state.delegations.by_file[f.fh]
        f.delegation.change, f.delegation.size = deleg.change, deleg.size  # nothing written

        async def size_change() -> tuple[int, int]:
            attrs = await w.b.getattr(f.fh, N.FATTR4_CHANGE, N.FATTR4_SIZE)
            v = bytes(attrs.attr_vals)
            return int.from_bytes(v[8:16], "big"), int.from_bytes(v[:8], "big")

        async def modify_time() -> int:
            attrs = await w.b.getattr(f.fh, N.FATTR4_CHANGE, N.FATTR4_TIME_MODIFY)
            v = bytes(attrs.attr_vals)  # change, then nfstime4 (seconds, nseconds)
            return int.from_bytes(v[8:16], "big", signed=True) * 10**9 + int.from_bytes(v[16:20], "big")

        assert await size_change() == (10, deleg.change)
        before = await modify_time()
        f.delegation.change, f.delegation.size = deleg.change + 5, 4242  # dirty in its cache
        assert await size_change() == (4242, deleg.change + 1)
        assert await size_change() == (4242, deleg.change + 1)
        reported = await modify_time()  # knfsd: the holder's modification moves mtime to now
        assert reported > before and reported == await modify_time()
        assert len(w.svc.getattrs) == 6 and w.svc.recalls == []
        await w.b.getattr(f.fh, N.FATTR4_MODE)  # neither size nor change: nobody is asked
        await w.a.getattr(f.fh, N.FATTR4_SIZE)  # the holder itself
        assert len(w.svc.getattrs) == 6


async def test_a_failing_cb_getattr_recalls(tmp_path: Path) -> None:
    async with world(tmp_path, policy="ignore") as w:
        f = await read_delegated(w, ACCESS_BOTH)
        w.svc.delegations.clear()  # the service answers NFS4ERR_BADHANDLE
        status = await status_of(w.b.nfs, [op.putfh(f.fh), op.getattr(N.FATTR4_SIZE)])
        assert status == N.NFS4ERR_DELAY
        await wait_for(lambda: len(w.svc.recalls) >= 1)


# ------------------------------------------------------------------ the other operations


async def test_delegreturn_and_delegpurge(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        f = await read_delegated(w)
        assert f.delegation is not None
        ret = N.nfs_argop4(N.OP_DELEGRETURN, N.DELEGRETURN4args(f.delegation.stateid))
        assert await status_of(w.a.nfs, [op.putfh(w.root), ret]) == N.NFS4ERR_BAD_STATEID
        assert await status_of(w.a.nfs, [op.putfh(f.fh), ret]) == N.NFS4_OK
        assert await status_of(w.a.nfs, [op.putfh(f.fh), ret]) == N.NFS4ERR_BAD_STATEID
        purge = N.nfs_argop4(N.OP_DELEGPURGE, N.DELEGPURGE4args(w.a.clientid))
        assert await status_of(w.a.nfs, [purge]) == N.NFS4ERR_NOTSUPP
        o = w.a.owner(b"prev")
        claim = N.open_claim4(N.CLAIM_DELEGATE_PREV, b"f")
        args = N.OPEN4args(o.seqid, 1, 0, N.open_owner4(w.a.clientid, o.name),
                           N.openflag4(N.OPEN4_NOCREATE, None), claim)
        status = await status_of(w.a.nfs, [op.putfh(w.root), N.nfs_argop4(N.OP_OPEN, args)])
        assert status == N.NFS4ERR_NOTSUPP


async def test_delegations_are_reclaimed_after_a_restart(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        f = await read_delegated(w, ACCESS_BOTH)
        config = dataclasses.replace(w.server.config, grace_time=LEASE)
        server = NFSServer(config, w.server.resolver)  # the same state dir and backend
        try:
            assert server.grace.in_grace()
            a = ClientSession(in_process(server, peer=("127.0.0.1", 900)), b"client-A")
            await a.establish()  # no callback path yet: the reclaim comes with `recall`
            o = a.owner(b"r")
            args = N.OPEN4args(o.seqid, ACCESS_BOTH, 0, N.open_owner4(a.clientid, o.name),
                               N.openflag4(N.OPEN4_NOCREATE, None),
                               N.open_claim4(N.CLAIM_PREVIOUS, N.OPEN_DELEGATE_WRITE))
            ok = await a.nfs.check([op.putfh(f.fh), N.nfs_argop4(N.OP_OPEN, args)])
            d = ok[1].delegation
            assert d.delegation_type == N.OPEN_DELEGATE_WRITE and d.value.recall
            assert server.state.delegations.count == 1
        finally:
            await server.shutdown()


# ------------------------------------------------------------------ the recaller's retries


@pytest.mark.parametrize(("answers", "sent"), [
    ([N.NFS4ERR_DELAY, N.NFS4ERR_DELAY], 3),  # "not yet", as often as the client says it
    ([N.NFS4ERR_BAD_STATEID, N.NFS4ERR_BAD_STATEID], 2),  # once more, then given up (knfsd)
    ([N.NFS4ERR_BADHANDLE], 2),
    ([N.NFS4ERR_SERVERFAULT], 1),
])
async def test_recalls_are_retried_as_knfsd_does(tmp_path: Path, answers: list[int],
                                                 sent: int) -> None:
    async with world(tmp_path, policy="ignore") as w:
        w.server.recaller.retry_delay = 0.01
        w.svc.recall_answers = list(answers)
        await read_delegated(w)
        assert await status_of(w.b.nfs, [op.putfh(w.root), op.remove(b"f")]) == N.NFS4ERR_DELAY
        await wait_for(lambda: len(w.svc.recalls) == sent)
        await wait_for(lambda: not w.server.recaller._tasks)
        assert len(w.svc.recalls) == sent
        assert w.server.callbacks.path(w.a.clientid).up  # answers, however unwelcome


async def test_a_retransmitted_open_that_met_a_recall_is_answered_from_the_replay_cache(
        tmp_path: Path) -> None:
    async with world(tmp_path, policy="ignore") as w:
        await read_delegated(w)
        o = w.b.owner(b"retransmitting")
        opn = op.open(o.seqid, w.b.clientid, o.name, b"f", access=ACCESS_BOTH)
        assert await status_of(w.b.nfs, [op.putfh(w.root), opn]) == N.NFS4ERR_DELAY
        assert await status_of(w.b.nfs, [op.putfh(w.root), opn]) == N.NFS4ERR_DELAY
        assert len(w.svc.recalls) <= 1


async def test_the_holders_getattr_before_its_delegreturn_asks_nobody(tmp_path: Path) -> None:
    """Linux sends PUTFH, GETATTR, DELEGRETURN under the user's credential, not the one of
    its SETCLIENTID: the GETATTR comes from the holder's address, so no CB_GETATTR (which a
    client returning the delegation would refuse)."""
    from pynfsd.rpc.auth import Credential

    async with world(tmp_path) as w:
        f = await read_delegated(w, ACCESS_BOTH)
        assert f.delegation is not None and f.delegation.write
        user = in_process(w.server, Credential(1, 1000, 1000, (), None, "user"),
                          peer=("127.0.0.1", 900))
        ret = N.nfs_argop4(N.OP_DELEGRETURN, N.DELEGRETURN4args(f.delegation.stateid))
        await user.check([op.putfh(f.fh), op.getattr(N.FATTR4_SIZE, N.FATTR4_CHANGE), ret])
        assert w.svc.getattrs == [] and w.server.state.delegations.count == 0
