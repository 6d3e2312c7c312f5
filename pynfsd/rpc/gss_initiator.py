"""The RPCSEC_GSS v1 initiator (RFC 2203): krb5, krb5i and krb5p calls over an `RpcClient`.

Used by the server (callbacks, `pynfsd.nfs4.callback`) and by the client library
(`pynfsd.client.gss.connect`, an Nfs4Client speaking krb5p):

    auth = RpcsecGssAuth(GssapiInitiator("nfs@localhost"), service=SVC_PRIVACY)
    rpc = await RpcClient.connect(host, port)
    await auth.establish(rpc)          # INIT / CONTINUE_INIT until the context is complete
    rpc.auth = auth                    # rpc.call(...) now signs, seals and checks every call

`GssapiInitiator` drives MIT krb5 through python-gssapi (blocking steps run on a `Runner`); every
per-message operation then goes through MIT as well, so tests talking to pynfsd check pynfsd's
own RFC 4121 code against MIT's.  Any `Initiator` (a stub in unit tests) can stand in.
Failures raise `GssClientError` (context establishment) or `BadReply` (a reply whose verifier,
checksum or sequence number does not check out).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Protocol

from pynfsd.blocking import Runner, default_runner
from pynfsd.gen import nfs4 as N
from pynfsd.gen import rpc as R
from pynfsd.gen import rpcsec_gss as G
from pynfsd.gss.accept import Buffer, PerPacket
from pynfsd.rpc.client import (
    NULL_AUTH,
    BadReply,
    RpcError,
    decode_reply_verf,
    decode_results,
    encode_call,
)
from pynfsd.rpc.flavors import KRB5_MECH_OID, SVC_INTEGRITY, SVC_NONE
from pynfsd.xdr.runtime import Packer, Unpacker

_U32 = struct.Struct(">I")


class GssClientError(RpcError):
    """Context establishment failed (`major`/`minor` as the server or GSS-API reported)."""

    def __init__(self, why: str, major: int = 0, minor: int = 0) -> None:
        super().__init__(f"{why} (major {major:#x}, minor {minor:#x})")
        self.major, self.minor = major, minor


class Initiator(Protocol):
    """The initiator side of a GSS mechanism (blocking calls)."""

    def step(self, token: bytes | None) -> tuple[bytes, bool]:
        """Process the acceptor's token (None first); (token to send, context complete)."""

    def per_packet(self) -> PerPacket: ...


class RecordCaller(Protocol):
    """What the provider needs of an `RpcClient`."""

    def next_xid(self) -> int: ...

    async def call_record(self, xid: int, payload: bytes) -> bytes: ...


class GssapiInitiator:
    """krb5 initiator through python-gssapi (`gssapi.raw`), mutual authentication."""

    def __init__(
        self, target: str = "nfs@localhost", *, creds: Any = None, enctypes: Sequence[int] = ()
    ) -> None:
        import gssapi.raw as gr

        self._gr = gr
        self._name = gr.import_name(target.encode(), gr.NameType.hostbased_service)
        if enctypes:
            creds = creds or gr.acquire_cred(None, usage="initiate").creds
            gr.krb5_set_allowable_enctypes(creds, list(enctypes))
        self._creds = creds
        self._ctx: Any = None
        # No replay or sequence flags: RPC replies may come back in any order (RFC 2203 §5.2.2).
        flags = gr.RequirementFlag
        self._flags = [flags.mutual_authentication, flags.integrity, flags.confidentiality]

    def step(self, token: bytes | None) -> tuple[bytes, bool]:
        gr = self._gr
        res = gr.init_sec_context(
            self._name, self._creds, self._ctx, gr.OID(elements=KRB5_MECH_OID),
            self._flags, input_token=token,
        )
        self._ctx = res.context
        return res.token or b"", not res.more_steps

    def per_packet(self) -> PerPacket:
        return MitPerPacket(self._ctx)


