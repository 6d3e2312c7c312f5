"""The server's NFSv4.0 callback client: CB_NULL and CB_COMPOUND to a client's callback service
(RFC 7530 §3.3.3, §16.33, §17), under AUTH_NONE, AUTH_SYS or RPCSEC_GSS krb5/krb5i/krb5p.

Theory of operation.  SETCLIENTID hands the server a `cb_client4` (the callback program and a
universal address) and a `callback_ident`; `CallbackTarget.from_setclientid` records them with
the security the call itself used (§3.3.3: the callback uses "the security flavor of the
original SETCLIENTID operation").  After SETCLIENTID_CONFIRM, `CallbackClient.confirmed` resets
the client's `CallbackPath` (unknown) and probes it in the background: probing → up, or down
with the reason.  The server consults `path(clientid).up` before it grants a delegation.

The sans-IO half is here too: universal-address parsing (RFC 5665 §5.2.3.3-4), the CB_COMPOUND
builders and a checking decoder (generated codec, `pynfsd.gen.nfs4`), and the path state with
generations, so that a probe started for old callback information cannot mark the new path.

RPCSEC_GSS (the seed design of the kernel): the server is the GSS *initiator*.  It names itself
with the host-based service `nfs@<server host>` (§3.3.3 MUST), takes its key from its keytab
(never the caller's ccache), and targets the principal that acquired the client ID, whose
callback service accepts and so authenticates the server.  Establishment runs in a worker
thread through python-gssapi; the context is then exported as a lucid context and every MIC
and Wrap token is made by pynfsd (`pynfsd.gss.lucid.Krb5Context`, initiator role).  The RPC
framing and RFC 2203 call encoding are the client library's (`RpcClient`, `RpcsecGssAuth`).
A context the client's service drops (CREDPROBLEM/CTXPROBLEM) is replaced once per call.

Wiring into the server (not done here):
    server.callbacks = CallbackClient(ServerGssIdentity(f"nfs@{host}", keytab))  # or None
    # SETCLIENTID: record the target as the client's (opaque) `callback`
    callback = CallbackTarget.from_setclientid(args, ctx.cred)
    # SETCLIENTID_CONFIRM, after the state accepted it:
    ctx.server.callbacks.confirmed(args.clientid, <the confirmed record>.callback)
    # client purged: server.callbacks.forget(clientid); shutdown: await server.callbacks.close()
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pynfsd.gen import nfs4 as N
from pynfsd.gen import rpc as R
from pynfsd.gss.accept import PerPacket
from pynfsd.rpc.auth import Credential
from pynfsd.rpc.client import AuthRejected, AuthSysCred, RpcClient, RpcError
from pynfsd.rpc.gss import KRB5_PSEUDOFLAVORS, SVC_NONE
from pynfsd.rpc.gss_initiator import GssClientError, RpcsecGssAuth
from pynfsd.xdr.runtime import Packer, Unpacker, XdrError

log = logging.getLogger(__name__)

CB_VERSION = 1  # NFS4_CALLBACK version 1 (RFC 7530 §17); the program number is the client's
CB_NULL, CB_COMPOUND = 0, 1
MAX_UADDR = 64  # longer than any TCP/TCP6 universal address
MAX_NETID = 16  # longer than any netid of RFC 5665 (tcp, tcp6, rdma6, ...)
MAX_CB_REPLY = 256 << 10
KRB5_MECH_OID = "1.2.840.113554.1.2.2"
_PORT_BYTE = re.compile(r"[0-9]{1,3}")
_STALE_CONTEXT = (R.RPCSEC_GSS_CREDPROBLEM, R.RPCSEC_GSS_CTXPROBLEM)
_SERVICE_OF_PSEUDOFLAVOR = {flavor: svc for svc, flavor in KRB5_PSEUDOFLAVORS.items()}


class CallbackError(Exception):
    """The callback could not be made or its reply did not check out; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadUniversalAddress(CallbackError):
    """The r_netid/r_addr of a cb_client4 names no TCP endpoint pynfsd can call."""


class BadCallbackReply(CallbackError):
    """A CB_COMPOUND reply that does not decode or contradicts its call (§17.2.4)."""


