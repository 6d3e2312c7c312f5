"""What one COMPOUND works with: `CompoundContext`, and the server's `Services` it is given.

Theory of operation: the server builds one `Services` when it starts: the state manager, the
configuration (the same object, so a changed bound applies to the next COMPOUND), the
idmappers, the wait for client records to reach stable storage, the write verifier, the
start of a callback path, the counters of operations and the delegations' recaller.
Each COMPOUND gets a
`CompoundContext` holding them, its `Vfs`, the credential and the client's address, plus its
current and saved filehandles.  Handlers reach
everything through the context and never name the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pynfsd.idmap import IdMapper
from pynfsd.metrics.stats import Stats
from pynfsd.nfs4 import errors
from pynfsd.nfs4.config import ServerConfig
from pynfsd.nfs4.recall import Recaller
from pynfsd.nfs4.state import StateManager
from pynfsd.nfs4.vfs import Vfs
from pynfsd.nfs4.vfstypes import Obj
from pynfsd.rpc.auth import Credential
from pynfsd.rpc.flavors import AUTH_SYS


@dataclass(frozen=True, slots=True)
class Services:
    """What handlers use that lives longer than one COMPOUND (built by the server)."""

    config: ServerConfig
    state: StateManager
    #: owners as ``user@domain`` (RPCSEC_GSS) and as numeric strings (AUTH_NONE, AUTH_SYS)
    idmap: IdMapper
    idmap_numeric: IdMapper
    #: returns once the client records changed so far are on stable storage; ``durable(True)``
    #: raises NFS4ERR_DELAY when the store cannot be reached (else that is only logged)
    durable: Callable[..., Awaitable[None]]
    #: changes on every server start (RFC 7530 §16.36.5)
    write_verifier: bytes
    #: ``(clientid, callback target, client address)``: probe a confirmed client's path
    start_callback: Callable[[int, object, str], None]
    #: per-operation counts and latencies, READ/WRITE bytes (`pynfsd.metrics.stats`)
    stats: Stats
    #: CB_RECALL/CB_GETATTR of delegations, and the wait for their return
    recaller: Recaller


class CompoundContext:
    """The state of one COMPOUND: current and saved filehandles, credential, client."""

    __slots__ = ("services", "vfs", "cred", "client_addr", "client_port", "_current", "_saved",
                 "tag", "index", "non_idempotent", "prepare", "clientid")

    def __init__(self, services: Services, vfs: Vfs, cred: Credential, client_addr: str,
                 client_port: int = 0) -> None:
        self.services = services
        self.vfs = vfs
        self.cred = cred
        self.client_addr = client_addr
        self.client_port = client_port  # the source port of the connection the call came on
        self._current: Obj | None = None
        self._saved: Obj | None = None
        self.tag = b""
        self.index = 0
        self.non_idempotent = False  # an op of NON_IDEMPOTENT was reached: cache the reply
        # Set while the client's exports are not known yet: the first op that uses them awaits
        # it (the caches may park the request; NFS4ERR_DELAY for that op if they do not answer).
        self.prepare: Callable[[], Awaitable[None]] | None = None
        # The client id an op of this COMPOUND named (OPEN, RENEW, a stateid): who asks, when
        # a later op meets a delegation (pynfsd.nfs4.ops.deleg), as knfsd's lease breaker.
        self.clientid: int | None = None

    @property
    def state(self) -> StateManager:
        return self.services.state

    @property
    def config(self) -> ServerConfig:
        return self.services.config

    @property
    def current(self) -> Obj:
        if self._current is None:
            raise errors.NFS4ERR_NOFILEHANDLE()
        return self._current

    @current.setter
    def current(self, obj: Obj) -> None:
        self._current = obj

    @property
    def saved(self) -> Obj:
        if self._saved is None:
            raise errors.NFS4ERR_RESTOREFH()
        return self._saved

    def save(self) -> None:
        self._saved = self.current

    @property
    def principal(self) -> str:
        """The identity state is keyed by (RFC 7530 §9.1.1): the credential's principal."""
        c = self.cred
        if c.principal:
            return c.principal
        return f"sys:{c.uid}" if c.flavor == AUTH_SYS else "none"
