"""The NFSv4.0 callback channel under RPCSEC_GSS with real Kerberos (RFC 7530 §3.3.3).

The test plays the NFS client's callback service: an RPC server registered for the callback
program with the RPCSEC_GSS flavour and a `GssapiAcceptor` holding the client's key
(`nfs/cbclient@REALM`, the principal that "acquired the client ID").  pynfsd's callback client
initiates as the server, `nfs@<host>` from the server's keytab (the default ccache holds a
user's TGT, which must not be used), establishes through MIT and then signs and seals with its
own RFC 4121 code; the callback service checks every call with MIT's per-packet code.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from pynfsd.gen import nfs4 as N
from pynfsd.gss.accept import GssapiAcceptor
from pynfsd.nfs4.callback import (
    CB_COMPOUND,
    CB_NULL,
    CallbackClient,
    CallbackError,
    CallbackTarget,
    GssSecurity,
    PathState,
    ServerGssIdentity,
    cb_getattr,
    cb_recall,
    universal_address,
)
from pynfsd.rpc.auth import AuthNone, AuthRegistry, AuthSys
from pynfsd.rpc.gss import KRB5_PSEUDOFLAVORS, RpcsecGss
from pynfsd.rpc.server import RpcCall, RpcServer
from pynfsd.rpc.transport import RpcTcpServer, serve
from pynfsd.xdr.runtime import Packer, Unpacker
from tests.interop.conftest import Krb5Realm

CB_PROG = 0x40000000
SERVICES = {"krb5": 1, "krb5i": 2, "krb5p": 3}
STATEID = N.stateid4(3, os.urandom(12))
FH = os.urandom(28)
SIZE_BITMAP = [1 << N.FATTR4_SIZE]
ATTRS = b"\0\0\0\0\0\0\0\x2a"  # size 42


@dataclass
class Principals:
    client: str  # the client's principal, acceptor of the callback
    client_keytab: str
    stale: str  # a client principal whose keytab holds an outdated key
    stale_keytab: str


@pytest.fixture(scope="module")
def principals(krb5_realm: Krb5Realm) -> Principals:
    client = f"nfs/cbclient@{krb5_realm.realm}"
    client_kt = os.path.join(krb5_realm.tmpdir, "cbclient.keytab")
    krb5_realm.add_service(client, client_kt)
    stale = f"nfs/cbstale@{krb5_realm.realm}"
    stale_kt = os.path.join(krb5_realm.tmpdir, "cbstale.keytab")
    krb5_realm.add_service(stale, stale_kt)
    krb5_realm.kadmin(f"cpw -randkey {stale}")  # the KDC moves on; the keytab keeps kvno 1
    return Principals(client, client_kt, stale, stale_kt)


@dataclass
class Seen:
    proc: int
    principal: str | None
    pseudoflavor: int | None
    args: N.CB_COMPOUND4args | None = None


@dataclass
class CallbackService:
    """The client's callback service: records who called, answers CB_RECALL and CB_GETATTR."""

    seen: list[Seen] = field(default_factory=list)

    async def null(self, call: RpcCall) -> bytes:
        self.seen.append(Seen(CB_NULL, call.cred.principal, call.cred.pseudoflavor))
        return b""

    async def compound(self, call: RpcCall) -> bytes:
        u = Unpacker(call.args)
        args = N.unpack_CB_COMPOUND4args(u)
        u.done()
        self.seen.append(Seen(CB_COMPOUND, call.cred.principal, call.cred.pseudoflavor, args))
        res = [self._answer(op) for op in args.argarray]
        p = Packer()
        N.pack_CB_COMPOUND4res(p, N.CB_COMPOUND4res(N.NFS4_OK, args.tag, res))
        return p.get_buffer()

    def _answer(self, op: N.nfs_cb_argop4) -> N.nfs_cb_resop4:
        if op.argop == N.OP_CB_RECALL:
            return N.nfs_cb_resop4(op.argop, N.CB_RECALL4res(N.NFS4_OK))
        fattr = N.fattr4(SIZE_BITMAP, ATTRS)
        return N.nfs_cb_resop4(op.argop, N.CB_GETATTR4res(N.NFS4_OK, N.CB_GETATTR4resok(fattr)))


@asynccontextmanager
async def callback_service(keytab: str, service: str | None = None
                           ) -> AsyncIterator[tuple[CallbackService, RpcsecGss, RpcTcpServer]]:
    svc = CallbackService()
    flavour = RpcsecGss(GssapiAcceptor(keytab, service=service))
    rpc = RpcServer(AuthRegistry([AuthNone(), AuthSys(), flavour]))
    rpc.register(CB_PROG, 1, {CB_NULL: svc.null, CB_COMPOUND: svc.compound})
    tcp = await serve(rpc, "127.0.0.1", 0)
    try:
        yield svc, flavour, tcp
    finally:
        tcp.close()
        await tcp.wait_closed()


def target(port: int, principal: str, service: int, ident: int = 77) -> CallbackTarget:
    return CallbackTarget(CB_PROG, "tcp", universal_address("127.0.0.1", port), ident,
                          GssSecurity(principal, service))


