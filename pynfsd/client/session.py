"""A stateful NFSv4.0 client on top of `Nfs4Client`: client id, open-owners, lock-owners.

    s = ClientSession(await Nfs4Client.connect(host, port), b"host-a")
    await s.establish()                        # SETCLIENTID + SETCLIENTID_CONFIRM
    d = await s.lookup_path("/export")
    f = await s.open(d, b"file", create=True)  # OPEN (+ OPEN_CONFIRM for a new owner)
    await s.write(f, 0, b"data")
    lk = await s.lock(f, WRITE_LT, 0, 10)
    await s.unlock(lk); await s.close(f)

With a `CallbackService` (`pynfsd.client.callback`) the session names it in SETCLIENTID and
holds the delegations OPEN grants (`OpenFile.delegation`, also in the service's table); it
returns a recalled one with DELEGRETURN unless the service's policy is "ignore".

Each owner's seqid is tracked as RFC 7530 §9.1.7 says: it advances after every seqid-bearing
operation except those that fail with the statuses the RFC lists.  Failures raise
`Nfs4Failure` with the COMPOUND's status.  Scenarios and benchmarks use this to play many
clients; it keeps no state on the server's behalf beyond ids and seqids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pynfsd.client.callback import CB_PROG, CallbackService, HeldDelegation
from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, bitmap, mode_attr, op
from pynfsd.gen import nfs4 as N

READ_LT, WRITE_LT, READW_LT, WRITEW_LT = 1, 2, 3, 4
ACCESS_READ, ACCESS_WRITE, ACCESS_BOTH = 1, 2, 3
_NO_ADVANCE = {N.NFS4ERR_STALE_CLIENTID, N.NFS4ERR_STALE_STATEID, N.NFS4ERR_BAD_STATEID,
               N.NFS4ERR_BAD_SEQID, N.NFS4ERR_BADXDR, N.NFS4ERR_RESOURCE,
               N.NFS4ERR_NOFILEHANDLE, N.NFS4ERR_MOVED}


@dataclass
class Owner:
    name: bytes
    seqid: int = 0
    confirmed: bool = False

    def advance(self, status: int) -> None:
        if status not in _NO_ADVANCE:
            self.seqid += 1


@dataclass
class OpenFile:
    fh: bytes
    stateid: N.stateid4
    owner: Owner
    lock_owner: Owner | None = None
    lock_stateid: N.stateid4 | None = None
    delegation: HeldDelegation | None = None


@dataclass
class ClientSession:
    nfs: Nfs4Client
    ownerid: bytes
    verifier: bytes = b"pynfsd-1"
    clientid: int = 0
    open_owners: dict[bytes, Owner] = field(default_factory=dict)
    callback: CallbackService | None = None

    async def establish(self) -> int:
        """SETCLIENTID and SETCLIENTID_CONFIRM (RFC 7530 §16.33, §16.34)."""
        cb = self.callback
        if cb is not None:
            cb.on_recall = self.delegreturn
            setcid = op.setclientid(self.verifier, self.ownerid, CB_PROG, addr=cb.uaddr)
        else:
            setcid = op.setclientid(self.verifier, self.ownerid)
        ok = await self.nfs.check([setcid])
        resok: N.SETCLIENTID4resok = ok[0]
        await self.nfs.check([op.setclientid_confirm(resok.clientid, resok.setclientid_confirm)])
        self.clientid = resok.clientid
        return self.clientid

    async def renew(self) -> None:
        await self.nfs.check([op.renew(self.clientid)])

    async def lookup_path(self, path: str) -> bytes:
        ops = [op.putrootfh()] + [op.lookup(c.encode()) for c in path.strip("/").split("/") if c]
        ok = await self.nfs.check([*ops, op.getfh()])
        return bytes(ok[-1].object)

    def owner(self, name: bytes = b"owner") -> Owner:
        return self.open_owners.setdefault(name, Owner(name))

    async def _sequenced(self, owner: Owner, ops: list[N.nfs_argop4]) -> list[Any]:
        res = await self.nfs.compound(ops)
        owner.advance(res.status)
        if res.status != N.NFS4_OK:
            raise Nfs4Failure(res)
        return [getattr(r.value, "value", None) for r in res.resarray]

    async def open(self, dir_fh: bytes, name: bytes, *, create: bool = False,
                   access: int = ACCESS_BOTH, deny: int = 0, owner: bytes = b"owner",
                   mode: int = 0o644) -> OpenFile:
        o = self.owner(owner)
        how = N.createhow4(N.UNCHECKED4, mode_attr(mode)) if create else None
        opn = op.open(o.seqid, self.clientid, o.name, name, access=access, deny=deny, create=how)
        vals = await self._sequenced(o, [op.putfh(dir_fh), opn, op.getfh()])
        return await self._opened(o, vals[1], bytes(vals[2].object))

    async def reclaim_open(self, fh: bytes, *, access: int = ACCESS_BOTH, deny: int = 0,
                           owner: bytes = b"owner",
                           delegation: int = N.OPEN_DELEGATE_NONE) -> OpenFile:
        """OPEN with CLAIM_PREVIOUS during the grace period (RFC 7530 §9.6.2), reclaiming a
        delegation of type `delegation` too."""
        o = self.owner(owner)
        args = N.OPEN4args(o.seqid, access, deny, N.open_owner4(self.clientid, o.name),
                           N.openflag4(N.OPEN4_NOCREATE, None),
                           N.open_claim4(N.CLAIM_PREVIOUS, delegation))
        vals = await self._sequenced(o, [op.putfh(fh), N.nfs_argop4(N.OP_OPEN, args)])
        return await self._opened(o, vals[1], fh)

    async def open_delegated(self, dir_fh: bytes, name: bytes, held: HeldDelegation, *,
                             access: int = ACCESS_READ, owner: bytes = b"owner") -> OpenFile:
        """OPEN with CLAIM_DELEGATE_CUR: an open under a delegation held (§16.16)."""
        o = self.owner(owner)
        claim = N.open_claim4(N.CLAIM_DELEGATE_CUR, N.open_claim_delegate_cur4(held.stateid, name))
        args = N.OPEN4args(o.seqid, access, 0, N.open_owner4(self.clientid, o.name),
                           N.openflag4(N.OPEN4_NOCREATE, None), claim)
        vals = await self._sequenced(o, [op.putfh(dir_fh), N.nfs_argop4(N.OP_OPEN, args)])
        return await self._opened(o, vals[1], held.fh)

    async def delegreturn(self, held: HeldDelegation) -> None:
        """DELEGRETURN (§16.6); the delegation leaves the callback service's table."""
        ret = N.nfs_argop4(N.OP_DELEGRETURN, N.DELEGRETURN4args(held.stateid))
        await self.nfs.check([op.putfh(held.fh), ret])
        if self.callback is not None and self.callback.delegations.get(held.fh) is held:
            del self.callback.delegations[held.fh]

    def _delegation(self, resok: N.OPEN4resok, fh: bytes) -> HeldDelegation | None:
        d = resok.delegation
        if d.delegation_type == N.OPEN_DELEGATE_NONE:
            return None
        held = HeldDelegation(fh, d.value.stateid, d.delegation_type == N.OPEN_DELEGATE_WRITE)
        if self.callback is not None:
            self.callback.delegations[fh] = held
        return held

    async def _opened(self, o: Owner, resok: N.OPEN4resok, fh: bytes) -> OpenFile:
        f = OpenFile(fh, resok.stateid, o, delegation=self._delegation(resok, fh))
        if resok.rflags & 0x2:  # OPEN4_RESULT_CONFIRM
            vals = await self._sequenced(o, [op.putfh(fh), op.open_confirm(f.stateid, o.seqid)])
            f.stateid = vals[1].open_stateid
        o.confirmed = True
        return f

    async def close(self, f: OpenFile) -> None:
        vals = await self._sequenced(f.owner, [op.putfh(f.fh), op.close(f.owner.seqid, f.stateid)])
        f.stateid = vals[1]

    async def write(self, f: OpenFile, offset: int, data: bytes, stable: int = 2) -> int:
        ok = await self.nfs.check([op.putfh(f.fh), op.write(f.stateid, offset, data, stable)])
        return int(ok[1].count)

    async def read(self, f: OpenFile, offset: int, count: int) -> bytes:
        ok = await self.nfs.check([op.putfh(f.fh), op.read(f.stateid, offset, count)])
        return bytes(ok[1].data)

    async def lock(self, f: OpenFile, locktype: int, offset: int, length: int, *,
                   reclaim: bool = False, lock_owner: bytes = b"lock-owner") -> N.stateid4:
        """LOCK; the first one opens a lock-owner from the open (open_to_lock_owner4)."""
        if f.lock_stateid is None:
            lo = f.lock_owner = Owner(lock_owner)
            new = N.open_to_lock_owner4(f.owner.seqid, f.stateid, lo.seqid,
                                        N.lock_owner4(self.clientid, lo.name))
            locker = N.locker4(True, new)
            seq_owner = f.owner
        else:
            assert f.lock_owner is not None
            locker = N.locker4(False, N.exist_lock_owner4(f.lock_stateid, f.lock_owner.seqid))
            seq_owner = f.lock_owner
        vals = await self._sequenced(seq_owner, [op.putfh(f.fh),
                                                 op.lock(locktype, offset, length, locker, reclaim)])
        if f.lock_stateid is None and f.lock_owner is not None:
            f.lock_owner.seqid += 1
        f.lock_stateid = vals[1].lock_stateid
        return f.lock_stateid

    async def unlock(self, f: OpenFile, locktype: int, offset: int, length: int) -> None:
        assert f.lock_owner is not None and f.lock_stateid is not None
        vals = await self._sequenced(f.lock_owner, [
            op.putfh(f.fh), op.locku(locktype, f.lock_owner.seqid, f.lock_stateid, offset, length)])
        f.lock_stateid = vals[1]

    async def test_lock(self, f: OpenFile, locktype: int, offset: int, length: int,
                        owner: bytes = b"tester") -> N.LOCK4denied | None:
        """LOCKT: None when the range is free, else the conflicting lock."""
        res = await self.nfs.compound([op.putfh(f.fh), op.lockt(locktype, offset, length, self.clientid, owner)])
        if res.status == N.NFS4_OK:
            return None
        if res.status == N.NFS4ERR_DENIED:
            return res.resarray[-1].value.value  # type: ignore[no-any-return]
        raise Nfs4Failure(res)

    async def getattr(self, fh: bytes, *attrs: int) -> N.fattr4:
        ok = await self.nfs.check([op.putfh(fh), N.nfs_argop4(N.OP_GETATTR, N.GETATTR4args(bitmap(attrs)))])
        return ok[1].obj_attributes  # type: ignore[no-any-return]
