"""Delegations (RFC 7530 §10.2-§10.5): grant policy, conflicts and recalls, return, revocation.

Theory of operation
-------------------
Sans-IO, like the rest of the state manager: the clock is injected, and what needs the network
goes through `DelegationHooks` (the server's `pynfsd.nfs4.recall.Recaller`; a fake in unit
tests): whether a client's callback path is up, "recall this delegation" and "this delegation
ended" (returned or revoked, so that requests waiting for it go on); RENEW asks
`callback_down` (NFS4ERR_CB_PATH_DOWN for a client holding delegations, §16.28.4).

Grant (`grant`, after OPEN made its open): a read delegation for an OPEN for read only, when no
other client has the file open for write; a write delegation for an OPEN with write access,
when no other client has the file open at all; never when delegations are off (`enabled`, and
the op layer's export option), during grace, when the client's callback path is not up
(confirmed by CB_NULL), when the client already holds one on the file, when another client
holds a write delegation of it (read delegations are shared), for a file conflicted recently (`RecentConflicts`, knfsd's
delegation_blocked), nor beyond `max_per_client` per client or `max_total` in all.
A reclaim (OPEN CLAIM_PREVIOUS in grace, §9.6.2) is granted whatever the path and the limits;
its `recall` flag asks for it back when the path is not up (as knfsd).

Conflicts (`break_`): an operation that conflicts with another client's delegation (§10.4.1:
an OPEN for write or any OPEN against a write delegation, I/O with a special stateid, REMOVE,
RENAME, LINK, SETATTR) calls `break_` before it acts.  Who asks is a `Requester`: the client id
when the COMPOUND named one (an OPEN, or a stateid earlier in it, as knfsd's lease breaker),
else the client record whose SETCLIENTID came from the same address and principal (as Ganesha
matches by address; a 4.0 REMOVE or GETATTR carries no client id).  A GETATTR is matched by
address alone: Linux sends it ahead of CLOSE and DELEGRETURN in one COMPOUND, under the
user's credential, and a holder must not be asked by CB_GETATTR about its own request (it
answers NFS4ERR_BADHANDLE for a delegation it is returning).  A client never conflicts
with its own delegation.  For each conflicting delegation: a holder whose lease lapsed is a
courteous client and is cancelled (§9.6.3.1, no recall); a recall outstanding for longer than
the enforced lease ends in revocation (its stateid is then NFS4ERR_BAD_STATEID, §10.4.6);
otherwise the recall starts (once: the hooks send CB_RECALL in the background) and the file
is marked recently conflicted.  If any recall is outstanding, `break_` raises `Recalling`
(NFS4ERR_DELAY): the op layer may wait a moment for the return and retry, else the client
retries later.  `sweep` revokes recalls outstanding past the lease even when nobody retries.

CB_GETATTR (§10.4.3): `modified` turns what the write delegation's holder reported into the
size and change attribute the server answers with: the holder's size, and the server's
change attribute at the grant plus one for every distinct change the holder reported.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pynfsd.nfs4 import errors as E
from pynfsd.nfs4.state.files import FileTable
from pynfsd.nfs4.state.owners import Client, Delegation
from pynfsd.nfs4.state.stateids import check_seqid
from pynfsd.nfs4.state.types import OPEN4_SHARE_ACCESS_WRITE, Stateid

log = logging.getLogger("pynfsd.nfs4.state")

DEFAULT_MAX_DELEGATIONS = 10000  # in all (knfsd: about 4 per MiB of memory)
DEFAULT_MAX_CLIENT_DELEGATIONS = 1000  # per client
BLOOM_BITS = 256  # the recently-conflicted filter's size (knfsd's bloom_pair)
BLOOM_PERIOD = 30.0  # seconds a conflict blocks new grants (at least; at most twice)


class DelegationHooks(Protocol):
    """What delegations need from the callback side (called on the event loop thread)."""

    def callback_up(self, clientid: int) -> bool: ...

    def callback_down(self, clientid: int) -> bool: ...

    def recall(self, deleg: Delegation) -> None: ...

    def ended(self, deleg: Delegation) -> None: ...


class NoCallbacks:
    """Hooks of a server without callbacks: no path is ever up, so nothing is granted."""

    def callback_up(self, clientid: int) -> bool:
        return False

    callback_down = callback_up

    def recall(self, deleg: Delegation) -> None:
        """Nobody to call."""

    ended = recall


class Recalling(E.NFS4ERR_DELAY):
    """A conflicting request meets delegations being recalled: NFS4ERR_DELAY (§10.4.1).

    `delegations` are those the request waits for (empty in a copy the replay cache of an
    open-owner raises again, which keeps the generic constructor)."""

    delegations: tuple[Delegation, ...] = ()


@dataclass(frozen=True, slots=True)
class Requester:
    """Who makes a request that may conflict: a client id, else its address and principal
    (None: the address alone)."""

    clientid: int | None
    addr: str = ""
    principal: str | None = ""

    def owns(self, client: Client) -> bool:
        if self.clientid is not None:
            return self.clientid == client.clientid
        if client.client_addr != self.addr:
            return False
        return self.principal is None or client.principal == self.principal


ANYONE = Requester(None, "\0", "\0")  # a request no delegation holder owns


class RecentConflicts:
    """Files conflicted recently, as knfsd's delegation_blocked: two bloom filters of
    `BLOOM_BITS` bits, the older cleared every `BLOOM_PERIOD` seconds (fixed memory)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._sets = [0, 0]
        self._new = 0
        self._swapped = clock()

    @staticmethod
    def _mask(file_key: bytes) -> int:
        h = hashlib.blake2b(file_key, digest_size=3).digest()
        return (1 << h[0]) | (1 << h[1]) | (1 << h[2])  # three positions of 256

    def _age(self) -> None:
        now = self._clock()
        if now - self._swapped >= 2 * BLOOM_PERIOD:
            self._sets = [0, 0]  # both periods are over
        if now - self._swapped >= BLOOM_PERIOD:
            self._new ^= 1
            self._sets[self._new] = 0
            self._swapped = now

    def add(self, file_key: bytes) -> None:
        self._age()
        self._sets[self._new] |= self._mask(file_key)

    def __contains__(self, file_key: bytes) -> bool:
        self._age()
        mask = self._mask(file_key)
        return any(s & mask == mask for s in self._sets)


