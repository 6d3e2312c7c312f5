"""Actors for the scenarios: one NFSv4.0 client each, every step written to the timeline.

    a = await Actor.connect(tl, "A", srv.port, ownerid=linux_v40_id("ctr"), uid=0)
    await a.establish()                         # SETCLIENTID + SETCLIENTID_CONFIRM, logged
    f = await a.open(d, b"shared")              # OPEN (+ OPEN_CONFIRM)
    await a.lock(f, 0, 10)                      # LOCK
    status = await a.fails("READ", a.session.read(f, 0, 1), N.NFS4ERR_EXPIRED)

`ok` runs a step that must succeed, `fails` one that must fail with one of the given statuses;
either way the timeline shows the request and the server's answer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from pynfsd.client.nfs4 import NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, Nfs4Client, Nfs4Failure, op
from pynfsd.client.session import WRITE_LT, ClientSession, OpenFile
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred, RpcClient, _Protocol
from tests.scenarios.timeline import Timeline, status_name
from tests.serverproc import ServerProcess

T = TypeVar("T")
HOST = "127.0.0.1"
STEP_TIMEOUT = 20.0
SCENARIO_TIMEOUT = 90.0
LEASE = 4  # seconds the server announces (it enforces 10 % more: 4.4 s)
GRACE = 8  # seconds of grace after a restart


def linux_v40_id(nodename: str, server: str = "127.0.0.1", uniquifier: str = "") -> bytes:
    """The co_ownerid a Linux NFSv4.0 client sends (fs/nfs/nfs4proc.c, non-uniform string):
    "Linux NFSv4.0 <nodename>/<server>", with `nfs4_unique_id` between them when it is set."""
    middle = f"{nodename}/{uniquifier}/" if uniquifier else f"{nodename}/"
    return f"Linux NFSv4.0 {middle}{server}".encode()


async def connect_from(source: str, port: int, cred: AuthSysCred) -> Nfs4Client:
    """`Nfs4Client.connect` from a chosen source address (any 127.0.0.0/8 address on Linux).

    `RpcClient.connect` has no local address; this repeats its three lines with one.
    """
    rpc = RpcClient(cred, None)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(lambda: _Protocol(rpc, 64 << 20), HOST, port,
                                                local_addr=(source, 0))
    rpc._transport = cast(asyncio.Transport, transport)

    async def caller(args: bytes) -> bytes:
        return await rpc.call(NFS_PROGRAM, NFS_V4, NFSPROC4_COMPOUND, args)

    return Nfs4Client(caller, rpc)


def collision_warnings(srv: ServerProcess, tl: Timeline, ownerid: bytes) -> list[str]:
    """The server's warnings about `ownerid` being used by several machines, shown on the timeline."""
    lines = [ln.split(": ", 1)[-1] for ln in srv.log_text().splitlines()
             if "WARNING" in ln and f'client id "{ownerid.decode()}"' in ln]
    for ln in lines:
        tl.note(f"server log: {ln}")
    return lines


def stateid_text(s: N.stateid4) -> str:
    return f"{s.seqid}:{s.other.hex()}"


