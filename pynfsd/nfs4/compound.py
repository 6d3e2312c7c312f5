"""COMPOUND (RFC 7530 §15.2, §16.2): the loop over the ops of one request.

Theory of operation: arguments are decoded one operation at a time, so an undecodable or
unknown operation ends the COMPOUND at that point with NFS4ERR_BADXDR or NFS4ERR_OP_ILLEGAL
(§15.2) and the results so far are kept.  Each op is described once in the op table the
server builds and passes in (`pynfsd.nfs4.optable`: handler, whether it needs a current
filehandle, whether the security flavour of that filehandle's export is checked first, whether
a pseudo-fs directory is NFS4ERR_ISDIR, whether the export must be writable); the loop applies
those checks in one place, before the handler.  A handler gets the `CompoundContext`
(`pynfsd.nfs4.context`), returns the value of its result's NFS4_OK arm (or None) and raises
`NFS4Error` for anything else; the loop maps exceptions to result statuses here and nowhere
else (unexpected ones become NFS4ERR_SERVERFAULT, logged with their traceback).  Processing
stops at the first op that does not return NFS4_OK (§15.2.4).

Bounded work (RFC 7530 §15.2, §13.1.3.4): every op in the table has a reply-size estimate (an
upper bound of its encoded result, from its arguments: READ its count, READDIR its maxcount,
GETATTR the attributes asked for, a small fixed size by default).  Before an op runs, the
loop adds its estimate to the bytes encoded so far; the first op that would take the
COMPOUND4res past `max_reply` bytes, or that is past `max_compound_ops`, gets
NFS4ERR_RESOURCE and ends the COMPOUND.  Every `YIELD_EVERY` ops the loop yields to the event
loop, so a long COMPOUND of cheap ops does not hold up other clients.

The client's exports (its view, from the export caches) are asked for at the first op that
uses them (`CompoundContext.prepare`), not before: the request may be parked there while an
upcall is answered, and resumes at that op; no answer in time is NFS4ERR_DELAY for that op.

A successful result is encoded straight from the handler's value (`OpSpec.pack_ok`, the
same bytes as its result object would give); an error, or an op with a hand-tuned encoder,
goes through the result object (`make_result`).  The arguments are decoded and the bounds
checked by a plain function, and only the handler is awaited: a COMPOUND of ops that do not
suspend creates one coroutine per op.

Each op that runs (or is refused by those bounds) is counted in `Services.stats` with its
status and its duration (decoding its arguments included) on the stats' clock.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any, cast

from pynfsd.gen import nfs4 as N
from pynfsd.metrics.stats import Stats
from pynfsd.nfs4 import errors
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.optable import OpSpec, OpTable, xdr_pad
from pynfsd.xdr.runtime import Packer, Unpacker, XdrError

log = logging.getLogger(__name__)

#: The loop yields to the event loop every this many ops.
YIELD_EVERY = 32
_STATUS_LEN = struct.Struct(">iI")  # COMPOUND4res status, the tag's length
_EMPTY_TAG_HEAD = struct.Struct(">iII")
_U32 = struct.Struct(">I")


# Ops that use no export, so they run before the client's exports are known (see
# `CompoundContext.prepare`): client ids and leases only.
NO_EXPORTS = frozenset({
    N.OP_SETCLIENTID, N.OP_SETCLIENTID_CONFIRM, N.OP_RENEW, N.OP_RELEASE_LOCKOWNER,
})

# Ops whose second run does not answer as the first did, so a COMPOUND that reaches one is kept
# in the duplicate request cache (pynfsd.rpc.drc) for a retransmission of it:
# - the namespace changes: CREATE (EXIST), REMOVE (NOENT), RENAME (NOENT), LINK (EXIST),
#   OPENATTR (its createdir creates the named-attribute directory);
# - data and attributes, which a later call may have changed again: WRITE, SETATTR (a replay
#   would undo the later change; a guarded SETATTR would fail NOT_SAME);
# - seqid-bumping and state-changing ops, whose replay gets BAD_SEQID or BAD_STATEID or makes
#   new state (RFC 7530 §9.1.7): OPEN, OPEN_CONFIRM, OPEN_DOWNGRADE, CLOSE, LOCK, LOCKU,
#   DELEGRETURN, RELEASE_LOCKOWNER;
# - client ids: SETCLIENTID (a new confirm verifier each time), SETCLIENTID_CONFIRM.
# Everything else reads, moves filehandles or only renews (RENEW) and flushes (COMMIT): running
# it again gives the current answer, which is as good, so READ/READDIR/GETATTR replies stay out.
NON_IDEMPOTENT = frozenset({
    N.OP_CREATE, N.OP_REMOVE, N.OP_RENAME, N.OP_LINK, N.OP_OPENATTR,
    N.OP_WRITE, N.OP_SETATTR,
    N.OP_OPEN, N.OP_OPEN_CONFIRM, N.OP_OPEN_DOWNGRADE, N.OP_CLOSE, N.OP_LOCK, N.OP_LOCKU,
    N.OP_DELEGRETURN, N.OP_RELEASE_LOCKOWNER,
    N.OP_SETCLIENTID, N.OP_SETCLIENTID_CONFIRM,
})


def make_result(spec: OpSpec, status: int, value: Any) -> Any:
    if spec.res_is_union:
        return spec.res_cls(status, value)
    if spec.res_nfields == 1:
        return spec.res_cls(status)
    return spec.res_cls(status, value if value is not None else [])  # SETATTR4res attrsset


def _illegal(p: Packer, stats: Stats, status: int) -> int:
    """Encode an ILLEGAL result (RFC 7530 §15.2.4) and count it; returns `status`."""
    p.pack_uint(N.OP_ILLEGAL)
    p.pack_int(status)
    stats.op_done(N.OP_ILLEGAL, status, 0.0)
    return status


async def run_op(ctx: CompoundContext, spec: OpSpec, args: Any) -> tuple[int, Any]:
    """Run one op: (status, NFS4_OK-arm value or error-arm payload)."""
    try:
        if spec.needs_fh:
            obj = ctx.current
            if spec.check_sec:
                ctx.vfs.check_sec(obj)
            if spec.on_file and obj.is_pseudo:
                raise errors.NFS4ERR_ISDIR()
            if spec.writes:
                ctx.vfs.check_writable(obj)
        return N.NFS4_OK, await spec.handler(ctx, args)
    except errors.NFS4Error as e:
        return e.status, e.value
    except Exception:
        log.exception("NFS4ERR_SERVERFAULT in %s", spec.name)
        return N.NFS4ERR_SERVERFAULT, None


async def process(
    ctx: CompoundContext, ops: OpTable, u: Unpacker, count: int
) -> tuple[int, Packer, int]:
    """Run the ops of a COMPOUND (`ops`: the op table): (status of the last op, encoded
    results, number of results)."""
    out = Packer()
    status = N.NFS4_OK
    stats = ctx.services.stats
    clock = stats.clock
    head = 12 + xdr_pad(len(ctx.tag))  # COMPOUND4res status, tag, resarray length
    for i in range(count):
        ctx.index = i
        if i and i % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let other clients' calls run (bounded work per turn)
        try:
            opnum = u.unpack_uint()
        except XdrError:
            return _illegal(out, stats, N.NFS4ERR_BADXDR), out, i + 1
        spec = ops.get(opnum)
        if spec is None:
            return _illegal(out, stats, N.NFS4ERR_OP_ILLEGAL), out, i + 1  # RFC 7530 §16.39
        ctx.non_idempotent |= opnum in NON_IDEMPOTENT
        started = clock()
        status, value = _decode(ctx, spec, u, head + len(out))  # value: the arguments
        if status == N.NFS4_OK and ctx.prepare is not None and opnum not in NO_EXPORTS:
            status, value = await _prepare(ctx, value)
        if status == N.NFS4_OK:
            status, value = await run_op(ctx, spec, value)
        stats.op_done(opnum, status, clock() - started)
        if status == N.NFS4_OK and spec.fast_ok:
            spec.pack_ok(out, value)
            continue
        out.pack_uint(opnum)
        spec.pack_res(out, make_result(spec, status, value))
        if status != N.NFS4_OK:
            return status, out, i + 1
    return status, out, count


def _decode(ctx: CompoundContext, spec: OpSpec, u: Unpacker, used: int) -> tuple[int, Any]:
    """(NFS4_OK, the op's arguments), or the status that ends the COMPOUND at this op: the
    COMPOUND's bounds (`used`: reply bytes so far) or arguments that do not decode."""
    cfg = ctx.config
    if ctx.index >= cfg.max_compound_ops:
        # RFC 7530 §13.1.3.4, §15.2: too many ops for the server; the COMPOUND ends here.
        log.debug("NFS4ERR_RESOURCE: op %d of a COMPOUND (max %d)", ctx.index + 1,
                  cfg.max_compound_ops)
        return N.NFS4ERR_RESOURCE, None
    try:
        args = spec.unpack_args(u)
    except XdrError as e:
        log.debug("BADXDR in %s arguments: %s", spec.name, e)
        return N.NFS4ERR_BADXDR, None
    if used + 4 + spec.reply_size(args, cfg) > cfg.max_reply:
        # RFC 7530 §13.1.3.4: the reply would be too large; checked before the op runs.
        log.debug("NFS4ERR_RESOURCE: %s would take the reply past %d bytes", spec.name,
                  cfg.max_reply)
        return N.NFS4ERR_RESOURCE, None
    return N.NFS4_OK, args


async def _prepare(ctx: CompoundContext, args: Any) -> tuple[int, Any]:
    """The client's exports, at the first op that uses them: (NFS4_OK, `args`) or the error."""
    assert ctx.prepare is not None
    try:
        await ctx.prepare()  # the export caches; parks the request while they are asked
    except errors.NFS4Error as e:
        return e.status, e.value
    return N.NFS4_OK, args


def encode_reply(status: int, tag: bytes, numres: int, results: Packer | None) -> list[bytes]:
    if tag:
        pad = b"\0" * (-len(tag) & 3)
        head = b"".join((_STATUS_LEN.pack(status, len(tag)), tag, pad, _U32.pack(numres)))
    else:
        head = _EMPTY_TAG_HEAD.pack(status, 0, numres)  # status, tag<> (empty), resarray count
    if results is None:
        return [head]
    # The results go out as they are (no copy): a READ reply's data is an out-of-line segment.
    return [head, *cast(list[bytes], results.get_buffers())]
