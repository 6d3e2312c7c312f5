"""A second client that wants a kernel client's lock across a server takeover.

    ip netns exec NS python -m tests.vm.contender SERVER PORT EXPORT FILE

Run inside a test's namespace, with the project's client library. Before the takeover it
establishes a client id, opens EXPORT/FILE for read and write (no lock: the kernel client
holds one), prints ``@@OPENED`` and ``@@LOCKT <status>`` (a conflicting lock shows as
NFS4ERR_DENIED) and RENEWs every second. On the line ``takeover`` on stdin it does what a
client of the dead node does: connects again (the same address, now served by the other
node), SETCLIENTID with its unchanged identity and verifier, reclaims its open with
CLAIM_PREVIOUS (``@@RECLAIM <status>``, again after each NFS4ERR_DELAY), then asks for a whole-file blocking write lock
(WRITEW_LT, not a reclaim) every ``POLL`` seconds, printing ``@@LOCK <status>`` for each
answer, until one is granted (``@@GRANTED``). On ``release`` it unlocks, closes and prints
``@@RELEASED``. ``@@FAILED <why>`` ends it early.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure
from pynfsd.client.session import WRITE_LT, WRITEW_LT, ClientSession, OpenFile
from pynfsd.gen import nfs4 as N

POLL = 1.0
CALL_TIMEOUT = 10.0        # bounds every call (TimeoutError is an OSError)
CONNECT_TRIES = 120        # 0.5 s apart
DELAYS = 60                # NFS4ERR_DELAY answers to a reclaim retried, POLL apart
WHOLE = (0, 0xFFFFFFFFFFFFFFFF)
T = TypeVar("T")


def say(line: str) -> None:
    print(line, flush=True)


def name(status: int) -> str:
    return N.nfsstat4_names.get(status, str(status))


async def bounded(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, CALL_TIMEOUT)


async def command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


async def renewing(s: ClientSession) -> None:
    """RENEW every second; the first failure (the node died) is reported and ends it."""
    while True:
        await asyncio.sleep(1.0)
        try:
            await bounded(s.renew())
        except (OSError, EOFError, Nfs4Failure) as e:
            say(f"@@RENEW failed: {e!r}")
            return


async def reconnect(s: ClientSession, server: str, port: int) -> None:
    """A new connection to the service address (the new node), then SETCLIENTID again."""
    await s.nfs.close()
    for _ in range(CONNECT_TRIES):
        try:
            s.nfs = await bounded(Nfs4Client.connect(server, port))
            await bounded(s.establish())
            return
        except (OSError, EOFError):
            await asyncio.sleep(0.5)
    raise OSError(f"no server at {server}:{port}")


async def lock_until_granted(s: ClientSession, f: OpenFile) -> None:
    """Blocking-lock polls (§9.4): every answer printed, until the lock is granted."""
    while True:
        try:
            await bounded(s.lock(f, WRITEW_LT, *WHOLE))
            say(f"@@LOCK {name(N.NFS4_OK)}")
            return
        except Nfs4Failure as e:
            say(f"@@LOCK {name(e.status)}")
            if e.status not in (N.NFS4ERR_GRACE, N.NFS4ERR_DENIED, N.NFS4ERR_DELAY):
                raise
        await asyncio.sleep(POLL)
        await bounded(s.renew())


async def before(s: ClientSession, export: str, file: str) -> OpenFile:
    await bounded(s.establish())
    f = await bounded(s.open(await bounded(s.lookup_path(export)), file.encode()))
    say("@@OPENED")
    held = await bounded(s.test_lock(f, WRITE_LT, *WHOLE))
    say(f"@@LOCKT {name(N.NFS4_OK if held is None else N.NFS4ERR_DENIED)}")
    return f


async def after(s: ClientSession, f: OpenFile, server: str, port: int) -> None:
    await reconnect(s, server, port)
    for _ in range(DELAYS):
        try:
            reclaimed = await bounded(s.reclaim_open(f.fh))
            break
        except Nfs4Failure as e:
            say(f"@@RECLAIM {name(e.status)}")
            if e.status != N.NFS4ERR_DELAY:
                raise
        await asyncio.sleep(POLL)
    else:
        raise OSError("the reclaim was delayed for too long")
    say(f"@@RECLAIM {name(N.NFS4_OK)}")
    f.stateid, f.lock_owner, f.lock_stateid = reclaimed.stateid, None, None
    await lock_until_granted(s, f)
    say("@@GRANTED")


async def main(server: str, port: int, export: str, file: str) -> int:
    s = ClientSession(await bounded(Nfs4Client.connect(server, port)), b"takeover-contender")
    try:
        f = await before(s, export, file)
        renew = asyncio.create_task(renewing(s))
        while await command() != "takeover":
            pass
        renew.cancel()
        await after(s, f, server, port)
        while await command() != "release":
            pass
        await bounded(s.unlock(f, WRITE_LT, *WHOLE))
        await bounded(s.close(f))
        say("@@RELEASED")
        return 0
    except (Nfs4Failure, OSError, EOFError) as e:
        say(f"@@FAILED {e!r}")
        return 1
    finally:
        await s.nfs.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])))