class Actor:
    """One client (one AUTH_SYS principal, one co_ownerid and boot verifier)."""

    def __init__(self, tl: Timeline, name: str, nfs: Nfs4Client, ownerid: bytes, verifier: bytes,
                 uid: int) -> None:
        self.tl = tl
        self.name = name
        self.uid = uid
        self.session = ClientSession(nfs, ownerid, verifier)
        self.names: dict[bytes, str] = {}  # filehandle -> file name, for the timeline
        self.source = HOST

    @classmethod
    async def connect(cls, tl: Timeline, name: str, port: int, *, ownerid: bytes,
                      verifier: bytes = b"boot-001", uid: int = 0, source: str | None = None) -> Actor:
        """A client connected to the server on 127.0.0.1, from the loopback address `source`
        if given (a machine of its own, as far as the server can tell)."""
        if len(verifier) != 8:
            raise ValueError(f"a boot verifier is 8 bytes, not {verifier!r}")
        cred = AuthSysCred(uid, uid, machinename=name.lower())
        nfs = await (connect_from(source, port, cred) if source else Nfs4Client.connect(HOST, port, cred=cred))
        actor = cls(tl, name, nfs, ownerid, verifier, uid)
        actor.source = source or HOST
        return actor

    @property
    def principal(self) -> str:
        return f"sys:{self.uid}"

    async def close(self) -> None:
        await self.session.nfs.close()

    async def reconnect(self, port: int) -> None:
        """A new TCP connection (after a server restart) for the same client and its owners."""
        await self.close()
        cred = AuthSysCred(self.uid, self.uid, machinename=self.name.lower())
        self.session.nfs = await (connect_from(self.source, port, cred) if self.source != HOST
                                  else Nfs4Client.connect(HOST, port, cred=cred))

    # -- running steps --------------------------------------------------------------------

    async def ok(self, label: str, step: Awaitable[T], show: Callable[[T], str] = lambda _: "OK") -> T:
        """Run a step that must succeed; log `label -> show(result)`."""
        try:
            value = await asyncio.wait_for(step, STEP_TIMEOUT)
        except Nfs4Failure as e:
            self.tl.log(self.name, f"{label} -> {status_name(e.status)}")
            raise AssertionError(f"{self.name}: {label} failed: {e}\n{self.tl.text()}") from None
        self.tl.log(self.name, f"{label} -> {show(value)}")
        return value

    async def fails(self, label: str, step: Awaitable[Any], *expected: int) -> int:
        """Run a step that must fail with one of `expected`; return the status."""
        names = " or ".join(status_name(s) for s in expected)
        try:
            await asyncio.wait_for(step, STEP_TIMEOUT)
        except Nfs4Failure as e:
            self.tl.log(self.name, f"{label} -> {status_name(e.status)}")
            self.tl.check(e.status in expected, f"{self.name}: {label} is refused with {names}")
            return e.status
        self.tl.log(self.name, f"{label} -> NFS4_OK")
        self.tl.check(False, f"{self.name}: {label} is refused with {names}")
        raise AssertionError("unreachable")

    async def status_of(self, label: str, step: Awaitable[Any], *, log: bool = True) -> int:
        """Run a step whose outcome the scenario decides on; log (unless not `log`) and return its status."""
        try:
            await asyncio.wait_for(step, STEP_TIMEOUT)
            status = N.NFS4_OK
        except Nfs4Failure as e:
            status = e.status
        if log:
            self.tl.log(self.name, f"{label} -> {status_name(status)}")
        return status

    # -- the client-id steps, logged one by one ------------------------------------------------

    def _who(self) -> str:
        s = self.session
        return f'id="{s.ownerid.decode(errors="replace")}" verifier={printable(s.verifier)} principal={self.principal} from {self.source}'

    def _setclientid(self) -> Awaitable[list[Any]]:
        return self.session.nfs.check([op.setclientid(self.session.verifier, self.session.ownerid)])

    async def setclientid(self) -> N.SETCLIENTID4resok:
        resok: N.SETCLIENTID4resok = (await self.ok(
            f"SETCLIENTID {self._who()}", self._setclientid(),
            lambda r: f"clientid {r[0].clientid:#018x}"))[0]
        return resok

    async def setclientid_refused(self, *expected: int) -> int:
        return await self.fails(f"SETCLIENTID {self._who()}", self._setclientid(), *expected)

    async def confirm(self, resok: N.SETCLIENTID4resok) -> int:
        await self.ok(f"SETCLIENTID_CONFIRM clientid {resok.clientid:#018x}",
                      self.session.nfs.check([op.setclientid_confirm(resok.clientid, resok.setclientid_confirm)]))
        self.session.clientid = resok.clientid
        return resok.clientid

    async def establish(self) -> int:
        return await self.confirm(await self.setclientid())

    def reset_owners(self) -> None:
        """Forget open-owner seqids, as a client does for a new client id."""
        self.session.open_owners.clear()

    # -- state steps --------------------------------------------------------------------------

    async def root(self) -> bytes:
        """The export's filehandle (it is the root of the namespace, fsid=0)."""
        return await self.ok("PUTROOTFH; GETFH", self.session.lookup_path("/"), lambda fh: f"fh {fh.hex()[:16]}...")

    async def open(self, dir_fh: bytes, name: bytes, *, create: bool = True) -> OpenFile:
        f = await self.ok(f"OPEN {name.decode()} (read+write, deny none)", self.session.open(dir_fh, name, create=create),
                          lambda f: f"open stateid {stateid_text(f.stateid)}")
        self.names[f.fh] = name.decode()
        return f

    async def reclaim_open(self, fh: bytes, name: str) -> OpenFile:
        self.names[fh] = name
        return await self.ok(f"OPEN {name} claim=CLAIM_PREVIOUS", self.session.reclaim_open(fh),
                             lambda f: f"open stateid {stateid_text(f.stateid)}")

    def lock_label(self, verb: str, f: OpenFile, offset: int, length: int, reclaim: bool = False) -> str:
        name = self.names.get(f.fh, "?")
        return f"{verb} {name} WRITE [{offset}, {offset + length})" + (" reclaim=true" if reclaim else "")

    def try_lock(self, f: OpenFile, offset: int, length: int, *, reclaim: bool = False) -> Awaitable[N.stateid4]:
        """The LOCK step itself, for `fails` or `status_of`."""
        return self.session.lock(f, WRITE_LT, offset, length, reclaim=reclaim)

    async def lock(self, f: OpenFile, offset: int, length: int, *, reclaim: bool = False) -> N.stateid4:
        return await self.ok(self.lock_label("LOCK", f, offset, length, reclaim),
                             self.try_lock(f, offset, length, reclaim=reclaim),
                             lambda s: f"lock stateid {stateid_text(s)}")

    async def lockt(self, f: OpenFile, offset: int, length: int) -> N.LOCK4denied | None:
        """LOCKT for a write lock; logs who holds the range if anyone does."""
        return await self.ok(self.lock_label("LOCKT", f, offset, length),
                             self.session.test_lock(f, WRITE_LT, offset, length),
                             lambda d: "free" if d is None else f"DENIED (held by {holder(d)})")

    async def renew(self) -> None:
        await self.ok(f"RENEW clientid {self.session.clientid:#018x}", self.session.renew())