# ---------------------------------------------------------------- universal addresses


@dataclass(frozen=True, slots=True)
class CallbackAddress:
    """A TCP endpoint from a universal address; `host` is a plain IPv4 or IPv6 literal (an
    IPv4-mapped IPv6 address becomes IPv4, and `netid` "tcp" with it)."""

    netid: str
    host: str
    port: int

    @property
    def uaddr(self) -> str:
        return universal_address(self.host, self.port)


def parse_universal_address(netid: str, uaddr: str) -> CallbackAddress:
    """RFC 5665 §5.2.3.3 ("tcp": h1.h2.h3.h4.p1.p2) and §5.2.3.4 ("tcp6": an RFC 4291 IPv6
    address followed by .p1.p2); the port is p1 * 256 + p2."""
    if netid not in ("tcp", "tcp6"):
        raise BadUniversalAddress(f"unsupported callback netid {netid!r} (pynfsd calls back over TCP)")
    if len(uaddr) > MAX_UADDR or uaddr.count(".") < 2:
        raise BadUniversalAddress(f"malformed universal address {uaddr[:MAX_UADDR]!r}")
    text, p1, p2 = uaddr.rsplit(".", 2)
    port = _port_byte(p1, uaddr) << 8 | _port_byte(p2, uaddr)
    host = _host(netid, text, uaddr)
    if port == 0:
        raise BadUniversalAddress(f"universal address {uaddr!r} has port 0")
    return CallbackAddress("tcp6" if ":" in host else "tcp", host, port)


def _port_byte(text: str, uaddr: str) -> int:
    if not _PORT_BYTE.fullmatch(text) or int(text) > 255:
        raise BadUniversalAddress(f"bad port octet {text!r} in universal address {uaddr!r}")
    return int(text)


def _host(netid: str, text: str, uaddr: str) -> str:
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address
        addr = ipaddress.IPv4Address(text) if netid == "tcp" else ipaddress.IPv6Address(text)
    except ValueError:
        raise BadUniversalAddress(f"bad {netid} host in universal address {uaddr!r}") from None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:
            raise BadUniversalAddress(f"scoped IPv6 address in universal address {uaddr!r}")
        addr = addr.ipv4_mapped or addr
    if addr.is_unspecified or addr.is_multicast or str(addr) == "255.255.255.255":
        raise BadUniversalAddress(f"universal address {uaddr!r} names no single host")
    return str(addr)