class Delegations:
    """Every delegation of one server boot (see the module docstring)."""

    def __init__(
        self,
        clock: Callable[[], float],
        enforced_lease: float,
        files: FileTable,
        locate: Callable[[Stateid], Client],
        yield_courteous: Callable[[Client, str], bool],
        in_grace: Callable[[], bool],
        hooks: DelegationHooks | None = None,
    ) -> None:
        self.clock = clock
        self.enforced_lease = enforced_lease
        self.hooks: DelegationHooks = hooks if hooks is not None else NoCallbacks()
        self.enabled = True
        self.max_total = DEFAULT_MAX_DELEGATIONS
        self.max_per_client = DEFAULT_MAX_CLIENT_DELEGATIONS
        self.by_file: dict[bytes, tuple[Delegation, ...]] = {}
        self.count = 0
        self.recalls = 0  # recalls begun, and delegations revoked, since the start
        self.revoked = 0
        self.recent = RecentConflicts(clock)
        self._files = files
        self._locate = locate
        self._yield_courteous = yield_courteous
        self._in_grace = in_grace

    # -- grant (§10.4) -------------------------------------------------------------------

    def grant(
        self, client: Client, file_key: bytes, access: int, change: int, size: int
    ) -> Delegation | None:
        """The delegation an OPEN by `client` gets, or None (see the module docstring)."""
        write = bool(access & OPEN4_SHARE_ACCESS_WRITE)
        if not self.enabled or self._in_grace() or file_key in self.recent:
            return None
        if self.count >= self.max_total or len(client.delegations) >= self.max_per_client:
            return None
        if any(write or d.write or d.client is client for d in self.by_file.get(file_key, ())):
            return None  # read delegations are shared; a write delegation is alone
        if not self.hooks.callback_up(client.clientid):
            return None
        fs = self._files.get(file_key)
        for os in fs.opens if fs is not None else ():
            if os.closed or os.owner.client is client:
                continue
            if write or os.access & OPEN4_SHARE_ACCESS_WRITE:
                return None
        return self._add(client, file_key, write, change, size)

    def reclaim(
        self, client: Client, file_key: bytes, write: bool, change: int, size: int
    ) -> tuple[Delegation, bool]:
        """OPEN CLAIM_PREVIOUS of a delegation in grace: (delegation, recall flag)."""
        held = self.held(client, file_key)
        deleg = held if held is not None else self._add(client, file_key, write, change, size)
        return deleg, not self.hooks.callback_up(client.clientid)

    def _add(self, client: Client, file_key: bytes, write: bool, change: int, size: int
             ) -> Delegation:
        deleg = Delegation(client.allocate_index(), client, file_key, write,
                           change=change, size=size)
        client.delegations[deleg.index] = deleg
        self.by_file[file_key] = (*self.by_file.get(file_key, ()), deleg)
        self.count += 1
        return deleg

    def held(self, client: Client, file_key: bytes) -> Delegation | None:
        return next((d for d in self.by_file.get(file_key, ()) if d.client is client), None)

    # -- conflicts and recall (§10.4.1, §10.4.6) ------------------------------------------

    def conflicting(self, file_key: bytes, write: bool, who: Requester) -> list[Delegation]:
        """Delegations of other clients on a file that an access (`write` or not) breaks."""
        return [d for d in self.by_file.get(file_key, ())
                if (write or d.write) and not who.owns(d.client)]

    def break_(self, file_key: bytes, write: bool, who: Requester) -> None:
        """Recall what conflicts (see the module docstring); `Recalling` while any is out."""
        if not self.by_file:
            return
        pending: list[Delegation] = []
        for deleg in self.conflicting(file_key, write, who):
            if not deleg.held:
                continue
            if self._yield_courteous(deleg.client, "a file it holds a delegation of"):
                continue  # its whole state went, delegations included (§9.6.3.1)
            if self._overdue(deleg):
                self.revoke(deleg, "not returned within the lease after its recall")
                continue
            pending.append(deleg)
            if deleg.recalled_at is None:
                deleg.recalled_at = self.clock()
                self.recalls += 1
                self.recent.add(file_key)
                self.hooks.recall(deleg)
        if pending:
            recalling = Recalling("delegation being recalled")
            recalling.delegations = tuple(pending)
            raise recalling

    def _overdue(self, deleg: Delegation) -> bool:
        started = deleg.recalled_at
        return started is not None and self.clock() >= started + self.enforced_lease

    def write_delegation(self, file_key: bytes, who: Requester) -> Delegation | None:
        """Another client's write delegation on a file (whose holder CB_GETATTR asks)."""
        return next(iter(d for d in self.conflicting(file_key, False, who) if d.write), None)

    def modified(self, deleg: Delegation, size: int, change: int, now_ns: int
                 ) -> tuple[int, int, int] | None:
        """What to answer after the holder reported `size` and `change` by CB_GETATTR
        (§10.4.3): None if it has not modified the file (the server's values hold), else its
        size, a change attribute above the server's at the grant, bumped once for every new
        change value the holder reports, and the time (`now_ns` of the report that bumped
        it) to give as the file's modify and change times, as knfsd sets them."""
        if deleg.bumped is None and change == deleg.change and size == deleg.size:
            return None
        if deleg.bumped is None or change != deleg.client_change:
            deleg.bumped = (deleg.change if deleg.bumped is None else deleg.bumped) + 1
            deleg.client_change = change
            deleg.modified_ns = now_ns
        return size, deleg.bumped, deleg.modified_ns

    # -- return, revocation, lookups -------------------------------------------------------

    def find(self, stateid: Stateid, file_key: bytes | None) -> Delegation | None:
        """The delegation a stateid names (None: it names no delegation), checked as
        §9.1.4.4 says: the client (STALE/EXPIRED/ADMIN_REVOKED), the file, the seqid."""
        client = self._locate(stateid)
        deleg = client.delegations.get(int.from_bytes(stateid.other[8:], "big"))
        if deleg is None:
            return None
        if file_key is not None and deleg.file_key != file_key:
            raise E.NFS4ERR_BAD_STATEID("delegation stateid is for another file")
        check_seqid(stateid, deleg.seqid)
        return deleg

    def delegreturn(self, stateid: Stateid, file_key: bytes) -> None:
        """DELEGRETURN (§16.6): the stateid must name a delegation of this file."""
        deleg = self.find(stateid, file_key)
        if deleg is None:
            raise E.NFS4ERR_BAD_STATEID("not a delegation stateid")
        self._remove(deleg)

    def revoke(self, deleg: Delegation, why: str) -> None:
        log.warning("revoking the %s delegation of client %r: %s",
                    "write" if deleg.write else "read", deleg.client.ownerid, why)
        self.revoked += 1
        self._remove(deleg)

    def _remove(self, deleg: Delegation) -> None:
        if deleg.client.delegations.pop(deleg.index, None) is None:
            return
        rest = tuple(d for d in self.by_file.get(deleg.file_key, ()) if d is not deleg)
        if rest:
            self.by_file[deleg.file_key] = rest
        else:
            self.by_file.pop(deleg.file_key, None)
        self.count -= 1
        self.hooks.ended(deleg)

    def drop_client(self, client: Client) -> None:
        """A client's state goes (expired, revoked, replaced): its delegations with it."""
        for deleg in list(client.delegations.values()):
            self._remove(deleg)

    def sweep(self) -> int:
        """Revoke delegations whose recall is outstanding past the lease; how many."""
        overdue = [d for ds in self.by_file.values() for d in ds if self._overdue(d)]
        for deleg in overdue:
            self.revoke(deleg, "not returned within the lease after its recall")
        return len(overdue)