class MitPerPacket:
    """Per-message calls on an MIT context (the default QOP)."""

    def __init__(self, ctx: Any) -> None:
        import gssapi.raw as gr

        self._gr = gr
        self._ctx = ctx

    def get_mic(self, msg: Buffer) -> bytes:
        return bytes(self._gr.get_mic(self._ctx, bytes(msg)))

    def verify_mic(self, msg: Buffer, token: Buffer) -> None:
        self._gr.verify_mic(self._ctx, bytes(msg), bytes(token))

    def wrap(self, msg: Buffer, conf: bool = True) -> bytes:
        return bytes(self._gr.wrap(self._ctx, bytes(msg), conf).message)

    def unwrap(self, token: Buffer) -> tuple[bytes, bool]:
        res = self._gr.unwrap(self._ctx, bytes(token))
        return bytes(res.message), bool(res.encrypted)


class RpcsecGssAuth:
    """One RPCSEC_GSS context on the client; `service` applies to every call it runs."""

    def __init__(
        self, initiator: Initiator, service: int = SVC_NONE, *,
        prog: int = N.NFS4_PROGRAM, vers: int = N.NFS_V4, seq_start: int = 1,
        runner: Runner | None = None,
    ) -> None:
        self.initiator = initiator
        self._runner = runner or default_runner()
        self.service = service
        self.prog, self.vers = prog, vers
        self.handle = b""
        self.seq_window = 0
        self.seq = seq_start - 1
        self._pp: PerPacket | None = None

    @property
    def per_packet(self) -> PerPacket:
        if self._pp is None:
            raise GssClientError("no established context")
        return self._pp

    # ------------------------------------------------------------ credentials
    def cred(self, gss_proc: int, seq: int, service: int | None = None, handle: bytes | None = None) -> R.opaque_auth:
        """The rpc_gss_cred_t of a call, as opaque_auth."""
        p = Packer()
        v1 = G.rpc_gss_cred_vers_1_t(gss_proc, seq, self.service if service is None else service,
                                     self.handle if handle is None else handle)
        G.pack_rpc_gss_cred_t(p, G.rpc_gss_cred_t(G.RPCSEC_GSS_VERS_1, v1))
        return R.opaque_auth(R.RPCSEC_GSS, p.get_buffer())

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------ context creation
    async def establish(self, rpc: RecordCaller) -> G.rpc_gss_init_res:
        """INIT, then CONTINUE_INIT while the mechanism needs more (RFC 2203 §5.2)."""
        token, done = await self._runner.run(self.initiator.step, None)
        proc = G.RPCSEC_GSS_INIT
        while True:
            res, verf = await self._init_call(rpc, proc, token)
            if res.gss_major not in (G.GSS_S_COMPLETE, G.GSS_S_CONTINUE_NEEDED):
                raise GssClientError("the server refused the context", res.gss_major, res.gss_minor)
            self.handle = res.handle
            if res.gss_token and not done:
                token, done = await self._runner.run(self.initiator.step, res.gss_token)
            if res.gss_major == G.GSS_S_COMPLETE:
                break
            proc = G.RPCSEC_GSS_CONTINUE_INIT
        if not done:
            raise GssClientError("the server completed a context the initiator did not")
        self._pp = self.initiator.per_packet()
        self._check_window_verf(res.seq_window, verf)
        self.seq_window = res.seq_window
        return res

    async def _init_call(self, rpc: RecordCaller, proc: int, token: bytes) -> tuple[G.rpc_gss_init_res, R.opaque_auth]:
        xid = rpc.next_xid()
        p = Packer()
        G.pack_rpc_gss_init_arg(p, G.rpc_gss_init_arg(token))
        cred = self.cred(proc, 0, handle=b"" if proc == G.RPCSEC_GSS_INIT else self.handle)
        record = await rpc.call_record(xid, encode_call(xid, self.prog, self.vers, 0, p.get_buffer(), cred))
        _, verf, results = decode_reply_verf(record)
        return decode_results(results, G.unpack_rpc_gss_init_res, BadReply, "bad rpc_gss_init_res"), verf

    def _check_window_verf(self, window: int, verf: R.opaque_auth) -> None:
        # RFC 2203 §5.2.3.1.1: the client verifies the MIC of seq_window.
        try:
            self.per_packet.verify_mic(_U32.pack(window), verf.body)
        except Exception as e:
            raise GssClientError(f"bad seq_window verifier: {e}") from None

    # ------------------------------------------------------------ data
    async def call(self, client: RecordCaller, prog: int, vers: int, proc: int, args: bytes) -> bytes:
        """A DATA call under `self.service`; returns the unprotected results."""
        seq = self.next_seq()
        xid = client.next_xid()
        payload = self.data_call(xid, seq, prog, vers, proc, args)
        return self.check_reply(seq, await client.call_record(xid, payload))

    def data_call(self, xid: int, seq: int, prog: int, vers: int, proc: int, args: bytes,
                  gss_proc: int = G.RPCSEC_GSS_DATA) -> bytes:
        """The call record: header MIC as verifier, arguments protected (RFC 2203 §5.3.1-2)."""
        cred = self.cred(gss_proc, seq)
        header = encode_call(xid, prog, vers, proc, b"", cred, NULL_AUTH)[:-8]
        p = Packer()
        R.pack_opaque_auth(p, R.opaque_auth(R.RPCSEC_GSS, self.per_packet.get_mic(header)))
        return header + p.get_buffer() + self.protect(seq, args)

    def protect(self, seq: int, args: bytes) -> bytes:
        if self.service == SVC_NONE:
            return args
        body = _U32.pack(seq) + args
        p = Packer()
        if self.service == SVC_INTEGRITY:
            G.pack_rpc_gss_integ_data(p, G.rpc_gss_integ_data(body, self.per_packet.get_mic(body)))
        else:
            G.pack_rpc_gss_priv_data(p, G.rpc_gss_priv_data(bytes(self.per_packet.wrap(body, True))))
        return p.get_buffer()

    def check_reply(self, seq: int, record: bytes) -> bytes:
        """Verify the reply verifier (MIC of seq, RFC 2203 §5.3.3.2) and unprotect results."""
        xid, verf, results = decode_reply_verf(record)
        try:
            self.per_packet.verify_mic(_U32.pack(seq), verf.body)
        except Exception as e:
            raise BadReply(f"xid {xid:#x}: bad reply verifier: {e}") from None
        return self.unprotect(seq, results)

    def unprotect(self, seq: int, results: bytes) -> bytes:
        if self.service == SVC_NONE:
            return results
        try:
            body = self._body(results)
        except Exception as e:
            raise BadReply(f"bad protected results: {e}") from None
        if len(body) < 4 or _U32.unpack_from(body)[0] != seq:
            raise BadReply("sequence number in the results differs from the call's")
        return bytes(body[4:])

    def _body(self, results: bytes) -> bytes | bytearray:
        u = Unpacker(results)
        if self.service == SVC_INTEGRITY:
            integ = G.unpack_rpc_gss_integ_data(u)
            u.done()
            self.per_packet.verify_mic(integ.databody_integ, integ.checksum)
            return integ.databody_integ
        priv = G.unpack_rpc_gss_priv_data(u)
        u.done()
        body, conf = self.per_packet.unwrap(priv.databody_priv)
        if not conf:
            raise BadReply("privacy results were not encrypted")
        return body

    async def destroy(self, client: RecordCaller) -> None:
        """RPCSEC_GSS_DESTROY (RFC 2203 §5.4); the context is unusable afterwards."""
        seq = self.next_seq()
        xid = client.next_xid()
        payload = self.data_call(xid, seq, self.prog, self.vers, 0, b"", G.RPCSEC_GSS_DESTROY)
        _, verf, _ = decode_reply_verf(await client.call_record(xid, payload))
        try:
            self.per_packet.verify_mic(_U32.pack(seq), verf.body)
        except Exception as e:
            raise BadReply(f"bad DESTROY verifier: {e}") from None
        self._pp = None
