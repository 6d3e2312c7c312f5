"""Filehandle operations: PUTFH, PUTROOTFH, PUTPUBFH, GETFH, SAVEFH, RESTOREFH, LOOKUP,
LOOKUPP and SECINFO (RFC 7530 §16.9, §16.13-14, §16.20-22, §16.29-31)."""

from __future__ import annotations

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.ops.names import check_name
from pynfsd.nfs4.optable import op
from pynfsd.nfs4.secinfo import secinfo_list


@op(N.OP_PUTFH, needs_fh=False)
async def putfh(ctx: CompoundContext, args: N.PUTFH4args) -> None:
    obj = await ctx.vfs.from_fh(args.object)
    if not obj.is_pseudo:
        # A removed object or a forged handle is NFS4ERR_STALE at PUTFH already (§13.1.2,
        # §16.20): the backend checks the handle when asked for the object's attributes.
        await ctx.vfs.getattr(obj)
    ctx.current = obj


@op(N.OP_PUTROOTFH, needs_fh=False)
async def putrootfh(ctx: CompoundContext, args: None) -> None:
    if not ctx.vfs.view.exports:
        raise errors.NFS4ERR_ACCESS("no export is available to this client")
    ctx.current = ctx.vfs.root()


@op(N.OP_PUTPUBFH, needs_fh=False)
async def putpubfh(ctx: CompoundContext, args: None) -> None:
    # pynfsd has no separate public filehandle: it is the root (RFC 7530 §16.21.4).
    await putrootfh(ctx, None)


@op(N.OP_GETFH)
async def getfh(ctx: CompoundContext, args: None) -> N.GETFH4resok:
    return N.GETFH4resok(ctx.current.fh)


@op(N.OP_SAVEFH)
async def savefh(ctx: CompoundContext, args: None) -> None:
    ctx.save()


@op(N.OP_RESTOREFH, needs_fh=False)
async def restorefh(ctx: CompoundContext, args: None) -> None:
    ctx.current = ctx.saved


@op(N.OP_LOOKUP)
async def lookup(ctx: CompoundContext, args: N.LOOKUP4args) -> None:
    name = check_name(args.objname)
    ctx.current = await ctx.vfs.lookup(ctx.current, name)


@op(N.OP_LOOKUPP)
async def lookupp(ctx: CompoundContext, args: None) -> None:
    ctx.current = await ctx.vfs.lookupp(ctx.current)


@op(N.OP_SECINFO)
async def secinfo(ctx: CompoundContext, args: N.SECINFO4args) -> list[N.secinfo4]:
    name = check_name(args.name)
    target = await ctx.vfs.lookup(ctx.current, name)
    if target.export is not None:
        return secinfo_list(target.export.options.sec)
    assert target.node is not None
    return secinfo_list(target.node.sec or ("sys",))
