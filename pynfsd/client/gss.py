"""RPCSEC_GSS krb5 for the client library: an `Nfs4Client` speaking krb5, krb5i or krb5p.

    nfs = await connect("127.0.0.1", 2049, SVC_PRIVACY)   # an Nfs4Client speaking krb5p

The initiator itself (`RpcsecGssAuth`, `GssapiInitiator`) is `pynfsd.rpc.gss_initiator`,
shared with the server's callbacks; the service constants are `pynfsd.rpc.flavors`'.
"""

from __future__ import annotations

from collections.abc import Sequence

from pynfsd.client.nfs4 import NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, Nfs4Client
from pynfsd.rpc.client import RpcClient
from pynfsd.rpc.flavors import SVC_NONE
from pynfsd.rpc.gss_initiator import GssapiInitiator, RpcsecGssAuth


async def connect(
    host: str, port: int, service: int = SVC_NONE, *, target: str = "nfs@localhost",
    enctypes: Sequence[int] = (),
) -> Nfs4Client:
    """An `Nfs4Client` whose COMPOUNDs go under RPCSEC_GSS krb5 with `service`, as the
    Kerberos user of the current credential cache (KRB5CCNAME)."""
    rpc = await RpcClient.connect(host, port)
    try:
        auth = RpcsecGssAuth(GssapiInitiator(target, enctypes=enctypes), service)
        await auth.establish(rpc)
    except BaseException:
        rpc.close()
        raise
    rpc.auth = auth

    async def caller(args: bytes) -> bytes:
        return await rpc.call(NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)

    return Nfs4Client(caller, rpc)