def universal_address(host: str, port: int) -> str:
    """The universal address of an IPv4 or IPv6 literal and a port (the inverse of parsing)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    return f"{ipaddress.ip_address(host)}.{port >> 8}.{port & 0xFF}"


# ---------------------------------------------------------------- security and target


@dataclass(frozen=True, slots=True)
class AuthSysSecurity:
    """§3.3.3: AUTH_SYS callbacks use the AUTH_SYS credential the client used."""

    uid: int
    gid: int
    gids: tuple[int, ...] = ()
    machinename: str = ""


@dataclass(frozen=True, slots=True)
class GssSecurity:
    """RPCSEC_GSS krb5: `target` is the principal that acquired the client ID (as a krb5
    principal name, e.g. "nfs/client.example.com@REALM"); `service` is 1, 2 or 3."""

    target: str
    service: int = SVC_NONE


CallbackSecurity = AuthSysSecurity | GssSecurity | None  # None: AUTH_NONE


def security_from_credential(cred: Credential) -> CallbackSecurity:
    """The callback security for a SETCLIENTID made under `cred` (RFC 7530 §3.3.3)."""
    if cred.flavor == R.AUTH_SYS:
        return AuthSysSecurity(cred.uid, cred.gid, tuple(cred.gids), cred.machinename)
    if cred.flavor == R.RPCSEC_GSS:
        service = _SERVICE_OF_PSEUDOFLAVOR.get(cred.pseudoflavor or 0)
        if not cred.principal or service is None:
            raise CallbackError("RPCSEC_GSS credential without a principal or krb5 service")
        return GssSecurity(cred.principal, service)
    return None


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """Everything needed to call a client back, as recorded at SETCLIENTID (§16.33.4)."""

    program: int
    netid: str
    uaddr: str
    ident: int
    security: CallbackSecurity

    @classmethod
    def from_setclientid(cls, args: N.SETCLIENTID4args, cred: Credential) -> CallbackTarget:
        loc = args.callback.cb_location
        netid, uaddr = loc.na_r_netid, loc.na_r_addr
        if len(netid) > MAX_NETID or len(uaddr) > MAX_UADDR:
            # Unusable as a callback address, and the record would hold (and CLID_INUSE echo,
            # §16.33.4) up to a whole request: kept as no callback path instead.
            netid, uaddr = "", ""
        return cls(args.callback.cb_program, netid, uaddr, args.callback_ident,
                   security_from_credential(cred))

    def address(self) -> CallbackAddress:
        return parse_universal_address(self.netid, self.uaddr)


# ---------------------------------------------------------------- CB_COMPOUND (sans-IO)


def cb_recall(stateid: N.stateid4, truncate: bool, fh: bytes) -> N.nfs_cb_argop4:
    """CB_RECALL (RFC 7530 §18.2)."""
    return N.nfs_cb_argop4(N.OP_CB_RECALL, N.CB_RECALL4args(stateid, truncate, fh))


def cb_getattr(fh: bytes, attr_request: list[int]) -> N.nfs_cb_argop4:
    """CB_GETATTR (RFC 7530 §18.1); `attr_request` is a bitmap4 (list of words)."""
    return N.nfs_cb_argop4(N.OP_CB_GETATTR, N.CB_GETATTR4args(fh, attr_request))


def encode_cb_compound(ident: int, ops: Sequence[N.nfs_cb_argop4], tag: bytes = b"") -> bytes:
    """CB_COMPOUND4args, minor version 0, with the client's callback_ident (§17.2.4 MUST)."""
    p = Packer()
    N.pack_CB_COMPOUND4args(p, N.CB_COMPOUND4args(tag, 0, ident, list(ops)))
    return p.get_buffer()


def decode_cb_compound_res(results: bytes, ops: Sequence[N.nfs_cb_argop4]) -> N.CB_COMPOUND4res:
    """Decode a CB_COMPOUND reply and check it answers `ops` (§17.2.4, §17.2.5)."""
    u = Unpacker(results)
    try:
        res = N.unpack_CB_COMPOUND4res(u)
        u.done()
    except XdrError as e:
        raise BadCallbackReply(f"undecodable CB_COMPOUND reply: {e}") from None
    if len(res.resarray) > len(ops):
        raise BadCallbackReply(f"{len(res.resarray)} results for {len(ops)} operations")
    for i, (resop, argop) in enumerate(zip(res.resarray, ops, strict=False)):
        if resop.resop != argop.argop:
            raise BadCallbackReply(f"result {i} is for op {resop.resop}, not {argop.argop}")
    if res.resarray:
        last = res.resarray[-1].value.status
        # §17.2.4: the COMPOUND status is the last executed op's; §17.2.5: it stops at an error.
        if last != res.status or (len(res.resarray) < len(ops) and last == N.NFS4_OK):
            raise BadCallbackReply(f"status {res.status} contradicts the op results")
    return res


# ---------------------------------------------------------------- the path's state


class PathState(enum.Enum):
    UNKNOWN = "unknown"
    PROBING = "probing"
    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class CallbackPath:
    """What the server knows of one client's callback path; times are the caller's clock.

    `generation` changes whenever the callback information does (`reset`): results of calls
    started under an older generation are ignored by `record`."""

    state: PathState = PathState.UNKNOWN
    last_error: str = ""
    changed_at: float = 0.0
    generation: int = 0
    failures: int = 0

    @property
    def up(self) -> bool:
        return self.state is PathState.UP

    def reset(self, now: float) -> None:
        self.generation += 1
        self._set(PathState.UNKNOWN, "", now)

    def probing(self, now: float) -> int:
        self._set(PathState.PROBING, self.last_error, now)
        return self.generation

    def record(self, generation: int, error: str | None, now: float) -> bool:
        """The outcome of a call begun under `generation`: None for success, else the reason.
        Returns whether it was applied (False: the callback information changed since)."""
        if generation != self.generation:
            return False
        if error is None:
            self._set(PathState.UP, "", now)
        else:
            self.failures += 1
            self._set(PathState.DOWN, error, now)
        return True

    def _set(self, state: PathState, error: str, now: float) -> None:
        self.state, self.last_error, self.changed_at = state, error, now