@pytest.mark.parametrize("enctype", [18, 20])
@pytest.mark.parametrize("name", list(SERVICES))
async def test_probe_and_recall_under_each_service(krb5_realm: Krb5Realm, principals: Principals,
                                                   name: str, enctype: int) -> None:
    service = SERVICES[name]

    async with callback_service(principals.client_keytab) as (svc, flavour, tcp):
        identity = ServerGssIdentity(krb5_realm.service, krb5_realm.keytab, enctypes=[enctype])
        cb = CallbackClient(identity)
        path = await cb.confirmed(1, target(tcp.port, principals.client, service))
        assert path.state is PathState.UP, path.last_error
        assert await cb.recall(1, STATEID, True, FH) == N.NFS4_OK
        attrs = await cb.getattr(1, FH, SIZE_BITMAP)
        assert attrs.status == N.NFS4_OK and attrs.value is not None
        assert attrs.value.obj_attributes.attr_vals == ATTRS
        await cb.close()
    # The callback service saw the server's principal, not the user's TGT in the ccache,
    # under the service level the client used (RFC 7530 §3.3.3).
    assert [s.proc for s in svc.seen] == [CB_NULL, CB_COMPOUND, CB_COMPOUND]
    for s in svc.seen:
        assert s.principal == krb5_realm.service_principal
        assert s.pseudoflavor == KRB5_PSEUDOFLAVORS[service]
    recall = svc.seen[1].args
    assert recall is not None and recall.callback_ident == 77 and recall.minorversion == 0
    assert recall.argarray == [cb_recall(STATEID, True, FH)]
    assert flavour.stats["established"] == 1
    assert not {"bad_arguments", "bad_header_mic", "init_failed"} & set(flavour.stats)


async def test_callback_service_named_as_the_brief_says(krb5_realm: Krb5Realm) -> None:
    """The client's callback service as `nfs@<host>` (here the same host as the server)."""
    async with callback_service(krb5_realm.keytab, krb5_realm.service) as (svc, _, tcp):
        cb = CallbackClient(ServerGssIdentity(krb5_realm.service, krb5_realm.keytab))
        path = await cb.confirmed(1, target(tcp.port, krb5_realm.service_principal, 3))
        assert path.up, path.last_error
        res = await cb.compound(1, [cb_getattr(FH, SIZE_BITMAP)])
        assert res.status == N.NFS4_OK
        await cb.close()
    assert [s.principal for s in svc.seen] == [krb5_realm.service_principal] * 2


async def test_wrong_key_marks_the_path_down(krb5_realm: Krb5Realm, principals: Principals) -> None:
    async with callback_service(principals.stale_keytab) as (svc, flavour, tcp):
        cb = CallbackClient(ServerGssIdentity(krb5_realm.service, krb5_realm.keytab))
        path = await cb.confirmed(1, target(tcp.port, principals.stale, 2))
        assert path.state is PathState.DOWN and path.failures == 1
        assert principals.stale in path.last_error
        assert "refused the context" in path.last_error
        assert flavour.stats["init_failed"] == 1 and flavour.stats["established"] == 0
        with pytest.raises(CallbackError):
            await cb.recall(1, STATEID, False, FH)
        assert cb.path(1).state is PathState.DOWN and cb.path(1).failures == 2
        await cb.close()
    assert svc.seen == []


async def test_server_without_its_key_marks_the_path_down(krb5_realm: Krb5Realm,
                                                           principals: Principals) -> None:
    """The server's keytab lacks nfs/<host>: the initiator fails before anything is sent."""
    async with callback_service(principals.client_keytab) as (svc, flavour, tcp):
        identity = ServerGssIdentity(krb5_realm.service, principals.client_keytab)
        cb = CallbackClient(identity)
        path = await cb.confirmed(1, target(tcp.port, principals.client, 1))
        assert path.state is PathState.DOWN
        assert krb5_realm.service in path.last_error
        await cb.close()
    assert svc.seen == [] and flavour.stats["established"] == 0


async def test_context_dropped_by_the_client_is_replaced(krb5_realm: Krb5Realm,
                                                         principals: Principals) -> None:
    """The callback service forgets the context (CREDPROBLEM, RFC 2203 §5.3.3.3): the call,
    refused before the procedure, goes again under a new context."""
    async with callback_service(principals.client_keytab) as (svc, flavour, tcp):
        cb = CallbackClient(ServerGssIdentity(krb5_realm.service, krb5_realm.keytab))
        assert (await cb.confirmed(1, target(tcp.port, principals.client, 3))).up
        assert flavour.contexts.expire(float("inf")) == 1
        assert await cb.recall(1, STATEID, False, FH) == N.NFS4_OK
        assert cb.path(1).up
        assert flavour.stats["established"] == 2 and flavour.stats["unknown_handle"] == 1
        await cb.close()
    assert [s.proc for s in svc.seen] == [CB_NULL, CB_COMPOUND]
