"""RPCSEC_GSS v1 (RFC 2203), sans-IO: the server flavour against the client library.

A small stub mechanism stands in for krb5 behind the acceptor/initiator interface (the real
library is exercised by the interop tests): HMAC-SHA256 MICs and an HMAC-sealed XOR "wrap" keyed
per principal, so a context of one principal cannot forge another's tokens.
Calls go from `RpcsecGssAuth` straight into `RpcServer.handle_record` (no sockets).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest

from pynfsd.gen import rpc as R
from pynfsd.gen import rpcsec_gss as G
from pynfsd.gss import ContextExpired
from pynfsd.gss.accept import GSS_S_CONTINUE_NEEDED, GSS_S_DEFECTIVE_TOKEN, Buffer, StepResult
from pynfsd.gss.principals import Identity, PrincipalMapper
from pynfsd.rpc.auth import AuthNone, AuthRegistry, AuthSys
from pynfsd.rpc.client import (
    AuthRejected,
    GarbageArgsError,
    RpcMismatch,
    decode_reply_verf,
    encode_call,
)
from pynfsd.rpc.flavors import SVC_INTEGRITY, SVC_NONE, SVC_PRIVACY
from pynfsd.rpc.gss import GssConfig, RpcsecGss
from pynfsd.rpc.gss_context import SeqWindow
from pynfsd.rpc.gss_initiator import (
    GssClientError,
    RpcsecGssAuth,
)
from pynfsd.rpc.server import ConnInfo, RpcCall, RpcServer
from pynfsd.xdr.runtime import Packer, Unpacker
from tests.clock import ManualClock

PROG, VERS = 0x20000099, 1
ECHO, WHOAMI = 1, 2
START = 1_700_000_000.0


# ------------------------------------------------------------------ the stub mechanism
class StubPerPacket:
    def __init__(self, key: bytes) -> None:
        self.key = key
        self.mics = 0
        self.expired = False

    def _tag(self, label: bytes, msg: Buffer) -> bytes:
        return hmac.new(self.key, label + bytes(msg), hashlib.sha256).digest()[:16]

    def get_mic(self, msg: Buffer) -> bytes:
        self.mics += 1
        return self._tag(b"mic", msg)

    def verify_mic(self, msg: Buffer, token: Buffer) -> None:
        if self.expired:
            raise ContextExpired("stub context expired")
        if not hmac.compare_digest(self._tag(b"mic", msg), token):
            raise ValueError("bad MIC")

    def _stream(self, n: int) -> bytes:
        return hashlib.shake_256(self.key).digest(n)

    def wrap(self, msg: Buffer, conf: bool = True) -> bytes:
        msg = bytes(msg)
        flag = b"\x01" if conf else b"\x00"
        body = bytes(a ^ b for a, b in zip(msg, self._stream(len(msg)), strict=True)) if conf else msg
        return flag + self._tag(b"wrap" + flag, body) + body

    def unwrap(self, token: Buffer) -> tuple[bytes, bool]:
        token = bytes(token)
        flag, tag, body = token[:1], token[1:17], token[17:]
        if len(token) < 17 or not hmac.compare_digest(self._tag(b"wrap" + flag, body), tag):
            raise ValueError("bad wrap token")
        conf = flag == b"\x01"
        msg = bytes(a ^ b for a, b in zip(body, self._stream(len(body)), strict=True)) if conf else body
        return msg, conf


def stub_key(principal: str) -> bytes:
    return hashlib.sha256(principal.encode()).digest()


@dataclass
class StubAcceptor:
    """Tokens: b"hello:<principal>" completes at once; b"two:<principal>" needs a
    CONTINUE_INIT (with any token); b"bad" fails."""

    endtime: float = START + 3600
    steps: list[bytes] = field(default_factory=list)

    async def step(self, ctx_state: object, token: bytes) -> StepResult:
        self.steps.append(token)
        if token == b"bad":
            return StepResult(b"", False, major=GSS_S_DEFECTIVE_TOKEN, minor=7)
        if token.startswith(b"two:") and ctx_state is None:
            return StepResult(b"more", False, major=GSS_S_CONTINUE_NEEDED, state=token)
        principal = (ctx_state if isinstance(ctx_state, bytes) else token).split(b":", 1)[1].decode()
        return StepResult(b"welcome", True, principal, StubPerPacket(stub_key(principal)), self.endtime)


@dataclass
class StubInitiator:
    principal: str
    two_step: bool = False
    first: bytes | None = None
    seen: list[bytes | None] = field(default_factory=list)

    def step(self, token: bytes | None) -> tuple[bytes, bool]:
        self.seen.append(token)
        if token is None:
            if self.first is not None:
                return self.first, False
            kind = b"two:" if self.two_step else b"hello:"
            return kind + self.principal.encode(), False
        if token == b"more":
            return b"again", False
        return b"", token == b"welcome"

    def per_packet(self) -> StubPerPacket:
        return StubPerPacket(stub_key(self.principal))


# ------------------------------------------------------------------ the in-process wire
class Dropped(Exception):
    pass


@dataclass
class Wire:
    """A RecordCaller that hands records straight to the server."""

    server: RpcServer
    xid: int = 100
    conn: ConnInfo = field(default_factory=lambda: ConnInfo(("127.0.0.1", 700)))
    sent: list[bytes] = field(default_factory=list)

    def next_xid(self) -> int:
        self.xid += 1
        return self.xid

    async def call_record(self, xid: int, payload: bytes) -> bytes:
        self.sent.append(payload)
        reply = await self.server.handle_record(payload, self.conn)
        if reply is None:
            raise Dropped()
        return reply


@dataclass
class Setup:
    flavour: RpcsecGss
    wire: Wire
    clock: ManualClock
    acceptor: StubAcceptor
    seen: list[RpcCall]

    async def auth(self, principal: str = "alice@TEST", service: int = SVC_NONE, **kw: Any) -> RpcsecGssAuth:
        a = RpcsecGssAuth(StubInitiator(principal, **kw), service, prog=PROG, vers=VERS)
        await a.establish(self.wire)
        return a

    async def echo(self, a: RpcsecGssAuth, data: bytes) -> bytes:
        return await a.call(self.wire, PROG, VERS, ECHO, data)

    async def server_reply(self, record: bytes) -> bytes | None:
        return await self.wire.server.handle_record(record, self.wire.conn)


def make(config: GssConfig | None = None, endtime: float = START + 3600) -> Setup:
    config = config or GssConfig()
    clock = ManualClock(START)
    acceptor = StubAcceptor(endtime)
    mapper = PrincipalMapper(static={"alice@TEST": Identity(1000, 100, (100, 10))},
                             passwd=lambda user: Identity(2000, 2000, (2000,)) if user == "bob" else None,
                             clock=clock)
    counter = iter(range(1, 1 << 30))
    flavour = RpcsecGss(acceptor, mapper, config=config, clock=clock,
                        rng=lambda n: next(counter).to_bytes(n, "big"))
    rpc = RpcServer(AuthRegistry([AuthNone(), AuthSys(), flavour]))
    seen: list[RpcCall] = []

    async def echo(call: RpcCall) -> bytes:
        seen.append(call)
        return bytes(call.args)

    async def whoami(call: RpcCall) -> bytes:
        seen.append(call)
        return struct.pack(">II", call.cred.uid, call.cred.sec_flavor)

    rpc.register(PROG, VERS, {ECHO: echo, WHOAMI: whoami})
    return Setup(flavour, Wire(rpc), clock, acceptor, seen)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1 :]


# ------------------------------------------------------------------ establishment
async def test_init_completes_with_handle_window_and_verified_window_mic() -> None:
    s = make(GssConfig(seq_window=32))

    a = await s.auth()
    assert a.handle == (1).to_bytes(16, "big") and a.seq_window == 32
    assert s.flavour.stats["established"] == 1 and len(s.flavour.contexts) == 1


async def test_init_reply_verifier_is_mic_of_seq_window() -> None:
    s = make()

    p = Packer()
    G.pack_rpc_gss_init_arg(p, G.rpc_gss_init_arg(b"hello:alice@TEST"))
    a = RpcsecGssAuth(StubInitiator("alice@TEST"), prog=PROG, vers=VERS)
    rec = await s.wire.call_record(1, encode_call(1, PROG, VERS, 0, p.get_buffer(),
                                                  a.cred(G.RPCSEC_GSS_INIT, 0)))
    _, verf, results = decode_reply_verf(rec)
    assert verf.flavor == R.RPCSEC_GSS
    StubPerPacket(stub_key("alice@TEST")).verify_mic(struct.pack(">I", 128), verf.body)
    res = G.unpack_rpc_gss_init_res(Unpacker(results))
    assert (res.gss_major, res.seq_window, res.gss_token) == (0, 128, b"welcome")


async def test_continue_init_two_steps() -> None:
    s = make()

    a = await s.auth("bob@TEST", two_step=True)
    assert s.acceptor.steps == [b"two:bob@TEST", b"again"]
    assert struct.unpack(">II", await a.call(s.wire, PROG, VERS, WHOAMI, b"")) == (2000, 390003)


async def test_continue_init_with_unknown_handle_is_credproblem() -> None:
    s = make()

    a = RpcsecGssAuth(StubInitiator("x@TEST"), prog=PROG, vers=VERS)
    a.handle = b"nope"
    with pytest.raises(AuthRejected) as e:
        await a._init_call(s.wire, G.RPCSEC_GSS_CONTINUE_INIT, b"again")
    assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM


async def test_failed_init_returns_major_minor_without_handle() -> None:
    s = make()

    with pytest.raises(GssClientError) as e:
        await s.auth(first=b"bad")
    assert (e.value.major, e.value.minor) == (GSS_S_DEFECTIVE_TOKEN, 7)
    assert s.flavour.stats["init_failed"] == 1 and len(s.flavour.contexts) == 0


@pytest.mark.parametrize("mutate, stat", [
    ("proc", R.AUTH_BADCRED), ("verf", R.AUTH_BADVERF), ("handle", R.AUTH_BADCRED),
    ("version", R.AUTH_BADCRED),
])
async def test_bad_init_calls_are_refused(mutate: str, stat: int) -> None:
    s = make()

    a = RpcsecGssAuth(StubInitiator("x@TEST"), prog=PROG, vers=VERS)
    p = Packer()
    G.pack_rpc_gss_init_arg(p, G.rpc_gss_init_arg(b"hello:x@TEST"))
    cred = a.cred(G.RPCSEC_GSS_INIT, 0, handle=b"h" if mutate == "handle" else b"")
    if mutate == "version":
        cred = R.opaque_auth(R.RPCSEC_GSS, b"\0\0\0\x02" + cred.body[4:])
    verf = R.opaque_auth(R.RPCSEC_GSS, b"x") if mutate == "verf" else R.opaque_auth(0, b"")
    proc = 1 if mutate == "proc" else 0
    rec = await s.wire.call_record(1, encode_call(1, PROG, VERS, proc, p.get_buffer(), cred, verf))
    with pytest.raises(AuthRejected) as e:
        decode_reply_verf(rec)
    assert e.value.auth_stat == stat and len(s.flavour.contexts) == 0


async def test_oversized_or_garbled_init_token_is_garbage_args() -> None:
    s = make(GssConfig(max_token=64))

    with pytest.raises(GarbageArgsError):
        await s.auth("a" * 100 + "@TEST")
    a = RpcsecGssAuth(StubInitiator("x@TEST"), prog=PROG, vers=VERS)
    rec = await s.wire.call_record(1, encode_call(1, PROG, VERS, 0, b"\0\0\0\x09abc",
                                                  a.cred(G.RPCSEC_GSS_INIT, 0)))
    with pytest.raises(GarbageArgsError):
        decode_reply_verf(rec)
    assert s.flavour.stats["bad_init_args"] == 2 and s.acceptor.steps == []


# ------------------------------------------------------------------ data, each service
@pytest.mark.parametrize("service, pseudo", [(SVC_NONE, 390003), (SVC_INTEGRITY, 390004),
                                             (SVC_PRIVACY, 390005)])
async def test_data_round_trip_per_service(service: int, pseudo: int) -> None:
    s = make()

    a = await s.auth(service=service)
    for size in (0, 1, 5, 4096):
        data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        assert await s.echo(a, data) == data
    assert struct.unpack(">II", await a.call(s.wire, PROG, VERS, WHOAMI, b"")) == (1000, pseudo)
    cred = s.seen[-1].cred
    assert (cred.flavor, cred.principal, cred.gid, cred.gids) == (6, "alice@TEST", 100, (100, 10))


async def test_privacy_hides_the_arguments_on_the_wire() -> None:
    s = make()

    a = await s.auth(service=SVC_PRIVACY)
    await s.echo(a, b"top secret payload")
    assert b"top secret" not in s.wire.sent[-1]


async def test_service_may_change_per_call_on_one_context() -> None:
    s = make()

    a = await s.auth()
    for service, pseudo in ((SVC_PRIVACY, 390005), (SVC_INTEGRITY, 390004)):
        a.service = service
        reply = await a.call(s.wire, PROG, VERS, WHOAMI, b"")
        assert struct.unpack(">II", reply)[1] == pseudo


async def test_null_procedure_under_integrity() -> None:
    s = make()

    a = await s.auth(service=SVC_INTEGRITY)
    assert await a.call(s.wire, PROG, VERS, 0, b"") == b""


# ------------------------------------------------------------------ sequence numbers
async def test_replay_is_dropped_silently_and_counted() -> None:
    s = make()

    a = await s.auth()
    await s.echo(a, b"once")
    with pytest.raises(Dropped):
        await s.wire.call_record(0, s.wire.sent[-1])
    assert s.flavour.stats["seq_replayed"] == 1 and len(s.seen) == 1
    assert await s.echo(a, b"still fine") == b"still fine"


async def test_window_accepts_out_of_order_and_drops_below_it() -> None:
    s = make(GssConfig(seq_window=4))

    a = await s.auth()
    a.seq = 9
    await s.echo(a, b"10")
    for seq, ok in ((7, True), (8, True), (7, False), (6, False), (11, True), (8, False),
                    (7, False)):
        a.seq = seq - 1
        if ok:
            assert await s.echo(a, b"x") == b"x"
        else:
            with pytest.raises(Dropped):
                await s.echo(a, b"x")
    assert s.flavour.stats["seq_below_window"] == 2  # 6, then 7 once the window moved
    assert s.flavour.stats["seq_replayed"] == 2  # 7 and 8 again


async def test_seq_above_maxseq_is_ctxproblem() -> None:
    s = make()

    a = await s.auth()
    a.seq = G.MAXSEQ
    with pytest.raises(AuthRejected) as e:
        await s.echo(a, b"x")
    assert e.value.auth_stat == R.RPCSEC_GSS_CTXPROBLEM


def test_seq_window_unit() -> None:
    w = SeqWindow(3)
    assert w.acceptable(5)
    w.record(5)
    assert not w.acceptable(5) and w.acceptable(4) and w.acceptable(3) and not w.acceptable(2)
    w.record(100)
    assert w.acceptable(99) and w.acceptable(98) and not w.acceptable(97) and not w.acceptable(5)
    w.record(98)
    w.record(101)
    assert (w.acceptable(99), w.acceptable(98), w.acceptable(100)) == (True, False, False)


# ------------------------------------------------------------------ tampering
async def test_tampered_header_is_credproblem_and_does_not_move_the_window() -> None:
    s = make()

    a = await s.auth()
    payload = a.data_call(s.wire.next_xid(), 5, PROG, VERS, ECHO, b"x")
    tampered = payload[:20] + b"\0\0\0\x02" + payload[24:]  # another procedure number
    with pytest.raises(AuthRejected) as e:
        decode_reply_verf(await s.wire.call_record(0, tampered))
    assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM
    assert s.flavour.contexts.get(a.handle).window.top == -1  # type: ignore[union-attr]
    assert a.check_reply(5, await s.wire.call_record(0, payload)) == b"x"
    assert s.flavour.stats["bad_header_mic"] == 1 and len(s.seen) == 1


@pytest.mark.parametrize("service", [SVC_INTEGRITY, SVC_PRIVACY])
async def test_tampered_arguments_are_garbage_args(service: int) -> None:
    s = make()

    a = await s.auth(service=service)
    xid = s.wire.next_xid()
    payload = a.data_call(xid, a.next_seq(), PROG, VERS, ECHO, b"payload!")
    with pytest.raises(GarbageArgsError) as e:
        a.check_reply(1, await s.wire.call_record(xid, flip(payload, len(payload) - 6)))
    a.per_packet.verify_mic(struct.pack(">I", 1), e.value.verf.body)  # still an accepted reply
    assert s.flavour.stats["bad_arguments"] == 1 and s.seen == []
    assert await s.echo(a, b"ok") == b"ok"


@pytest.mark.parametrize("service", [SVC_INTEGRITY, SVC_PRIVACY])
async def test_body_seq_must_match_the_credential(service: int) -> None:
    s = make()

    a = await s.auth(service=service)
    xid = s.wire.next_xid()
    cred_part = a.data_call(xid, 3, PROG, VERS, ECHO, b"")
    if service == SVC_INTEGRITY:  # data_call(b"") ends in the protected empty body
        cred_part = cred_part[: -len(a.protect(3, b""))]
    payload = cred_part + a.protect(4, b"args")
    with pytest.raises(GarbageArgsError):
        decode_reply_verf(await s.wire.call_record(xid, payload))


async def test_privacy_without_confidentiality_is_garbage_args() -> None:
    s = make()

    a = await s.auth(service=SVC_PRIVACY)
    xid = s.wire.next_xid()
    head = a.data_call(xid, 1, PROG, VERS, ECHO, b"")
    head = head[: -len(a.protect(1, b""))]
    p = Packer()
    G.pack_rpc_gss_priv_data(p, G.rpc_gss_priv_data(bytes(a.per_packet.wrap(b"\0\0\0\x01abcd", False))))
    with pytest.raises(GarbageArgsError):
        decode_reply_verf(await s.wire.call_record(xid, head + p.get_buffer()))


async def test_bad_mics_are_logged_once_but_all_counted(caplog: pytest.LogCaptureFixture) -> None:
    s = make()

    with caplog.at_level(logging.WARNING, logger="pynfsd.rpc.gss"):
        a = await s.auth()
        for seq in (1, 2, 3):
            payload = a.data_call(s.wire.next_xid(), seq, PROG, VERS, ECHO, b"x")
            with pytest.raises(AuthRejected):
                decode_reply_verf(await s.wire.call_record(0, flip(payload, 3)))
        s.clock.now += 61
        payload = a.data_call(s.wire.next_xid(), 4, PROG, VERS, ECHO, b"x")
        with pytest.raises(AuthRejected):
            decode_reply_verf(await s.wire.call_record(0, flip(payload, 3)))
    lines = [r for r in caplog.records if "bad_header_mic" in r.getMessage()]
    assert len(lines) == 2 and s.flavour.stats["bad_header_mic"] == 4


# ------------------------------------------------------------------ contexts
async def test_unknown_handle_is_credproblem() -> None:
    s = make()

    a = await s.auth()
    a.handle = b"\xff" * 16
    with pytest.raises(AuthRejected) as e:
        await s.echo(a, b"x")
    assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM


async def test_expired_context_is_ctxproblem_then_gone() -> None:
    s = make(endtime=START + 10)

    a = await s.auth()
    assert await s.echo(a, b"x") == b"x"
    s.clock.now = START + 10
    with pytest.raises(AuthRejected) as e:
        await s.echo(a, b"x")
    assert e.value.auth_stat == R.RPCSEC_GSS_CTXPROBLEM
    with pytest.raises(AuthRejected) as e:
        await s.echo(a, b"x")
    assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM


async def test_mechanism_saying_expired_is_ctxproblem() -> None:
    s = make()

    a = await s.auth()
    ctx = s.flavour.contexts.get(a.handle)
    assert ctx is not None and isinstance(ctx.per_packet, StubPerPacket)
    ctx.per_packet.expired = True  # the ticket ended by the mechanism's own clock
    with pytest.raises(AuthRejected) as e:
        await s.echo(a, b"x")
    assert e.value.auth_stat == R.RPCSEC_GSS_CTXPROBLEM and len(s.flavour.contexts) == 0


async def test_destroy_forgets_the_context() -> None:
    s = make()

    a = await s.auth(service=SVC_INTEGRITY)
    await a.destroy(s.wire)
    assert len(s.flavour.contexts) == 0 and s.flavour.stats["destroyed"] == 1
    a._pp = StubPerPacket(stub_key("alice@TEST"))
    with pytest.raises(AuthRejected) as e:
        await s.echo(a, b"x")
    assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM


async def test_destroy_by_another_principal_is_refused() -> None:
    s = make()

    victim = await s.auth("alice@TEST")
    mallory = await s.auth("bob@TEST")
    mallory.handle = victim.handle  # Mallory knows the handle but not Alice's key
    with pytest.raises(AuthRejected) as e:
        await mallory.destroy(s.wire)
    assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM
    assert await s.echo(victim, b"alive") == b"alive"
    assert s.flavour.stats["destroyed"] == 0


async def test_context_table_is_bounded() -> None:
    s = make(GssConfig(max_contexts=2))

    first = await s.auth("alice@TEST")
    second = await s.auth("bob@TEST")
    assert await s.echo(first, b"1") == b"1"  # first is now the most recently used
    await s.auth("carol@TEST")
    assert len(s.flavour.contexts) == 2 and s.flavour.stats["evicted"] == 1
    assert await s.echo(first, b"1") == b"1"
    with pytest.raises(AuthRejected):
        await s.echo(second, b"2")


async def test_unmapped_principal_gets_the_anonymous_identity() -> None:
    s = make()

    a = await s.auth("nobody-here@TEST")
    uid, _ = struct.unpack(">II", await a.call(s.wire, PROG, VERS, WHOAMI, b""))
    assert uid == 65534


async def test_client_rejects_a_forged_reply_verifier() -> None:
    s = make()

    a = await s.auth()
    xid = s.wire.next_xid()
    reply = await s.wire.call_record(xid, a.data_call(xid, 1, PROG, VERS, ECHO, b"x"))
    with pytest.raises(Exception, match="bad reply verifier"):
        a.check_reply(2, reply)  # the verifier is the MIC of seq 1, not 2


# ------------------------------------------------------------------ the command line
def test_serve_registers_rpcsec_gss_only_with_a_keytab(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pynfsd.cli import auth_registry, build_parser

    monkeypatch.setenv("KRB5_KTNAME", f"FILE:{tmp_path}/missing.keytab")
    args = build_parser().parse_args(["serve"])
    assert auth_registry(args).flavors() == [R.AUTH_NONE, R.AUTH_SYS]
    pytest.importorskip("gssapi")
    keytab = tmp_path / "krb5.keytab"
    keytab.write_bytes(b"\x05\x02")
    (tmp_path / "map").write_text("alice@EX 1000:100\n")
    for argv in (["serve", "--keytab", str(keytab), "--principal-map", str(tmp_path / "map")],
                 ["serve"]):
        monkeypatch.setenv("KRB5_KTNAME", f"FILE:{keytab}")
        assert auth_registry(build_parser().parse_args(argv)).flavors() == [0, 1, R.RPCSEC_GSS]


@pytest.mark.parametrize("service", [SVC_NONE, SVC_INTEGRITY, SVC_PRIVACY])
async def test_no_single_bit_flip_gets_a_call_through(service: int) -> None:
    """Every byte of a protected call is covered: header and credential by the verifier,
    arguments by the checksum or wrap token (under krb5 only the header is protected)."""
    s = make()

    a = await s.auth(service=service)
    size = len(a.data_call(77, 1, PROG, VERS, ECHO, b"argument bytes"))
    header_end = size - len(a.protect(1, b"argument bytes"))
    for at in range(header_end if service == SVC_NONE else size):
        record = a.data_call(77, a.next_seq(), PROG, VERS, ECHO, b"argument bytes")
        reply = await s.server_reply(flip(record, at))
        assert s.seen == [], f"a flip at byte {at} reached the procedure"
        if reply is not None:
            with pytest.raises((AuthRejected, GarbageArgsError, RpcMismatch)):
                decode_reply_verf(reply)
    assert s.flavour.stats["seq_replayed"] == 0
    assert await s.echo(a, b"argument bytes") == b"argument bytes"


async def test_establishment_work_is_bounded() -> None:
    s = make(GssConfig(max_steps=2))
    gate = asyncio.Event()
    inner = s.acceptor.step

    async def slow_step(ctx_state: object, token: bytes) -> StepResult:
        await gate.wait()
        return await inner(ctx_state, token)

    s.flavour.acceptor = type("Slow", (), {"step": staticmethod(slow_step)})()

    first = [asyncio.create_task(s.auth(f"u{i}@TEST")) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Dropped):
        await s.auth("third@TEST")
    gate.set()
    await asyncio.gather(*first)
    assert s.flavour.stats["init_busy"] == 1 and s.flavour.stats["established"] == 2
    await s.auth("third@TEST")


async def test_half_established_context_expires() -> None:
    s = make(GssConfig(pending_ttl=5))

    a = RpcsecGssAuth(StubInitiator("bob@TEST", two_step=True), prog=PROG, vers=VERS)
    res, _ = await a._init_call(s.wire, G.RPCSEC_GSS_INIT, b"two:bob@TEST")
    assert res.gss_major == GSS_S_CONTINUE_NEEDED
    a.handle = res.handle
    s.clock.now += 5
    with pytest.raises(AuthRejected) as e:
        await a._init_call(s.wire, G.RPCSEC_GSS_CONTINUE_INIT, b"again")
    assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM
