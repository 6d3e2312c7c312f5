"""Kernel-client benchmark: the same guest workload against pynfsd and against NFS-Ganesha.

``python -m bench.kernel_bench [--net user|netns|both] [--size-mb N] [--files N] [--repeat K]
[--json OUT] [--workdir DIR] [--profile none|py-spy|cprofile] [--metrics [--baseline TREE]]``

For each network mode, boots the Debian guest kernel (``tests/vm``) once per server with
``bench/guest/bench.sh``; each server exports a fresh directory under the same work directory
(default under /var/tmp), so both use the same disk and filesystem. The guest times, with
caches dropped before each phase: sequential write (``dd bs=1M conv=fsync``), sequential read,
creates (``echo > f``), stats (``stat`` by name: LOOKUP + GETATTR) and removes of N files. The
host reads the server's CPU time from ``/proc/PID/stat`` at the guest's phase marks. Printed:
per-phase rates (median over repetitions), the pynfsd/Ganesha ratio against the goals (0.8x for
sequential I/O, 0.5x for metadata), server CPU seconds, and the client's NFS op counts.

The guest is TCG-emulated and shares the host's CPUs with both servers (and with whatever else
runs there): rates move with host load (printed as the 1-minute load average), while server CPU
per MiB or per operation is the steadier number for comparing the two servers.

With ``--profile`` only pynfsd runs: ``py-spy`` records each phase of repetition 1 into the
work directory (timings are then slightly perturbed), or ``cprofile`` runs the whole server
under cProfile (much slower; use it for call counts only; coroutines count one call per
resumption). ``--variant`` runs pynfsd with an experimental change patched in
(``bench.experiment_serve``). ``--metrics`` compares pynfsd with its metrics endpoint (scraped
every second) against pynfsd without, instead of Ganesha (``bench.metrics_cost``; with
``--baseline TREE`` the metrics-off server runs from another source tree). A benchmark, not a
test: nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench.cpu import cpu_seconds
from bench.experiment_serve import VARIANTS
from bench.metrics_cost import BaselinePynfsd, MeteredPynfsd
from bench.profiling import (
    CProfiledPynfsd,
    PhaseProfiler,
    PySpyProfiler,
    VariantPynfsd,
    summarize_collapsed,
)
from bench.report import (
    PHASES,
    PhaseSample,
    ServerRun,
    comparison_table,
    guest_outcome,
    ops_table,
)
from tests.vm.initramfs import assemble
from tests.vm.kernel import guest_kernel
from tests.vm.network import Network, make_network
from tests.vm.qemu import GuestVM, Transcript
from tests.vm.servers import Server, make_server, run_guest

BENCH_SH = Path(__file__).resolve().parent / "guest" / "bench.sh"
BENCH_RE = re.compile(r"^@@BENCH (\w+) (\d+) (-?\d+) (\d+)\s*$")
OPS_RE = re.compile(r"^@@OPS (\w+) (\d+)\s*$")


@dataclass(frozen=True)
class BenchParams:
    size_mb: int = 256
    files: int = 2000
    repeat: int = 1
    timeout: float = 900.0
    profile: str = "none"
    variant: str = ""
    metrics: bool = False
    baseline: str = ""
    scrape_interval: float = 1.0


class PhaseMarks:
    """The ``on_pause`` handler: server CPU time (and profiler calls) at the guest's marks."""

    def __init__(self, server: Server, profiler: PhaseProfiler) -> None:
        self.server = server
        self.profiler = profiler
        self.begin_cpu: dict[tuple[str, int], float | None] = {}
        self.phase_cpu: dict[tuple[str, int], float | None] = {}
        self.total_cpu: float | None = None

    def _pid(self) -> int:
        pid = self.server.pid
        if pid is None:
            raise RuntimeError(f"{self.server.name} is not running")
        return pid

    def __call__(self, what: str) -> None:
        words = what.split()
        if words[:2] == ["mark", "done"]:
            self.total_cpu = cpu_seconds(self._pid())
        elif len(words) == 4 and words[:2] == ["mark", "begin"]:
            key = (words[2], int(words[3]))
            self.profiler.begin(*key, self._pid())
            self.begin_cpu[key] = cpu_seconds(self._pid())
        elif len(words) == 4 and words[:2] == ["mark", "end"]:
            key = (words[2], int(words[3]))
            end, begin = cpu_seconds(self._pid()), self.begin_cpu.get(key)
            self.phase_cpu[key] = None if end is None or begin is None else end - begin
            self.profiler.end(*key, self._pid())
        else:
            raise ValueError(f"unknown pause request {what!r}")


