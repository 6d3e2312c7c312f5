"""Server CPU per operation with per-thread credentials: GETATTR, READ, WRITE and CREATE over
loopback by one user, or by two users whose requests interleave (so workers switch identity).

    python -m bench.authz                       # this tree
    python -m bench.authz --src /path/to/other  # another pynfsd tree (e.g. before a change)
    python -m bench.authz --compare /path/to/other  # both, servers alternating
    python -m bench.authz --micro               # the cost of one switch and of one check
    python -m bench.authz --backend             # LocalBackend calls on one thread, no RPC

Starts `pynfsd serve` from ``--src`` over a fresh directory under /tmp, drives each workload
with ``--conns`` connections of ``--depth`` COMPOUNDs in flight, and reports the server's CPU
time (``/proc/PID/stat``, all threads) per operation: the least of ``--repeat`` servers (on a
shared machine other load only ever adds), alternating between the trees with ``--compare``.  Ends only the server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.cpu import cpu_seconds
from pynfsd.client.nfs4 import Nfs4Client, op
from pynfsd.client.session import ClientSession
from pynfsd.gen import nfs4 as N
from pynfsd.rpc.client import AuthSysCred

ANON = N.stateid4(0, b"\0" * 12)
_LISTENING = re.compile(rb"listening on 127\.0\.0\.1 port (\d+)")
USERS = (61000, 61001)


def start_server(src: Path, export: Path, state: Path,
                 runner: tuple[str, ...] = ("-m", "pynfsd")) -> tuple[subprocess.Popen[bytes], int]:
    """`pynfsd serve` from tree ``src`` (through ``runner``: e.g. ``bench.profiled_serve``)."""
    log = state.with_suffix(".log")
    argv = [sys.executable, *runner, "serve", "--bind", "127.0.0.1", "--port", "0",
            "--export", f"{export} *(rw,no_root_squash,insecure)", "--state-dir", str(state),
            "--log-level", "INFO"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=src, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(src)})  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = _LISTENING.search(log.read_bytes())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(log.read_text(errors="replace"))


async def _fh(c: Nfs4Client, export: Path, *names: bytes) -> bytes:
    path = os.path.join(str(export), *map(os.fsdecode, names))
    return await ClientSession(c, b"lookup").lookup_path(path)


async def _open(c: Nfs4Client, dirfh: bytes, name: bytes) -> tuple[bytes, N.stateid4]:
    s = ClientSession(c, b"bench-" + name)
    await s.establish()
    f = await s.open(dirfh, name, create=True)
    return f.fh, f.stateid


Workload = Callable[[int], list[N.nfs_argop4]]


async def _workloads(c: Nfs4Client, export: Path, tag: str, size: int) -> dict[str, Workload]:
    dirfh = await _fh(c, export, b"pub")
    fh, sid = await _open(c, dirfh, f"f-{tag}".encode())
    data = os.urandom(size)
    await c.check([op.putfh(fh), op.write(sid, 0, data)])
    return {
        "GETATTR": lambda i: [op.putfh(fh), op.getattr(N.FATTR4_SIZE, N.FATTR4_CHANGE)],
        "READ": lambda i: [op.putfh(fh), op.read(sid, 0, size)],
        "WRITE": lambda i: [op.putfh(fh), op.write(sid, 0, data, 0)],
        "CREATE": lambda i: [op.putfh(dirfh), op.mkdir(f"d-{tag}-{i}".encode(), 0o755)],
    }


async def _drive(c: Nfs4Client, make: Workload, count: int, depth: int, base: int) -> None:
    sem = asyncio.Semaphore(depth)

    async def one(i: int) -> None:
        async with sem:
            res = await c.compound(make(base + i))
            if res.status != N.NFS4_OK:
                raise RuntimeError(N.nfsstat4_names.get(res.status, res.status))

    await asyncio.gather(*(one(i) for i in range(count)))


async def measure(pid: int, port: int, export: Path, users: int, args: argparse.Namespace) -> dict[str, float]:
    conns, loads = [], []
    for k in range(args.conns):
        uid = USERS[k % users]
        c = await Nfs4Client.connect("127.0.0.1", port, cred=AuthSysCred(uid, uid))
        conns.append(c)
        loads.append(await _workloads(c, export, f"{users}-{k}-{port}", args.size))
    out = {}
    for name in ("GETATTR", "READ", "WRITE", "CREATE"):
        per = args.ops // args.conns
        before = cpu_seconds(pid) or 0.0
        await asyncio.gather(*(_drive(c, w[name], per, args.depth, 0) for c, w in zip(conns, loads, strict=True)))
        out[name] = ((cpu_seconds(pid) or 0.0) - before) / (per * args.conns) * 1e6
    for c in conns:
        await c.close()
    return out


def _one_server(src: Path, export: Path, state: Path, users: int,
                args: argparse.Namespace) -> dict[str, float]:
    proc, port = start_server(src, export, state)
    try:
        return asyncio.run(measure(proc.pid, port, export, users, args))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def micro(n: int = 100_000) -> None:
    """Thread CPU per credential switch, per no-op assume() and per faccess_fd() check."""
    import threading

    from pynfsd.fs import creds

    fd = os.open("/", os.O_PATH)
    user, other = creds.Identity(61000, 61000, (61000,)), creds.Identity(61001, 61001, ())
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[[int], object]) -> None:
        t0 = time.thread_time()
        for i in range(n):
            fn(i)
        out[name] = (time.thread_time() - t0) / n * 1e6

    def run() -> None:
        timed("switch (user A <-> user B)", lambda i: creds.assume(user if i & 1 else other))
        timed("assume, same identity", lambda i: creds.assume(user))
        timed("faccess_fd (faccessat2)", lambda i: creds.faccess_fd(fd, os.R_OK))
        creds.assume(creds.ROOT)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    os.close(fd)
    for name, us in out.items():
        print(f"{name:>30}: {us:6.2f} us CPU")


def backend_costs(n: int, size: int) -> None:
    """Thread CPU per LocalBackend call made on one thread: as root (no switch; what a tree
    without per-thread credentials does), as one user, and as two users taking turns (a
    switch before every call).  The user owns one file and writes the other through its
    group, so both the owner shortcut and the kernel check (faccessat2) are measured."""
    import threading

    from pynfsd.fs.local import LocalBackend

    try:
        from pynfsd.fs import creds
    except ImportError:
        creds = None  # type: ignore[assignment]  # a tree from before per-thread credentials
    base = Path(tempfile.mkdtemp(prefix="pynfsd-bench-be-", dir="/tmp"))
    os.chmod(base, 0o777)
    b = LocalBackend(str(base), str(base.with_name(base.name + ".state")))
    data = os.urandom(size)
    files = {}
    for name, uid in (("own", 61000), ("grp", 0)):
        h, _, _ = b.create_file(b.root(), name.encode(), 0o664, uid, 61000, True)
        b.write(h, 0, data, False)
        files[name] = h
    modes: dict[str, list[object]] = {"root": [None]}
    if creds is not None:
        a, z = creds.Identity(61000, 61000, (61000,)), creds.Identity(61001, 61000, (61000,))
        modes.update({"1 user": [a], "2 users": [a, z]})
    ops: dict[str, Callable[[int], object]] = {
        "WRITE own": lambda i: b.write(files["own"], 0, data, False),
        "WRITE via group": lambda i: b.write(files["grp"], 0, data, False),
        "READ (worker)": lambda i: b.read(files["grp"], 0, size),
        "CREATE+REMOVE": lambda i: (b.create_file(b.root(), b"n%d" % i, 0o644, 0, 0, True),
                                    b.remove(b.root(), b"n%d" % i)),  # fmt: skip
    }
    rows: dict[str, dict[str, float]] = {}

    def run() -> None:
        for mode, idents in modes.items():
            for name, fn in ops.items():
                t0 = time.thread_time()
                for i in range(n):
                    ident = idents[i % len(idents)]
                    if ident is not None:
                        creds.assume(ident)  # type: ignore[arg-type]
                    fn(i)
                rows.setdefault(name, {})[mode] = (time.thread_time() - t0) / n * 1e6
            if creds is not None:
                creds.assume(creds.ROOT)

    try:
        t = threading.Thread(target=run)
        t.start()
        t.join()
    finally:
        b.close()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(base.with_name(base.name + ".state"), ignore_errors=True)
    print(f"{'us of thread CPU per call':<26}" + "".join(f"{m:>10}" for m in modes))
    for name, r in rows.items():
        print(f"{name:<26}" + "".join(f"{r[m]:>10.1f}" for m in modes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.authz", description=__doc__.split("\n")[0])
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent,
                   help="pynfsd source tree to run the server from (default: this one)")
    p.add_argument("--ops", type=int, default=8000, help="operations per workload (default 8000)")
    p.add_argument("--conns", type=int, default=4, help="connections, users alternating (default 4)")
    p.add_argument("--depth", type=int, default=8, help="COMPOUNDs in flight per connection")
    p.add_argument("--compare", type=Path, help="a second pynfsd tree, run alternately with --src")
    p.add_argument("--repeat", type=int, default=3, help="servers per row; the least (default 3)")
    p.add_argument("--size", type=int, default=4096, help="READ/WRITE size (default 4096)")
    p.add_argument("--micro", action="store_true", help="only the per-switch and per-check costs")
    p.add_argument("--backend", action="store_true", help="only LocalBackend calls, no RPC")
    args = p.parse_args(argv)
    if args.micro:
        micro()
        return 0
    if args.backend:
        backend_costs(args.ops, args.size)
        return 0
    base = Path(tempfile.mkdtemp(prefix="pynfsd-bench-authz-", dir="/tmp"))
    try:
        export = base / "exp"
        (export / "pub").mkdir(parents=True)
        os.chmod(base, 0o755)
        os.chmod(export / "pub", 0o777)
        print(f"us of server CPU per op ({args.ops} ops, "
              f"{args.conns} conns x {args.depth} in flight, {args.size} B I/O)")
        trees = [args.src] + ([args.compare] if args.compare else [])
        runs: dict[tuple[Path, int], list[dict[str, float]]] = {}
        for _ in range(args.repeat):
            for users in (1, 2):
                for src in trees:
                    state = base / f"state-{sum(map(len, runs.values()))}"  # fresh: no grace
                    runs.setdefault((src, users), []).append(_one_server(src, export, state, users, args))
        print(f"{'tree':<40} {'users':>5} {'GETATTR':>9} {'READ':>9} {'WRITE':>9} {'CREATE':>9}")
        for (src, users), rs in runs.items():
            r = {k: min(run[k] for run in rs) for k in rs[0]}
            cells = " ".join(f"{r[k]:>9.1f}" for k in ("GETATTR", "READ", "WRITE", "CREATE"))
            print(f"{str(src)[-40:]:<40} {users:>5} {cells}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
