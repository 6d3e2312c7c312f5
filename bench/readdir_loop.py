"""``python -m bench.readdir_loop``: server CPU per READDIR over loopback, the project's client.

A real ``pynfsd serve`` (`tests.serverproc.ServerProcess`) exports a fresh directory holding
``--entries`` files; a client in this process lists it whole, READDIR after READDIR with the
attribute mask the Linux kernel client asks for, ``--listings`` times per sample. The server's
CPU (user+system, `bench.cpu`) is read before and after each sample: the table gives CPU per
listing, per READDIR and per entry, the median and the spread (min-max) of ``--samples``
samples. ``--profile OUT.pstats`` runs the server under `bench.profiled_serve` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.cpu import cpu_seconds
from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.gen import nfs4 as N
from tests.serverproc import ServerProcess

# What the Linux client's READDIR asks for (nfs4_readdir_bitmap plus FILEHANDLE/RDATTR_ERROR).
LINUX_READDIR_ATTRS = (
    N.FATTR4_TYPE, N.FATTR4_CHANGE, N.FATTR4_SIZE, N.FATTR4_FSID, N.FATTR4_RDATTR_ERROR,
    N.FATTR4_FILEHANDLE, N.FATTR4_FILEID, N.FATTR4_MODE, N.FATTR4_NUMLINKS, N.FATTR4_OWNER,
    N.FATTR4_OWNER_GROUP, N.FATTR4_RAWDEV, N.FATTR4_SPACE_USED, N.FATTR4_TIME_ACCESS,
    N.FATTR4_TIME_METADATA, N.FATTR4_TIME_MODIFY, N.FATTR4_MOUNTED_ON_FILEID,
)


async def list_dir(client: Nfs4Client, fh: bytes, maxcount: int) -> tuple[int, int]:
    """One whole listing: (READDIR RPCs, entries)."""
    cookie, verf, rpcs, entries = 0, bytes(8), 0, 0
    while True:
        res = await client.check([op.putfh(fh), op.readdir(cookie, verf, maxcount // 4, maxcount,
                                                           LINUX_READDIR_ATTRS)])
        rpcs += 1
        resok = res[1]
        verf = resok.cookieverf
        e = resok.reply.entries
        while e is not None:
            entries += 1
            cookie = e.cookie
            e = e.nextentry
        if resok.reply.eof:
            return rpcs, entries


async def run(srv: ServerProcess, sub: bytes, args: argparse.Namespace) -> list[tuple[float, int, int]]:
    client = await srv.connect()
    try:
        res = await client.check([op.putrootfh(), op.lookup(sub), op.getfh()])
        fh = res[2].object
        await list_dir(client, fh, args.maxcount)  # warm: caches, imports
        samples = []
        for _ in range(args.samples):
            before = cpu_seconds(srv.pid)
            rpcs = entries = 0
            for _ in range(args.listings):
                r, n = await list_dir(client, fh, args.maxcount)
                rpcs, entries = rpcs + r, entries + n
            after = cpu_seconds(srv.pid)
            assert before is not None and after is not None
            samples.append((after - before, rpcs, entries))
        return samples
    finally:
        await client.close()


def report(samples: list[tuple[float, int, int]], listings: int) -> None:
    per_listing = [cpu / listings * 1e3 for cpu, _, _ in samples]
    per_rpc = [cpu / rpcs * 1e3 for cpu, rpcs, _ in samples]
    per_entry = [cpu / entries * 1e6 for cpu, _, entries in samples]
    _, rpcs, entries = samples[0]
    print(f"readdir: {entries // listings} entries, {rpcs / listings:.0f} READDIR per listing")
    print("| row | per listing (ms) | per READDIR (ms) | per entry (µs) |")
    print("|---|---|---|---|")
    cells = [f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
             for v in (per_listing, per_rpc, per_entry)]
    print(f"| readdir | {' | '.join(cells)} |")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--listings", type=int, default=2)
    ap.add_argument("--maxcount", type=int, default=32768)
    ap.add_argument("--profile", help="run the server under cProfile, write pstats here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        export = base / "export"
        (export / "big").mkdir(parents=True)
        for i in range(args.entries):
            os.close(os.open(export / "big" / f"file-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
        srv = ServerProcess([f"{export} *(rw,no_root_squash,insecure,fsid=0)"], base / "state",
                            log_level="INFO")
        if args.profile:
            out = os.path.abspath(args.profile)
            srv.argv = lambda: [sys.executable, "-m", "bench.profiled_serve", out,  # type: ignore[method-assign]
                                *ServerProcess.argv(srv)[3:]]
        with srv:
            samples = asyncio.run(run(srv, b"big", args))
    report(samples, args.listings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