def guest_config(server: Server, net: Network, params: BenchParams) -> dict[str, str | int]:
    return {"SERVER_IP": net.server_addr, "NFS_PORT": server.port,
            "EXPORT_PATH": str(server.export_dir), "MOUNT_EXTRA": net.mount_extra,
            "GUEST_IP": net.guest_ip, "GUEST_PREFIX": net.guest_prefix,
            "SIZE_MB": params.size_mb, "FILES": params.files, "REPEAT": params.repeat}


def new_server(name: str, workdir: Path, net: Network, params: BenchParams) -> Server:
    if name == MeteredPynfsd.name:
        return MeteredPynfsd(workdir, net, params.scrape_interval)
    if name == "pynfsd" and params.baseline:
        return BaselinePynfsd(workdir, net, Path(params.baseline))
    if name == "pynfsd" and params.profile == "cprofile":
        return CProfiledPynfsd(workdir, net, workdir / "pynfsd.pstats")
    if name == "pynfsd" and params.variant:
        return VariantPynfsd(workdir, net, params.variant)
    return make_server(name, workdir, net)


def new_profiler(name: str, workdir: Path, params: BenchParams) -> PhaseProfiler:
    if name == "pynfsd" and params.profile == "py-spy":
        return PySpyProfiler(workdir)
    return PhaseProfiler()


def parse_transcript(transcript: Transcript, marks: PhaseMarks, run: ServerRun) -> None:
    for line in transcript.lines:
        if m := BENCH_RE.match(line):
            phase, rep = m.group(1), int(m.group(2))
            run.samples.append(PhaseSample(phase, rep, int(m.group(3)), int(m.group(4)),
                                           marks.phase_cpu.get((phase, rep))))
        elif m := OPS_RE.match(line):
            run.ops[m.group(1)] = int(m.group(2))
    run.mount = guest_outcome(transcript.lines, transcript.timed_out, run.errors)
    run.errors.extend(transcript.pause_errors)
    run.cpu_total = marks.total_cpu


def run_server(name: str, net_name: str, workdir: Path, params: BenchParams) -> ServerRun:
    """Boot the guest once against server ``name``; errors are recorded, not raised."""
    kernel = guest_kernel()
    workdir.mkdir(parents=True, exist_ok=True)
    run = ServerRun(name, net_name)
    load_before = os.getloadavg()[0]
    with make_network(net_name) as net:
        server = new_server(name, workdir, net, params)
        profiler = new_profiler(name, workdir, params)
        initrd = assemble(kernel, BENCH_SH, guest_config(server, net, params),
                          workdir / "initrd.img")
        marks = PhaseMarks(server, profiler)
        vm = GuestVM(kernel, initrd, net, workdir, params.timeout, on_pause=marks)
        run.console_log, run.server_log = str(vm.console_log), str(server.log_path)
        transcript = run_guest(server, vm, run.errors, after=profiler.close)
    if isinstance(server, MeteredPynfsd):
        ok, failed = server.scrapes()
        print(f"{name}/{net_name}: {ok} scrapes, {failed} failed ({server.scrape_log})")
        if failed or not ok:
            run.errors.append(f"{failed} of {ok + failed} scrapes failed")
    parse_transcript(transcript, marks, run)
    run.host_load = (load_before, os.getloadavg()[0])
    return run


