"""A client that holds a read delegation and ignores its recall, for the kernel-client tests.

    ip netns exec NS python -m tests.vm.deleg_holder SERVER PORT EXPORT FILE

Run inside a test's namespace (the project's client library, with its callback service on
SERVER's side of the bridge, so that the server's CB_RECALL reaches it): it opens EXPORT/FILE
for read until the server grants a read delegation (the server marks the callback path up
once its CB_NULL returned), closes the open, prints ``@@HOLDING <stateid>`` and RENEWs its
lease every second: alive, only deaf to recalls. On a line ``check`` on stdin it READs with
the delegation's stateid and prints ``@@RECALLS <n>`` (CB_RECALLs received) and ``@@READ
<status>``, then exits. ``@@FAILED <why>`` when no delegation comes within a minute.
"""

from __future__ import annotations

import asyncio
import sys

from pynfsd.client.callback import CallbackService
from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, op
from pynfsd.client.session import ACCESS_READ, ClientSession, OpenFile
from pynfsd.gen import nfs4 as N

TRIES = 600   # 0.1 s apart


def say(line: str) -> None:
    print(line, flush=True)


async def delegated(s: ClientSession, root: bytes, name: bytes) -> OpenFile | None:
    for _ in range(TRIES):
        f = await s.open(root, name, access=ACCESS_READ)
        await s.close(f)
        if f.delegation is not None:
            return f
        await asyncio.sleep(0.1)
    return None


async def renewing(s: ClientSession) -> None:
    while True:
        await asyncio.sleep(1.0)
        await s.renew()


async def main(server: str, port: int, export: str, name: str) -> int:
    svc = await CallbackService.start(host=server, policy="ignore")
    s = ClientSession(await Nfs4Client.connect(server, port), b"ignoring-holder", callback=svc)
    try:
        await s.establish()
        f = await delegated(s, await s.lookup_path(export), name.encode())
        if f is None or f.delegation is None:
            say("@@FAILED no read delegation granted")
            return 1
        sid = f.delegation.stateid
        say(f"@@HOLDING {sid.seqid}:{bytes(sid.other).hex()}")
        renew = asyncio.create_task(renewing(s))
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        renew.cancel()
        res = await s.nfs.compound([op.putfh(f.fh), op.read(sid, 0, 1)])
        say(f"@@RECALLS {len(svc.recalls)}")
        say(f"@@READ {N.nfsstat4_names.get(res.status, str(res.status))}")
        return 0
    except Nfs4Failure as e:
        say(f"@@FAILED {e}")
        return 1
    finally:
        await s.nfs.close()
        await svc.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])))
