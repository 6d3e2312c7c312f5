"""Saturation: ops/s of one server core, pynfsd against NFS-Ganesha, from a native generator.

``python -m bench.saturation [--rounds 3] [--seconds 5] [--warmup 1] [--conns 4] [--depth 16]
[--ops GETATTR,LOOKUP,OPEN+CLOSE,READ] [--peer ganesha|none] [--server-cpu 0] [--gen-cpu 1]
[--plot PNG] [--json OUT] [--workdir DIR]``

Each round starts each server afresh (the order alternates between rounds), pinned to
``--server-cpu`` with ``taskset`` (every thread of it), over a fresh export on loopback with
AUTH_SYS (sec=sys): pynfsd as ``python -m pynfsd serve``, Ganesha with its VFS FSAL
(`tests.vm.servers`). For each operation `bench.sat_setup` prepares the calls with pynfsd's
client, and the C generator (`bench.sat_gen`, pinned to ``--gen-cpu``) keeps ``conns × depth``
of them in flight: after a warm-up it measures ``--seconds``, while the server's and its own
CPU time are read from ``/proc``. A run counts only if the generator used less than 80 % of its
core while the server used at least 90 % of its own (so the server, not the generator, was the
limit) and no reply was an error; each run's line says whether it counts and why not.

Printed: a line per run, then per operation the median ops/s of each server over the rounds
that count with the lowest and highest, and the ratio pynfsd ÷ Ganesha (median and range of
the per-round ratios; goal ≥ 1.0×). ``--plot`` draws the ops/s of both servers per operation.
Other load on the machine lowers the server's share of its core: ops per server CPU-second is
printed too. A benchmark, not a test: nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import sat_gen
from bench.sat_report import RunResult, plot, summarize, table, to_json
from bench.sat_setup import OPERATIONS, make_files, prepare
from pynfsd.client.nfs4 import Nfs4Failure
from pynfsd.rpc.client import RpcError
from tests.vm.network import UserNet
from tests.vm.servers import GaneshaServer, PynfsdServer, Server, ServerError

LEASE, GRACE = 90, 10


class PinnedNet(UserNet):
    """Loopback, every server command run under ``taskset -c CPU`` (all its threads pinned)."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu

    def wrap(self, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(self.cpu), *argv]


SERVERS: dict[str, type[Server]] = {"pynfsd": PynfsdServer, "ganesha": GaneshaServer}


def run_op(server: Server, op_name: str, rnd: int, args: argparse.Namespace,
           exe: Path) -> RunResult:
    load = sat_gen.Spec(args.conns, args.depth, args.warmup, args.seconds)
    tag = f"{server.name}-{rnd}-{op_name}-{os.getpid()}"
    try:
        spec = prepare(op_name, server.port, server.export_dir, load, tag)
        pid = server.pid
        if pid is None:
            raise ServerError(f"{server.name} is not running:\n{server.log_tail()}")
        window = sat_gen.run(exe, spec, server.port, pid, args.gen_cpu, args.server_cpu,
                             server.workdir)
        return RunResult(server.name, op_name, rnd, window)
    except (sat_gen.GenError, Nfs4Failure, RpcError, OSError, ServerError, RuntimeError) as e:
        return RunResult(server.name, op_name, rnd, None, f"{type(e).__name__}: {e}")


def run_server(kind: str, rnd: int, args: argparse.Namespace, exe: Path,
               workdir: Path) -> list[RunResult]:
    """Start server `kind` pinned, drive every operation, stop it; failures are results."""
    wd = workdir / f"round-{rnd}" / kind
    server = SERVERS[kind](wd, PinnedNet(args.server_cpu), lease=LEASE, grace=GRACE)
    make_files(server.export_dir, args.conns * args.depth)
    out = []
    try:
        server.start()
    except ServerError as e:
        return [RunResult(kind, op_name, rnd, None, str(e)) for op_name in args.ops]
    try:
        for op_name in args.ops:
            out.append(run_op(server, op_name, rnd, args, exe))
            print(out[-1].line(), flush=True)
    finally:
        server.stop()
    return out


def machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")
    ganesha = ""
    if shutil.which("ganesha.nfsd"):
        done = subprocess.run(["ganesha.nfsd", "-v"], capture_output=True, text=True)
        ganesha = next(iter((done.stdout + done.stderr).strip().splitlines()), "")
    return {"cpu": model, "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "ganesha": ganesha}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    ap.add_argument("--conns", type=int, default=4, help="TCP connections")
    ap.add_argument("--depth", type=int, default=16, help="calls in flight per connection")
    ap.add_argument("--ops", default=",".join(OPERATIONS))
    ap.add_argument("--peer", choices=["ganesha", "none"], default="ganesha")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--gen-cpu", type=int, default=1)
    ap.add_argument("--plot", metavar="PNG")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--workdir", help="where the exports go (default: a new directory "
                    "under /var/tmp, removed at the end)")
    args = ap.parse_args(argv)
    args.ops = [o for o in args.ops.split(",") if o]
    if unknown := set(args.ops) - set(OPERATIONS):
        ap.error(f"unknown operations {sorted(unknown)}; known: {', '.join(OPERATIONS)}")
    if args.conns * args.depth > 4096:
        ap.error("at most 4096 calls in flight")
    args.peer = None if args.peer == "none" else args.peer
    return args


def run_rounds(args: argparse.Namespace, exe: Path, workdir: Path) -> list[RunResult]:
    kinds = ["pynfsd"] + ([args.peer] if args.peer else [])
    results: list[RunResult] = []
    for rnd in range(1, args.rounds + 1):
        for kind in kinds if rnd % 2 else kinds[::-1]:
            results += run_server(kind, rnd, args, exe, workdir)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer and shutil.which("ganesha.nfsd") is None:
        print("ganesha.nfsd is not installed (scripts/vm-deps.sh installs it)", file=sys.stderr)
        return 2
    exe = sat_gen.build()
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta: dict[str, Any] = {"machine": machine(), "started": started, "args": vars(args)}
    print(f"saturation: {meta['machine']}; server on CPU {args.server_cpu}, generator on CPU "
          f"{args.gen_cpu}; {args.conns} connections × {args.depth} in flight; "
          f"{args.warmup} s warm-up + {args.seconds} s per run; load average "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="pynfsd-sat-") as tmp:
        results = run_rounds(args, exe, Path(args.workdir) if args.workdir else Path(tmp))
    load_after = os.getloadavg()
    meta["load_average"] = {"before": load_before, "after": load_after}
    rows = summarize(results, args.ops, "pynfsd", args.peer)
    print(f"\nload average at the end {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f}\n{table(rows, 'pynfsd', args.peer)}")
    if args.plot:
        plot(rows, args.plot, f"NFSv4.0 sec=sys ops/s, server pinned to one core ({started})")
        print("plot:", args.plot)
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results, rows, meta), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
