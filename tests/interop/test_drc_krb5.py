"""The duplicate request cache under real Kerberos: a `pynfsd serve --keytab` process, MIT krb5
(python-gssapi) as the client, krb5 / krb5i / krb5p and the realm's four AES enctypes.

How the Linux client retransmits under RPCSEC_GSS, and so what these tests send:
- the xid is chosen once per request (net/sunrpc/xprt.c `xprt_request_init`:
  `req->rq_xid = xprt_alloc_xid(xprt)`), and kept by every retransmission;
- every (re-)encoding takes a new sequence number (net/sunrpc/auth_gss/auth_gss.c
  `gss_marshal`: `req->rq_seqno = ... ctx->gc_seq++`; net/sunrpc/clnt.c `call_encode`:
  "Encode here so that rpcsec_gss can use correct sequence number").  A request that was sent
  is encoded again when it goes out on a new connection (clnt.c `rpc_task_need_encode` ->
  `xprt_request_need_retransmit`: the connect cookie changed; NFSv4 over TCP sets
  RPC_TASK_NO_RETRANS_TIMEOUT, so this is how it retransmits) or when its number fell out of
  the server's window (`gss_xmit_need_reencode` -> -EBADMSG -> `call_encode`);
- RFC 2203 §5.3.3.1: "the sequence number algorithm requires that the client increment the
  sequence number even if it is retrying a request with the same RPC transaction
  identifier"; since 2025 the client keeps the last three sequence numbers of a request to
  match a late reply to an earlier transmission ("sunrpc: implement rfc2203 rpcsec_gss seqnum
  cache", `rq_seqnos`).

So a retransmitted REMOVE or CREATE carries the same xid and arguments under a new sequence
number, usually on a new TCP connection.  The server must answer it from the cache (NFS4_OK
again, not NOENT / EXIST), with the MIC of the *new* sequence number as verifier and the
results protected again under that number; a different context of the same principal must not
be answered from the cache; and an exact duplicate (same sequence number) is still dropped by
the sequence window, before the cache is asked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pynfsd import admin
from pynfsd.client.nfs4 import decode_compound, encode_compound, op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import BadReply, RpcClient
from pynfsd.rpc.flavors import SVC_INTEGRITY, SVC_NONE, SVC_PRIVACY
from pynfsd.rpc.gss_initiator import (
    GssapiInitiator,
    RpcsecGssAuth,
)
from tests.interop.conftest import Krb5Realm
from tests.serverproc import (
    HOST,
    NFS_PROGRAM,
    NFS_V4,
    NFSPROC4_COMPOUND,
    ServerProcess,
    assert_log_clean,
    lookup_path,
)

SERVICES = {"krb5": SVC_NONE, "krb5i": SVC_INTEGRITY, "krb5p": SVC_PRIVACY}
ENCTYPES = (17, 18, 19, 20)  # the AES enctypes the realm's service keys have


@dataclass
class Served:
    srv: ServerProcess
    export: Path
    realm: Krb5Realm

    def hits(self) -> int:
        """The cache's replay count, from the server's own status."""
        hits: int = admin.call(str(self.srv.state_dir), {"cmd": "status"})["drc"]["hits"]
        return hits


@pytest.fixture(scope="module")
def served(krb5_realm: Krb5Realm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("drc-krb5")
    export = base / "export"
    export.mkdir()
    principals = base / "principals"
    principals.write_text(f"{krb5_realm.user_principal} 0:0\n")
    line = f"{export} *(rw,no_root_squash,insecure,sec=krb5:krb5i:krb5p)"
    extra = ["--keytab", krb5_realm.keytab, "--principal-map", str(principals)]
    with ServerProcess([line], base / "state", extra_args=extra, log_level="INFO") as srv:
        yield Served(srv, export, krb5_realm)
        srv.healthy()
        assert_log_clean(srv.log_text())


async def new_context(served: Served, service: int, enctype: int = 18) -> RpcsecGssAuth:
    """A fresh RPCSEC_GSS context of the realm's user (established on its own connection)."""
    auth = RpcsecGssAuth(GssapiInitiator(served.realm.service, enctypes=(enctype,)), service)
    async with await RpcClient.connect(HOST, served.srv.port) as rpc:
        await auth.establish(rpc)
    return auth


async def transmit(served: Served, auth: RpcsecGssAuth, xid: int, seq: int, args: bytes) -> bytes:
    """One COMPOUND call with this xid and sequence number on a new TCP connection (a new
    source port); the reply record."""
    payload = auth.data_call(xid, seq, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)
    async with await RpcClient.connect(HOST, served.srv.port) as rpc:
        return await rpc.call_record(xid, payload)


