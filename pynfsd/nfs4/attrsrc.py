"""Building `AttrSource`s: what attribute encoding needs about an object, gathered once."""

from __future__ import annotations

from pynfsd.fs.backend import Attrs, FsStat
from pynfsd.nfs4.attrs import NEEDS_FSSTAT, NEEDS_OWNER, AttrSource, requested_attrs
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.vfstypes import Obj
from pynfsd.rpc.flavors import AUTH_NONE, AUTH_SYS

MAXFILESIZE = (1 << 63) - 1
MAXLINK = 65000
MAXNAME = 255


def requested_set(words: list[int]) -> frozenset[int]:
    """The attributes a client asked for (bits past the defined ones are ignored)."""
    return requested_attrs(words)


async def fsstat_if_needed(ctx: CompoundContext, obj: Obj, req: frozenset[int]) -> FsStat | None:
    if req & NEEDS_FSSTAT:
        return await ctx.vfs.statfs(obj)
    return None


def make_source(
    ctx: CompoundContext, obj: Obj, attrs: Attrs, req: frozenset[int], fsstat: FsStat | None
) -> AttrSource:
    cfg = ctx.config
    owner = group = None
    if req & NEEDS_OWNER:
        idmap = ctx.services.idmap_numeric if ctx.cred.flavor in (AUTH_NONE, AUTH_SYS) else ctx.services.idmap
        owner = idmap.user_to_name(attrs.uid)
        group = idmap.group_to_name(attrs.gid)
    fsid = (obj.export.fsid, 0) if obj.export is not None else (0, 0)
    return AttrSource(
        attrs=attrs,
        fh=obj.fh,
        fsid=fsid,
        mounted_on_fileid=ctx.vfs.mounted_on_fileid(obj, attrs),
        lease_time=cfg.lease_time,
        maxread=cfg.maxread,
        maxwrite=cfg.maxwrite,
        maxfilesize=MAXFILESIZE,
        maxlink=MAXLINK,
        maxname=MAXNAME,
        fsstat=fsstat,
        owner=owner,
        owner_group=group,
    )


async def source_for(ctx: CompoundContext, obj: Obj, req: frozenset[int]) -> AttrSource:
    attrs = await ctx.vfs.getattr(obj)
    return make_source(ctx, obj, attrs, req, await fsstat_if_needed(ctx, obj, req))
