"""GSS-API context establishment for the server (the rare, complex half of RPCSEC_GSS).

Theory of operation: the RPCSEC_GSS flavour hands each INIT / CONTINUE_INIT token to an
`Acceptor` and awaits a `StepResult`.  Establishment runs in worker threads, never on the event
loop (it reads the keytab and may replay-cache to disk): through a `pynfsd.blocking.Runner`.  When a context completes, the acceptor
exports it as a krb5 lucid context and returns a `PerPacket` object (`pynfsd.gss.lucid`'s
`Krb5Context`) that does every later MIC and Wrap in-process, as the Linux kernel does after its
upcall.  `GssapiAcceptor` does this through python-gssapi with the server's keytab; the gssproxy
backend implements the same protocol.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from pynfsd.blocking import Runner, default_runner

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview
GSS_S_COMPLETE = 0
GSS_S_CONTINUE_NEEDED = 1
GSS_S_DEFECTIVE_TOKEN = 0x00090000
GSS_S_FAILURE = 0x000D0000


class PerPacket(Protocol):
    """Per-message protection of an established context (RFC 2743 §2.3)."""

    def get_mic(self, msg: Buffer) -> bytes: ...

    def verify_mic(self, msg: Buffer, token: Buffer) -> None:
        """Raise (any exception) when `token` is not a valid MIC of `msg`."""

    def wrap(self, msg: Buffer, conf: bool = True) -> bytes | bytearray: ...

    def unwrap(self, token: Buffer) -> tuple[bytes | bytearray, bool]:
        """(message, confidentiality was applied); raise when the token is bad."""


@dataclass(frozen=True, slots=True)
class StepResult:
    """One accept step: a token for the initiator, and on completion the context itself.

    `major`/`minor` are the GSS-API status (RFC 2203 §5.2.3.1 returns them to the client);
    `state` is what the next step (CONTINUE_INIT) must be given; `endtime` is the context's
    expiry in wall-clock seconds since the epoch (the ticket's end time for krb5).
    """

    output_token: bytes
    complete: bool
    initiator: str = ""
    per_packet: PerPacket | None = None
    endtime: float = 0.0
    major: int = GSS_S_COMPLETE
    minor: int = 0
    state: object = None

    @property
    def failed(self) -> bool:
        return self.major not in (GSS_S_COMPLETE, GSS_S_CONTINUE_NEEDED)


class Acceptor(Protocol):
    """A context-establishment backend (in-process GSS-API or gssproxy)."""

    async def step(self, ctx_state: object, token: bytes) -> StepResult:
        """Feed one initiator token; `ctx_state` is None first, then the last `state`."""


PerPacketFactory = Callable[[Any], PerPacket]


def _lucid_context(lucid: Any) -> PerPacket:
    from pynfsd.gss.lucid import Krb5Context

    ctx: PerPacket = Krb5Context(lucid)
    return ctx


class GssapiAcceptor:
    """Accepts krb5 contexts with python-gssapi (`gssapi.raw`) from the server's keytab.

    `keytab` is a path; None means the default keytab (KRB5_KTNAME or /etc/krb5.keytab).
    With `service` None, any principal in the keytab is accepted (as knfsd with gssproxy).
    Each step is one blocking `accept_sec_context` on `runner` (default: the shared pool).
    """

    def __init__(
        self,
        keytab: str | None = None,
        *,
        service: str | None = None,
        runner: Runner | None = None,
        per_packet: PerPacketFactory = _lucid_context,
    ) -> None:
        import gssapi.raw  # noqa: F401  (fail at startup, not at the first client)

        self.keytab = keytab
        self.service = service
        self._runner = runner or default_runner()
        self._per_packet = per_packet
        self._creds: Any = None

    async def step(self, ctx_state: object, token: bytes) -> StepResult:
        return await self._runner.run(self.step_blocking, ctx_state, token)

    def step_blocking(self, ctx_state: object, token: bytes) -> StepResult:
        """One `accept_sec_context` call (blocking: run off the event loop)."""
        from gssapi.raw import GSSError, accept_sec_context

        try:
            res = accept_sec_context(token, self._acceptor_creds(), cast(Any, ctx_state))
        except GSSError as e:
            log.info("GSS accept failed: %s", e.gen_message())
            return StepResult(b"", False, major=e.maj_code or GSS_S_FAILURE, minor=e.min_code)
        out = res.token or b""
        if not res.more_steps:
            return self._complete(res, out)
        return StepResult(out, False, major=GSS_S_CONTINUE_NEEDED, state=res.context)

    def _acceptor_creds(self) -> Any:
        if self._creds is None:
            self._creds = self._acquire()
        return self._creds

    def _acquire(self) -> Any:
        from gssapi.raw import NameType, acquire_cred_from, import_name

        name = None
        if self.service is not None:
            name = import_name(self.service.encode(), NameType.hostbased_service)
        store: dict[bytes | str, bytes | str] | None = None
        if self.keytab:
            store = {b"keytab": os.fsencode(self.keytab)}
        return acquire_cred_from(store, name, usage="accept").creds

    def _complete(self, res: Any, out: bytes) -> StepResult:
        from gssapi.raw import GSSError, display_name
        from gssapi.raw.ext_krb5 import krb5_export_lucid_sec_context

        initiator = display_name(res.initiator_name, name_type=False).name.decode()
        try:
            # Exporting destroys the GSS context: from here on pynfsd does the per-packet work.
            lucid: Any = krb5_export_lucid_sec_context(res.context, 1)
            per_packet = self._per_packet(lucid)
        except (GSSError, ValueError) as e:
            log.warning("cannot export the context of %s: %s", initiator, e)
            return StepResult(b"", False, initiator, major=GSS_S_FAILURE)
        endtime = float(getattr(per_packet, "endtime", 0) or lucid.endtime)
        return StepResult(out, True, initiator, per_packet, endtime)
