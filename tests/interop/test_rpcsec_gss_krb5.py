"""RPCSEC_GSS with real Kerberos: pynfsd in-process over loopback TCP, MIT krb5 as the client.

The server establishes contexts with `GssapiAcceptor` (python-gssapi, the realm's keytab) and
then does every MIC and Wrap itself (`Krb5Context` from the lucid export); the client library
(`pynfsd.rpc.gss_initiator`) does its side through MIT.  So each call below checks pynfsd's RFC 4121
code against MIT's in both directions, for krb5, krb5i and krb5p, AES enctypes 17 to 20.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pynfsd.client.gss import connect as gss_connect
from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.client.session import ClientSession
from pynfsd.exports import parse_export_line
from pynfsd.exports.resolver import StaticExportResolver
from pynfsd.gen import nfs4 as N
from pynfsd.gen import rpc as R
from pynfsd.gss.accept import GssapiAcceptor
from pynfsd.gss.principals import Identity, PrincipalMapper
from pynfsd.metrics.collector import render
from pynfsd.metrics.snapshot import Sources, gss_of, take
from pynfsd.nfs4.server import NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, NFSServer, ServerConfig
from pynfsd.rpc.auth import AuthNone, AuthRegistry, AuthSys
from pynfsd.rpc.client import (
    AuthRejected,
    AuthSysCred,
    GarbageArgsError,
    RpcClient,
    decode_reply_verf,
)
from pynfsd.rpc.flavors import KRB5_MECH_OID as KRB5_OID
from pynfsd.rpc.flavors import SVC_INTEGRITY, SVC_NONE, SVC_PRIVACY
from pynfsd.rpc.gss import RpcsecGss
from pynfsd.rpc.gss_initiator import (
    GssapiInitiator,
    GssClientError,
    RpcsecGssAuth,
)
from pynfsd.rpc.server import RpcServer
from pynfsd.rpc.transport import RpcTcpServer, serve
from tests.interop.conftest import Krb5Realm
from tests.metrics_support import parse

SERVICES = {"krb5": SVC_NONE, "krb5i": SVC_INTEGRITY, "krb5p": SVC_PRIVACY}


@dataclass
class Server:
    nfs: NFSServer
    tcp: RpcTcpServer
    gss: RpcsecGss
    skew: list[float]  # seconds added to the flavour's wall clock

    @property
    def port(self) -> int:
        return self.tcp.addresses[0][1]


@asynccontextmanager
async def running(realm: Krb5Realm, tmp: Path, sec: str = "krb5:krb5i:krb5p",
                  keytab: str | None = None) -> AsyncIterator[Server]:
    export = tmp / "export"
    export.mkdir(exist_ok=True)
    skew = [0.0]
    mapper = PrincipalMapper(static={realm.user_principal: Identity(0, 0)})
    flavour = RpcsecGss(GssapiAcceptor(keytab or realm.keytab), mapper,
                        clock=lambda: time.time() + skew[0])
    nfs = NFSServer(ServerConfig(state_dir=str(tmp / "state"), grace_time=0),
                    StaticExportResolver([parse_export_line(
                        f"{export} *(rw,no_root_squash,insecure,sec={sec})")]))
    rpc = RpcServer(AuthRegistry([AuthNone(), AuthSys(), flavour]))
    nfs.register(rpc)
    tcp = await serve(rpc, "127.0.0.1", 0)
    try:
        yield Server(nfs, tcp, flavour, skew)
    finally:
        tcp.close()
        await tcp.wait_closed()
        nfs.close()


async def gss_client(realm: Krb5Realm, server: Server, service: int,
                     enctypes: tuple[int, ...] = ()) -> tuple[Nfs4Client, RpcsecGssAuth]:
    rpc = await RpcClient.connect("127.0.0.1", server.port)
    auth = RpcsecGssAuth(GssapiInitiator(realm.service, enctypes=enctypes), service)
    await auth.establish(rpc)
    rpc.auth = auth  # every rpc.call now goes through RPCSEC_GSS

    async def caller(args: bytes) -> bytes:
        return await rpc.call(NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)

    return Nfs4Client(caller, rpc), auth


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
@pytest.mark.parametrize("name", list(SERVICES))
async def test_compounds_under_each_service(krb5_realm: Krb5Realm, tmp_path: Path, name: str,
                                            enctype: int) -> None:
    async with running(krb5_realm, tmp_path) as server:
        nfs, _ = await gss_client(krb5_realm, server, SERVICES[name], (enctype,))
        s = ClientSession(nfs, f"gss-{name}".encode())
        await s.establish()
        root = await s.lookup_path(str(tmp_path / "export"))
        f = await s.open(root, b"file", create=True)
        data = os.urandom(300_000)
        await s.write(f, 0, data)
        assert await s.read(f, 0, len(data)) == data
        await s.close(f)
        assert (tmp_path / "export" / "file").read_bytes() == data
        assert server.gss.stats["established"] == 1
        await nfs.close()


async def test_metrics_count_contexts_and_calls_by_pseudoflavour(krb5_realm: Krb5Realm,
                                                                  tmp_path: Path) -> None:
    async with running(krb5_realm, tmp_path) as server:
        nfs, _ = await gss_client(krb5_realm, server, SVC_PRIVACY)
        for _ in range(3):
            await nfs.check([op.putrootfh(), op.getattr(N.FATTR4_TYPE)])
        rpc = server.tcp.rpc
        m = parse(render(take(Sources(rpc.stats, server.nfs.state, gss=gss_of(rpc.auth)))))
        assert m["pynfsd_rpc_calls_total"] == {(("flavor", "krb5p"),): 3}
        assert m["pynfsd_gss_contexts_established_total"][()] == 1
        assert m["pynfsd_gss_contexts"][()] == 1
        await nfs.close()


async def test_krb5_only_export_refuses_auth_sys(krb5_realm: Krb5Realm, tmp_path: Path) -> None:
    async with running(krb5_realm, tmp_path) as server:
        sys = await Nfs4Client.connect("127.0.0.1", server.port, cred=AuthSysCred(0, 0))
        comps = [op.lookup(c.encode()) for c in str(tmp_path / "export").strip("/").split("/")]
        vals = await sys.check([op.putrootfh(), *comps, op.getfh()])
        fh = vals[-1].object
        res = await sys.compound([op.putfh(fh), op.getattr(N.FATTR4_TYPE)])
        assert res.status == N.NFS4ERR_WRONGSEC
        vals = await sys.check([op.putrootfh(), *comps[:-1],
                                N.nfs_argop4(N.OP_SECINFO, N.SECINFO4args(b"export"))])
        assert [(f.flavor, f.value.oid, f.value.service) for f in vals[-1]] == [
            (6, KRB5_OID, 1), (6, KRB5_OID, 2), (6, KRB5_OID, 3)]
        gss, _ = await gss_client(krb5_realm, server, SVC_INTEGRITY)
        await gss.check([op.putfh(fh), op.getattr(N.FATTR4_TYPE)])
        await sys.close()
        await gss.close()


async def test_tampered_and_replayed_calls(krb5_realm: Krb5Realm, tmp_path: Path) -> None:
    async with running(krb5_realm, tmp_path) as server:
        nfs, auth = await gss_client(krb5_realm, server, SVC_INTEGRITY)
        rpc = nfs.rpc
        assert rpc is not None
        args = bytes(4) + bytes(4) + b"\0\0\0\x01" + b"\0\0\0\x18"  # COMPOUND: PUTROOTFH
        seq = auth.next_seq()
        xid = rpc.next_xid()
        payload = auth.data_call(xid, seq, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)
        tampered = payload[:-6] + bytes([payload[-6] ^ 1]) + payload[-5:]  # in the checksum
        with pytest.raises(GarbageArgsError):
            auth.check_reply(seq, await rpc.call_record(xid, tampered))
        seq = auth.next_seq()
        xid = rpc.next_xid()
        payload = auth.data_call(xid, seq, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)
        auth.check_reply(seq, await rpc.call_record(xid, payload))
        rpc.send_record(payload)  # the same call again: dropped without a reply
        await nfs.check([op.putrootfh()])  # the connection and context still work
        assert server.gss.stats["seq_replayed"] == 1
        assert server.gss.stats["bad_arguments"] == 1
        header_tampered = auth.data_call(rpc.next_xid(), auth.next_seq(), NFS_PROGRAM, NFS_V4, 0, b"")
        header_tampered = header_tampered[:3] + bytes([header_tampered[3] ^ 1]) + header_tampered[4:]
        reply = await rpc.call_record(int.from_bytes(header_tampered[:4], "big"), header_tampered)
        with pytest.raises(AuthRejected) as e:
            decode_reply_verf(reply)
        assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM
        await nfs.close()


async def test_expired_context_then_destroy(krb5_realm: Krb5Realm, tmp_path: Path) -> None:
    async with running(krb5_realm, tmp_path) as server:
        nfs, _ = await gss_client(krb5_realm, server, SVC_PRIVACY)
        await nfs.check([op.putrootfh()])
        server.skew[0] = 2 * 86400.0  # past the ticket's end time
        with pytest.raises(AuthRejected) as e:
            await nfs.check([op.putrootfh()])
        assert e.value.auth_stat == R.RPCSEC_GSS_CTXPROBLEM
        server.skew[0] = 0.0
        again, auth = await gss_client(krb5_realm, server, SVC_PRIVACY)
        await again.check([op.putrootfh()])
        assert again.rpc is not None
        await auth.destroy(again.rpc)
        auth._pp = auth.initiator.per_packet()  # keep signing with the dead context
        with pytest.raises(AuthRejected) as e:
            await again.check([op.putrootfh()])
        assert e.value.auth_stat == R.RPCSEC_GSS_CREDPROBLEM
        assert server.gss.stats["destroyed"] == 1
        await nfs.close()
        await again.close()


async def test_concurrent_calls_on_one_context(krb5_realm: Krb5Realm, tmp_path: Path) -> None:
    async with running(krb5_realm, tmp_path) as server:
        nfs = await gss_connect("127.0.0.1", server.port, SVC_INTEGRITY, target=krb5_realm.service)
        ops = [op.putrootfh(), op.getattr(N.FATTR4_TYPE)]
        results = await asyncio.gather(*(nfs.check(ops) for _ in range(64)))
        assert len(results) == 64
        assert server.gss.stats["seq_replayed"] == server.gss.stats["seq_below_window"] == 0
        await nfs.close()


async def test_server_without_the_key_refuses_the_context(krb5_realm: Krb5Realm, tmp_path: Path) -> None:
    other = str(tmp_path / "other.keytab")
    krb5_realm.add_service(f"nfs/elsewhere@{krb5_realm.realm}", other)

    async with running(krb5_realm, tmp_path, keytab=other) as server:
        with pytest.raises(GssClientError) as e:
            await gss_connect("127.0.0.1", server.port, SVC_NONE, target=krb5_realm.service)
        assert e.value.major != 0
        assert server.gss.stats["init_failed"] == 1 and len(server.gss.contexts) == 0


async def test_pynfsd_serve_with_keytab(krb5_realm: Krb5Realm, tmp_path: Path) -> None:
    """`pynfsd serve --keytab` registers RPCSEC_GSS: a krb5p client works, AUTH_SYS gets
    WRONGSEC on the krb5p-only export."""
    export = tmp_path / "export"
    export.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pynfsd", "serve", "--export", f"{export} *(rw,insecure,sec=krb5p)",
         "--bind", "127.0.0.1", "--port", "0", "--state-dir", str(tmp_path / "state"),
         "--keytab", krb5_realm.keytab],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        port = _listening_port(proc)
        nfs = await gss_connect("127.0.0.1", port, SVC_PRIVACY, target=krb5_realm.service)
        comps = [op.lookup(c.encode()) for c in str(export).strip("/").split("/")]
        fh = (await nfs.check([op.putrootfh(), *comps, op.getfh()]))[-1].object
        await nfs.check([op.putfh(fh), op.getattr(N.FATTR4_TYPE)])
        sys_client = await Nfs4Client.connect("127.0.0.1", port, cred=AuthSysCred(0, 0))
        res = await sys_client.compound([op.putfh(fh), op.getattr(N.FATTR4_TYPE)])
        assert res.status == N.NFS4ERR_WRONGSEC
        await nfs.close()
        await sys_client.close()
    finally:
        proc.terminate()  # by PID: the server this test started
        proc.wait(timeout=10)


def _listening_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"pynfsd: listening on 127\.0\.0\.1 port (\d+)", line)
        if m:  # keep draining the server's log so it never blocks on a full pipe
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return int(m.group(1))
    raise AssertionError(f"pynfsd serve exited with {proc.wait()}")
