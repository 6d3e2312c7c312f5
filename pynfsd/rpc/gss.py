"""The RPCSEC_GSS version 1 auth flavour (RFC 2203), server side.

Theory of operation: `accept` decodes the rpc_gss_cred_t.  INIT and CONTINUE_INIT (control
calls to NULLPROC) feed the token to the `Acceptor`, off the event loop, and answer the call
themselves with an rpc_gss_init_res; a completed context gets a random handle, its caller's
credentials (principal → uid/gids through the mapper) and an expiry from the ticket's end time.
DATA and DESTROY calls find their context (RPCSEC_GSS_CREDPROBLEM when unknown,
RPCSEC_GSS_CTXPROBLEM when expired), check the sequence number against the window (replays and
numbers below the window are dropped without a reply), verify the header MIC and reply with the
MIC of the sequence number as verifier.  `unwrap`/`wrap` then remove and apply integrity or
privacy around the arguments and results.  Every rejection is counted in `stats` and logged at
most once per `log_interval` per kind.  Per-packet crypto is the context's `PerPacket` object.
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pynfsd.blocking import Runner, default_runner
from pynfsd.gen import rpc as R
from pynfsd.gen import rpcsec_gss as G
from pynfsd.gss import ContextExpired
from pynfsd.gss.accept import Acceptor, PerPacket, StepResult
from pynfsd.gss.principals import Identity, PrincipalMapper
from pynfsd.rpc.auth import Accepted, AuthFlavor, Credential
from pynfsd.rpc.errors import AuthError, DropCall, GarbageArgs
from pynfsd.rpc.flavors import KRB5_PSEUDOFLAVORS, SVC_INTEGRITY, SVC_NONE
from pynfsd.rpc.gss_context import ContextTable, GssContext, SeqWindow
from pynfsd.rpc.header import CallHeader
from pynfsd.rpc.server import Buffer
from pynfsd.xdr.runtime import Packer, Unpacker, XdrError

log = logging.getLogger(__name__)

_U32 = struct.Struct(">I")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


@dataclass(frozen=True, slots=True)
class GssConfig:
    seq_window: int = 128
    max_contexts: int = 4096
    max_token: int = 256 * 1024  # INIT token bound (tickets with big PACs reach tens of KiB)
    pending_ttl: float = 60.0  # seconds a half-established context waits for CONTINUE_INIT
    log_interval: float = 60.0  # one log line per kind of rejection per interval
    max_steps: int = 64  # INIT / CONTINUE_INIT steps under way at once; more are dropped


@dataclass(frozen=True, slots=True)
class _CallState:
    """What unwrap/wrap need to know about an accepted DATA call."""

    per_packet: PerPacket
    seq: int
    service: int
    handle: bytes


class RpcsecGss(AuthFlavor):
    """RPCSEC_GSS v1; `clock` is wall-clock seconds (ticket end times are absolute)."""

    flavor = R.RPCSEC_GSS

    def __init__(
        self,
        acceptor: Acceptor,
        mapper: PrincipalMapper | None = None,
        *,
        config: GssConfig = GssConfig(),
        clock: Callable[[], float] = time.time,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        runner: Runner | None = None,
    ) -> None:
        self.acceptor = acceptor
        self.mapper = mapper or PrincipalMapper()
        self.config = config
        self.contexts = ContextTable(config.max_contexts)
        self.stats: Counter[str] = Counter()
        self._clock = clock
        self._rng = rng
        self._runner = runner or default_runner()  # the mapper's lookups block (NSS)
        self._logged: dict[str, float] = {}
        self._steps = 0  # acceptor steps under way

    # ------------------------------------------------------------ accounting
    def note(self, event: str, detail: str = "") -> None:
        """Count `event` and log it at most once per `log_interval`."""
        self.stats[event] += 1
        now = self._clock()
        last = self._logged.get(event)
        if last is None or now - last >= self.config.log_interval:
            self._logged[event] = now
            log.warning("RPCSEC_GSS %s%s (%d so far)", event, f": {detail}" if detail else "",
                        self.stats[event])

    def _refuse(self, event: str, auth_stat: int, detail: str = "") -> AuthError:
        self.note(event, detail)
        return AuthError(auth_stat, f"RPCSEC_GSS {event}")

    # ------------------------------------------------------------ accept
    async def accept(self, call: CallHeader) -> Accepted:
        gc = self._decode_cred(call.cred.body)
        if gc.gss_proc in (G.RPCSEC_GSS_INIT, G.RPCSEC_GSS_CONTINUE_INIT):
            return await self._establish(call, gc)
        ctx, per_packet = self._context(gc.handle)
        self._verify_header(call, gc, ctx, per_packet)
        verf = self._seq_verifier(per_packet, gc.seq_num)
        if gc.gss_proc == G.RPCSEC_GSS_DESTROY:
            return self._destroy(call, ctx, verf)
        state = _CallState(per_packet, gc.seq_num, gc.service, ctx.handle)
        return Accepted(ctx.creds[gc.service], verf, state=state)

    def _decode_cred(self, body: bytes) -> G.rpc_gss_cred_vers_1_t:
        u = Unpacker(body)
        try:
            cred = G.unpack_rpc_gss_cred_t(u)  # only version 1 decodes (RFC 2203 §5.1)
            u.done()
        except XdrError as e:
            raise self._refuse("bad_credential", R.AUTH_BADCRED, str(e)) from None
        assert isinstance(cred.value, G.rpc_gss_cred_vers_1_t)
        return cred.value

    def _context(self, handle: bytes) -> tuple[GssContext, PerPacket]:
        ctx = self.contexts.get(handle)
        if ctx is None or ctx.per_packet is None:
            # RFC 2203 §5.3.3.3: no such context → RPCSEC_GSS_CREDPROBLEM.
            raise self._refuse("unknown_handle", R.RPCSEC_GSS_CREDPROBLEM)
        if ctx.expires <= self._clock():
            self.contexts.remove(handle)
            # RFC 2203 §5.3.3.3: the context is no longer valid → RPCSEC_GSS_CTXPROBLEM.
            raise self._refuse("expired_context", R.RPCSEC_GSS_CTXPROBLEM, ctx.initiator)
        return ctx, ctx.per_packet

    def _verify_header(
        self, call: CallHeader, gc: G.rpc_gss_cred_vers_1_t, ctx: GssContext, per_packet: PerPacket
    ) -> None:
        seq = gc.seq_num
        if seq > G.MAXSEQ:
            # RFC 2203 §5.3.3.1: sequence numbers end at MAXSEQ; the context is spent.
            raise self._refuse("seq_above_maxseq", R.RPCSEC_GSS_CTXPROBLEM, ctx.initiator)
        if call.verf.flavor != R.RPCSEC_GSS:
            raise self._refuse("bad_verifier", R.AUTH_BADVERF, ctx.initiator)
        if not ctx.window.acceptable(seq):
            # RFC 2203 §5.3.3.1: replays and numbers below the window are silently discarded.
            below = ctx.window.top - seq >= ctx.window.size
            self.note("seq_below_window" if below else "seq_replayed", f"{ctx.initiator} seq {seq}")
            raise DropCall()
        try:
            per_packet.verify_mic(bytes(call.header), call.verf.body)  # RFC 2203 §5.3.1
        except ContextExpired:
            self.contexts.remove(ctx.handle)
            raise self._refuse("expired_context", R.RPCSEC_GSS_CTXPROBLEM, ctx.initiator) from None
        except Exception as e:
            # RFC 2203 §5.3.3.4.2: a verifier that fails GSS_VerifyMIC → CREDPROBLEM.
            raise self._refuse("bad_header_mic", R.RPCSEC_GSS_CREDPROBLEM,
                               f"{ctx.initiator}: {type(e).__name__}") from None
        ctx.window.record(seq)  # only a verified call moves the window (RFC 2203 §5.3.3.1)

    def _seq_verifier(self, per_packet: PerPacket, seq: int) -> R.opaque_auth:
        """The reply verifier: the MIC of the XDR sequence number (RFC 2203 §5.3.3.2)."""
        try:
            return R.opaque_auth(R.RPCSEC_GSS, per_packet.get_mic(_U32.pack(seq)))
        except Exception as e:
            # RFC 2203 §5.3.3.4.1: GSS_GetMIC failing for the verifier → CTXPROBLEM.
            raise self._refuse("get_mic_failed", R.RPCSEC_GSS_CTXPROBLEM, repr(e)) from None

    def _destroy(self, call: CallHeader, ctx: GssContext, verf: R.opaque_auth) -> Accepted:
        if call.proc != 0:
            raise self._refuse("bad_control_call", R.AUTH_BADCRED, "DESTROY not to NULLPROC")
        # RFC 2203 §5.4: the header MIC proved the caller holds the context; forget it and
        # answer with void results under the usual verifier.
        self.contexts.remove(ctx.handle)
        self.stats["destroyed"] += 1
        return Accepted(ctx.creds[SVC_NONE], verf, reply=b"")

    # ------------------------------------------------------------ establishment
    async def _establish(self, call: CallHeader, gc: G.rpc_gss_cred_vers_1_t) -> Accepted:
        if call.proc != 0:  # RFC 2203 §5.2.2: control messages go to NULLPROC
            raise self._refuse("bad_control_call", R.AUTH_BADCRED, f"procedure {call.proc}")
        if call.verf.flavor != R.AUTH_NONE or call.verf.body:
            raise self._refuse("bad_verifier", R.AUTH_BADVERF, "INIT verifier must be AUTH_NONE")
        token = self._init_token(call)
        pending = self._pending(gc)
        if self._steps >= self.config.max_steps:
            # Bounded establishment work: the client retransmits (RPC over TCP) or retries.
            self.note("init_busy", f"{self._steps} context steps under way")
            raise DropCall()
        state, pending.pending = pending.pending, None  # one step at a time per context
        self._steps += 1
        try:
            result = await self.acceptor.step(state, token)
        finally:
            self._steps -= 1
        if result.failed:
            self.contexts.remove(pending.handle)
            self.note("init_failed", f"major {result.major:#x} minor {result.minor:#x}")
            return self._init_reply(b"", result, None)  # RFC 2203 §5.2.3.2
        if not result.complete:
            pending.pending = result.state
            pending.expires = self._clock() + self.config.pending_ttl
            self._add(pending)
            return self._init_reply(pending.handle, result, None)
        return await self._complete(pending, result)

    def _init_token(self, call: CallHeader) -> bytes:
        u = Unpacker(call.args)
        try:
            token = u.unpack_opaque(self.config.max_token)
            u.done()
        except XdrError as e:
            self.note("bad_init_args", str(e))
            raise GarbageArgs(str(e)) from None
        return token

    def _pending(self, gc: G.rpc_gss_cred_vers_1_t) -> GssContext:
        if gc.gss_proc == G.RPCSEC_GSS_INIT:
            if gc.handle:  # RFC 2203 §5.2.2: INIT carries no handle
                raise self._refuse("bad_credential", R.AUTH_BADCRED, "INIT with a handle")
            return GssContext(self._new_handle(), 0.0, SeqWindow(self.config.seq_window))
        ctx = self.contexts.get(gc.handle)
        if ctx is None or ctx.established or ctx.pending is None or ctx.expires <= self._clock():
            raise self._refuse("unknown_handle", R.RPCSEC_GSS_CREDPROBLEM, "CONTINUE_INIT")
        return ctx

    def _new_handle(self) -> bytes:
        while True:
            handle = self._rng(16)
            if self.contexts.get(handle) is None:
                return handle

    async def _complete(self, ctx: GssContext, result: StepResult) -> Accepted:
        assert result.per_packet is not None
        ident = await self._runner.run(self.mapper.lookup, result.initiator)
        ctx.per_packet = result.per_packet
        ctx.initiator = result.initiator
        ctx.creds = _credentials(result.initiator, ident)
        ctx.expires = result.endtime
        self._add(ctx)
        self.stats["established"] += 1
        log.debug("RPCSEC_GSS context for %s (uid %d) until %s", ctx.initiator, ident.uid,
                  time.ctime(ctx.expires))
        # RFC 2203 §5.2.3.1: a complete context's verifier is the MIC of seq_window.
        window = _U32.pack(self.config.seq_window)
        verf = R.opaque_auth(R.RPCSEC_GSS, result.per_packet.get_mic(window))
        return self._init_reply(ctx.handle, result, verf)

    def _add(self, ctx: GssContext) -> None:
        if self.contexts.get(ctx.handle) is None:
            evicted = self.contexts.add(ctx, self._clock())
            if evicted:
                self.stats["evicted"] += evicted

    def _init_reply(self, handle: bytes, result: StepResult, verf: R.opaque_auth | None) -> Accepted:
        p = Packer()
        res = G.rpc_gss_init_res(handle, result.major, result.minor, self.config.seq_window,
                                 result.output_token)
        G.pack_rpc_gss_init_res(p, res)
        anon = Credential(R.RPCSEC_GSS, self.mapper.anon.uid, self.mapper.anon.gid)
        return Accepted(anon, verf, reply=p.get_buffer())

    # ------------------------------------------------------------ arguments and results
    async def unwrap(self, accepted: Accepted, args: memoryview) -> memoryview:
        st = accepted.state
        if not isinstance(st, _CallState) or st.service == SVC_NONE:
            return args
        try:
            body = self._unprotect(st, args)
        except (XdrError, _BadBody) as e:
            # RFC 2203 §5.3.3.4.2-3: bad argument checksum or wrap token → GARBAGE_ARGS.
            self.note("bad_arguments", f"seq {st.seq}: {e}")
            raise GarbageArgs(str(e)) from None
        return memoryview(body)[4:]

    def _unprotect(self, st: _CallState, args: memoryview) -> Buffer:
        u = Unpacker(args)
        if st.service == SVC_INTEGRITY:
            body: Buffer
            body, checksum = unpack_integ_data_view(u)
            u.done()
            try:
                st.per_packet.verify_mic(body, checksum)
            except Exception as e:
                raise _BadBody(f"checksum: {type(e).__name__}: {e}") from None
        else:
            token = unpack_priv_data_view(u)
            u.done()
            try:
                body, conf = st.per_packet.unwrap(token)
            except Exception as e:
                raise _BadBody(f"wrap token: {type(e).__name__}: {e}") from None
            if not conf:
                raise _BadBody("privacy body was not encrypted")
        # RFC 2203 §5.3.2.2: the body's seq_num must equal the credential's.
        if len(body) < 4 or _U32.unpack_from(body)[0] != st.seq:
            raise _BadBody("sequence number in the body differs from the credential's")
        return body

    async def wrap(self, accepted: Accepted, results: list[bytes]) -> list[bytes]:
        st = accepted.state
        if not isinstance(st, _CallState) or st.service == SVC_NONE:
            return results
        body = b"".join([_U32.pack(st.seq), *results])  # RFC 2203 §5.3.3.2
        try:
            if st.service == SVC_INTEGRITY:
                return [*_opaque(body), *_opaque(st.per_packet.get_mic(body))]
            return _opaque(st.per_packet.wrap(body, True))
        except Exception as e:
            # RFC 2203 §5.3.3.4.1 and §5.3.3.4.4: GetMIC/Wrap failing on results → discard.
            self.note("protect_results_failed", repr(e))
            raise DropCall() from None


    def cache_identity(self, accepted: Accepted) -> bytes:
        """A reply is replayed only within the context (and service) that got it."""
        st = accepted.state
        if not isinstance(st, _CallState):
            return super().cache_identity(accepted)
        return b"gss" + _U32.pack(st.service) + st.handle


class _BadBody(Exception):
    pass


# rpc_gss_integ_data and rpc_gss_priv_data (RFC 2203 §5.3.2.2) with the body as a view into
# the call, so a large WRITE is not copied; hand-tuned beside the generated decoders and
# tested against them.
def unpack_integ_data_view(u: Unpacker) -> tuple[memoryview, bytes]:
    """(databody_integ, checksum)."""
    return u.unpack_opaque_view(), u.unpack_opaque()


def unpack_priv_data_view(u: Unpacker) -> memoryview:
    """databody_priv."""
    return u.unpack_opaque_view()


def _opaque(data: bytes | bytearray) -> list[bytes]:
    return [_U32.pack(len(data)), data, _PAD[len(data) & 3]]  # type: ignore[list-item]


def _credentials(principal: str, ident: Identity) -> dict[int, Credential]:
    """The caller's credential under each service (pseudoflavour for sec= checks)."""
    return {
        svc: Credential(R.RPCSEC_GSS, ident.uid, ident.gid, ident.gids, principal, "", flavor)
        for svc, flavor in KRB5_PSEUDOFLAVORS.items()
    }