def printable(b: bytes) -> str:
    text = b.decode("ascii", errors="replace")
    return f'"{text}"' if text.isprintable() and "\ufffd" not in text else b.hex()


def holder(denied: N.LOCK4denied) -> str:
    return f"clientid {denied.owner.clientid:#018x} owner {bytes(denied.owner.owner)!r}"


async def keep_alive(tl: Timeline, seconds: float, *actors: Actor, step: float = 1.0) -> None:
    """Wait `seconds`, renewing the actors' leases every `step` seconds (quietly)."""
    tl.note(f"wait {seconds:.1f}s" + (f", renewing {', '.join(a.name for a in actors)}" if actors else ""))
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(step, left))
        for a in actors:
            await a.session.renew()


async def open_when_grace_ends(tl: Timeline, actor: Actor, dir_fh: bytes, name: bytes, *keep: Actor,
                               in_grace: bool = True, every: float = 0.5, limit: float = 60.0) -> OpenFile:
    """`actor` retries a plain OPEN until the server's grace period is over (NFS4ERR_GRACE until
    then, RFC 7530 §9.6.2), RENEWing `keep` meanwhile; the first refusal and the success are
    logged.  With `in_grace` the first try must be refused with NFS4ERR_GRACE."""
    label = f"OPEN {name.decode()} (read+write, deny none)"
    loop = asyncio.get_running_loop()
    end, refusals = loop.time() + limit, 0
    while loop.time() < end:
        try:
            f = await asyncio.wait_for(actor.session.open(dir_fh, name), STEP_TIMEOUT)
        except Nfs4Failure as e:
            if e.status != N.NFS4ERR_GRACE or refusals == 0:
                tl.log(actor.name, f"{label} -> {status_name(e.status)}")
                tl.check(e.status == N.NFS4ERR_GRACE, f"{actor.name}: {label} is refused with NFS4ERR_GRACE during grace")
                tl.note(f"{actor.name} retries every {every}s until grace ends"
                        + (f"; {', '.join(a.name for a in keep)} RENEW" if keep else ""))
            refusals += 1
            await asyncio.sleep(every)
            for a in keep:
                await a.session.renew()
            continue
        if in_grace:
            tl.check(refusals > 0, f"{actor.name}: {label} is refused with NFS4ERR_GRACE during grace")
        tl.log(actor.name, f"{label} -> open stateid {stateid_text(f.stateid)} ({refusals} GRACE refusals before)")
        actor.names[f.fh] = name.decode()
        return f
    raise AssertionError(f"grace did not end within {limit}s\n{tl.text()}")


def grace_log(srv: ServerProcess, tl: Timeline, since: int = 0) -> list[str]:
    """The server's log lines about its grace period (why it started and ended), on the timeline."""
    lines = [ln.split(": ", 1)[-1] for ln in srv.log_text(since).splitlines() if "grace" in ln.lower()]
    for ln in lines:
        tl.note(f"server log: {ln}")
    return lines


async def wait_for_log(tl: Timeline, srv: ServerProcess, since: int, needles: Sequence[str], *keep: Actor,
                       limit: float, every: float = 0.25) -> str | None:
    """Wait (RENEWing `keep`, quietly) until a server log line after `since` holds one of
    `needles`; show and return it, or None after `limit` seconds."""
    tl.note("wait for the server's lease sweep" + (f"; {', '.join(a.name for a in keep)} RENEW" if keep else ""))
    loop = asyncio.get_running_loop()
    end, next_renew = loop.time() + limit, loop.time() + 1.0
    while loop.time() < end:
        for ln in srv.log_text(since).splitlines():
            if any(n in ln for n in needles):
                tl.note(f"server log: {ln.split(': ', 1)[-1]}")
                return ln
        await asyncio.sleep(every)
        if loop.time() >= next_renew:
            next_renew += 1.0
            for a in keep:
                await a.session.renew()
    return None


def admin_clients(srv: ServerProcess, tl: Timeline) -> list[dict[str, Any]]:
    """`pynfsd clients --json` against the running server; the table goes on the timeline."""
    argv = [sys.executable, "-m", "pynfsd", "clients", "--state-dir", str(srv.state_dir)]
    table = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=True).stdout
    tl.note("$ pynfsd clients")
    for ln in table.rstrip().splitlines():
        if ln.strip():
            tl.note(f"  {ln}")
    out = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=STEP_TIMEOUT, check=True).stdout
    data = json.loads(out)
    return data if isinstance(data, list) else list(data.get("clients", []))
