"""Kernel-client dd benchmark under sys, krb5, krb5i and krb5p: pynfsd against NFS-Ganesha.

``python -m bench.kernel_krb5_bench [--net user|netns] [--size-mb N] [--repeat K] [--rounds R]
[--servers pynfsd,ganesha] [--phase-timeout S] [--retries R] [--workdir DIR] [--json OUT]``

One guest boot per server and flavour (``tests/vm``, the Debian kernel in qemu, rpc.gssd from
``tests/vm/krb5guest.py``), each server exporting ``sec=sys:krb5:krb5i:krb5p`` with the same
throwaway realm's keys (Ganesha: ``NFS_KRB5 { Active_krb5 = true; }``, ``SecType = sys, krb5,
krb5i, krb5p``). The guest mounts the flavour's own subdirectory, writes N MiB with ``dd
conv=fsync`` and reads it back after dropping caches, K times
(``tests/vm/guest/krb5_bench.sh``); the host reads the server's CPU time from
``/proc/PID/stat`` at the guest's marks. A phase that does not end within ``--phase-timeout``
stops that boot and the server is restarted, so one stuck flavour costs only itself; the
flavour is booted again ``--retries`` times (samples of every boot count). ``--rounds R``
measures every server R times in alternating order (A B, B A, A B, ...), so a drift in host
load during the run weighs on both servers alike; the samples of all rounds are pooled. Printed:
median MB/s per phase and flavour, ratios to sys and pynfsd/Ganesha (goal: >= 1.0x for every
flavour), server CPU seconds per GiB moved (the krb5p rows are the ones the issue asks for),
and each server's log lines about GSS or errors.

The client is TCG-emulated: under krb5i/krb5p its own crypto is the bound, and rates move with
host load (printed). Server CPU per GiB is the steadier figure. Nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.cpu import cpu_seconds
from tests.vm.initramfs import GUEST
from tests.vm.kernel import guest_kernel
from tests.vm.krb5guest import GuestRealm, assemble_krb5, guest_config, krb5_setup
from tests.vm.qemu import GuestVM, Transcript
from tests.vm.servers import Server

BENCH_SH = GUEST / "krb5_bench.sh"
SECS = ("sys", "krb5", "krb5i", "krb5p")
PHASES = ("write", "read")
KBENCH_RE = re.compile(r"^@@KBENCH (\w+) (\w+) (\d+) (\d+) (-?\d+)\s*$")
GIB = 1 << 30


@dataclass(frozen=True)
class Params:
    size_mb: int = 128
    repeat: int = 1
    timeout: float = 1200.0        # per guest boot
    phase_timeout: float = 120.0   # one dd phase; a stuck server costs no more than this
    retries: int = 1               # boots of a flavour again after a failed boot


@dataclass
class Sample:
    phase: str
    sec: str
    rep: int
    nbytes: int
    centis: int
    cpu: float | None   # server CPU seconds during the phase

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / max(self.centis, 1) * 100


@dataclass
class ServerResult:
    server: str
    network: str
    samples: list[Sample] = field(default_factory=list)
    mounts: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    log_notes: list[str] = field(default_factory=list)
    host_load: tuple[float, float] = (0.0, 0.0)
    workdir: str = ""

    def rate(self, phase: str, sec: str) -> float | None:
        rates = [s.mb_per_s for s in self.samples if (s.phase, s.sec) == (phase, sec)]
        return statistics.median(rates) if rates else None

    def cpu_per_gib(self, phase: str, sec: str) -> float | None:
        per = [s.cpu * GIB / s.nbytes for s in self.samples
               if (s.phase, s.sec) == (phase, sec) and s.cpu is not None]
        return statistics.median(per) if per else None


class CpuMarks:
    """``on_pause``: the server's CPU seconds at ``mark begin|end PHASE SEC REP``; ``stuck()``
    names a phase that began more than ``limit`` seconds ago and has not ended."""

    def __init__(self, server: Server, limit: float = 240.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.limit = limit
        self.clock = clock
        self.begin: dict[tuple[str, str, int], float | None] = {}
        self.spent: dict[tuple[str, str, int], float | None] = {}
        self.open: tuple[str, float] | None = None   # (phase, when it began)

    def __call__(self, what: str) -> None:
        words = what.split()
        if len(words) != 5 or words[0] != "mark" or words[1] not in ("begin", "end"):
            raise ValueError(f"unknown pause request {what!r}")
        key = (words[2], words[3], int(words[4]))
        now = cpu_seconds(self.server.pid) if self.server.pid is not None else None
        if words[1] == "begin":
            self.begin[key] = now
            self.open = (" ".join(words[2:]), self.clock())
        else:
            start = self.begin.get(key)
            self.spent[key] = None if now is None or start is None else now - start
            self.open = None

    def stuck(self) -> str | None:
        if self.open is not None and self.clock() - self.open[1] > self.limit:
            return f"phase {self.open[0]} still running after {self.limit:.0f}s"
        if self.server.pid is None:
            return f"{self.server.name} exited"
        return None


def parse(transcript: Transcript, marks: CpuMarks, result: ServerResult) -> None:
    done = False
    for line in transcript.lines:
        if m := KBENCH_RE.match(line):
            phase, sec, rep = m.group(1), m.group(2), int(m.group(3))
            result.samples.append(Sample(phase, sec, rep, int(m.group(4)), int(m.group(5)),
                                         marks.spent.get((phase, sec, rep))))
        elif line.startswith("@@MOUNT "):
            sec, _, mount = line[len("@@MOUNT "):].partition(" ")
            result.mounts[sec] = mount
        elif line.startswith("@@BENCHFAIL"):
            result.errors.append(line)
        done = done or line.startswith("@@KBENCHDONE")
    if transcript.aborted:
        result.errors.append(f"VM stopped: {transcript.aborted}")
    if transcript.timed_out:
        result.errors.append("the VM hit its timeout")
    if not done and not result.errors:
        result.errors.append("the guest did not finish the benchmark")
    result.errors.extend(transcript.pause_errors)


def log_notes(path: Path, limit: int = 12) -> list[str]:
    """Distinct log lines about Kerberos/GSS or at a serious level (Ganesha CRIT/MAJ, pynfsd
    WARNING/ERROR), with counts; minus Ganesha's start-up noise here (no D-Bus, UDP, RADOS)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return [f"(no log at {path})"]
    pick = re.compile(r"GSS|pynfsd\.(rpc\.)?gss|CRIT|MAJ|WARN|ERROR|Traceback")
    noise = re.compile(r":DBUS :|Cannot register NFS V4 on UDP|RADOS|^==== start|keytab")
    stamp = re.compile(r"^[\d/:, -]+(epoch \w+ : \S+ : nfs-ganesha-\d+)?|0x[0-9a-f]+")
    counts: dict[str, int] = {}
    for line in lines:
        if pick.search(line) and not noise.search(line):
            key = stamp.sub("", line)
            counts[key] = counts.get(key, 0) + 1
    notes = [f"(x{n}) {text}" for text, n in counts.items()]
    return notes[:limit] or [f"nothing about krb5/GSS and no errors in {path}"]