def merge_into(runs: dict[str, ServerRun], run: ServerRun) -> None:
    """Add `run` to `runs`, pooling the samples, CPU and client ops of a server run twice."""
    prior = runs.setdefault(run.server, run)
    if prior is run:
        return
    reps = max((s.rep for s in prior.samples), default=0)
    prior.samples += [replace(s, rep=s.rep + reps) for s in run.samples]
    prior.cpu_total = None if None in (prior.cpu_total, run.cpu_total) else \
        (prior.cpu_total or 0.0) + (run.cpu_total or 0.0)
    prior.errors += run.errors
    for op_name, n in run.ops.items():
        prior.ops[op_name] = prior.ops.get(op_name, 0) + n


def print_runs(net_name: str, runs: dict[str, ServerRun], params: BenchParams) -> None:
    ours = runs[MeteredPynfsd.name] if params.metrics else runs["pynfsd"]
    other = "pynfsd" if params.metrics else "ganesha"
    peer = runs.get(other, ServerRun(other, net_name))
    print(f"\n== network {net_name}: {params.size_mb} MiB, {params.files} files, "
          f"{params.repeat} repetition(s), median rates; profile={params.profile}"
          f"{'; pynfsd variant ' + params.variant if params.variant else ''} ==")
    for run in (ours, peer):
        print(f"{run.server}: host load {run.host_load[0]:.1f} -> {run.host_load[1]:.1f} "
              f"({os.cpu_count()} CPUs); mount: {run.mount}")
    print(comparison_table(ours, peer))
    print()
    print(ops_table(ours, peer))
    for run in (ours, peer):
        for err in run.errors:
            print(f"ERROR [{run.server}/{net_name}] {err} (console: {run.console_log}, "
                  f"server log: {run.server_log})")


def print_profiles(workdir: Path) -> None:
    for phase in PHASES:
        path = workdir / f"pyspy-{phase}.txt"
        if path.exists():
            print(summarize_collapsed(path))
    pstats_file = workdir / "pynfsd.pstats"
    if pstats_file.exists():
        print(f"cProfile stats: python -m pstats {pstats_file}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="both", choices=["user", "netns", "both"])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, help="per guest boot")
    parser.add_argument("--profile", default="none", choices=["none", "py-spy", "cprofile"])
    parser.add_argument("--variant", default="", choices=["", *VARIANTS],
                        help="experiment: run pynfsd with this change patched in")
    parser.add_argument("--metrics", action="store_true",
                        help="instead of Ganesha, compare pynfsd with --metrics (scraped every "
                        "second) against pynfsd without (bench.metrics_cost)")
    parser.add_argument("--baseline", default="", metavar="TREE",
                        help="with --metrics: run the metrics-off pynfsd from this source tree")
    parser.add_argument("--scrape-interval", type=float, default=1.0, metavar="SECONDS",
                        help="with --metrics: seconds between scrapes (default 1)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="default: a new /var/tmp/pynfsd-bench-<time>")
    parser.add_argument("--json", type=Path, default=None, help="write all samples here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = BenchParams(args.size_mb, args.files, args.repeat, args.timeout, args.profile,
                         args.variant, args.metrics, args.baseline, args.scrape_interval)
    root = args.workdir or Path(f"/var/tmp/pynfsd-bench-{time.strftime('%Y%m%d-%H%M%S')}")
    nets = ["user", "netns"] if args.net == "both" else [args.net]
    servers = ["pynfsd"] if params.profile != "none" else ["pynfsd", "ganesha"]
    if params.metrics:
        servers = ["pynfsd", MeteredPynfsd.name, MeteredPynfsd.name, "pynfsd"]  # A B B A
    results: dict[str, dict[str, ServerRun]] = {}
    for net_name in nets:
        results[net_name] = {}
        for i, s in enumerate(servers):
            where = f"{net_name}-{s}" + (f"-{i}" if params.metrics else "")
            run = run_server(s, net_name, root / where, params)
            merge_into(results[net_name], run)
        print_runs(net_name, results[net_name], params)
        print_profiles(root / f"{net_name}-pynfsd")
    if args.json:
        doc = {"params": asdict(params), "workdir": str(root),
               "runs": {n: {s: asdict(r) for s, r in rs.items()} for n, rs in results.items()}}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    failed = any(r.errors or not r.samples for rs in results.values() for r in rs.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
