"""``python -m bench.scale``: memory per client and per-operation cost as the client count grows.

    python -m bench.scale [--clients 100,1000,5000] [--files 10] [--locks 10]
                          [--json OUT] [--inprocess|--process] [--profile PREFIX]

For each client count C a fresh server is started and C logical clients (many per TCP
connection) each run SETCLIENTID+CONFIRM, open F files, take L non-overlapping locks per file
and RENEW (see `bench.scale_workload`).  Reported per C:

- memory per client: what the server kept, divided by C, and split into bytes per client id,
  per open and per lock (the growth after each phase).  ``--process`` (the default) reads
  VmRSS of a real ``python -m pynfsd serve``; ``--inprocess`` uses tracemalloc on an in-process
  server and counts the state manager's own live allocations (``state``) and everything
  allocated under a server package (``server``), in a second, traced pass so that tracing
  does not slow the timed one.
- per phase: ops/s and µs/op (wall clock at the given concurrency) and, in process mode,
  the server's CPU µs/op and how busy it was (server CPU / wall).

The goal from issue 3: under 20 KiB per client, and flat per-op cost as C grows.
``--profile PREFIX`` writes ``PREFIX-<mode>-<C>.pstats`` (process mode: the server alone
under ``bench.profiled_serve``; in-process: the timed pass, client and server) and prints the
largest C's top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import pstats
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.scale_targets import InProcessTarget, ProcessTarget, Target
from bench.scale_workload import Fleet, PhaseResult, Shape, Workload, warm_up
from pynfsd.client.session import ClientSession

GOAL_KIB_PER_CLIENT = 20


@dataclass
class RunResult:
    """One client count: phase timings and the memory probes (bytes) after each phase."""

    mode: str
    clients: int
    connections: int
    phases: list[PhaseResult]
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> probe -> bytes
    top_allocations: list[tuple[str, int, int]] = field(default_factory=list)
    wall_seconds: float = 0.0

    def per_client_kib(self, probe: str) -> float | None:
        base, end = self.memory.get("baseline", {}), self.memory.get("renew", {})
        if probe not in base or probe not in end:
            return None
        return (end[probe] - base[probe]) / self.clients / 1024

    def growth(self, probe: str, before: str, after: str) -> int | None:
        a, b = self.memory.get(before, {}), self.memory.get(after, {})
        return b[probe] - a[probe] if probe in a and probe in b else None


# ------------------------------------------------------------------ one run


async def drive(target: Target, clients: int, shape: Shape, per_conn: int,
                traced: InProcessTarget | None = None) -> tuple[list[PhaseResult], dict[str, dict[str, int]], int]:
    """Warm up, then run every phase with `clients` logical clients; memory after each phase."""
    conns = await target.connect(max(1, math.ceil(clients / per_conn)))
    try:
        probe = ClientSession(conns[0], b"scale-probe")
        dir_fh = await probe.lookup_path(str(target.export))
        await warm_up(conns[0], dir_fh, shape)
        if traced is not None:
            traced.start_tracing()
        memory = {"baseline": target.memory()}
        workload = Workload(Fleet.build(conns, clients, dir_fh, f"c{clients}"), shape, target.cpu)
        phases: list[PhaseResult] = []
        for run in workload.phases():
            phases.append(await run())
            memory[phases[-1].name] = target.memory()
        return phases, memory, len(conns)
    finally:
        for c in conns:
            await c.close()


def run_process(clients: int, shape: Shape, per_conn: int, profile: str | None) -> RunResult:
    pstats_out = Path(f"{profile}-process-{clients}.pstats") if profile else None
    target = ProcessTarget(pstats_out)
    t0 = time.perf_counter()
    try:
        phases, memory, nconn = asyncio.run(drive(target, clients, shape, per_conn))
    except Exception:
        print(target.log_tail(), file=sys.stderr)
        raise
    finally:
        target.close()
    return RunResult("process", clients, nconn, phases, memory, wall_seconds=time.perf_counter() - t0)


def run_inprocess(clients: int, shape: Shape, per_conn: int, profile: str | None, trace: bool) -> RunResult:
    t0 = time.perf_counter()
    timed = InProcessTarget(trace=False)
    prof = cProfile.Profile() if profile else None
    try:
        if prof:
            prof.enable()
        phases, _, nconn = asyncio.run(drive(timed, clients, shape, per_conn))
    finally:
        if prof:
            prof.disable()
            prof.dump_stats(f"{profile}-inprocess-{clients}.pstats")
        timed.close()
    result = RunResult("inprocess", clients, nconn, phases)
    if trace:
        traced = InProcessTarget(trace=True)
        try:
            _, result.memory, _ = asyncio.run(drive(traced, clients, shape, per_conn, traced))
            result.top_allocations = traced.top_allocations()
        finally:
            traced.close()
    result.wall_seconds = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------ reporting


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def phase_table(results: list[RunResult]) -> str:
    head = f"{'clients':>7} {'phase':<12} {'ops':>8} {'compounds':>9} {'sec':>7} {'ops/s':>8} {'us/op':>8} {'srv-cpu us/op':>13} {'srv busy':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        for p in r.phases:
            busy = p.server_cpu / p.seconds if p.server_cpu is not None and p.seconds else None
            lines.append(f"{r.clients:>7} {p.name:<12} {p.ops:>8} {p.compounds:>9} {p.seconds:>7.2f} "
                         f"{p.ops_per_s:>8.0f} {p.us_per_op:>8.1f} {_fmt(p.cpu_us_per_op, '13.1f')} "
                         f"{_fmt(busy, '8.0%')}")
    return "\n".join(lines)


def memory_table(results: list[RunResult], shape: Shape) -> str:
    probes = sorted({k for r in results for k in r.memory.get("baseline", {})})
    head = f"{'clients':>7} {'probe':<7} {'KiB/client':>10} {'B/clientid':>10} {'B/open':>8} {'B/lock':>8} {'total MiB':>9}  goal"
    lines = [head, "-" * len(head)]
    for r in results:
        for probe in probes:
            kib = r.per_client_kib(probe)
            cid, opn, lck = (r.growth(probe, a, b) for a, b in
                             (("baseline", "setclientid"), ("setclientid", "open"), ("open", "lock")))
            total = r.growth(probe, "baseline", "renew")
            n_open, n_lock = r.clients * shape.files, r.clients * shape.files * shape.locks
            ok = "-" if kib is None else ("ok" if kib < GOAL_KIB_PER_CLIENT else f"> {GOAL_KIB_PER_CLIENT} KiB")
            lines.append(f"{r.clients:>7} {probe:<7} {_fmt(kib, '10.2f')} "
                         f"{_fmt(None if cid is None else cid / r.clients, '10.0f')} "
                         f"{_fmt(None if opn is None else opn / n_open, '8.0f')} "
                         f"{_fmt(None if lck is None else lck / n_lock, '8.0f')} "
                         f"{_fmt(None if total is None else total / 2**20, '9.1f')}  {ok}")
    return "\n".join(lines)


def allocation_table(r: RunResult) -> str:
    lines = [f"state manager's largest live allocation sites at {r.clients} clients:"]
    lines += [f"  {size / r.clients:9.0f} B/client {count:>9} blocks  {where}" for where, size, count in r.top_allocations]
    return "\n".join(lines)


def print_profile(path: str, limit: int = 25) -> None:
    print(f"\n--- {path}: top {limit} by own time ---")
    pstats.Stats(path, stream=sys.stdout).strip_dirs().sort_stats("tottime").print_stats(limit)
    print(f"--- {path}: top {limit} server functions by cumulative time ---")
    server = r"pynfsd/(nfs4|rpc|fs|exports)/"
    pstats.Stats(path, stream=sys.stdout).sort_stats("cumulative").print_stats(server, limit)


def to_json(results: list[RunResult], shape: Shape) -> dict[str, Any]:
    def run(r: RunResult) -> dict[str, Any]:
        d = asdict(r)
        for p, src in zip(d["phases"], r.phases, strict=True):
            p.update(ops_per_s=src.ops_per_s, us_per_op=src.us_per_op, server_cpu_us_per_op=src.cpu_us_per_op)
        d["kib_per_client"] = {k: r.per_client_kib(k) for k in r.memory.get("baseline", {})}
        return d

    return {"shape": asdict(shape), "goal_kib_per_client": GOAL_KIB_PER_CLIENT, "runs": [run(r) for r in results]}


# ------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--clients", default="100,1000", help="comma-separated client counts (default 100,1000)")
    p.add_argument("--files", type=int, default=10, help="open files per client (default 10)")
    p.add_argument("--locks", type=int, default=10, help="locks per open file (default 10)")
    p.add_argument("--renews", type=int, default=3, help="RENEW rounds per client (default 3)")
    p.add_argument("--shared", action="store_true", help="all clients open the same files")
    p.add_argument("--concurrency", type=int, default=64, help="COMPOUNDs in flight (default 64)")
    p.add_argument("--clients-per-conn", type=int, default=100, help="logical clients per connection")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--process", dest="mode", action="store_const", const="process",
                      help="drive a real server process over TCP (default)")
    mode.add_argument("--inprocess", dest="mode", action="store_const", const="inprocess",
                      help="drive an in-process server; memory by tracemalloc")
    p.set_defaults(mode="process")
    p.add_argument("--no-trace", action="store_true", help="in-process: skip the traced memory pass")
    p.add_argument("--profile", metavar="PREFIX", help="write PREFIX-<mode>-<C>.pstats and print hot spots")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    shape = Shape(args.files, args.locks, args.renews, args.shared, args.concurrency)
    results: list[RunResult] = []
    for c in counts:
        if args.mode == "process":
            r = run_process(c, shape, args.clients_per_conn, args.profile)
        else:
            r = run_inprocess(c, shape, args.clients_per_conn, args.profile, not args.no_trace)
        results.append(r)
        print(f"[{r.mode}] {c} clients over {r.connections} connections: {r.wall_seconds:.1f} s", file=sys.stderr)
    print(f"mode={args.mode} files={shape.files} locks/file={shape.locks} shared={shape.shared} "
          f"concurrency={shape.concurrency}\n")
    print(phase_table(results) + "\n")
    print(memory_table(results, shape))
    if results and results[-1].top_allocations:
        print("\n" + allocation_table(results[-1]))
    if args.profile and results:
        print_profile(f"{args.profile}-{args.mode}-{results[-1].clients}.pstats")
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results, shape), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