def boot_one(server: Server, realm: GuestRealm, sec: str, workdir: Path, params: Params,
             result: ServerResult) -> bool:
    """One guest boot measuring flavour ``sec``; True if it finished cleanly."""
    kernel = guest_kernel()
    workdir.mkdir(parents=True, exist_ok=True)
    config = guest_config(server, realm.network, SECS=sec, SIZE_MB=params.size_mb,
                          REPEAT=params.repeat)
    initrd = assemble_krb5(kernel, BENCH_SH, config, realm, workdir / "initrd.img")
    marks = CpuMarks(server, params.phase_timeout)
    vm = GuestVM(kernel, initrd, realm.network, workdir, params.timeout, on_pause=marks,
                 watchdog=marks.stuck)
    errors_before = len(result.errors)
    try:
        transcript = vm.run()
    except Exception as exc:
        transcript = Transcript()
        result.errors.append(f"{sec}: {exc!r}")
    parse(transcript, marks, result)
    result.errors[errors_before:] = [f"[{sec}] {e}" for e in result.errors[errors_before:]]
    return len(result.errors) == errors_before


def run_server(name: str, net_name: str, workdir: Path, params: Params) -> ServerResult:
    """One guest boot per flavour against server ``name`` (restarted after a failed boot and
    the flavour booted again up to ``params.retries`` times); errors are recorded, not raised."""
    result = ServerResult(name, net_name, workdir=str(workdir))
    load_before = os.getloadavg()[0]
    with krb5_setup(name, net_name, workdir, sys_too=True) as (realm, server):
        for sec in SECS:
            (server.export_dir / sec).mkdir(parents=True, exist_ok=True)
        try:
            server.start()
            for sec in SECS:
                for attempt in range(1 + params.retries):
                    guest_dir = workdir / f"guest-{sec}" / str(attempt)
                    if boot_one(server, realm, sec, guest_dir, params, result):
                        break
                    server.restart()
        except Exception as exc:
            result.errors.append(repr(exc))
        finally:
            server.stop()
    log = workdir / ("ganesha.nfsd.log" if name == "ganesha" else f"{name}.log")
    result.log_notes = log_notes(log)
    result.host_load = (load_before, os.getloadavg()[0])
    return result


