"""GssproxyAcceptor against a real gssproxy daemon and a real MIT KDC, initiators from MIT.

The daemon (Debian `gssproxy`, scripts/krb5-deps.sh) runs with its own configuration and socket
in the realm's temporary directory, in a private mount namespace where /etc/passwd and
/etc/group are bind-mounted copies with two extra users: `user` (the realm's user principal,
a few groups) and `pynfsbig` (65,100 supplementary groups).  So gssproxy's gss_localname + NSS
mapping sees them and nothing outside the namespace does.  It is stopped by its PID.

Covered: contexts for enctypes 17-20 whose lucid export becomes a Krb5Context that
interoperates with MIT both ways (MIC, wrap with and without confidentiality); a service ticket
of 70 KB (authorization data added to the TGS request through libkrb5, see `big_ticket`),
so the AP-REQ token is over 64 KiB; the user in 65,100 groups, whose groups all arrive;
bad tokens and an unreachable daemon; and an NFSv4 krb5i COMPOUND end to end through
RpcsecGss(GssproxyAcceptor) and the project's RPCSEC_GSS client.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pynfsd.gss import BadMic
from pynfsd.gss.accept import StepResult
from pynfsd.gss.gssproxy import (
    GssproxyAcceptor,
    parse_linux_creds_v1,
    parse_linux_lucid_v1,
)
from pynfsd.gss.lucid import Krb5Context
from pynfsd.gss.principals import Identity, PrincipalMapper
from pynfsd.gss.rfc4121 import CfxKeys
from pynfsd.rpc.flavors import KRB5_MECH_OID
from tests.interop.conftest import Krb5Realm

gr = pytest.importorskip("gssapi.raw")

NO_DAEMON = shutil.which("gssproxy") is None or shutil.which("unshare") is None or os.geteuid() != 0

USER = Identity(61001, 61001, (61001, 61002, 61003))
BIG_USER = "pynfsbig"
BIG_UID = 61010
BIG_GROUPS = 65_100
BIG_GID_BASE = 300_000


# ------------------------------------------------------------------ the daemon


@dataclass
class Gssproxy:
    socket: str
    pid: int
    log: Path
    big_ccache: str  # FILE ccache with a TGT of pynfsbig@REALM
    big_principal: str


def _nss_files(tmp: Path) -> tuple[Path, Path]:
    passwd, group = tmp / "passwd", tmp / "group"
    base_pw = Path("/etc/passwd").read_text()
    base_gr = Path("/etc/group").read_text()
    passwd.write_text(
        base_pw.rstrip("\n") + f"\nuser:x:{USER.uid}:{USER.gid}::/nonexistent:/bin/false\n"
        f"{BIG_USER}:x:{BIG_UID}:{BIG_UID}::/nonexistent:/bin/false\n"
    )
    lines = [base_gr.rstrip("\n"), f"user:x:{USER.gid}:", f"{BIG_USER}:x:{BIG_UID}:"]
    lines += [f"pyu{g}:x:{g}:user" for g in USER.gids[1:]]
    lines += [f"pyb{g}:x:{g}:{BIG_USER}" for g in range(BIG_GID_BASE, BIG_GID_BASE + BIG_GROUPS)]
    group.write_text("\n".join(lines) + "\n")
    return passwd, group


def _config(tmp: Path, realm: Krb5Realm, sock: str) -> Path:
    # Not `kernel_nfsd = yes`: that makes gssproxy switch the host kernel's knfsd to it.
    conf = tmp / "gssproxy.conf"
    conf.write_text(
        "[gssproxy]\n  debug_level = 1\n"
        f"[service/pynfsd]\n  mechs = krb5\n  socket = {sock}\n"
        f"  cred_store = keytab:{realm.keytab}\n  trusted = yes\n  euid = {os.geteuid()}\n"
    )
    (tmp / "conf.d").mkdir(exist_ok=True)
    return conf


def _wait_for_socket(path: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(400):  # a start-up wait, not a timing assertion
        if proc.poll() is not None:
            raise RuntimeError(f"gssproxy exited: {log.read_text()[-2000:]}")
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
                return
            except OSError:
                time.sleep(0.025)
    raise RuntimeError("gssproxy did not open its socket")


def _big_user(realm: Krb5Realm, tmp: Path) -> tuple[str, str]:
    principal = f"{BIG_USER}@{realm.realm}"
    realm.kadmin(f"addprinc -pw bigpw {principal}")
    ccache = f"FILE:{tmp / 'big.cc'}"
    realm.k5.kinit(principal, "bigpw", ["-c", ccache])
    return principal, ccache


@pytest.fixture(scope="module")
def gssproxy(krb5_realm: Krb5Realm) -> Iterator[Gssproxy]:
    if NO_DAEMON:
        pytest.skip("needs gssproxy (scripts/krb5-deps.sh), unshare and root")
    tmp = Path(krb5_realm.tmpdir) / "gssproxy"
    tmp.mkdir(exist_ok=True)
    sock = str(tmp / "gssproxy.sock")
    passwd, group = _nss_files(tmp)
    conf = _config(tmp, krb5_realm, sock)
    log = tmp / "gssproxy.log"
    script = (f"mount --bind {passwd} /etc/passwd && mount --bind {group} /etc/group && "
              f"exec gssproxy -i -c {conf} -C {tmp / 'conf.d'} -s {sock}")
    env = {**os.environ, **krb5_realm.env}
    with log.open("wb") as out:  # unshare and sh exec: the PID is gssproxy's own
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_socket(sock, proc, log)
        principal, ccache = _big_user(krb5_realm, tmp)
        yield Gssproxy(sock, proc.pid, log, ccache, principal)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ MIT initiators


def _flags() -> list[Any]:
    f = gr.RequirementFlag  # no replay/sequence flags: the tests send tokens out of order
    return [f.mutual_authentication, f.integrity, f.confidentiality]


class Initiator:
    def __init__(self, realm: Krb5Realm, enctypes: tuple[int, ...] = (), ccache: str | None = None):
        store = {b"ccache": ccache.encode()} if ccache else None
        self.creds = gr.acquire_cred_from(store, None, usage="initiate").creds
        if enctypes:
            gr.krb5_set_allowable_enctypes(self.creds, list(enctypes))
        self.name = gr.import_name(realm.service.encode(), gr.NameType.hostbased_service)
        self.mech = gr.OID(elements=KRB5_MECH_OID)
        self.ctx: Any = None
        self.complete = False

    def step(self, token: bytes | None = None) -> bytes:
        res = gr.init_sec_context(self.name, self.creds, self.ctx, self.mech, _flags(),
                                  input_token=token)
        self.ctx, self.complete = res.context, not res.more_steps
        return bytes(res.token or b"")


async def establish(acceptor: GssproxyAcceptor, ini: Initiator) -> StepResult:
    result = await acceptor.step(None, ini.step())
    assert result.complete, result
    ini.step(result.output_token)  # the AP-REP: mutual authentication
    assert ini.complete
    return result


def check_per_packet(ctx: Krb5Context, ini: Initiator, sizes: tuple[int, ...]) -> None:
    for size in sizes:
        msg = os.urandom(size)
        gr.verify_mic(ini.ctx, msg, ctx.get_mic(msg))
        ctx.verify_mic(msg, gr.get_mic(ini.ctx, msg))
        for conf in (True, False):
            res = gr.unwrap(ini.ctx, bytes(ctx.wrap(msg, conf)))
            assert (res.message, res.encrypted) == (msg, conf)
            assert ctx.unwrap(gr.wrap(ini.ctx, msg, conf).message) == (msg, conf)


# ------------------------------------------------------------------ the exported buffers


def test_linux_creds_v1_buffers() -> None:
    assert parse_linux_creds_v1(struct.pack("=6I", 7, 8, 3, 8, 9, 10)) == Identity(7, 8, (8, 9, 10))
    assert parse_linux_creds_v1(struct.pack("=iiI", -1, -1, 0)) is None  # no local user
    for bad in (b"", struct.pack("=3I", 1, 2, 1), struct.pack("=5I", 1, 2, 1, 3, 4), b"\0" * 13):
        with pytest.raises(ValueError):
            parse_linux_creds_v1(bad)


@pytest.mark.parametrize(("enctype", "size"), [(17, 16), (18, 32), (19, 16), (20, 32)])
@pytest.mark.parametrize("subkey", [True, False])
def test_linux_lucid_v1_buffers(enctype: int, size: int, subkey: bool) -> None:
    key = os.urandom(size)
    flags = 0x2 | (0x4 if subkey else 0)  # CFX, acceptor subkey; not the initiator
    ours = parse_linux_lucid_v1(struct.pack("=IIQI", flags, 2_000_000_000, 5, enctype) + key)
    assert (ours.enctype, ours.initiator, ours.endtime) == (enctype, False, 2_000_000_000.0)
    peer = Krb5Context.from_keys(CfxKeys(True, enctype, key, acceptor_subkey=key if subkey else None))
    ours.verify_mic(b"call", peer.get_mic(b"call"))
    peer.verify_mic(b"reply", ours.get_mic(b"reply"))
    assert peer.unwrap(ours.wrap(b"data")) == (b"data", True)
    with pytest.raises(BadMic):
        other = Krb5Context.from_keys(CfxKeys(True, enctype, os.urandom(size)))
        ours.verify_mic(b"call", other.get_mic(b"call"))


def test_linux_lucid_v1_refusals() -> None:
    head = struct.Struct("=IIQI")
    for bad in (b"", head.pack(2, 1, 0, 18) + bytes(16), head.pack(0, 1, 0, 18) + bytes(32),
                head.pack(2, 1, 0, 16) + bytes(24), head.pack(2, 1, 0, 23) + bytes(16)):
        with pytest.raises(ValueError):
            parse_linux_lucid_v1(bad)


# ------------------------------------------------------------------ tests


async def test_gssproxy_offers_krb5(gssproxy: Gssproxy) -> None:
    acceptor = GssproxyAcceptor(gssproxy.socket)
    try:
        mechs = await acceptor.indicate_mechs()
    finally:
        acceptor.close()
    assert KRB5_MECH_OID in mechs


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
async def test_context_per_enctype_interoperates_with_mit(
    krb5_realm: Krb5Realm, gssproxy: Gssproxy, enctype: int
) -> None:
    ini = Initiator(krb5_realm, (enctype,))
    acceptor = GssproxyAcceptor(gssproxy.socket)
    try:
        result = await establish(acceptor, ini)
    finally:
        acceptor.close()
    ctx = result.per_packet
    assert isinstance(ctx, Krb5Context)
    assert (result.initiator, ctx.enctype, ctx.initiator) == (krb5_realm.user_principal, enctype, False)
    assert time.time() < result.endtime <= time.time() + 86400 * 2
    check_per_packet(ctx, ini, (0, 1, 15, 16, 17, 1000, 70_000))
    assert acceptor.identities.get(krb5_realm.user_principal) == USER
    assert acceptor.mapper(PrincipalMapper()).lookup(krb5_realm.user_principal) == USER


async def test_many_contexts_over_the_connection_pool(krb5_realm: Krb5Realm, gssproxy: Gssproxy) -> None:
    initiators = [Initiator(krb5_realm) for _ in range(12)]
    acceptor = GssproxyAcceptor(gssproxy.socket)
    try:
        results = await asyncio.gather(*(establish(acceptor, i) for i in initiators))
    finally:
        acceptor.close()
    for result, ini in zip(results, initiators, strict=True):
        assert isinstance(result.per_packet, Krb5Context)
        check_per_packet(result.per_packet, ini, (100,))


async def test_a_ticket_over_64_kib_passes(krb5_realm: Krb5Realm, gssproxy: Gssproxy, tmp_path: Path) -> None:
    ccache = f"FILE:{tmp_path / 'big-ticket.cc'}"  # a TGT only: no ticket for nfs/ yet
    krb5_realm.k5.kinit(krb5_realm.user_principal, krb5_realm.k5.password("user"), ["-c", ccache])
    ticket = big_ticket(ccache, krb5_realm.service_principal, 70_000)
    assert ticket > 70_000
    ini = Initiator(krb5_realm, ccache=ccache)
    token = ini.step()
    assert len(token) > 64 * 1024
    acceptor = GssproxyAcceptor(gssproxy.socket)
    try:
        result = await acceptor.step(None, token)
    finally:
        acceptor.close()
    assert result.complete and result.initiator == krb5_realm.user_principal
    ini.step(result.output_token)
    assert isinstance(result.per_packet, Krb5Context)
    check_per_packet(result.per_packet, ini, (0, 4096))


async def test_a_user_in_65100_groups_gets_them_all(krb5_realm: Krb5Realm, gssproxy: Gssproxy) -> None:
    ini = Initiator(krb5_realm, ccache=gssproxy.big_ccache)
    acceptor = GssproxyAcceptor(gssproxy.socket)
    try:
        result = await establish(acceptor, ini)
        mapper = acceptor.mapper(PrincipalMapper())
        ident = await asyncio.to_thread(mapper.lookup, result.initiator)
    finally:
        acceptor.close()
    assert result.initiator == gssproxy.big_principal
    assert (ident.uid, ident.gid) == (BIG_UID, BIG_UID)
    assert len(ident.gids) == BIG_GROUPS + 1  # getgrouplist(3) lists the primary group too
    expected = {BIG_UID, *range(BIG_GID_BASE, BIG_GID_BASE + BIG_GROUPS)}
    assert set(ident.gids) == expected


async def test_bad_tokens_fail_and_the_acceptor_goes_on(krb5_realm: Krb5Realm, gssproxy: Gssproxy) -> None:
    good = Initiator(krb5_realm)
    tampered = bytearray(Initiator(krb5_realm).step())
    tampered[-20] ^= 0x01
    acceptor = GssproxyAcceptor(gssproxy.socket)
    try:
        *bad, ok = [await acceptor.step(None, b""), await acceptor.step(None, os.urandom(300)),
                    await acceptor.step(None, bytes(tampered)),
                    await acceptor.step(None, good.step())]
    finally:
        acceptor.close()
    for result in bad:
        assert result.failed and not result.complete and result.per_packet is None
    assert ok.complete and ok.initiator == krb5_realm.user_principal


async def test_an_unreachable_daemon_fails_the_step(tmp_path: Path) -> None:
    result = await GssproxyAcceptor(str(tmp_path / "no-such.sock")).step(None, b"token")
    assert result.failed and not result.complete


# ------------------------------------------------------------------ tickets with big authdata


class _Data(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_int32), ("length", ctypes.c_uint), ("data", ctypes.c_void_p)]


class _Keyblock(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_int32), ("enctype", ctypes.c_int32),
                ("length", ctypes.c_uint), ("contents", ctypes.c_void_p)]


class _Authdata(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_int32), ("ad_type", ctypes.c_int32),
                ("length", ctypes.c_uint), ("contents", ctypes.c_void_p)]


class _Creds(ctypes.Structure):  # krb5_creds of MIT's krb5.h
    _fields_ = [("magic", ctypes.c_int32), ("client", ctypes.c_void_p),
                ("server", ctypes.c_void_p), ("keyblock", _Keyblock),
                ("times", ctypes.c_int32 * 4), ("is_skey", ctypes.c_uint),
                ("ticket_flags", ctypes.c_int32), ("addresses", ctypes.c_void_p),
                ("ticket", _Data), ("second_ticket", _Data),
                ("authdata", ctypes.POINTER(ctypes.POINTER(_Authdata)))]


KRB5_GC_NO_STORE = 8


def big_ticket(ccache: str, server: str, size: int) -> int:
    """Add to `ccache` (which holds a TGT) a ticket for `server` carrying `size` bytes of
    authorization data; returns the ticket's length.

    The data travels in the TGS request's enc-authorization-data, which the KDC copies into the
    ticket (RFC 4120 §5.4.1).  The cache entry is stored without the authdata field, so that
    GSS-API's own lookup (which matches authdata) finds and uses it.
    """
    lib = ctypes.CDLL(ctypes.util.find_library("krb5") or "libkrb5.so.3")
    kctx, cc, client, srv = (ctypes.c_void_p() for _ in range(4))
    _ok(lib.krb5_init_context(ctypes.byref(kctx)), "krb5_init_context")
    try:
        _ok(lib.krb5_cc_resolve(kctx, ccache.encode(), ctypes.byref(cc)), "krb5_cc_resolve")
        _ok(lib.krb5_cc_get_principal(kctx, cc, ctypes.byref(client)), "krb5_cc_get_principal")
        _ok(lib.krb5_parse_name(kctx, server.encode(), ctypes.byref(srv)), "krb5_parse_name")
        return _store_big_ticket(lib, kctx, cc, _Creds(client=client, server=srv), size)
    finally:
        for fn, obj in (("krb5_free_principal", srv), ("krb5_free_principal", client),
                        ("krb5_cc_close", cc)):
            if obj.value:
                getattr(lib, fn)(kctx, obj)
        lib.krb5_free_context(kctx)


def _store_big_ticket(lib: Any, kctx: Any, cc: Any, want: _Creds, size: int) -> int:
    payload = ctypes.create_string_buffer(os.urandom(size), size)
    ad = _Authdata(0, 0x7FF0, size, ctypes.cast(payload, ctypes.c_void_p))  # an unregistered type
    ads = (ctypes.POINTER(_Authdata) * 2)(ctypes.pointer(ad))  # NULL-terminated
    want.authdata = ctypes.cast(ads, ctypes.POINTER(ctypes.POINTER(_Authdata)))
    got = ctypes.POINTER(_Creds)()
    _ok(lib.krb5_get_credentials(kctx, KRB5_GC_NO_STORE, cc, ctypes.byref(want),
                                 ctypes.byref(got)), "krb5_get_credentials")
    length: int = got.contents.ticket.length
    saved, got.contents.authdata = got.contents.authdata, None
    try:
        _ok(lib.krb5_cc_store_cred(kctx, cc, got), "krb5_cc_store_cred")
    finally:
        got.contents.authdata = saved
        lib.krb5_free_creds(kctx, got)
    return length


def _ok(code: int, what: str) -> None:
    if code:
        raise RuntimeError(f"{what}: krb5 error {code}")


# ------------------------------------------------------------------ end to end


async def test_krb5i_compound_end_to_end(krb5_realm: Krb5Realm, gssproxy: Gssproxy, tmp_path: Path) -> None:
    from pynfsd.client.nfs4 import Nfs4Client
    from pynfsd.client.session import ClientSession
    from pynfsd.exports import parse_export_line
    from pynfsd.exports.resolver import StaticExportResolver
    from pynfsd.nfs4.server import NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, NFSServer, ServerConfig
    from pynfsd.rpc.auth import AuthNone, AuthRegistry, AuthSys
    from pynfsd.rpc.client import RpcClient
    from pynfsd.rpc.flavors import SVC_INTEGRITY
    from pynfsd.rpc.gss import RpcsecGss
    from pynfsd.rpc.gss_initiator import GssapiInitiator, RpcsecGssAuth
    from pynfsd.rpc.server import RpcServer
    from pynfsd.rpc.transport import serve

    export = tmp_path / "export"
    export.mkdir(mode=0o777)
    export.chmod(0o777)
    shared = export / "shared"  # writable only through the user's last supplementary group
    shared.mkdir()
    os.chown(shared, 0, BIG_GID_BASE + BIG_GROUPS - 1)
    shared.chmod(0o070)
    data = os.urandom(200_000)

    acceptor = GssproxyAcceptor(gssproxy.socket)
    flavour = RpcsecGss(acceptor, acceptor.mapper(PrincipalMapper()))
    nfs = NFSServer(ServerConfig(state_dir=str(tmp_path / "state"), grace_time=0),
                    StaticExportResolver([parse_export_line(f"{export} *(rw,insecure,sec=krb5i)")]))
    rpc = RpcServer(AuthRegistry([AuthNone(), AuthSys(), flavour]))
    nfs.register(rpc)
    tcp = await serve(rpc, "127.0.0.1", 0)
    client = await RpcClient.connect("127.0.0.1", tcp.addresses[0][1])
    try:
        creds = gr.acquire_cred_from({b"ccache": gssproxy.big_ccache.encode()}, None,
                                     usage="initiate").creds
        auth = RpcsecGssAuth(GssapiInitiator(krb5_realm.service, creds=creds), SVC_INTEGRITY)
        await auth.establish(client)
        client.auth = auth

        async def caller(args: bytes) -> bytes:
            return await client.call(NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)

        s = ClientSession(Nfs4Client(caller, client), b"gssproxy-e2e")
        await s.establish()
        root = await s.lookup_path(str(export))
        f = await s.open(root, b"file", create=True)
        await s.write(f, 0, data)
        back = await s.read(f, 0, len(data))
        await s.close(f)
        g = await s.open(await s.lookup_path(str(shared)), b"by-group", create=True)
        await s.write(g, 0, b"group access")
        await s.close(g)
        ctx = flavour.contexts.get(auth.handle)
        assert ctx is not None and flavour.stats["established"] == 1
        cred = ctx.creds[SVC_INTEGRITY]
    finally:
        client.close()
        tcp.close()
        await tcp.wait_closed()
        nfs.close()
        acceptor.close()
    assert back == data and (export / "file").read_bytes() == data
    assert (cred.uid, cred.gid, cred.principal) == (BIG_UID, BIG_UID, gssproxy.big_principal)
    assert len(cred.gids) == BIG_GROUPS + 1
    assert (export / "file").stat().st_uid == BIG_UID
    assert (shared / "by-group").read_bytes() == b"group access"