# ---------------------------------------------------------------- the server as GSS initiator


class ServerGssIdentity:
    """The server's initiator credentials: `name` ("nfs@<server host>", a host-based service
    name, RFC 7530 §3.3.3) with its key from `keytab` (default: KRB5_KTNAME, else
    /etc/krb5.keytab), tickets in a private in-memory ccache.  Thread-safe; acquired lazily."""

    def __init__(self, name: str | None = None, keytab: str | None = None, *,
                 enctypes: Sequence[int] = (), ccache: str | None = None) -> None:
        import socket

        self.name = name or f"nfs@{socket.getfqdn()}"
        self.keytab = keytab or os.environ.get("KRB5_KTNAME") or "/etc/krb5.keytab"
        self.enctypes = tuple(enctypes)
        self.ccache = ccache or f"MEMORY:pynfsd-callback-{os.getpid()}-{id(self):x}"
        self._lock = threading.Lock()
        self._creds: Any = None

    def creds(self) -> Any:
        """The GSS credential handle (blocking: may read the keytab)."""
        with self._lock:
            if self._creds is None:
                self._creds = self._acquire()
            return self._creds

    def _acquire(self) -> Any:
        import gssapi.raw as gr

        name = gr.import_name(self.name.encode(), gr.NameType.hostbased_service)
        store: dict[bytes | str, bytes | str] = {b"client_keytab": os.fsencode(self.keytab), b"ccache": self.ccache.encode()}
        creds = gr.acquire_cred_from(store, name, usage="initiate").creds
        if self.enctypes:
            gr.krb5_set_allowable_enctypes(creds, list(self.enctypes))
        return creds


class CallbackInitiator:
    """One callback context's initiator (the `Initiator` protocol of `pynfsd.rpc.gss_initiator`):
    python-gssapi for the token exchange, then pynfsd's RFC 4121 code per packet."""

    def __init__(self, identity: ServerGssIdentity, target: str) -> None:
        self.identity = identity
        self.target = target
        self._ctx: Any = None
        self._pp: PerPacket | None = None

    def step(self, token: bytes | None) -> tuple[bytes, bool]:
        """Blocking: run it off the event loop."""
        import gssapi.raw as gr

        try:
            res = self._init(gr, token)
            self._ctx = res.context
            if not res.more_steps:
                self._pp = self._export(res.context)
        except gr.GSSError as e:
            raise GssClientError(f"GSS initiator {self.identity.name} for {self.target}: "
                                 f"{e.gen_message()}", e.maj_code, e.min_code) from None
        return res.token or b"", not res.more_steps

    def _init(self, gr: Any, token: bytes | None) -> Any:
        target = gr.import_name(self.target.encode(), gr.NameType.kerberos_principal)
        flags = gr.RequirementFlag
        # Mutual authentication: the server learns it reached the client's principal (§3.3.3);
        # no replay or sequence flags, as RPCSEC_GSS keeps its own window (RFC 2203 §5.3.3.1).
        wanted = [flags.mutual_authentication, flags.integrity, flags.confidentiality]
        return gr.init_sec_context(target, self.identity.creds(), self._ctx,
                                   gr.OID.from_int_seq(KRB5_MECH_OID), wanted, input_token=token)

    def _export(self, ctx: Any) -> PerPacket:
        from gssapi.raw.ext_krb5 import krb5_export_lucid_sec_context

        from pynfsd.gss.lucid import Krb5Context

        return Krb5Context(krb5_export_lucid_sec_context(ctx, 1))

    def per_packet(self) -> PerPacket:
        if self._pp is None:
            raise GssClientError("the callback context is not established")
        return self._pp


# ---------------------------------------------------------------- transport


class CallbackChannel:
    """One TCP connection to a client's callback service and, under RPCSEC_GSS, one context.
    Concurrent calls share it; `call` opens it (again, after a loss) when needed."""

    def __init__(self, target: CallbackTarget, gss: ServerGssIdentity | None, timeout: float) -> None:
        self.target = target
        self.gss = gss
        self.timeout = timeout
        self._rpc: RpcClient | None = None
        self._lock = asyncio.Lock()

    async def call(self, proc: int, args: bytes) -> bytes:
        """Results of one callback procedure; CallbackError on any failure."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._call(proc, args)
        except CallbackError:
            raise
        except TimeoutError:
            self.close()
            raise CallbackError(f"no answer from {self.target.uaddr} in {self.timeout:g} s") from None
        except (OSError, RpcError) as e:
            self.close()
            raise CallbackError(_describe(e)) from None

    async def _call(self, proc: int, args: bytes) -> bytes:
        rpc = await self._open()
        auth = rpc.auth
        try:
            return await rpc.call(self.target.program, CB_VERSION, proc, args)
        except AuthRejected as e:
            sec = self.target.security
            if not isinstance(sec, GssSecurity) or e.auth_stat not in _STALE_CONTEXT:
                raise
        # RFC 2203 §5.3.3.3: the client's service dropped our context; the call never reached
        # the procedure, so a new context and one retry are safe.
        async with self._lock:
            if rpc.auth is auth:
                rpc.auth = await self._establish(rpc, sec)
        return await rpc.call(self.target.program, CB_VERSION, proc, args)

    async def _open(self) -> RpcClient:
        async with self._lock:
            if self._rpc is None or self._rpc.is_closed:
                self._rpc = await self._connect()
            return self._rpc

    async def _connect(self) -> RpcClient:
        addr = self.target.address()
        sec = self.target.security
        cred = None
        if isinstance(sec, AuthSysSecurity):
            cred = AuthSysCred(sec.uid, sec.gid, sec.gids, sec.machinename)
        rpc = await RpcClient.connect(addr.host, addr.port, cred=cred, max_record=MAX_CB_REPLY)
        if isinstance(sec, GssSecurity):
            try:
                rpc.auth = await self._establish(rpc, sec)
            except BaseException:
                rpc.close()
                raise
        return rpc

    async def _establish(self, rpc: RpcClient, sec: GssSecurity) -> RpcsecGssAuth:
        if self.gss is None:
            raise CallbackError("RPCSEC_GSS callback, but the server has no GSS identity")
        initiator = CallbackInitiator(self.gss, sec.target)
        auth = RpcsecGssAuth(initiator, sec.service, prog=self.target.program, vers=CB_VERSION)
        try:
            await auth.establish(rpc)  # the blocking GSS steps run in worker threads
        except GssClientError as e:
            raise CallbackError(f"RPCSEC_GSS context with {sec.target}: {e}") from None
        return auth

    def close(self) -> None:
        if self._rpc is not None:
            self._rpc.close()
            self._rpc = None


def _describe(e: Exception) -> str:
    if isinstance(e, OSError):
        return f"cannot reach the callback service: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"


class HasCallback(Protocol):
    """A client record as the state manager keeps it (`callback` a `CallbackTarget`)."""

    clientid: int
    callback: object


@dataclass(slots=True)
class _Entry:
    target: CallbackTarget
    path: CallbackPath
    channel: CallbackChannel | None = None
    tasks: set[asyncio.Task[CallbackPath]] = field(default_factory=set)


class CallbackClient:
    """Callback paths of every confirmed client; what the server calls.

    Wiring: after SETCLIENTID_CONFIRM succeeds, call `confirmed(clientid, target)` with the
    `CallbackTarget` recorded at SETCLIENTID; when a client's state is purged, `forget`.
    """

    def __init__(self, gss: ServerGssIdentity | None = None, *, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gss = gss
        self.timeout = timeout
        self._clock = clock
        self._entries: dict[int, _Entry] = {}

    def path(self, clientid: int) -> CallbackPath:
        entry = self._entries.get(clientid)
        return entry.path if entry is not None else CallbackPath()

    def confirmed(self, clientid: int, target: object) -> asyncio.Task[CallbackPath]:
        """Record the client's (possibly new) callback and probe it in the background."""
        self._register(clientid, target)
        task = asyncio.get_running_loop().create_task(self.probe(clientid))
        entry = self._entries[clientid]
        entry.tasks.add(task)
        task.add_done_callback(entry.tasks.discard)
        return task

    def _register(self, clientid: int, target: object) -> _Entry:
        if not isinstance(target, CallbackTarget):
            raise TypeError(f"expected a CallbackTarget, got {type(target).__name__}")
        entry = self._entries.get(clientid)
        if entry is None:
            entry = self._entries[clientid] = _Entry(target, CallbackPath())
        self._drop_channel(entry)
        entry.target = target
        entry.path.reset(self._clock())
        return entry

    async def probe(self, client: int | HasCallback) -> CallbackPath:
        """CB_NULL (RFC 7530 §17.1: confirms the path); the path is up or down afterwards."""
        if not isinstance(client, int):
            self._register(client.clientid, client.callback)
            client = client.clientid
        entry = self._entry(client)
        generation = entry.path.probing(self._clock())
        try:
            await self._channel(entry).call(CB_NULL, b"")
        except CallbackError as e:
            self._record(client, entry, generation, e.reason)
        else:
            self._record(client, entry, generation, None)
        return entry.path

    async def compound(self, clientid: int, ops: Sequence[N.nfs_cb_argop4],
                       tag: bytes = b"") -> N.CB_COMPOUND4res:
        """One CB_COMPOUND (§17.2); a failure marks the path down and raises CallbackError."""
        entry = self._entry(clientid)
        generation = entry.path.generation
        args = encode_cb_compound(entry.target.ident, ops, tag)
        try:
            res = decode_cb_compound_res(await self._channel(entry).call(CB_COMPOUND, args), ops)
        except CallbackError as e:
            self._record(clientid, entry, generation, e.reason)
            raise
        self._record(clientid, entry, generation, None)
        return res

    async def recall(self, clientid: int, stateid: N.stateid4, truncate: bool, fh: bytes) -> int:
        """CB_RECALL of one delegation: the client's nfsstat4."""
        return (await self.compound(clientid, [cb_recall(stateid, truncate, fh)])).status

    async def getattr(self, clientid: int, fh: bytes, attrs: list[int]) -> N.CB_GETATTR4res:
        res = await self.compound(clientid, [cb_getattr(fh, attrs)])
        if not res.resarray:
            raise BadCallbackReply(f"CB_GETATTR failed before the op: status {res.status}")
        value: N.CB_GETATTR4res = res.resarray[0].value
        return value

    def forget(self, clientid: int) -> None:
        entry = self._entries.pop(clientid, None)
        if entry is not None:
            self._drop_channel(entry)
            for task in entry.tasks:
                task.cancel()

    async def close(self) -> None:
        tasks = [t for e in self._entries.values() for t in e.tasks]
        for clientid in list(self._entries):
            self.forget(clientid)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _entry(self, clientid: int) -> _Entry:
        entry = self._entries.get(clientid)
        if entry is None:
            raise CallbackError(f"no callback recorded for client {clientid:#x}")
        return entry

    def _channel(self, entry: _Entry) -> CallbackChannel:
        if entry.channel is None:
            entry.channel = CallbackChannel(entry.target, self.gss, self.timeout)
        return entry.channel

    def _drop_channel(self, entry: _Entry) -> None:
        if entry.channel is not None:
            entry.channel.close()
            entry.channel = None

    def _record(self, clientid: int, entry: _Entry, generation: int, error: str | None) -> None:
        before = entry.path.state
        if not entry.path.record(generation, error, self._clock()):
            return
        if error is not None:
            self._drop_channel(entry)
        if entry.path.state is not before and entry.path.state is PathState.DOWN:
            # INFO, not WARNING: callbacks serve delegations, which pynfsd does not grant yet.
            log.info("callback path of client %#x is down: %s", clientid, error)
        elif entry.path.state is not before:
            log.info("callback path of client %#x is %s", clientid, entry.path.state.value)