def status(results: bytes) -> int:
    return decode_compound(results).status


def compound(served: Served, ops: Sequence[N.nfs_argop4]) -> bytes:
    return encode_compound([*lookup_path(served.export), *ops])


def new_xid() -> int:
    return int.from_bytes(os.urandom(4), "big")


async def sent_twice(served: Served, auth: RpcsecGssAuth, args: bytes) -> tuple[bytes, bytes]:
    """Send `args`, then retransmit it as Linux does: same xid, next sequence number, new
    connection.  Both replies must verify under their own sequence number; their results."""
    xid, first_seq = new_xid(), auth.next_seq()
    first = auth.check_reply(first_seq, await transmit(served, auth, xid, first_seq, args))
    again_seq = auth.next_seq()
    record = await transmit(served, auth, xid, again_seq, args)
    with pytest.raises(BadReply):  # not the first reply's verifier: re-made for the new number
        auth.check_reply(first_seq, record)
    return first, auth.check_reply(again_seq, record)  # RFC 2203 §5.3.3.2, body checks too


@pytest.mark.parametrize("enctype", ENCTYPES)
@pytest.mark.parametrize("name", list(SERVICES))
async def test_retransmission_with_a_new_sequence_number_is_replayed(
    served: Served, name: str, enctype: int
) -> None:
    directory = f"d-{name}-{enctype}".encode()
    path = served.export / directory.decode()

    auth = await new_context(served, SERVICES[name], enctype)
    hits = served.hits()
    first, again = await sent_twice(served, auth, compound(served, [op.mkdir(directory)]))
    assert status(first) == N.NFS4_OK
    assert again == first  # not NFS4ERR_EXIST: CREATE ran once
    assert path.is_dir() and served.hits() == hits + 1
    first, again = await sent_twice(served, auth, compound(served, [op.remove(directory)]))
    assert status(first) == N.NFS4_OK
    assert again == first  # not NFS4ERR_NOENT: REMOVE ran once
    assert not path.exists() and served.hits() == hits + 2


@pytest.mark.parametrize("name", list(SERVICES))
async def test_same_xid_from_another_context_of_the_same_principal_runs(
    served: Served, name: str
) -> None:
    directory = f"other-{name}".encode()
    path = served.export / directory.decode()

    one = await new_context(served, SERVICES[name])
    other = await new_context(served, SERVICES[name])
    assert one.handle != other.handle
    hits = served.hits()
    for ops, again_status in (([op.mkdir(directory)], N.NFS4ERR_EXIST),
                              ([op.remove(directory)], N.NFS4ERR_NOENT)):
        args, xid = compound(served, ops), new_xid()
        seq = one.next_seq()
        assert status(one.check_reply(seq, await transmit(served, one, xid, seq, args))) == 0
        seq = other.next_seq()
        results = other.check_reply(seq, await transmit(served, other, xid, seq, args))
        assert status(results) == again_status  # it ran again: no reply from the cache
    assert not path.exists() and served.hits() == hits


@pytest.mark.parametrize("name", list(SERVICES))
async def test_exact_duplicate_is_dropped_by_the_sequence_window(served: Served, name: str) -> None:
    directory = f"dup-{name}".encode()

    auth = await new_context(served, SERVICES[name])
    args, xid, seq = compound(served, [op.mkdir(directory)]), new_xid(), auth.next_seq()
    payload = auth.data_call(xid, seq, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)
    async with await RpcClient.connect(HOST, served.srv.port) as rpc:
        assert status(auth.check_reply(seq, await rpc.call_record(xid, payload))) == 0
    hits = served.hits()
    async with await RpcClient.connect(HOST, served.srv.port) as rpc:
        rpc.send_record(payload)  # the same sequence number again, on a new connection
        seq = auth.next_seq()  # then a call that must be served on that connection
        probe = encode_compound([op.putrootfh()])
        follow = auth.data_call(rpc.next_xid(), seq, NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND,
                                probe)
        reply = await rpc.call_record(int.from_bytes(follow[:4], "big"), follow)
        assert status(auth.check_reply(seq, reply)) == N.NFS4_OK
    # Calls on a connection start in order: had the window let the duplicate through,
    # the cache would have replayed it before the second call was answered.
    assert served.hits() == hits
    assert (served.export / directory.decode()).is_dir()
