"""OPEN, OPEN_CONFIRM, OPEN_DOWNGRADE and CLOSE (RFC 7530 §16.16, §16.18, §16.19, §16.2).

OPEN and delegations (§10.4, `pynfsd.nfs4.state.delegations`): an OPEN recalls the delegations
of other clients it conflicts with before its share check (`ops.deleg.breaking`), and may be
granted one after.  CLAIM_DELEGATE_CUR opens under the client's own delegation (also while
it is recalled); CLAIM_PREVIOUS with a delegation type reclaims it in grace; the
`no_delegations` export option and `serve --delegations off` turn grants off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pynfsd.fs.backend import Attrs, FileType
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.attrs import decode_settable
from pynfsd.nfs4.bitmap import int_to_bitmap
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.ops.deleg import breaking
from pynfsd.nfs4.ops.dirs import apply_extra, change_info
from pynfsd.nfs4.ops.names import check_name
from pynfsd.nfs4.ops.seqid import sequenced, to_stateid, to_stateid4
from pynfsd.nfs4.optable import op
from pynfsd.nfs4.state import Stateid, check_share_args
from pynfsd.nfs4.state.owners import Delegation
from pynfsd.nfs4.vfstypes import Obj

OPEN4_RESULT_CONFIRM = 0x2
OPEN4_RESULT_LOCKTYPE_POSIX = 0x4
_NS = 1_000_000_000
# For EXCLUSIVE4 the verifier is kept in atime/mtime (as knfsd does); the client then sets
# the real values with SETATTR, told by attrset that these were used (RFC 7530 §16.16.5).
_EXCL_ATTRSET = [0, (1 << (N.FATTR4_TIME_ACCESS - 32)) | (1 << (N.FATTR4_TIME_MODIFY - 32))]
# What knfsd sends with a delegation: no space limit on a write delegation, and an ACE that
# leaves access checks to the server (ACCESS_ALLOWED, no access bits, EVERYONE@).
_NO_LIMIT = N.nfs_space_limit4(N.NFS_LIMIT_SIZE, N.NFS4_UINT64_MAX)
_DELEG_ACE = N.nfsace4(N.ACE4_ACCESS_ALLOWED_ACE_TYPE, 0, 0, b"EVERYONE@")
_NO_DELEGATION = N.open_delegation4(N.OPEN_DELEGATE_NONE, None)


@dataclass(slots=True)
class _Opened:
    obj: Obj
    attrs: Attrs
    created: bool
    cinfo: N.change_info4
    attrset: list[int]
    truncate: bool = False  # UNCHECKED4 size 0 on an existing file, done after the share check


@op(N.OP_OPEN)
async def open_(ctx: CompoundContext, args: N.OPEN4args) -> N.OPEN4resok:
    state = ctx.state
    clientid = ctx.clientid = args.owner.clientid
    owner = state.open_owner(clientid, args.owner.owner, args.seqid)
    try:
        resok, obj = await sequenced(state, owner, args.seqid, N.OP_OPEN, lambda: _open(ctx, args))
    finally:
        await ctx.services.durable()  # client records changed, before the reply (§9.6.3.4)
    ctx.current = obj
    return resok


async def _open(ctx: CompoundContext, args: N.OPEN4args) -> tuple[N.OPEN4resok, Obj]:
    claim = args.claim
    access, deny = args.share_access, args.share_deny
    reclaim = claim.claim == N.CLAIM_PREVIOUS
    check_share_args(access, deny)  # before anything is created (§16.16.5)
    await _record_first(ctx, args.owner.clientid)
    own: Delegation | None = None
    if claim.claim == N.CLAIM_NULL:
        opened = await _open_by_name(ctx, args, check_name(claim.value))
    elif reclaim:
        opened = await _existing(ctx, ctx.current)
    elif claim.claim == N.CLAIM_DELEGATE_CUR:
        own, opened = await _delegate_cur(ctx, args.owner.clientid, claim.value)
    else:  # CLAIM_DELEGATE_PREV: see pynfsd.nfs4.ops.deleg
        raise errors.NFS4ERR_NOTSUPP("CLAIM_DELEGATE_PREV")
    if not opened.created:
        await ctx.vfs.check_open_access(
            opened.obj,
            opened.attrs,
            bool(access & N.OPEN4_SHARE_ACCESS_READ),
            bool(access & N.OPEN4_SHARE_ACCESS_WRITE),
        )
    if own is None and not reclaim:  # §10.4.1: other clients' delegations are recalled
        await breaking(ctx, opened.obj.fh, bool(access & N.OPEN4_SHARE_ACCESS_WRITE))
    res = ctx.state.open(
        args.owner.clientid, args.owner.owner, opened.obj.fh, access, deny, reclaim=reclaim
    )
    if opened.truncate:
        opened.attrs = await ctx.vfs.setattr(opened.obj, size=0)
    rflags = OPEN4_RESULT_LOCKTYPE_POSIX | (OPEN4_RESULT_CONFIRM if res.needs_confirm else 0)
    deleg = _NO_DELEGATION if own is not None else _delegate(ctx, args, opened)
    resok = N.OPEN4resok(to_stateid4(res.stateid), opened.cinfo, rflags, opened.attrset, deleg)
    return resok, opened.obj


async def _record_first(ctx: CompoundContext, clientid: int) -> None:
    """A client's record is durable before its first state exists (§9.6.3.4); when the store
    cannot make it so now, NFS4ERR_DELAY before anything is created, and the client retries."""
    client = ctx.state.record(clientid)
    if client is None:
        return
    try:
        await ctx.services.durable(True)
    except errors.NFS4ERR_DELAY:
        client.recorded = False  # written on a later OPEN
        raise


async def _delegate_cur(
    ctx: CompoundContext, clientid: int, cur: N.open_claim_delegate_cur4
) -> tuple[Delegation, _Opened]:
    """CLAIM_DELEGATE_CUR (§16.16.5): the file by name in the current directory, opened
    under the client's own delegation of it (its stateid checked as §9.1.4.4 says)."""
    obj = await ctx.vfs.lookup(ctx.current, check_name(cur.file))
    own = ctx.state.delegations.find(to_stateid(cur.delegate_stateid), obj.fh)
    if own is None or own.client.clientid != clientid:
        raise errors.NFS4ERR_BAD_STATEID("not a delegation of this client")
    return own, await _existing(ctx, obj)