def merge(a: ServerResult, b: ServerResult) -> ServerResult:
    """The pooled result of two rounds against one server."""
    return ServerResult(
        a.server, a.network, a.samples + b.samples, {**a.mounts, **b.mounts},
        a.errors + b.errors, a.log_notes + [n for n in b.log_notes if n not in a.log_notes],
        (a.host_load[0], b.host_load[1]), f"{a.workdir} {b.workdir}")


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def table(ours: ServerResult, peer: ServerResult) -> str:
    head = ("| flavour | phase | pynfsd MB/s | x sys | Ganesha MB/s | x sys | pynfsd/Ganesha "
            "(goal >= 1.0) | pynfsd CPU s/GiB | Ganesha CPU s/GiB |")
    rows = [head, "|" + "---|" * 9]
    for sec in SECS:
        for phase in PHASES:
            mine, theirs = ours.rate(phase, sec), peer.rate(phase, sec)
            vs = _ratio(mine, theirs)
            mark = "" if vs is None else (" ok" if vs >= 1.0 else " BELOW")
            rows.append(
                f"| {sec} | {phase} | {_fmt(mine)} | {_fmt(_ratio(mine, ours.rate(phase, 'sys')), '.2f', 'x')} "
                f"| {_fmt(theirs)} | {_fmt(_ratio(theirs, peer.rate(phase, 'sys')), '.2f', 'x')} "
                f"| {_fmt(vs, '.2f', 'x')}{mark} | {_fmt(ours.cpu_per_gib(phase, sec), '.2f')} "
                f"| {_fmt(peer.cpu_per_gib(phase, sec), '.2f')} |")
    return "\n".join(rows)


def report(results: dict[str, ServerResult], size_mb: int, repeat: int) -> None:
    ours = results.get("pynfsd", ServerResult("pynfsd", "-"))
    peer = results.get("ganesha", ServerResult("ganesha", "-"))
    print(f"\n== kernel client dd {size_mb} MiB, {repeat} repetition(s), median; "
          f"network {ours.network} ==")
    for res in results.values():
        print(f"{res.server}: host load {res.host_load[0]:.1f} -> {res.host_load[1]:.1f} "
              f"({os.cpu_count()} CPUs); workdir {res.workdir}")
        for sec, mount in sorted(res.mounts.items()):
            print(f"  mount {sec}: {mount}")
    print(table(ours, peer))
    for res in results.values():
        for note in res.log_notes:
            print(f"LOG [{res.server}] {note}")
        for err in res.errors:
            print(f"ERROR [{res.server}] {err}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.kernel_krb5_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="netns", choices=["user", "netns"])
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each server this many times, in alternating order")
    parser.add_argument("--servers", default="pynfsd,ganesha")
    parser.add_argument("--timeout", type=float, default=1200.0, help="per guest boot")
    parser.add_argument("--phase-timeout", type=float, default=120.0,
                        help="stop the guest when one dd phase takes longer")
    parser.add_argument("--retries", type=int, default=1,
                        help="boot a flavour again (server restarted) after a failed boot")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="default: a new /var/tmp/pynfsd-krb5-bench-<time>")
    parser.add_argument("--json", type=Path, default=None, help="write all samples here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.workdir or Path(f"/var/tmp/pynfsd-krb5-bench-{time.strftime('%Y%m%d-%H%M%S')}")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    params = Params(args.size_mb, args.repeat, args.timeout, args.phase_timeout, args.retries)
    results: dict[str, ServerResult] = {}
    for rnd in range(args.rounds):
        for name in servers if rnd % 2 == 0 else servers[::-1]:
            sub = root / name if args.rounds == 1 else root / f"{name}-round{rnd + 1}"
            res = run_server(name, args.net, sub, params)
            results[name] = merge(results[name], res) if name in results else res
    report(results, args.size_mb, args.repeat * args.rounds)
    if args.json:
        doc = {"size_mb": args.size_mb, "repeat": args.repeat, "net": args.net,
               "results": {s: asdict(r) for s, r in results.items()}}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if any(r.errors or not r.samples for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
