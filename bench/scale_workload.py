"""The scale workload: C logical clients × F open files × L byte-range locks, phase by phase.

Every logical client is a `ClientSession` with its own co_ownerid; many of them share one
connection (`Nfs4Client`), because the server keys clients by co_ownerid, not by connection.
A phase runs one coroutine per client through a bounded pool of workers, so at most
`concurrency` COMPOUNDs are outstanding; inside a client the operations stay sequential, as
the open-owner and lock-owner seqids demand (RFC 7530 §9.1.7).

Phases, in order (each is timed on its own, with a memory probe after it):

- ``setclientid``: SETCLIENTID + SETCLIENTID_CONFIRM per client (one op = the pair).
- ``open``: F OPENs with create per client (one op = OPEN, plus OPEN_CONFIRM for the first
  OPEN of the open-owner).
- ``lock``: L WRITE locks per open file on ranges with gaps between them, so they never merge
  (the first LOCK of a file opens its lock-owner from the open stateid).
- ``renew``: ``renew_rounds`` RENEWs per client.

Files are private to each client by default; with ``shared`` every client opens the same F
files and takes its locks on its own ranges of them, so per-file lock lists grow with C.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pynfsd.client.nfs4 import Nfs4Client
from pynfsd.client.session import WRITE_LT, ClientSession, OpenFile

LOCK_LEN = 16
LOCK_STRIDE = 64  # gaps of 48 bytes: adjacent or overlapping ranges could merge


@dataclass(frozen=True)
class Shape:
    """How much state each logical client builds."""

    files: int = 10
    locks: int = 10
    renew_rounds: int = 3
    shared: bool = False
    concurrency: int = 64


@dataclass
class PhaseResult:
    name: str
    ops: int
    compounds: int
    seconds: float
    server_cpu: float | None = None  # server CPU seconds (process mode)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def us_per_op(self) -> float:
        return 1e6 * self.seconds / self.ops if self.ops else 0.0

    @property
    def cpu_us_per_op(self) -> float | None:
        return None if self.server_cpu is None or not self.ops else 1e6 * self.server_cpu / self.ops


class CountingCaller:
    """Wraps a connection's COMPOUND caller and counts the calls that go through it."""

    def __init__(self, inner: Nfs4Client) -> None:
        self.inner = inner
        self.calls = 0

    async def __call__(self, args: bytes) -> bytes:
        self.calls += 1
        return await self.inner.compound_raw(args)


@dataclass
class Fleet:
    """The logical clients, spread round-robin over a few connections."""

    callers: list[CountingCaller]
    sessions: list[ClientSession]
    dir_fh: bytes
    prefix: str
    files: list[list[OpenFile]] = field(default_factory=list)

    @classmethod
    def build(cls, conns: Sequence[Nfs4Client], clients: int, dir_fh: bytes, tag: str) -> Fleet:
        callers = [CountingCaller(c) for c in conns]
        views = [Nfs4Client(c) for c in callers]
        sessions = [ClientSession(views[i % len(views)], f"scale-{tag}-{i}".encode(), verifier=b"scale-v1")
                    for i in range(clients)]
        return cls(callers, sessions, dir_fh, tag, [[] for _ in range(clients)])

    @property
    def compounds(self) -> int:
        return sum(c.calls for c in self.callers)


async def bounded(n: int, concurrency: int, work: Callable[[int], Awaitable[None]]) -> None:
    """Run work(0..n-1) with at most `concurrency` of them in flight."""
    next_index = iter(range(n))

    async def worker() -> None:
        for i in next_index:
            await work(i)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))


def file_name(shape: Shape, prefix: str, client: int, j: int) -> bytes:
    return f"{prefix}-shared-f{j}".encode() if shape.shared else f"{prefix}-c{client:05d}-f{j}".encode()


def lock_offset(shape: Shape, client: int, k: int) -> int:
    slot = client * shape.locks + k if shape.shared else k
    return slot * LOCK_STRIDE


class Workload:
    """Runs the phases over a `Fleet`; `cpu` (if given) reads the server's CPU seconds."""

    def __init__(self, fleet: Fleet, shape: Shape, cpu: Callable[[], float | None] | None = None) -> None:
        self.fleet = fleet
        self.shape = shape
        self.cpu = cpu

    async def phase(self, name: str, ops_per_client: int, work: Callable[[int], Awaitable[None]]) -> PhaseResult:
        n = len(self.fleet.sessions)
        calls0, cpu0 = self.fleet.compounds, self.cpu() if self.cpu else None
        t0 = time.perf_counter()
        await bounded(n, self.shape.concurrency, work)
        seconds = time.perf_counter() - t0
        cpu1 = self.cpu() if self.cpu else None
        server_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        return PhaseResult(name, n * ops_per_client, self.fleet.compounds - calls0, seconds, server_cpu)

    async def setclientid(self) -> PhaseResult:
        async def work(i: int) -> None:
            await self.fleet.sessions[i].establish()

        return await self.phase("setclientid", 1, work)

    async def open(self) -> PhaseResult:
        async def work(i: int) -> None:
            s = self.fleet.sessions[i]
            for j in range(self.shape.files):
                f = await s.open(self.fleet.dir_fh, file_name(self.shape, self.fleet.prefix, i, j), create=True)
                self.fleet.files[i].append(f)

        return await self.phase("open", self.shape.files, work)

    async def lock(self) -> PhaseResult:
        async def work(i: int) -> None:
            s = self.fleet.sessions[i]
            for j, f in enumerate(self.fleet.files[i]):
                owner = f"lock-owner-{j}".encode()  # one per file, as the Linux client does
                for k in range(self.shape.locks):
                    await s.lock(f, WRITE_LT, lock_offset(self.shape, i, k), LOCK_LEN, lock_owner=owner)

        return await self.phase("lock", self.shape.files * self.shape.locks, work)

    async def renew(self) -> PhaseResult:
        async def work(i: int) -> None:
            for _ in range(self.shape.renew_rounds):
                await self.fleet.sessions[i].renew()

        return await self.phase("renew", self.shape.renew_rounds, work)

    def phases(self) -> list[Callable[[], Awaitable[PhaseResult]]]:
        return [self.setclientid, self.open, self.lock, self.renew]


async def warm_up(conn: Nfs4Client, dir_fh: bytes, shape: Shape) -> None:
    """One throw-away client through every phase, so first-use costs stay out of the numbers."""
    fleet = Fleet.build([conn], 1, dir_fh, "warmup")
    w = Workload(fleet, Shape(files=1, locks=shape.locks, renew_rounds=1, concurrency=1))
    for run in w.phases():
        await run()
