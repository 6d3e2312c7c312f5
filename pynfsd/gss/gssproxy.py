"""Context establishment through the gssproxy daemon, as the Linux kernel's knfsd does it.

Theory of operation: `GssproxyAcceptor.step` sends each RPCSEC_GSS INIT / CONTINUE_INIT token
to gssproxy in a GSSX_ACCEPT_SEC_CONTEXT call (program 400112 version 1, pynfsd.gen.gssproxy)
over gssproxy's unix socket, as ONC RPC records (RFC 5531 §11).  Like the kernel
(net/sunrpc/auth_gss/gss_rpc_upcall.c) it asks, through call-context options, for

* ``exported_context_type`` = ``linux_lucid_v1``: the established context comes back as the
  kernel's lucid buffer (`parse_linux_lucid_v1`), which becomes a `Krb5Context`; from then on
  every MIC and Wrap is done in-process (`pynfsd.gss.lucid`), never by gssproxy;
* ``exported_creds_type`` = ``linux_creds_v1``: gssproxy maps the initiator to a local user
  (gss_localname, then NSS) and returns uid, gid and *all* groups (`parse_linux_creds_v1`).
  Nothing bounds the groups but gssproxy's NGROUPS_MAX (65536), unlike the legacy rpc.svcgssd
  upcall.  `GssproxyAcceptor.mapper` wraps a `PrincipalMapper` so RPCSEC_GSS uses them.

gssproxy's own limits: one request at a time per connection (it stops reading until it has
written the reply), a request must be a single record fragment, and 1 MiB at most
(MAX_RPC_SIZE); tokens of 64 KiB and more pass.  So calls go over a small pool of connections,
one outstanding call each; a connection that fails in any way is closed, never reused.

The daemon picks the `[service/...]` section of its configuration by the socket and the
caller's euid (SO_PEERCRED); that section's `cred_store = keytab:...` holds the server's keys.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pynfsd.gen import gssproxy as X
from pynfsd.gss.accept import GSS_S_COMPLETE, GSS_S_CONTINUE_NEEDED, GSS_S_FAILURE, StepResult
from pynfsd.gss.lucid import Krb5Context
from pynfsd.gss.principals import Identity, PrincipalMapper
from pynfsd.gss.rfc4121 import CfxKeys
from pynfsd.rpc.client import RpcError, decode_reply, decode_results, encode_call
from pynfsd.rpc.record import RecordError, RecordReader, record_buffers
from pynfsd.xdr.runtime import Packer, Unpacker

log = logging.getLogger(__name__)

GSSPROXY = 400112  # program number (IANA)
GSSPROXYVERS = 1
GSSX_INDICATE_MECHS = 1
GSSX_ACCEPT_SEC_CONTEXT = 9
MAX_RPC_SIZE = 1 << 20  # gssproxy's gp_common.h: larger requests make it drop the connection
DEFAULT_SOCKET = "/run/gssproxy.sock"  # Debian's /etc/gssproxy/24-nfs-server.conf

# gssproxy compares these option names including their C string terminator (sizeof), as the
# kernel sends them (gss_rpc_xdr.c); the reply's "linux_creds_v1" option carries it too.
OPT_CONTEXT_TYPE = (b"exported_context_type\0", b"linux_lucid_v1\0")
OPT_CREDS_TYPE = (b"exported_creds_type\0", b"linux_creds_v1\0")
CREDS_OPTION = b"linux_creds_v1"

# linux_lucid_v1 flags (gssproxy gp_export.c, kernel gss_krb5_mech.c gss_import_v2_context)
KRB5_CTX_FLAG_INITIATOR = 0x1
KRB5_CTX_FLAG_CFX = 0x2
KRB5_CTX_FLAG_ACCEPTOR_SUBKEY = 0x4
_LUCID_HEAD = struct.Struct("=IIQI")  # flags, endtime, send_seq, enctype; native byte order
_KEY_SIZES = {17: 16, 18: 32, 19: 16, 20: 32}
_NO_ID = 0xFFFFFFFF  # gssproxy's -1: the name maps to no local user
_A = TypeVar("_A")
_R = TypeVar("_R")


class GssproxyError(Exception):
    """gssproxy could not be reached, or its reply is not what the protocol allows."""


# ------------------------------------------------------------------ the exported buffers


def parse_linux_lucid_v1(buf: bytes, **kwargs: object) -> Krb5Context:
    """The kernel's lucid buffer → `Krb5Context` (RFC 4121 enctypes only).

    Layout (host byte order, gssproxy's gp_format_linux_lucid_v1): u32 flags, u32 endtime,
    u64 send_seq, u32 enctype, then the key: the acceptor subkey when flag 0x4 is set (then
    both directions use it, RFC 4121 §2), else the context key.  `kwargs` go to `from_keys`
    (clock, random).
    """
    if len(buf) < _LUCID_HEAD.size:
        raise ValueError(f"lucid context of {len(buf)} bytes is too short")
    flags, endtime, send_seq, enctype = _LUCID_HEAD.unpack_from(buf)
    key = bytes(buf[_LUCID_HEAD.size :])
    if not flags & KRB5_CTX_FLAG_CFX or _KEY_SIZES.get(enctype) != len(key):
        raise ValueError(f"unsupported lucid context: flags {flags:#x}, enctype {enctype}, "
                         f"{len(key)}-byte key")
    subkey = key if flags & KRB5_CTX_FLAG_ACCEPTOR_SUBKEY else None
    keys = CfxKeys(bool(flags & KRB5_CTX_FLAG_INITIATOR), enctype, key,
                   enctype if subkey else None, subkey)
    return Krb5Context.from_keys(
        keys, send_seq=send_seq, endtime=float(endtime), **kwargs,  # type: ignore[arg-type]
    )


def parse_linux_creds_v1(buf: bytes) -> Identity | None:
    """uid, gid, count, then `count` gids (host-order 32-bit); None when unmapped (uid -1)."""
    if len(buf) < 12 or len(buf) % 4:
        raise ValueError(f"linux_creds_v1 of {len(buf)} bytes")
    uid, gid, count = struct.unpack_from("=III", buf)
    if count != len(buf) // 4 - 3:
        raise ValueError(f"linux_creds_v1 announces {count} groups in {len(buf)} bytes")
    if uid == _NO_ID:
        return None
    return Identity(uid, gid, struct.unpack_from(f"={count}I", buf, 12))


# ------------------------------------------------------------------ the transport


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.records = RecordReader(MAX_RPC_SIZE)

    async def exchange(self, payload: bytes) -> bytes:
        self.writer.writelines(record_buffers(payload))  # one fragment: gssproxy needs it
        await self.writer.drain()
        while True:
            data = await self.reader.read(1 << 16)
            if not data:
                raise GssproxyError("gssproxy closed the connection")
            records = self.records.feed(data)
            if records:
                if len(records) > 1 or self.records.buffered:
                    raise GssproxyError("gssproxy sent more than one reply")
                return records[0]

    def close(self) -> None:
        self.writer.close()


class GssproxyClient:
    """RPC calls to gssproxy over its unix socket: a pool of connections, one call each."""

    def __init__(self, path: str, *, max_connections: int = 4, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._xid = int(time.time()) & 0xFFFFFFFF

    async def call(self, proc: int, args: bytes) -> bytes:
        """The results of `proc`; raises GssproxyError (the connection is then dropped)."""
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        payload = encode_call(self._xid, GSSPROXY, GSSPROXYVERS, proc, args)
        if len(payload) > MAX_RPC_SIZE:
            raise GssproxyError(f"request of {len(payload)} bytes exceeds gssproxy's 1 MiB")
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                results = await self._exchange(conn, payload)
            except BaseException:  # cancelled too: a reply may still come, so never reuse
                conn.close()
                raise
            self._idle.append(conn)
            return results

    async def _exchange(self, conn: _Connection, payload: bytes) -> bytes:
        try:
            record = await asyncio.wait_for(conn.exchange(payload), self.timeout)
            xid, results = decode_reply(record)
        except (OSError, RecordError, RpcError, TimeoutError) as e:
            raise GssproxyError(f"gssproxy call: {type(e).__name__}: {e}") from e
        if xid != int.from_bytes(payload[:4], "big"):
            raise GssproxyError(f"gssproxy answered xid {xid:#x}")
        return results

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_RPC_SIZE)
        except OSError as e:
            raise GssproxyError(f"cannot connect to gssproxy at {self.path}: {e}") from e
        return _Connection(reader, writer)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


# ------------------------------------------------------------------ the acceptor


def _call_ctx() -> X.gssx_call_ctx:
    options = [X.gssx_option(*OPT_CONTEXT_TYPE), X.gssx_option(*OPT_CREDS_TYPE)]
    return X.gssx_call_ctx(b"", b"", options)


def _status_text(st: X.gssx_status) -> str:
    text = b": ".join(s for s in (st.major_status_string, st.minor_status_string) if s)
    return text.decode("utf-8", "replace") or f"major {st.major_status:#x}"


@dataclass(frozen=True, slots=True)
class _Pending:
    """CONTINUE_INIT state: gssproxy's half-established context handle."""

    context: X.gssx_ctx


class GssproxyAcceptor:
    """An `Acceptor` (pynfsd.gss.accept) that hands establishment to the gssproxy daemon.

    `socket` is gssproxy's socket (the `socket =` of a service section whose `euid` is ours).
    `clock` and `random` go to each `Krb5Context`. Identities gssproxy reports are kept for
    `identity_ttl` seconds for `mapper` (by `monotonic`).
    """

    def __init__(
        self,
        socket: str = DEFAULT_SOCKET,
        *,
        client: GssproxyClient | None = None,
        clock: Callable[[], float] = time.time,
        identity_ttl: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client or GssproxyClient(socket)
        self._clock = clock
        self.identities = ReportedIdentities(identity_ttl, monotonic)

    async def indicate_mechs(self) -> list[bytes]:
        """The mechanism OIDs gssproxy offers (a start-up check that it answers)."""
        res = await self._call(GSSX_INDICATE_MECHS, X.gssx_arg_indicate_mechs(_call_ctx()),
                               X.pack_gssx_arg_indicate_mechs, X.unpack_gssx_res_indicate_mechs)
        if res.status.major_status != GSS_S_COMPLETE:
            raise GssproxyError(f"INDICATE_MECHS: {_status_text(res.status)}")
        return [m.mech for m in res.mechs]

    async def step(self, ctx_state: object, token: bytes) -> StepResult:
        handle = ctx_state.context if isinstance(ctx_state, _Pending) else None
        args = X.gssx_arg_accept_sec_context(_call_ctx(), handle, None, token, None, False, [])
        try:
            res = await self._call(GSSX_ACCEPT_SEC_CONTEXT, args,
                                   X.pack_gssx_arg_accept_sec_context,
                                   X.unpack_gssx_res_accept_sec_context)
        except GssproxyError as e:
            log.warning("%s", e)
            return StepResult(b"", False, major=GSS_S_FAILURE)
        return self._result(res)

    def _result(self, res: X.gssx_res_accept_sec_context) -> StepResult:
        st = res.status
        out = res.output_token or b""
        if st.major_status == GSS_S_CONTINUE_NEEDED and res.context_handle is not None:
            return StepResult(out, False, major=GSS_S_CONTINUE_NEEDED,
                              state=_Pending(res.context_handle))
        if st.major_status != GSS_S_COMPLETE or res.context_handle is None:
            log.info("gssproxy refused a context: %s", _status_text(st))
            major = st.major_status if st.major_status > GSS_S_CONTINUE_NEEDED else GSS_S_FAILURE
            return StepResult(out, False, major=major & 0xFFFFFFFF, minor=st.minor_status & 0xFFFFFFFF)
        return self._complete(res.context_handle, out, res.options)

    def _complete(self, ctx: X.gssx_ctx, out: bytes, options: list[X.gssx_option]) -> StepResult:
        initiator = ctx.src_name.display_name.decode("utf-8", "replace")
        try:
            per_packet = parse_linux_lucid_v1(ctx.exported_context_token, clock=self._clock)
            identity = _reported_identity(options)
        except ValueError as e:
            log.warning("gssproxy's context for %s is unusable: %s", initiator, e)
            return StepResult(b"", False, initiator, major=GSS_S_FAILURE)
        if identity is not None:
            self.identities.put(initiator, identity)
        return StepResult(out, True, initiator, per_packet, per_packet.endtime)

    async def _call(
        self, proc: int, args: _A, pack: Callable[[Packer, _A], None], unpack: Callable[[Unpacker], _R]
    ) -> _R:
        p = Packer()
        pack(p, args)
        results = await self.client.call(proc, p.get_buffer())
        return decode_results(results, unpack, GssproxyError,
                              f"undecodable gssproxy reply to call {proc}")

    def mapper(self, base: PrincipalMapper | None = None) -> PrincipalMapper:
        """`base` (default: a new PrincipalMapper) preferring the identities gssproxy reports."""
        return _GssproxyMapper(self.identities, base or PrincipalMapper())

    def close(self) -> None:
        self.client.close()


def _reported_identity(options: list[X.gssx_option]) -> Identity | None:
    for opt in options:
        if opt.option.rstrip(b"\0") == CREDS_OPTION:
            return parse_linux_creds_v1(opt.value)
    return None


# ------------------------------------------------------------------ credentials


class ReportedIdentities:
    """principal → the identity gssproxy reported with its last context; bounded, expiring."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_entries: int = 4096) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._map: OrderedDict[str, tuple[float, Identity]] = OrderedDict()
        self._lock = threading.Lock()  # the mapper reads from worker threads

    def put(self, principal: str, identity: Identity) -> None:
        with self._lock:
            self._map[principal] = (self._clock() + self.ttl, identity)
            self._map.move_to_end(principal)
            while len(self._map) > self.max_entries:
                self._map.popitem(last=False)

    def get(self, principal: str) -> Identity | None:
        with self._lock:
            hit = self._map.get(principal)
            if hit is None or hit[0] <= self._clock():
                return None
            return hit[1]


class _GssproxyMapper(PrincipalMapper):
    """A PrincipalMapper whose first rule is what gssproxy reported for the principal; names
    gssproxy could not map (machine principals, foreign realms) follow `base`'s rules."""

    def __init__(self, reported: ReportedIdentities, base: PrincipalMapper) -> None:
        super().__init__(anon=base.anon)
        self.base = base
        self._reported = reported

    def lookup(self, principal: str) -> Identity:
        ident = self._reported.get(principal)
        return ident if ident is not None else self.base.lookup(principal)

    def resolve(self, principal: str) -> Identity:
        ident = self._reported.get(principal)
        return ident if ident is not None else self.base.resolve(principal)
