"""A client run (in the test's network namespace) against the Kerberos compose services.

    python -m tests.container.krb5_client HOST PORT TARGET

With the credential cache in KRB5CCNAME and KRB5_CONFIG set, it looks up the export ``export``
below the pseudo root once under RPCSEC_GSS krb5p (service principal ``TARGET``, e.g.
nfs@nfs-server.example.test) and once with AUTH_SYS, and prints one JSON object: the
nfsstat4 names of both COMPOUNDs.
"""

from __future__ import annotations

import asyncio
import json
import sys

from pynfsd.client.gss import connect as gss_connect
from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.flavors import SVC_PRIVACY

LOOKUP = [op.putrootfh(), op.lookup(b"export"), op.getattr(N.FATTR4_TYPE)]


def status(res: N.COMPOUND4res) -> str:
    return N.nfsstat4_names.get(res.status, str(res.status))


async def main(host: str, port: int, target: str) -> dict[str, str]:
    krb5p = await gss_connect(host, port, SVC_PRIVACY, target=target)
    try:
        under_krb5p = status(await krb5p.compound(LOOKUP))
    finally:
        await krb5p.close()
    sys_client = await Nfs4Client.connect(host, port)
    try:
        under_sys = status(await sys_client.compound(LOOKUP))
    finally:
        await sys_client.close()
    return {"krb5p": under_krb5p, "sys": under_sys}


if __name__ == "__main__":
    result = asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]), 60))
    print(json.dumps(result))
