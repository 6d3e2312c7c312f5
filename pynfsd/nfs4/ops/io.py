"""Data operations: READ, WRITE, COMMIT (RFC 7530 §16.23, §16.36, §16.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.ops.deleg import stateid_user
from pynfsd.nfs4.optable import op, xdr_pad
from pynfsd.xdr.runtime import Packer, Unpacker

if TYPE_CHECKING:
    from pynfsd.nfs4.config import ServerConfig

UNSTABLE4 = 0
FILE_SYNC4 = 2


def _pack_read_res(p: Packer, res: N.READ4res) -> None:
    """READ4res with the data referenced, not copied (hand-tuned beside the generated codec)."""
    p.pack_int(res.status)
    if res.status == N.NFS4_OK:
        assert res.value is not None
        _pack_read_ok(p, res.value)


def _pack_read_ok(p: Packer, ok: N.READ4resok) -> None:
    """READ4resok, its data referenced (the NFS4_OK arm of `_pack_read_res`)."""
    p.pack_bool(ok.eof)
    p.pack_opaque_ref(ok.data)


def _unpack_write_args(u: Unpacker) -> N.WRITE4args:
    """WRITE4args with the data as a view into the request (no copy of up to 1 MiB)."""
    stateid = N.unpack_stateid4(u)
    offset = u.unpack_uhyper()
    stable = N.unpack_stable_how4(u)
    return N.WRITE4args(stateid, offset, stable, u.unpack_opaque_view())  # type: ignore[arg-type]


def _read_reply(args: N.READ4args, cfg: ServerConfig) -> int:
    """status, eof and the data: at most maxread bytes (the count is capped below)."""
    return 12 + xdr_pad(min(args.count, cfg.maxread))


@op(N.OP_READ, pack_res=_pack_read_res, pack_ok=_pack_read_ok, reply_size=_read_reply,
    on_file=True)
async def read(ctx: CompoundContext, args: N.READ4args) -> N.READ4resok:
    obj = ctx.current
    ctx.state.check_io_stateid(await stateid_user(ctx, args.stateid, obj.fh, False), obj.fh, False)
    count = min(args.count, ctx.config.maxread)
    data, eof = await ctx.vfs.read(obj, args.offset, count)  # access checked on each READ
    ctx.services.stats.read_bytes += len(data)
    return N.READ4resok(eof, data)  # type: ignore[arg-type]  # packed by reference


@op(N.OP_WRITE, unpack_args=_unpack_write_args, on_file=True, writes=True)
async def write(ctx: CompoundContext, args: N.WRITE4args) -> N.WRITE4resok:
    obj = ctx.current
    # §9.1.4.3: a WRITE with the READ bypass stateid is treated as with the anonymous one
    ctx.state.check_io_stateid(await stateid_user(ctx, args.stateid, obj.fh, True), obj.fh, True)
    if args.offset + len(args.data) > (1 << 63) - 1:
        raise errors.NFS4ERR_FBIG()
    sync = args.stable != UNSTABLE4
    n = await ctx.vfs.write(obj, args.offset, args.data, sync)  # access checked on each WRITE
    ctx.services.stats.write_bytes += n
    return N.WRITE4resok(n, FILE_SYNC4 if sync else UNSTABLE4, ctx.services.write_verifier)


@op(N.OP_COMMIT, on_file=True, writes=True)  # RFC 7530 §16.3.5 lists NFS4ERR_ROFS for COMMIT
async def commit(ctx: CompoundContext, args: N.COMMIT4args) -> N.COMMIT4resok:
    obj = ctx.current
    if args.offset + args.count > N.NFS4_UINT64_MAX:
        raise errors.NFS4ERR_INVAL()
    await ctx.vfs.commit(obj)
    return N.COMMIT4resok(ctx.services.write_verifier)
