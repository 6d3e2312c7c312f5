"""A small AUTH_SYS workload against a containerized pynfsd (run in the test's namespace).

    python -m tests.container.sys_client HOST PORT NAME [chown]

As root (which the default export squashes to 65534): SETCLIENTID, LOOKUP /export, OPEN with
create NAME (mode 0644), WRITE, READ it back, with ``chown`` SETATTR of its owner and group
to 4321:8765, CLOSE. Prints one JSON object: ``status`` ("NFS4_OK" or the first error's
nfsstat4 name) and ``step`` (where it stopped).
"""

from __future__ import annotations

import asyncio
import json
import sys

from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, op
from pynfsd.client.session import ClientSession
from pynfsd.gen import nfs4 as N
from tests.unit.nfs4_fixtures import ops

DATA = b"written through the container\n"


async def main(host: str, port: int, name: str, chown: bool) -> dict[str, str]:
    nfs = await Nfs4Client.connect(host, port)
    session = ClientSession(nfs, f"caps-{name}".encode())
    step = "setclientid"
    try:
        await session.establish()
        step = "lookup"
        export = await session.lookup_path("/export")
        step = "open"
        f = await session.open(export, name.encode(), create=True)
        step = "write"
        await session.write(f, 0, DATA)
        step = "read"
        if await session.read(f, 0, 4096) != DATA:
            return {"status": "data differs", "step": step}
        if chown:
            step = "chown"
            await nfs.check([op.putfh(f.fh), ops.setattr({N.FATTR4_OWNER: b"4321",
                                                          N.FATTR4_OWNER_GROUP: b"8765"})])
        step = "close"
        await session.close(f)
        return {"status": "NFS4_OK", "step": "done"}
    except Nfs4Failure as e:
        return {"status": N.nfsstat4_names.get(e.res.status, str(e.res.status)), "step": step}
    finally:
        await nfs.close()


if __name__ == "__main__":
    chown = sys.argv[4:] == ["chown"]
    result = asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                               chown), 60))
    print(json.dumps(result))
