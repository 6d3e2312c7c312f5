"""Delegations in the op layer: DELEGRETURN, DELEGPURGE (RFC 7530 §16.6, §16.5), and what the
other handlers call before they act on a file another client may hold a delegation of.

`breaking(ctx, fh, write)` recalls the delegations the access conflicts with (§10.4.1) and,
while one is out, parks the request for a moment (`Recaller.wait`, no blocking) and then
answers NFS4ERR_DELAY.  `holder_attrs` is CB_GETATTR (§10.4.3): a GETATTR of size or change
by another client while a write delegation is out answers with the holder's values; when the
holder cannot answer, the delegation is recalled instead (as knfsd).  The requester is the
client id the COMPOUND named (`ctx.clientid`), else the address and principal of the call
(for GETATTR the address alone; see `pynfsd.nfs4.state.delegations.Requester`).

DELEGPURGE and OPEN CLAIM_DELEGATE_PREV are NFS4ERR_NOTSUPP together (§16.5.4 allows it):
they serve clients that keep delegations in their own stable storage across their restart;
pynfsd keeps no per-delegation record on disk (delegations are reclaimed after a *server*
restart with CLAIM_PREVIOUS on the strength of the client record alone), and Linux never
sends either (knfsd answers NOTSUPP as well).
"""

from __future__ import annotations

import time

from pynfsd.fs.backend import Attrs
from pynfsd.gen import nfs4 as N
from pynfsd.nfs4 import errors
from pynfsd.nfs4.context import CompoundContext
from pynfsd.nfs4.ops.seqid import to_stateid
from pynfsd.nfs4.optable import op
from pynfsd.nfs4.state import Stateid
from pynfsd.nfs4.state.delegations import Recalling, Requester


def requester(ctx: CompoundContext) -> Requester:
    return Requester(ctx.clientid, ctx.client_addr, ctx.principal)


async def breaking(ctx: CompoundContext, fh: bytes, write: bool) -> None:
    """Recall what `fh`'s access conflicts with; NFS4ERR_DELAY unless returned at once."""
    delegations = ctx.state.delegations
    if not delegations.by_file:
        return
    who = requester(ctx)
    try:
        delegations.break_(fh, write, who)
    except Recalling as e:
        if not await ctx.services.recaller.wait(e.delegations):
            raise
        delegations.break_(fh, write, who)  # returned meanwhile; anything new conflicts?


def stateid_requester(ctx: CompoundContext, sid4: N.stateid4) -> tuple[Stateid, bool]:
    """The stateid of READ, WRITE or SETATTR, and whether it names a client: then that client
    is who asks (`ctx.clientid`); a special stateid names nobody."""
    sid = to_stateid(sid4)
    clientid = ctx.state.clientid_of(sid)
    if clientid is not None:
        ctx.clientid = clientid
    return sid, clientid is not None


async def stateid_user(ctx: CompoundContext, sid4: N.stateid4, fh: bytes, write: bool
                       ) -> Stateid:
    """`stateid_requester`'s stateid; a special stateid's access breaks the delegations it
    conflicts with."""
    sid, named = stateid_requester(ctx, sid4)
    if not named:
        await breaking(ctx, fh, write)
    return sid


async def holder_attrs(ctx: CompoundContext, fh: bytes, attrs: Attrs) -> Attrs:
    """`attrs` with the size and change of another client's write delegation (§10.4.3); the
    caller asks only while some delegation is out (`by_file`), off the GETATTR hot path."""
    delegations = ctx.state.delegations
    who = Requester(ctx.clientid, ctx.client_addr, None)  # by address (see Requester)
    deleg = delegations.write_delegation(fh, who)
    if deleg is None:
        return attrs
    got = await ctx.services.recaller.getattr(deleg)
    if got is None:
        await breaking(ctx, fh, False)  # CB_GETATTR failed: recall (knfsd)
        return attrs
    if not deleg.held:
        return attrs
    reported = delegations.modified(deleg, *got, time.time_ns())
    if reported is None:
        return attrs
    size, change, when = reported
    return attrs._replace(size=size, change=change, mtime_ns=max(attrs.mtime_ns, when),
                          ctime_ns=max(attrs.ctime_ns, when))


@op(N.OP_DELEGRETURN)
async def delegreturn(ctx: CompoundContext, args: N.DELEGRETURN4args) -> None:
    """DELEGRETURN (§16.6): errors of the stateid as §9.1.4.4 orders them."""
    sid = to_stateid(args.deleg_stateid)
    ctx.clientid = ctx.state.clientid_of(sid)
    ctx.state.delegations.delegreturn(sid, ctx.current.fh)


@op(N.OP_DELEGPURGE, needs_fh=False)
async def delegpurge(ctx: CompoundContext, args: N.DELEGPURGE4args) -> None:
    # See the module docstring: no CLAIM_DELEGATE_PREV, so no DELEGPURGE (§16.5.4).
    raise errors.NFS4ERR_NOTSUPP()
