"""Server CPU per operation over loopback, the kernel client's COMPOUNDs played by a Python one.

    python -m bench.server_cpu                        # this tree
    python -m bench.server_cpu --compare OLD_TREE     # this tree and another, alternating
    python -m bench.server_cpu --rows getattr,read-4k # some rows only
    python -m bench.server_cpu --rows getattr --profile /tmp/ga   # /tmp/ga.0: pstats
    python -m bench.server_cpu --rows getattr --pyspy /tmp/ga     # /tmp/ga.0: py-spy stacks
    python -m bench.server_cpu --rows create,remove --hops         # thread round trips per op

Starts `pynfsd serve` (from ``--src``, and ``--compare``) over a fresh directory under /tmp
and drives it from this process with ``--conns`` connections of ``--depth`` COMPOUNDs in
flight (``--gap-us``: each pausing that long between its COMPOUNDs, so that the server idles
between calls as it does under a slow client). Each row sends the COMPOUNDs the Linux client sends for that operation:

* create: PUTFH OPEN(UNCHECKED) GETFH ACCESS GETATTR, then PUTFH CLOSE (one create is both);
* stat: PUTFH LOOKUP GETFH GETATTR; getattr: PUTFH GETATTR; remove: PUTFH REMOVE;
* unlink: what ``rm`` of one file sends in a directory being changed (the client's cached
  access and lookup of the directory lapse with its change attribute): PUTFH ACCESS GETATTR
  of the directory, PUTFH LOOKUP GETFH GETATTR, PUTFH REMOVE (one op is all three);
* readdir: PUTFH READDIR (32 KiB, the client's READDIR attributes) of a directory of 10,000
  files, from its start: one op is one READDIR reply (~150 entries), at ``--ops`` / 20;
* read/write 4 KiB at random aligned offsets of a 64 MiB file, 1 MiB sequentially (UNSTABLE
  writes, as the client's write-back sends them).

The server's CPU (``/proc/PID/stat``: user+system of all its threads) is read before and after
``--ops`` operations; a row is ``--samples`` such samples on each server, the trees alternating
sample by sample. Printed: the median µs per operation and the spread (least–most) of the
samples. Other load on a shared host only ever adds, so compare medians and look at the spread.
With ``--hops`` every tree runs under ``bench.experiment_serve count-hops`` and the table gives
the calls handed to a worker thread per operation instead (median; the calls by name below).
Ends only the servers it started.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.authz import start_server
from bench.cpu import cpu_seconds
from pynfsd.client.nfs4 import Nfs4Client, Nfs4Failure, encode_compound, op, unchecked
from pynfsd.client.session import ClientSession, Owner
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred

#: What the Linux client asks in GETATTR after OPEN, LOOKUP and for a revalidation (nfs4_fattr_bitmap).
KERNEL_ATTRS = (N.FATTR4_TYPE, N.FATTR4_CHANGE, N.FATTR4_SIZE, N.FATTR4_FSID, N.FATTR4_FILEID,
                N.FATTR4_MODE, N.FATTR4_NUMLINKS, N.FATTR4_OWNER, N.FATTR4_OWNER_GROUP,
                N.FATTR4_RAWDEV, N.FATTR4_SPACE_USED, N.FATTR4_TIME_ACCESS,
                N.FATTR4_TIME_METADATA, N.FATTR4_TIME_MODIFY, N.FATTR4_MOUNTED_ON_FILEID)
#: What it asks in READDIR (nfs4_readdir_bitmap): the above, rdattr_error and the filehandle.
READDIR_ATTRS = (*KERNEL_ATTRS, N.FATTR4_RDATTR_ERROR, N.FATTR4_FILEHANDLE)
ROWS = ("create", "stat", "getattr", "remove", "unlink", "readdir", "read-4k", "write-4k", "read-1m",
        "write-1m")
LISTED = 10_000  # files in the directory the readdir row lists
BIG_FILE = 64 << 20
KIB4, MIB = 4096, 1 << 20


@dataclass
class Conn:
    """One connection, its client id and one open-owner per COMPOUND in flight."""

    nfs: Nfs4Client
    session: ClientSession
    dirfh: bytes
    tag: str
    owners: list[Owner] = field(default_factory=list)
    made: list[bytes] = field(default_factory=list)  # names created, removed by "remove"
    data_fh: bytes = b""
    data_sid: N.stateid4 = field(default_factory=lambda: N.stateid4(0, b"\0" * 12))


async def _checked(c: Conn, args: bytes) -> None:
    res = await c.nfs.compound_raw(args)
    status = int.from_bytes(res[:4], "big")
    if status != N.NFS4_OK:
        raise RuntimeError(N.nfsstat4_names.get(status, status))


async def _create(c: Conn, slot: int, i: int) -> None:
    o, name = c.owners[slot], f"c-{c.tag}-{i}".encode()
    opn = op.open(o.seqid, c.session.clientid, o.name, name, create=unchecked())
    res = await c.nfs.compound([op.putfh(c.dirfh), opn, op.getfh(), op.access(0x3f),
                                op.getattr(*KERNEL_ATTRS)])
    o.advance(res.status)
    if res.status != N.NFS4_OK:
        raise Nfs4Failure(res)
    sid, fh = res.resarray[1].value.value.stateid, bytes(res.resarray[2].value.value.object)
    res = await c.nfs.compound([op.putfh(fh), op.close(o.seqid, sid)])
    o.advance(res.status)
    if res.status != N.NFS4_OK:
        raise Nfs4Failure(res)
    c.made.append(name)


def _stat(c: Conn, slot: int, i: int) -> Awaitable[None]:
    name = c.made[i % len(c.made)]
    return _checked(c, encode_compound([op.putfh(c.dirfh), op.lookup(name), op.getfh(),
                                        op.getattr(*KERNEL_ATTRS)]))


def _remove(c: Conn, slot: int, i: int) -> Awaitable[None]:
    return _checked(c, encode_compound([op.putfh(c.dirfh), op.remove(c.made[i])]))


async def _unlink(c: Conn, slot: int, i: int) -> None:
    name = c.made[-1 - i]  # from the end: "remove" takes them from the start
    await _checked(c, encode_compound([op.putfh(c.dirfh), op.access(0x1f),
                                       op.getattr(*KERNEL_ATTRS)]))
    await _checked(c, encode_compound([op.putfh(c.dirfh), op.lookup(name), op.getfh(),
                                       op.getattr(*KERNEL_ATTRS)]))
    await _checked(c, encode_compound([op.putfh(c.dirfh), op.remove(name)]))


def _fixed(make: Callable[[Conn], bytes]) -> Callable[[Conn, int, int], Awaitable[None]]:
    cache: dict[int, bytes] = {}

    def one(c: Conn, slot: int, i: int) -> Awaitable[None]:
        args = cache.get(id(c))
        if args is None:
            args = cache[id(c)] = make(c)
        return _checked(c, args)
    return one


def _io(size: int, write: bool, sequential: bool) -> Callable[[Conn, int, int], Awaitable[None]]:
    data = os.urandom(size)
    rng = random.Random(7)

    def one(c: Conn, slot: int, i: int) -> Awaitable[None]:
        off = (i * size) % BIG_FILE if sequential else rng.randrange(BIG_FILE // size) * size
        o = op.write(c.data_sid, off, data, N.UNSTABLE4) if write else op.read(c.data_sid, off, size)
        return _checked(c, encode_compound([op.putfh(c.data_fh), o]))
    return one


DRIVERS: dict[str, Callable[[Conn, int, int], Awaitable[None]]] = {
    "create": _create,
    "stat": _stat,
    "getattr": _fixed(lambda c: encode_compound([op.putfh(c.data_fh), op.getattr(*KERNEL_ATTRS)])),
    "remove": _remove,
    "unlink": _unlink,
    "readdir": _fixed(lambda c: encode_compound([
        op.putfh(c.dirfh), op.readdir(0, bytes(8), 8192, 32768, READDIR_ATTRS)])),
    "read-4k": _io(KIB4, False, False),
    "write-4k": _io(KIB4, True, False),
    "read-1m": _io(MIB, False, True),
    "write-1m": _io(MIB, True, True),
}


async def _setup(port: int, export: Path, k: int, depth: int, io: bool) -> Conn:
    nfs = await Nfs4Client.connect("127.0.0.1", port, cred=AuthSysCred(0, 0))
    s = ClientSession(nfs, f"bench-{port}-{k}".encode())
    await s.establish()
    dirfh = await s.lookup_path(str(export / "pub"))
    c = Conn(nfs, s, dirfh, f"{port}-{k}")
    data = export / "pub" / f"data-{k}"
    with open(data, "wb") as out:  # written here, not over NFS: profiles show only the rows
        for _ in range(BIG_FILE // MIB if io else 0):
            out.write(os.urandom(MIB))
    f = await s.open(dirfh, data.name.encode(), owner=b"data")
    c.data_fh, c.data_sid = f.fh, f.stateid
    for slot in range(depth):  # a confirmed open-owner per slot: no OPEN_CONFIRM when measured
        o = s.owner(b"slot-%d" % slot)
        await s.close(await s.open(dirfh, f"o-{c.tag}-{slot}".encode(), create=True, owner=o.name))
        c.owners.append(o)
    return c


async def _drive(c: Conn, row: str, ops: int, depth: int, base: int, gap: float) -> None:
    fn, counter = DRIVERS[row], itertools.count(base)

    async def slot(s: int) -> None:
        for i in counter:
            if i >= base + ops:
                return
            await fn(c, s, i)
            if gap:
                await asyncio.sleep(gap)
    await asyncio.gather(*(slot(s) for s in range(depth)))


@dataclass
class Server:
    """One running pynfsd and the connections driving it."""

    src: Path
    pid: int
    conns: list[Conn]
    done: dict[str, int] = field(default_factory=dict)  # ops made so far per row
    hops_file: Path | None = None  # --hops: where the server writes its counts on SIGUSR1
    hops_by_fn: dict[tuple[str, str], float] = field(default_factory=dict)  # last sample's

    async def sample(self, row: str, ops: int, depth: int, gap: float = 0.0) -> float:
        per = ops // len(self.conns)
        base = self.done.get(row, 0)
        before = cpu_seconds(self.pid) or 0.0
        hops = await self._hops()
        await asyncio.gather(*(_drive(c, row, per, depth, base, gap) for c in self.conns))
        self.done[row] = base + per
        if self.hops_file is not None:
            after = await self._hops()
            for fn, n in after.items():
                if n > hops.get(fn, 0):
                    self.hops_by_fn[(row, fn)] = (n - hops.get(fn, 0)) / (per * len(self.conns))
            return (sum(after.values()) - sum(hops.values())) / (per * len(self.conns))
        return ((cpu_seconds(self.pid) or 0.0) - before) / (per * len(self.conns)) * 1e6

    async def _hops(self) -> dict[str, int]:
        """The server's count of worker calls by function (``--hops``), else nothing."""
        if self.hops_file is None:
            return {}
        self.hops_file.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        for _ in range(200):
            await asyncio.sleep(0.01)
            try:
                return dict(json.loads(self.hops_file.read_text()))
            except (FileNotFoundError, ValueError):
                continue  # not written (completely) yet
        raise RuntimeError("the server wrote no hop counts")


