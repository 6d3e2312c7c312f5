"""Directory operations: READDIR, CREATE, REMOVE, RENAME, LINK, READLINK, OPENATTR
(RFC 7530 §16.4, §16.9, §16.17, §16.24, §16.25, §16.26, §16.27)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, cast

from pynfsd.fs.backend import Attrs, FileType
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.attrs import (
    WRITE_ONLY_ATTRS,
    SetAttrs,
    decode_settable,
    encode_rdattr_error,
    fattr4_xdr,
)
from pynfsd.nfs4.attrsrc import EntryAttrs, fsstat_if_needed, requested_set
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.ops.attr import apply_setattrs
from pynfsd.nfs4.ops.deleg import breaking
from pynfsd.nfs4.ops.names import check_name
from pynfsd.nfs4.optable import op
from pynfsd.nfs4.vfstypes import Listed, Obj
from pynfsd.xdr.runtime import Packer

if TYPE_CHECKING:
    from pynfsd.nfs4.config import ServerConfig

_READDIR_RESOK_OVERHEAD = 8 + 4 + 4  # cookieverf, final "no more entries", eof
# Entries read from the backend per round trip to a worker: the first batch is sized by the
# average entry of the last READDIR that asked for the same attributes (_first_batch), or is
# small when there was none, to measure it; the following ones fill what room is left
# (_next_batch). So a READDIR of a listing is one round trip.
_FIRST_BATCH = 16
_MAX_BATCH = 512
# the average encoded entry by the attributes asked (at most MAX_ENTRY_SIZES sets of them)
_ENTRY_BYTES: dict[frozenset[int], int] = {}
MAX_ENTRY_SIZES = 64
PATH_MAX = 4096  # the longest symlink target READLINK returns (Linux PATH_MAX)


def readdir_maxcount(args: N.READDIR4args, cfg: ServerConfig) -> int:
    """The bytes of READDIR4resok the server will return: the client's maxcount, capped."""
    return min(args.maxcount, cfg.maxread + 4096)


def change_info(before: Attrs, after: Attrs) -> N.change_info4:
    # atomic is false: another client could change the directory between the two reads.
    return N.change_info4(False, before.change, after.change)


_ENTRY_HEAD = struct.Struct(">IQI").pack  # value_follows, cookie, name length
_U32 = struct.Struct(">I").pack
_END = {True: _U32(0) + _U32(1), False: _U32(0) + _U32(0)}  # no more entries, eof


def _entry_xdr(cookie: int, name: bytes, fattr: bytes) -> bytes:
    """One entry4 (with value_follows) as XDR, its fattr4 already encoded: this runs per
    entry."""
    return b"".join((_ENTRY_HEAD(1, cookie, len(name)), name, _PADDING[-len(name) & 3], fattr))


_PADDING = (b"", b"\0", b"\0\0", b"\0\0\0")


def _pack_readdir_res(p: Packer, res: N.READDIR4res) -> None:
    """READDIR4res whose NFS4_OK arm is (cookieverf, encoded dirlist4)."""
    p.pack_int(res.status)
    if res.status == N.NFS4_OK:
        verf, raw = cast(tuple[bytes, bytes], res.value)
        p.pack_fopaque(8, verf)
        p.pack_raw(raw)


@op(N.OP_READDIR, pack_res=_pack_readdir_res,
    reply_size=lambda args, cfg: 4 + readdir_maxcount(args, cfg))
