"""Data operations: READ, WRITE, COMMIT (RFC 7530 §16.23, §16.36, §16.3)."""

from __future__ import annotations

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.compound import CompoundContext, op
from pynfsd.nfs4.ops.seqid import to_stateid

UNSTABLE4 = 0
FILE_SYNC4 = 2


@op(N.OP_READ)
async def read(ctx: CompoundContext, args: N.READ4args) -> N.READ4resok:
    obj = ctx.current
    if obj.is_pseudo:
        raise errors.NFS4ERR_ISDIR()
    sid = args.stateid
    ctx.server.state.check_io_stateid(to_stateid(sid), obj.fh, False)
    count = min(args.count, ctx.server.config.maxread)
    data, eof = await ctx.vfs.read(obj, args.offset, count, check_perm=_anonymous(sid))
    return N.READ4resok(eof, data)


def _anonymous(sid: N.stateid4) -> bool:
    """Special stateids carry no OPEN, so the file's permissions are checked on each I/O."""
    return sid.other in (b"\0" * 12, b"\xff" * 12)


@op(N.OP_WRITE)
async def write(ctx: CompoundContext, args: N.WRITE4args) -> N.WRITE4resok:
    obj = ctx.current
    if obj.is_pseudo:
        raise errors.NFS4ERR_ISDIR()
    sid = args.stateid
    if sid.other == b"\xff" * 12:
        raise errors.NFS4ERR_BAD_STATEID("the READ bypass stateid cannot WRITE")  # §9.1.4.3
    ctx.vfs.check_writable(obj)
    ctx.server.state.check_io_stateid(to_stateid(sid), obj.fh, True)
    if args.offset + len(args.data) > (1 << 63) - 1:
        raise errors.NFS4ERR_FBIG()
    sync = args.stable != UNSTABLE4
    n = await ctx.vfs.write(obj, args.offset, args.data, sync, check_perm=_anonymous(sid))
    return N.WRITE4resok(n, FILE_SYNC4 if sync else UNSTABLE4, ctx.server.write_verifier)


@op(N.OP_COMMIT)
async def commit(ctx: CompoundContext, args: N.COMMIT4args) -> N.COMMIT4resok:
    obj = ctx.current
    if obj.is_pseudo:
        raise errors.NFS4ERR_ISDIR()
    if args.offset + args.count > (1 << 64) - 1:
        raise errors.NFS4ERR_INVAL()
    ctx.vfs.check_writable(obj)  # RFC 7530 §16.3.5 lists NFS4ERR_ROFS for COMMIT
    await ctx.vfs.commit(obj)
    return N.COMMIT4resok(ctx.server.write_verifier)