def _spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling every thread of ``pid`` while it runs (not while idle), collapsed
    stacks to ``out``, without pausing it (less perturbation than a profiler)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    spy = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "1000", "--format", "raw",
                            "--nonblocking", "--output", out], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(1.0)  # attached before the rows start
    return spy


def _runner(args: argparse.Namespace, n: int) -> tuple[str, ...]:
    """How tree ``n`` is started: plain, under cProfile, or with an experiment patched in."""
    here = Path(__file__).resolve().parent  # this tree's tools, whichever tree serves
    if args.hops:
        return (str(here / "experiment_serve.py"), "count-hops")
    if args.profile:
        return (str(here / "profiled_serve.py"), "--cpu", f"{args.profile}.{n}")
    if args.variant and n == 0:
        return (str(here / "experiment_serve.py"), args.variant)
    return ("-m", "pynfsd")


async def run(args: argparse.Namespace, base: Path) -> dict[tuple[Path, str], list[float]]:
    trees = [args.src] + ([args.compare] if args.compare else [])
    procs, servers = [], []
    out: dict[tuple[Path, str], list[float]] = {}
    io = any(r.startswith(("read", "write")) for r in args.rows)
    try:
        for n, src in enumerate(trees):
            export = base / f"exp-{n}"
            (export / "pub").mkdir(parents=True)
            os.chmod(export / "pub", 0o777)
            for i in range(LISTED if "readdir" in args.rows else 0):
                (export / "pub" / f"listed-{i:05d}").write_bytes(b"")
            hops = base / f"hops-{n}.json" if args.hops else None
            if hops is not None:
                os.environ["PYNFSD_HOPS"] = str(hops)  # the server started next writes there
            proc, port = start_server(src, export, base / f"state-{n}", _runner(args, n))
            procs.append(proc)
            conns = [await _setup(port, export, k, args.depth, io) for k in range(args.conns)]
            servers.append(Server(src, proc.pid, conns, hops_file=hops))
        spies = [_spy(srv.pid, f"{args.pyspy}.{n}") for n, srv in enumerate(servers)] if args.pyspy else []
        for row in args.rows:
            ops = args.ops // 8 if row.endswith("1m") else args.ops
            if row == "readdir":  # one READDIR costs as much as a hundred or so GETATTRs
                ops = max(args.conns, ops // 20)
            if row in ("remove", "unlink"):  # as many as were made, split in samples
                share = len({"remove", "unlink"} & set(args.rows))
                made = min(len(c.made) for c in servers[0].conns)
                ops = made * args.conns // args.samples // share
            for _ in range(args.samples):
                for srv in servers:
                    out.setdefault((srv.src, row), []).append(
                        await srv.sample(row, ops, args.depth, args.gap_us / 1e6))
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(60)
        for srv in servers:
            for (row, fn), per_op in sorted(srv.hops_by_fn.items()):
                print(f"  {str(srv.src)[-28:]} {row}: {fn} {per_op:.2f}/op")
    finally:
        for srv in servers:
            for c in srv.conns:
                await c.nfs.close()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    return out


def report(out: dict[tuple[Path, str], list[float]], trees: list[Path], rows: list[str],
           digits: int = 0) -> None:
    head = "".join(f"{str(t)[-28:]:>30}" for t in trees)
    print(f"{'row':<10}{head}" + ("   ratio" if len(trees) == 2 else ""))
    for row in rows:
        cells, medians = "", []
        for t in trees:
            s = out[(t, row)]
            medians.append(statistics.median(s))
            lo, hi = f"{min(s):.{digits}f}", f"{max(s):.{digits}f}"
            cells += f"{medians[-1]:>12.{max(1, digits)}f} ({lo}–{hi})".rjust(30)
        ratio = ""
        if len(trees) == 2:  # a row shorter than a clock tick (10 ms) may read 0
            ratio = f"{medians[0] / medians[1]:>8.2f}" if medians[1] else f"{'-':>8}"
        print(f"{row:<10}{cells}{ratio}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.server_cpu", description=__doc__.split("\n")[0])
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent,
                   help="pynfsd source tree to run the server from (default: this one)")
    p.add_argument("--compare", type=Path, help="a second pynfsd tree, sampled alternately")
    p.add_argument("--ops", type=int, default=2000, help="operations per sample (1 MiB rows: /8)")
    p.add_argument("--samples", type=int, default=5, help="samples per row and tree (default 5)")
    p.add_argument("--conns", type=int, default=2, help="connections (default 2)")
    p.add_argument("--depth", type=int, default=4, help="COMPOUNDs in flight per connection")
    p.add_argument("--gap-us", type=float, default=0.0,
                   help="pause of each slot between its operations, in µs (a slower client's "
                        "pace: the server idles between calls, as under the emulated guest)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {','.join(ROWS)}")
    p.add_argument("--profile", metavar="OUT",
                   help="run the servers under cProfile (all threads, CPU time): OUT.0, OUT.1 pstats")
    p.add_argument("--pyspy", metavar="OUT",
                   help="sample the servers with py-spy during the rows: OUT.0, OUT.1 (collapsed)")
    p.add_argument("--hops", action="store_true",
                   help="count the calls handed to worker threads per op instead of the CPU")
    p.add_argument("--variant", help="an experiment of bench.experiment_serve for the first tree")
    args = p.parse_args(argv)
    args.rows = [r for r in args.rows.split(",") if r]
    if unknown := set(args.rows) - set(ROWS):
        p.error(f"unknown rows: {', '.join(sorted(unknown))}")
    if {"stat", "remove", "unlink"} & set(args.rows) and "create" not in args.rows:
        p.error("stat, remove and unlink work on the files the create row makes")
    base = Path(tempfile.mkdtemp(prefix="pynfsd-bench-cpu-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        what = "worker calls" if args.hops else "µs of server CPU"
        print(f"{what} per op: median (least–most) of {args.samples} samples of "
              f"{args.ops} ops, {args.conns} conns x {args.depth} in flight")
        out = asyncio.run(run(args, base))
        trees = [args.src] + ([args.compare] if args.compare else [])
        report(out, trees, args.rows, 2 if args.hops else 0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
