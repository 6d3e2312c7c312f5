"""Attribute operations: GETATTR, SETATTR, VERIFY, NVERIFY, ACCESS
(RFC 7530 §16.1, §16.7, §16.15, §16.32, §16.35)."""

from __future__ import annotations

from typing import Any

from pynfsd.gen import nfs4 as N
from pynfsd.idmap import IdmapError
from pynfsd.nfs4 import errors
from pynfsd.nfs4.acl import Ace, from_wire
from pynfsd.nfs4.attrs import (
    SetAttrs,
    decode_settable,
    encode_fattr4,
    fattr4_max_size,
    verify_matches,
)
from pynfsd.nfs4.attrsrc import requested_set, source_for
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.ops.deleg import breaking, holder_attrs, stateid_requester
from pynfsd.nfs4.optable import op
from pynfsd.nfs4.vfstypes import Obj

_DELEGATED = frozenset({N.FATTR4_SIZE, N.FATTR4_CHANGE})


def _getattr_reply(args: N.GETATTR4args, _cfg: object) -> int:
    return 4 + fattr4_max_size(args.attr_request)


@op(N.OP_GETATTR, reply_size=_getattr_reply)
async def getattr_(ctx: CompoundContext, args: N.GETATTR4args) -> N.GETATTR4resok:
    req = requested_set(args.attr_request)
    src = await source_for(ctx, ctx.current, req)
    if req & _DELEGATED and ctx.state.delegations.by_file:
        # §10.4.3: a write delegation's holder knows them better
        src.attrs = await holder_attrs(ctx, src.fh, src.attrs)
    return N.GETATTR4resok(encode_fattr4(req, src))


@op(N.OP_ACCESS)
async def access(ctx: CompoundContext, args: N.ACCESS4args) -> N.ACCESS4resok:
    if args.access & ~0x3F:
        raise errors.NFS4ERR_INVAL("unknown ACCESS4 bits")
    supported, granted = await ctx.vfs.access(ctx.current, args.access)
    return N.ACCESS4resok(supported, granted)


def setattr_changes(ctx: CompoundContext, s: SetAttrs) -> dict[str, Any]:
    """SetAttrs -> backend setattr keywords, mapping owner strings (NFS4ERR_BADOWNER)."""
    changes: dict[str, Any] = {}
    idmap = ctx.services.idmap
    if s.owner == "" or s.owner_group == "":
        raise errors.NFS4ERR_INVAL("empty owner or owner_group")  # RFC 7530 §5.9
    try:
        if s.owner is not None:
            changes["uid"] = idmap.name_to_uid(s.owner)
        if s.owner_group is not None:
            changes["gid"] = idmap.name_to_gid(s.owner_group)
    except IdmapError as e:
        raise errors.NFS4ERR_BADOWNER(str(e)) from None
    for key in ("mode", "size", "atime", "mtime"):
        value = getattr(s, key)
        if value is not None:
            changes[key] = value
    return changes


def acl_from_wire(ctx: CompoundContext, acl: list[N.nfsace4]) -> list[Ace]:
    """A SETATTR's ACEs with their principals mapped (NFS4ERR_BADOWNER for unknown names)."""
    idmap = ctx.services.idmap
    try:
        return from_wire(acl, idmap.name_to_uid, idmap.name_to_gid)
    except IdmapError as e:
        raise errors.NFS4ERR_BADOWNER(str(e)) from None


async def apply_setattrs(ctx: CompoundContext, obj: Obj, s: SetAttrs) -> None:
    """The attributes of SETATTR (or CREATE/OPEN): the mode, then the ACL (§6.4.1.3)."""
    changes = setattr_changes(ctx, s)
    aces = None if s.acl is None else acl_from_wire(ctx, s.acl)
    if aces is not None and not await ctx.vfs.acl_supported(obj):
        raise errors.NFS4ERR_ATTRNOTSUPP("ACLs are not served here")
    if changes:
        await ctx.vfs.setattr(obj, **changes)
    if aces is not None:
        await ctx.vfs.set_acl(obj, aces)


@op(N.OP_SETATTR)
async def setattr_(ctx: CompoundContext, args: N.SETATTR4args) -> list[int]:
    obj = ctx.current
    s = decode_settable(args.obj_attributes)
    if s.size is not None:
        ctx.vfs.check_writable(obj)
        # RFC 7530 §16.32.4: a size change is checked against the stateid like a WRITE.
        sid, _ = stateid_requester(ctx, args.stateid)
        ctx.state.check_io_stateid(sid, obj.fh, True)
    elif ctx.state.delegations.by_file:
        stateid_requester(ctx, args.stateid)
    # §10.4.1: any attribute change recalls other clients' delegations (the holder's own
    # delegation stateid, or another stateid of its, names it as the requester)
    await breaking(ctx, obj.fh, True)
    try:
        await apply_setattrs(ctx, obj, s)
    except errors.NFS4Error as e:
        e.value = []
        raise
    return s.mask


async def _verify(ctx: CompoundContext, f: N.fattr4) -> bool:
    src = await source_for(ctx, ctx.current, requested_set(f.attrmask))
    return verify_matches(f, src)


@op(N.OP_VERIFY)
async def verify(ctx: CompoundContext, args: N.VERIFY4args) -> None:
    if not await _verify(ctx, args.obj_attributes):
        raise errors.NFS4ERR_NOT_SAME()


@op(N.OP_NVERIFY)
async def nverify(ctx: CompoundContext, args: N.NVERIFY4args) -> None:
    if await _verify(ctx, args.obj_attributes):
        raise errors.NFS4ERR_SAME()