def _delegate(ctx: CompoundContext, args: N.OPEN4args, opened: _Opened) -> N.open_delegation4:
    """The delegation this OPEN gets (§10.4), or a reclaimed one (CLAIM_PREVIOUS)."""
    delegations = ctx.state.delegations
    client = ctx.state.clients.confirmed.get(args.owner.clientid)
    export = opened.obj.export
    if client is None or export is None or export.options.has("no_delegations"):
        return _NO_DELEGATION
    fh, attrs = opened.obj.fh, opened.attrs
    recall = False
    if args.claim.claim == N.CLAIM_PREVIOUS:
        if args.claim.value == N.OPEN_DELEGATE_NONE:
            return _NO_DELEGATION
        write = args.claim.value == N.OPEN_DELEGATE_WRITE
        deleg, recall = delegations.reclaim(client, fh, write, attrs.change, attrs.size)
    else:
        granted = delegations.grant(client, fh, args.share_access, attrs.change, attrs.size)
        if granted is None:
            return _NO_DELEGATION
        deleg = granted
    sid = to_stateid4(deleg.stateid())
    if deleg.write:
        return N.open_delegation4(
            N.OPEN_DELEGATE_WRITE, N.open_write_delegation4(sid, recall, _NO_LIMIT, _DELEG_ACE))
    return N.open_delegation4(N.OPEN_DELEGATE_READ,
                              N.open_read_delegation4(sid, recall, _DELEG_ACE))


async def _existing(ctx: CompoundContext, obj: Obj) -> _Opened:
    attrs = await ctx.vfs.getattr(obj)
    _check_regular(attrs)
    return _Opened(obj, attrs, False, N.change_info4(False, 0, 0), [])


def _check_regular(attrs: Attrs) -> None:
    """OPEN is for regular files only (RFC 7530 §16.16.5): a directory is NFS4ERR_ISDIR,
    anything else (symbolic link, socket, FIFO, device) NFS4ERR_SYMLINK."""
    if attrs.type == FileType.DIR:
        raise errors.NFS4ERR_ISDIR()
    if attrs.type != FileType.REG:
        raise errors.NFS4ERR_SYMLINK()


async def _open_by_name(ctx: CompoundContext, args: N.OPEN4args, name: bytes) -> _Opened:
    d = ctx.current
    if d.is_pseudo and args.openhow.opentype == N.OPEN4_CREATE:
        raise errors.NFS4ERR_ROFS()
    before = await ctx.vfs.getattr(d)
    if before.type != FileType.DIR:
        raise errors.NFS4ERR_NOTDIR()
    if args.openhow.opentype == N.OPEN4_CREATE:
        how = args.openhow.value
        assert how is not None
        opened = await _create(ctx, d, name, how, args.share_access)
    else:
        obj = await ctx.vfs.lookup(d, name)
        opened = await _existing(ctx, obj)
    opened.cinfo = change_info(before, await ctx.vfs.getattr(d))
    return opened