async def readdir(ctx: CompoundContext, args: N.READDIR4args) -> tuple[bytes, bytes]:
    """The entries are encoded here directly: this is the hot path for large directories."""
    d = ctx.current
    req = requested_set(args.attr_request)
    if req & WRITE_ONLY_ATTRS:
        # Refused up front (as GETATTR does, §5.5), not only once an entry is encoded.
        raise errors.NFS4ERR_INVAL("write-only attribute requested")
    if args.cookie in (1, 2):
        raise errors.NFS4ERR_BAD_COOKIE()  # RFC 7530 §16.24.4: reserved cookie values
    maxcount = readdir_maxcount(args, ctx.config)
    if maxcount < _READDIR_RESOK_OVERHEAD:
        raise errors.NFS4ERR_TOOSMALL("maxcount too small for even an empty reply")  # §16.24.4
    fsstat = await fsstat_if_needed(ctx, d, req)
    out: list[bytes] = []
    used = _READDIR_RESOK_OVERHEAD
    cookie, verf, eof, n, full = args.cookie, args.cookieverf, False, 0, False
    batch_size = _first_batch(maxcount - used, _ENTRY_BYTES.get(req))
    encoder: EntryAttrs | None = None
    while not eof and not full:
        batch, eof, verf = await ctx.vfs.readdir(d, cookie, args.cookieverf, batch_size)
        if encoder is None:
            encoder = EntryAttrs(ctx, d, await ctx.vfs.getattr(d), req, fsstat)
        for e in batch:
            xdr = _entry_xdr(e.cookie, e.name, _entry_fattr(encoder, e, req))
            if used + len(xdr) > maxcount:
                if n == 0:
                    raise errors.NFS4ERR_TOOSMALL()
                full = True
                break
            used += len(xdr)
            n += 1
            out.append(xdr)
            cookie = e.cookie
        if not batch:
            break
        batch_size = _next_batch(maxcount - used, used - _READDIR_RESOK_OVERHEAD, n)
    if n:
        _remember_entry_size(req, (used - _READDIR_RESOK_OVERHEAD) // n)
    return verf, b"".join(out) + _END[eof and not full]


def _first_batch(room: int, entry_bytes: int | None) -> int:
    """How many entries to read first: what the room holds at the average entry of the last
    READDIR of these attributes, and a little more (1/64, and one) so that names a little
    longer than before still fill the reply in one round trip; else a small batch."""
    if entry_bytes is None:
        return _FIRST_BATCH
    fit = room // max(entry_bytes, 1)
    return min(_MAX_BATCH, fit + fit // 64 + 1)


def _remember_entry_size(req: frozenset[int], entry_bytes: int) -> None:
    if req not in _ENTRY_BYTES and len(_ENTRY_BYTES) >= MAX_ENTRY_SIZES:
        _ENTRY_BYTES.clear()
    _ENTRY_BYTES[req] = entry_bytes


def _next_batch(room: int, encoded: int, n: int) -> int:
    """How many entries to read next: as many as the room left holds at the average encoded
    size so far, plus one -- every entry read but not sent is a wasted lstat and handle."""
    return min(_MAX_BATCH, room * n // max(encoded, 1) + 1)


def _entry_fattr(encoder: EntryAttrs, e: Listed, req: frozenset[int]) -> bytes:
    """An entry's attributes as XDR; for one whose attributes could not be had, its error as
    rdattr_error (with mounted_on_fileid, the fileid the directory lists, when asked: the
    one attribute known without reaching the object), or -- when the client did not ask for
    rdattr_error -- the whole READDIR fails with it (RFC 7530 §16.24.4, as knfsd)."""
    if e.obj is None or e.attrs is None:
        fattr = encode_rdattr_error(req, e.status, mounted_on_fileid=e.fileid)
        if fattr is None:
            raise errors.error_for_status(e.status, "an entry's attributes")
        return fattr4_xdr(fattr)
    return encoder.xdr(e.obj, e.attrs)


@op(N.OP_READLINK, reply_size=4 + 4 + PATH_MAX)
async def readlink(ctx: CompoundContext, args: None) -> N.READLINK4resok:
    obj = ctx.current
    attrs = await ctx.vfs.getattr(obj)
    if attrs.type != FileType.LNK:
        raise errors.NFS4ERR_INVAL("not a symbolic link")  # RFC 7530 §16.25.5, a directory too
    return N.READLINK4resok(await ctx.vfs.readlink(obj))


_CREATE_TYPES = {
    N.NF4DIR: FileType.DIR,
    N.NF4LNK: FileType.LNK,
    N.NF4BLK: FileType.BLK,
    N.NF4CHR: FileType.CHR,
    N.NF4SOCK: FileType.SOCK,
    N.NF4FIFO: FileType.FIFO,
}


@op(N.OP_CREATE)
async def create(ctx: CompoundContext, args: N.CREATE4args) -> N.CREATE4resok:
    d = ctx.current
    name = check_name(args.objname)
    ftype = _CREATE_TYPES.get(args.objtype.type)
    if ftype is None:
        raise errors.NFS4ERR_BADTYPE()  # regular files are made by OPEN (§16.4.4)
    s = decode_settable(args.createattrs)
    target, rdev = b"", (0, 0)
    if ftype == FileType.LNK:
        target = args.objtype.value
        if not target:
            raise errors.NFS4ERR_INVAL("empty symlink target")
    elif ftype in (FileType.BLK, FileType.CHR):
        rdev = (args.objtype.value.specdata1, args.objtype.value.specdata2)
    before = await ctx.vfs.getattr(d)
    mode = s.mode if s.mode is not None else (0o755 if ftype == FileType.DIR else 0o644)
    obj, _ = await ctx.vfs.make(d, name, ftype, mode, target, rdev)
    await apply_extra(ctx, obj, s, ftype)
    after = await ctx.vfs.getattr(d)
    ctx.current = obj
    return N.CREATE4resok(change_info(before, after), s.mask)


async def apply_extra(ctx: CompoundContext, obj: Obj, s: SetAttrs, ftype: FileType) -> None:
    """Attributes other than mode that CREATE/OPEN asked for (owner, group, times, ACL)."""
    extra = SetAttrs(None, s.owner, s.owner_group, s.size, s.atime, s.mtime, s.acl)
    if ftype == FileType.LNK:
        extra.size = None
    if any(
        v is not None
        for v in (extra.owner, extra.owner_group, extra.size, extra.atime, extra.mtime,
                  extra.acl)
    ):
        await apply_setattrs(ctx, obj, extra)


@op(N.OP_REMOVE)
async def remove(ctx: CompoundContext, args: N.REMOVE4args) -> N.REMOVE4resok:
    d = ctx.current
    name = check_name(args.target)
    await _break_named(ctx, d, name)
    before = await ctx.vfs.getattr(d)
    await ctx.vfs.remove(d, name)
    return N.REMOVE4resok(change_info(before, await ctx.vfs.getattr(d)))


async def _break_named(ctx: CompoundContext, d: Obj, name: bytes) -> None:
    """Recall other clients' delegations of the file `name` in `d` before it is removed or
    renamed (§10.4.1); nothing to look up while no delegation is out."""
    if not ctx.state.delegations.by_file:
        return
    try:
        obj = await ctx.vfs.lookup(d, name)
    except errors.NFS4Error:
        return  # the operation itself reports what is wrong with the name
    await breaking(ctx, obj.fh, True)


def _saved(ctx: CompoundContext) -> Obj:
    """The saved filehandle of RENAME/LINK: NFS4ERR_NOFILEHANDLE when there is none
    (RFC 7530 §13.2: NFS4ERR_RESTOREFH is for RESTOREFH only)."""
    try:
        return ctx.saved
    except errors.NFS4ERR_RESTOREFH:
        raise errors.NFS4ERR_NOFILEHANDLE("no saved filehandle") from None


@op(N.OP_RENAME)
async def rename(ctx: CompoundContext, args: N.RENAME4args) -> N.RENAME4resok:
    src, dst = _saved(ctx), ctx.current
    ctx.vfs.check_sec(src)
    old, new = check_name(args.oldname), check_name(args.newname)
    await _break_named(ctx, src, old)  # §10.4.1: the file renamed, and one renamed over
    await _break_named(ctx, dst, new)
    sb, tb = await ctx.vfs.getattr(src), await ctx.vfs.getattr(dst)
    await ctx.vfs.rename(src, old, dst, new)
    sa, ta = await ctx.vfs.getattr(src), await ctx.vfs.getattr(dst)
    return N.RENAME4resok(change_info(sb, sa), change_info(tb, ta))


@op(N.OP_LINK)
async def link(ctx: CompoundContext, args: N.LINK4args) -> N.LINK4resok:
    src, d = _saved(ctx), ctx.current
    ctx.vfs.check_sec(src)
    name = check_name(args.newname)
    await breaking(ctx, src.fh, True)  # §10.4.1: a new name for a delegated file
    before = await ctx.vfs.getattr(d)
    await ctx.vfs.link(src, d, name)
    return N.LINK4resok(change_info(before, await ctx.vfs.getattr(d)))


@op(N.OP_OPENATTR)
async def openattr(ctx: CompoundContext, args: N.OPENATTR4args) -> None:
    raise errors.NFS4ERR_NOTSUPP("named attributes are not supported")
