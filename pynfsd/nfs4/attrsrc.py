"""Building `AttrSource`s: what attribute encoding needs about an object, gathered once.

The ACL (RFC 7530 §6) is fetched only for GETATTR/VERIFY requests that name `acl`,
`aclsupport` or `supported_attrs` (one backend call, or two); where ACLs are not served the
object's supported attributes lack `acl` and `aclsupport` is 0, as knfsd answers.  READDIR
entries omit `acl` and `aclsupport` (RFC 7530 §16.7.4 lets a server omit what it cannot
give cheaply).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pynfsd.fs.backend import Attrs, FsStat
from pynfsd.gen import nfs4 as x
from pynfsd.idmap import IdMapper
from pynfsd.nfs4.acl import ACL_SUPPORT, MAX_ACL_BYTES, to_wire, wire_size
from pynfsd.nfs4.attrs import (
    NEEDS_ACL,
    NEEDS_FSSTAT,
    NEEDS_OWNER,
    SUPPORTED_ATTRS,
    AttrSource,
    requested_attrs,
)
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.vfstypes import Obj
from pynfsd.rpc.flavors import AUTH_NONE, AUTH_SYS

log = logging.getLogger("pynfsd.nfs4.attrs")
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


_WITHOUT_ACL = SUPPORTED_ATTRS - {x.FATTR4_ACL}


@dataclass(slots=True, frozen=True)
class AclData:
    """An object's ACL as GETATTR sends it: whether ACLs are served, the ACEs (None: not
    asked for, or longer than ``MAX_ACL_BYTES``)."""

    served: bool
    acl: list[x.nfsace4] | None


def owner_idmap(ctx: CompoundContext) -> IdMapper:
    """The id mapping of owner strings for this request: numeric under AUTH_SYS/AUTH_NONE."""
    if ctx.cred.flavor in (AUTH_NONE, AUTH_SYS):
        return ctx.services.idmap_numeric
    return ctx.services.idmap


async def acl_if_needed(ctx: CompoundContext, obj: Obj, req: frozenset[int]) -> AclData | None:
    if not req & NEEDS_ACL:
        return None
    if x.FATTR4_ACL not in req:
        return AclData(await ctx.vfs.acl_supported(obj), None)
    aces = await ctx.vfs.get_acl(obj)
    if aces is None:
        return AclData(False, None)
    idmap = owner_idmap(ctx)
    acl = to_wire(aces, idmap.user_to_name, idmap.group_to_name)
    if wire_size(acl) > MAX_ACL_BYTES:
        log.warning("the ACL of %r encodes past %d bytes: not sent", obj.fh, MAX_ACL_BYTES)
        return AclData(True, None)
    return AclData(True, acl)


def make_source(
    ctx: CompoundContext, obj: Obj, attrs: Attrs, req: frozenset[int], fsstat: FsStat | None,
    acl: AclData | None = None,
) -> AttrSource:
    cfg = ctx.config
    owner = group = None
    if req & NEEDS_OWNER:
        idmap = owner_idmap(ctx)
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
        acl=None if acl is None else acl.acl,
        aclsupport=None if acl is None else ACL_SUPPORT if acl.served else 0,
        supported=_WITHOUT_ACL if acl is not None and not acl.served else SUPPORTED_ATTRS,
    )


async def source_for(ctx: CompoundContext, obj: Obj, req: frozenset[int]) -> AttrSource:
    acl = await acl_if_needed(ctx, obj, req)
    attrs = await ctx.vfs.getattr(obj)
    return make_source(ctx, obj, attrs, req, await fsstat_if_needed(ctx, obj, req), acl)
