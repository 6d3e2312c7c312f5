"""Client-id operations: SETCLIENTID, SETCLIENTID_CONFIRM, RENEW
(RFC 7530 §16.33, §16.34, §16.28)."""

from __future__ import annotations

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.callback import CallbackTarget
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.optable import op


@op(N.OP_SETCLIENTID, needs_fh=False)
async def setclientid(ctx: CompoundContext, args: N.SETCLIENTID4args) -> N.SETCLIENTID4resok:
    try:
        target = CallbackTarget.from_setclientid(args, ctx.cred)
        clientid, confirm = ctx.state.setclientid(
            args.client.verifier, args.client.id, ctx.principal, target, ctx.client_addr,
            client_port=ctx.client_port,
        )
    except errors.NFS4ERR_CLID_INUSE as e:
        if isinstance(e.value, tuple):
            e.value = N.netaddr4(*e.value)  # §16.33.4: where the id is in use
        raise
    await ctx.services.durable()  # a courteous client it displaced is forgotten on disk
    return N.SETCLIENTID4resok(clientid, confirm)


@op(N.OP_SETCLIENTID_CONFIRM, needs_fh=False)
async def setclientid_confirm(ctx: CompoundContext, args: N.SETCLIENTID_CONFIRM4args) -> None:
    ctx.state.setclientid_confirm(args.clientid, args.setclientid_confirm, ctx.principal)
    record = ctx.state.clients.confirmed.get(args.clientid)
    if record is not None:
        ctx.services.start_callback(args.clientid, record.callback, ctx.client_addr)


@op(N.OP_RENEW, needs_fh=False)
async def renew(ctx: CompoundContext, args: N.RENEW4args) -> None:
    ctx.clientid = args.clientid
    ctx.state.renew(args.clientid, ctx.principal)
