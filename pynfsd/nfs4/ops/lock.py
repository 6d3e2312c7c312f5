"""Byte-range locks: LOCK, LOCKT, LOCKU, RELEASE_LOCKOWNER (RFC 7530 §16.10-16.12, §16.37)."""

from __future__ import annotations

from pynfsd.fs.backend import FileType
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.ops.seqid import sequenced, to_stateid, to_stateid4
from pynfsd.nfs4.optable import op
from pynfsd.nfs4.state import LockDenied

#: status and LOCK4denied: offset, length, locktype, clientid and an owner of up to
#: NFS4_OPAQUE_LIMIT bytes.
_DENIED_REPLY = 4 + 8 + 8 + 4 + 8 + 4 + N.NFS4_OPAQUE_LIMIT


def lock4denied(d: LockDenied) -> N.LOCK4denied:
    return N.LOCK4denied(d.offset, d.length, d.locktype, N.lock_owner4(d.clientid, d.owner))


def _convert_denied(e: errors.NFS4Error) -> None:
    if isinstance(e.value, LockDenied):
        e.value = lock4denied(e.value)


async def _check_file(ctx: CompoundContext) -> bytes:
    """Byte-range locks are on regular files: a directory is NFS4ERR_ISDIR, anything else
    that is not a regular file NFS4ERR_INVAL (RFC 7530 §16.10-16.12 error lists); a pseudo-fs
    directory has directory attributes.  Checked by the handler, not the op table (`on_file`):
    LOCK and LOCKU check it inside the seqid machine, so the seqid advances (§9.1.7)."""
    obj = ctx.current
    ftype = (await ctx.vfs.getattr(obj)).type
    if ftype == FileType.DIR:
        raise errors.NFS4ERR_ISDIR()
    if ftype != FileType.REG:
        raise errors.NFS4ERR_INVAL("not a regular file")
    return obj.fh


@op(N.OP_LOCK, reply_size=_DENIED_REPLY)
async def lock(ctx: CompoundContext, args: N.LOCK4args) -> N.LOCK4resok:
    state = ctx.state
    locker = args.locker
    span = (args.locktype, args.offset, args.length)
    if locker.new_lock_owner:
        new: N.open_to_lock_owner4 = locker.value
        sid, seqid = to_stateid(new.open_stateid), new.open_seqid

        def grant(fh: bytes) -> N.stateid4:
            return to_stateid4(state.lock_new(
                sid, new.lock_owner.owner, new.lock_seqid, fh, *span,
                clientid=new.lock_owner.clientid, reclaim=args.reclaim,
            ))  # fmt: skip
    else:
        old: N.exist_lock_owner4 = locker.value
        sid, seqid = to_stateid(old.lock_stateid), old.lock_seqid

        def grant(fh: bytes) -> N.stateid4:
            return to_stateid4(state.lock_existing(sid, fh, *span, reclaim=args.reclaim))

    owner = state.owner_for_stateid(sid)

    async def body() -> N.LOCK4resok:
        fh = await _check_file(ctx)  # inside: the seqid advances on ISDIR/INVAL (§9.1.7)
        try:
            return N.LOCK4resok(grant(fh))
        except errors.NFS4Error as e:
            _convert_denied(e)
            raise

    try:
        return await sequenced(state, owner, seqid, N.OP_LOCK, body)
    finally:
        await ctx.services.durable()  # records of clients whose leases were cancelled


@op(N.OP_LOCKT, reply_size=_DENIED_REPLY)
async def lockt(ctx: CompoundContext, args: N.LOCKT4args) -> None:
    fh = await _check_file(ctx)
    try:
        ctx.state.lockt(
            args.owner.clientid, args.owner.owner, fh, args.locktype, args.offset, args.length
        )
    except errors.NFS4Error as e:
        _convert_denied(e)
        raise
    await ctx.services.durable()  # records of clients whose leases were cancelled


@op(N.OP_LOCKU)
async def locku(ctx: CompoundContext, args: N.LOCKU4args) -> N.stateid4:
    state = ctx.state
    sid = to_stateid(args.lock_stateid)
    owner = state.owner_for_stateid(sid)

    async def body() -> N.stateid4:
        fh = await _check_file(ctx)
        return to_stateid4(state.locku(sid, args.locktype, args.offset, args.length, fh))

    return await sequenced(state, owner, args.seqid, N.OP_LOCKU, body)


@op(N.OP_RELEASE_LOCKOWNER, needs_fh=False)
async def release_lockowner(ctx: CompoundContext, args: N.RELEASE_LOCKOWNER4args) -> None:
    ctx.state.release_lockowner(args.lock_owner.clientid, args.lock_owner.owner)