async def _create(
    ctx: CompoundContext, d: Obj, name: bytes, how: N.createhow4, access: int
) -> _Opened:
    if how.mode == N.EXCLUSIVE4:
        return await _create_exclusive(ctx, d, name, how.value)
    s = decode_settable(how.value)
    mode = s.mode if s.mode is not None else 0o644
    try:
        obj, attrs, created = await ctx.vfs.create_file(d, name, mode, how.mode == N.GUARDED4)
    except errors.NFS4ERR_INVAL:
        # The name is checked already: the backend found a socket, FIFO or device there.
        raise errors.NFS4ERR_SYMLINK("not a regular file") from None  # RFC 7530 §16.16.5
    _check_regular(attrs)
    if not created:
        if how.mode == N.GUARDED4:
            raise errors.NFS4ERR_EXIST()
        # §16.16.5: on an existing file createattrs are not used, except that size 0
        # truncates it (after the share reservation check, and only when opened for write).
        if s.size != 0:
            return _Opened(obj, attrs, False, N.change_info4(False, 0, 0), [])
        if not access & N.OPEN4_SHARE_ACCESS_WRITE:
            raise errors.NFS4ERR_INVAL("truncating OPEN without write access")
        size_set = int_to_bitmap(1 << N.FATTR4_SIZE)
        return _Opened(obj, attrs, False, N.change_info4(False, 0, 0), size_set, truncate=True)
    await apply_extra(ctx, obj, s, FileType.REG)
    return _Opened(obj, attrs, created, N.change_info4(False, 0, 0), s.mask)


async def _create_exclusive(ctx: CompoundContext, d: Obj, name: bytes, verf: bytes) -> _Opened:
    atime = int.from_bytes(verf[:4], "big") * _NS
    mtime = int.from_bytes(verf[4:], "big") * _NS
    try:
        obj, attrs, _ = await ctx.vfs.create_file(d, name, 0o600, True)
    except errors.NFS4ERR_EXIST:
        obj = await ctx.vfs.lookup(d, name)
        attrs = await ctx.vfs.getattr(obj)
        if attrs.type != FileType.REG or attrs.atime_ns != atime or attrs.mtime_ns != mtime:
            raise  # §16.16.5: someone else's file, not a retransmission of our create
        return _Opened(obj, attrs, True, N.change_info4(False, 0, 0), list(_EXCL_ATTRSET))
    attrs = await ctx.vfs.setattr(obj, atime=atime, mtime=mtime)
    return _Opened(obj, attrs, True, N.change_info4(False, 0, 0), list(_EXCL_ATTRSET))


async def _on_open_stateid(
    ctx: CompoundContext, sid4: N.stateid4, seqid: int, opnum: int,
    change: Callable[[Stateid, bytes], Stateid],
) -> N.stateid4:
    """OPEN_CONFIRM, OPEN_DOWNGRADE and CLOSE: a state change sequenced on the open-owner."""
    sid = to_stateid(sid4)
    owner = ctx.state.owner_for_stateid(sid)
    fh = ctx.current.fh

    async def body() -> N.stateid4:
        return to_stateid4(change(sid, fh))

    return await sequenced(ctx.state, owner, seqid, opnum, body)


@op(N.OP_OPEN_CONFIRM)
async def open_confirm(ctx: CompoundContext, args: N.OPEN_CONFIRM4args) -> N.OPEN_CONFIRM4resok:
    state = ctx.state
    new = await _on_open_stateid(ctx, args.open_stateid, args.seqid, N.OP_OPEN_CONFIRM,
                                 state.open_confirm)
    return N.OPEN_CONFIRM4resok(new)


@op(N.OP_OPEN_DOWNGRADE)
async def open_downgrade(
    ctx: CompoundContext, args: N.OPEN_DOWNGRADE4args
) -> N.OPEN_DOWNGRADE4resok:
    state = ctx.state

    def downgrade(sid: Stateid, fh: bytes) -> Stateid:
        return state.open_downgrade(sid, args.share_access, args.share_deny, fh)

    new = await _on_open_stateid(ctx, args.open_stateid, args.seqid, N.OP_OPEN_DOWNGRADE, downgrade)
    return N.OPEN_DOWNGRADE4resok(new)


@op(N.OP_CLOSE)
async def close(ctx: CompoundContext, args: N.CLOSE4args) -> N.stateid4:
    return await _on_open_stateid(ctx, args.open_stateid, args.seqid, N.OP_CLOSE,
                                  ctx.state.close)
