"""The asyncio skin of delegations: CB_RECALL and CB_GETATTR over the callback client, and the
brief wait of a conflicting request for a delegation's return (RFC 7530 §10.4, §10.4.3).

Theory of operation: the state manager decides (`pynfsd.nfs4.state.delegations`); the
`Recaller` is its `DelegationHooks`.  `recall(deleg)` starts a background task that sends
CB_RECALL through `CallbackClient.recall`.  A client that answers NFS4ERR_DELAY is asked again
after `retry_delay`, and one that answers NFS4ERR_BAD_STATEID or NFS4ERR_BADHANDLE (the OPEN
reply that granted the delegation may not have reached it yet) once more, as knfsd's
nfsd4_cb_recall_done does; any other answer ends the task and the delegation stays out until
it is returned or revoked.  A call that fails on the path marks the path down (the callback
registry does; RENEW then answers NFS4ERR_CB_PATH_DOWN) and the delegation is revoked once
the lease has passed since the recall (the state manager's sweep, or the next conflict).
`ended(deleg)` (returned or revoked) wakes every request parked in `wait`, which waits at most
`wait_time` (knfsd waits about 30 ms) so that a quick DELEGRETURN spares the conflicting
client an NFS4ERR_DELAY round.  `getattr` asks a write delegation's holder for its size and
change attribute (CB_GETATTR, at most `getattr_time`), None when it cannot answer.
Tasks run on the event loop; nothing blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from pynfsd.gen import nfs4 as N
from pynfsd.nfs4.callback import CallbackClient, CallbackError
from pynfsd.nfs4.callback.path import PathState
from pynfsd.nfs4.state.owners import Delegation
from pynfsd.xdr.runtime import Unpacker, XdrError

log = logging.getLogger(__name__)

RETRY_DELAY = 2.0  # seconds before CB_RECALL is sent again after NFS4ERR_DELAY (knfsd: 2 s)
WAIT_TIME = 0.03  # seconds a conflicting request waits for a return (knfsd: HZ/34)
GETATTR_TIME = 1.0  # seconds a GETATTR waits for the holder's CB_GETATTR answer
_NOT_YET = (N.NFS4ERR_BAD_STATEID, N.NFS4ERR_BADHANDLE)
GETATTR_MASK = [(1 << N.FATTR4_CHANGE) | (1 << N.FATTR4_SIZE)]


class Recaller:
    """CB_RECALL/CB_GETATTR for the state manager's delegations (see the module docstring)."""

    def __init__(self, callbacks: CallbackClient, *, retry_delay: float = RETRY_DELAY,
                 wait_time: float = WAIT_TIME, getattr_time: float = GETATTR_TIME) -> None:
        self.callbacks = callbacks
        self.retry_delay = retry_delay
        self.wait_time = wait_time
        self.getattr_time = getattr_time
        self._ended: dict[Delegation, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.recalls_sent = 0

    # -- DelegationHooks ---------------------------------------------------------------------

    def callback_up(self, clientid: int) -> bool:
        return self.callbacks.path(clientid).up

    def callback_down(self, clientid: int) -> bool:
        return self.callbacks.path(clientid).state is PathState.DOWN

    def recall(self, deleg: Delegation) -> None:
        self._event(deleg)
        task = asyncio.get_running_loop().create_task(self._recall(deleg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def ended(self, deleg: Delegation) -> None:
        event = self._ended.pop(deleg, None)
        if event is not None:
            event.set()

    # -- the conflicting request's side ------------------------------------------------------

    async def wait(self, delegations: Iterable[Delegation]) -> bool:
        """Wait up to `wait_time` for all of `delegations` to end; whether they did."""
        events = [self._event(d) for d in delegations if d.client.delegations.get(d.index) is d]
        if not events:
            return True
        try:
            async with asyncio.timeout(self.wait_time):
                for event in events:
                    await event.wait()
        except TimeoutError:
            return False
        return True

    async def getattr(self, deleg: Delegation) -> tuple[int, int] | None:
        """(size, change) from the holder of a write delegation, or None (§10.4.3); None at
        once when its callback path is known to be down."""
        if self.callback_down(deleg.client.clientid):
            return None
        try:
            async with asyncio.timeout(self.getattr_time):
                res = await self.callbacks.getattr(deleg.client.clientid, deleg.file_key,
                                                   GETATTR_MASK)
        except (CallbackError, TimeoutError) as e:
            log.info("CB_GETATTR to client %#x failed: %s", deleg.client.clientid, e)
            return None
        if res.status != N.NFS4_OK or res.value is None:
            return None
        return decode_size_change(res.value.obj_attributes)

    # -- internals -------------------------------------------------------------------------

    def _event(self, deleg: Delegation) -> asyncio.Event:
        event = self._ended.get(deleg)
        if event is None:
            event = self._ended[deleg] = asyncio.Event()
        return event

    async def _recall(self, deleg: Delegation) -> None:
        clientid = deleg.client.clientid
        sid = N.stateid4(deleg.seqid, deleg.stateid().other)
        not_yet = 1
        while deleg.held:
            self.recalls_sent += 1
            try:
                status = await self.callbacks.recall(clientid, sid, False, deleg.file_key)
            except CallbackError as e:
                log.warning("CB_RECALL to client %#x failed: %s; the delegation is revoked "
                            "if not returned within the lease", clientid, e.reason)
                return
            if status == N.NFS4_OK:
                return
            if status == N.NFS4ERR_DELAY or (status in _NOT_YET and not_yet > 0):
                not_yet -= status != N.NFS4ERR_DELAY
                await asyncio.sleep(self.retry_delay)
                continue
            log.info("CB_RECALL to client %#x: %s", clientid, N.nfsstat4_names.get(status))
            return

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def decode_size_change(attrs: N.fattr4) -> tuple[int, int] | None:
    """Size and change from a CB_GETATTR reply that holds exactly those two (§10.4.3)."""
    mask = attrs.attrmask[0] if attrs.attrmask else 0
    if any(attrs.attrmask[1:]) or mask != GETATTR_MASK[0]:
        return None
    u = Unpacker(attrs.attr_vals)
    try:
        change = u.unpack_uhyper()  # bit 3 before bit 4
        size = u.unpack_uhyper()
        u.done()
    except XdrError:
        return None
    return size, change
