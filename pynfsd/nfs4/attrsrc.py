"""Building `AttrSource`s: what attribute encoding needs about an object, gathered once.

The ACL (RFC 7530 §6) is fetched only for GETATTR/VERIFY requests that name `acl`,
`aclsupport` or `supported_attrs` (one backend call, or two); where ACLs are not served the
object's supported attributes lack `acl` and `aclsupport` is 0, as knfsd answers.  READDIR
entries omit `acl` and `aclsupport` (RFC 7530 §16.7.4 lets a server omit what it cannot
give cheaply).
"""

from __future__ import annotations

import logging
import struct
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
    encode_fattr4,
    fattr4_xdr,
    layout_for,
    owner_xdr,
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


_U32 = struct.Struct(">I").pack


class EntryAttrs:
    """The attributes of one READDIR's entries, as XDR (bitmap4, then the values' opaque).

    What the entries share -- the limits, the filesystem counts, the fsid of the directory's
    export, the layout of the request -- is gathered once per READDIR; an entry of that
    export is then one call of the layout and owner strings encoded once per uid and gid.
    Any other entry (an export root, a mounted filesystem crossed) goes the way GETATTR
    goes (``make_source``): its fsid and mounted-on fileid are its own.
    """

    def __init__(
        self, ctx: CompoundContext, d: Obj, attrs: Attrs, req: frozenset[int],
        fsstat: FsStat | None,
    ) -> None:
        self._ctx, self._req, self._fsstat = ctx, req, fsstat
        self._shared = make_source(ctx, d, attrs, req, fsstat)
        self._layout = layout_for(req, self._shared)
        self._export = d.export
        self._root = d.backend.root() if d.backend is not None else None
        self._owners = owner_idmap(ctx) if req & NEEDS_OWNER else None
        self._names: dict[tuple[bool, int], bytes] = {}

    def _owner(self, group: bool, n: int) -> bytes:
        """The XDR opaque of uid (or gid) ``n``'s name; b"" when owners were not asked."""
        name = self._names.get((group, n))
        if name is None:
            if self._owners is None:
                return b""
            to_name = self._owners.group_to_name if group else self._owners.user_to_name
            name = self._names[(group, n)] = owner_xdr(to_name(n))
        return name

    def xdr(self, obj: Obj, attrs: Attrs) -> bytes:
        """The entry's ``fattr4`` as XDR."""
        if obj.export is not self._export or obj.node is not None or obj.handle == self._root:
            return fattr4_xdr(encode_fattr4(self._req, make_source(self._ctx, obj, attrs,
                                                                  self._req, self._fsstat)))
        s, layout = self._shared, self._layout
        vals = layout.encode(s, attrs, obj.fh, s.fsid, self._owner(False, attrs.uid),
                             self._owner(True, attrs.gid), attrs.fileid)
        return layout.mask_xdr + _U32(len(vals)) + vals
