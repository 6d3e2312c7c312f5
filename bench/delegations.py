"""Delegations benchmark: one kernel client opening, reading and closing the same small files
again and again, against pynfsd with ``--delegations on`` and ``off`` and against NFS-Ganesha
with delegations enabled, all in one run.

``python -m bench.delegations [--files 200] [--rounds 10] [--servers pynfsd-on,pynfsd-off,ganesha]
[--json OUT] [--workdir DIR]``

For each server, the host fills a fresh export with ``files/f0 ... f<N-1>`` (one short line
each), starts the server in a network namespace made for the run (so the server's callbacks
reach the guest) and boots the Debian guest kernel (``tests/vm``) once with
``bench/guest/delegations.sh``: it mounts (NFSv4.0, AUTH_SYS), opens one warm-up file (which
waits out a grace period, if any), then opens, reads and closes every file ``rounds`` times
with the shell's own ``read < FILE``. It reports the per-op RPC counts of its mount from
``/proc/self/mountstats`` before and after the rounds, and their duration from
``/proc/uptime``. Ganesha runs with ``NFSV4 { Delegations = true; }`` and the export's
``Delegations = readwrite``.

Printed: the RPCs sent during the rounds per operation and server, OPEN+CLOSE+GETATTR, all
RPCs and the wall time, against the goals: with delegations at least 3x fewer
OPEN+CLOSE+GETATTR RPCs than without, and no more RPCs in all than Ganesha. A benchmark, not a
test: nothing here asserts; the exit status is 1 only when a run did not complete. The guest
is TCG-emulated and shares the host's CPUs with the server, so wall times move with host load;
the RPC counts do not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.report import format_table, guest_outcome, ratio
from tests.vm.initramfs import assemble
from tests.vm.kernel import guest_kernel
from tests.vm.network import Network, make_network
from tests.vm.qemu import GuestVM, Transcript
from tests.vm.servers import GaneshaServer, PynfsdServer, Server, run_guest

SCRIPT = Path(__file__).resolve().parent / "guest" / "delegations.sh"
SERVERS = ("pynfsd-on", "pynfsd-off", "ganesha")
COUNTED = ("OPEN", "CLOSE", "GETATTR")
GOAL_FEWER = 3.0  # delegations on: at least this many times fewer OPEN+CLOSE+GETATTR than off
OPS_RE = re.compile(r"^@@OPS (before|after) (\w+) (\d+)\s*$")
TIME_RE = re.compile(r"^@@TIME (\d+)\s*$")


@dataclass
class DelegRun:
    """One guest boot against one server: the mount's RPC counts around the rounds, the time."""

    server: str
    files: int
    rounds: int
    centiseconds: int | None = None
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    mount: str = ""
    errors: list[str] = field(default_factory=list)
    console_log: str = ""
    server_log: str = ""

    def rpcs(self) -> dict[str, int]:
        """RPCs sent during the rounds, per operation (nonzero only)."""
        sent = {op: n - self.before.get(op, 0) for op, n in self.after.items()}
        return {op: n for op, n in sent.items() if n > 0}

    def counted(self) -> int:
        """OPEN + CLOSE + GETATTR sent during the rounds."""
        return sum(self.rpcs().get(op, 0) for op in COUNTED)

    def total(self) -> int:
        return sum(self.rpcs().values())

    @property
    def seconds(self) -> float | None:
        return None if self.centiseconds is None else self.centiseconds / 100


class DelegationsGanesha(GaneshaServer):
    """NFS-Ganesha with delegations on (``NFSV4 { Delegations = true; }``, the export's
    ``Delegations = readwrite``)."""

    def command(self) -> list[str]:
        argv = super().command()
        conf = self.workdir / "ganesha.conf"
        text = conf.read_text()
        for old, new in (("Minor_Versions = 0;", "Minor_Versions = 0;\n    Delegations = true;"),
                         ("Transports = TCP;", "Transports = TCP;\n    Delegations = readwrite;")):
            if text.count(old) != 1:
                raise RuntimeError(f"ganesha.conf from GANESHA_CONF: {old!r} not found once")
            text = text.replace(old, new)
        conf.write_text(text)
        return argv


def make_server(name: str, workdir: Path, net: Network) -> Server:
    """``pynfsd-on``, ``pynfsd-off`` or ``ganesha``; not yet started."""
    if name in ("pynfsd-on", "pynfsd-off"):
        return PynfsdServer(workdir, net, extra_args=["--delegations", name.split("-")[1]])
    if name == "ganesha":
        return DelegationsGanesha(workdir, net)
    raise ValueError(f"unknown server {name!r} (one of {', '.join(SERVERS)})")


def fill_export(export: Path, files: int) -> None:
    """The files the guest reads (``files/f<i>``) and the warm-up file."""
    (export / "files").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (export / "files" / f"f{i}").write_text(f"file {i}\n")
    (export / "warm").write_text("warm\n")


def parse(transcript: Transcript, run: DelegRun) -> None:
    for line in transcript.lines:
        if m := OPS_RE.match(line):
            counts = run.before if m.group(1) == "before" else run.after
            counts[m.group(2)] = int(m.group(3))
        elif m := TIME_RE.match(line):
            run.centiseconds = int(m.group(1))
    run.mount = guest_outcome(transcript.lines, transcript.timed_out, run.errors)


def run_server(name: str, workdir: Path, files: int, rounds: int,
               timeout: float = 900.0) -> DelegRun:
    """Boot the guest once against server ``name``; errors are recorded, not raised."""
    kernel = guest_kernel()
    workdir.mkdir(parents=True, exist_ok=True)
    run = DelegRun(name, files, rounds)
    with make_network("netns") as net:
        server = make_server(name, workdir, net)
        fill_export(server.export_dir, files)
        config: dict[str, str | int] = {
            "SERVER_IP": net.server_addr, "NFS_PORT": server.port,
            "EXPORT_PATH": str(server.export_dir), "MOUNT_EXTRA": net.mount_extra,
            "GUEST_IP": net.guest_ip, "GUEST_PREFIX": net.guest_prefix,
            "FILES": files, "ROUNDS": rounds}
        initrd = assemble(kernel, SCRIPT, config, workdir / "initrd.img")
        vm = GuestVM(kernel, initrd, net, workdir, timeout,
                     watchdog=lambda: None if server.pid else f"{name} exited")
        run.console_log, run.server_log = str(vm.console_log), str(server.log_path)
        transcript = run_guest(server, vm, run.errors)
    parse(transcript, run)
    return run


def ops_table(runs: list[DelegRun]) -> str:
    """RPCs per operation during the rounds, the OPEN+CLOSE+GETATTR sum, all RPCs, wall time."""
    names = sorted({op for r in runs for op in r.rpcs()})
    rows = [[op, *(str(r.rpcs().get(op, 0)) for r in runs)] for op in names]
    rows.append(["OPEN+CLOSE+GETATTR", *(str(r.counted()) for r in runs)])
    rows.append(["all RPCs", *(str(r.total()) for r in runs)])
    rows.append(["wall s", *("-" if r.seconds is None else f"{r.seconds:.2f}" for r in runs)])
    return format_table(["RPCs during the rounds", *(r.server for r in runs)], rows)


def goals(runs: list[DelegRun]) -> list[str]:
    """One line per goal that the runs at hand can judge."""
    by = {r.server: r for r in runs}
    on, off, peer = by.get("pynfsd-on"), by.get("pynfsd-off"), by.get("ganesha")
    lines = []
    if on is not None and off is not None:
        fewer = ratio(off.counted(), on.counted()) if on.counted() else float("inf")
        verdict = "ok" if fewer is not None and fewer >= GOAL_FEWER else "BELOW"
        lines.append(f"OPEN+CLOSE+GETATTR: off/on = {off.counted()}/{on.counted()} = "
                     f"{fewer:.1f}x fewer with delegations (goal >= {GOAL_FEWER:.0f}x): {verdict}")
    if on is not None and peer is not None:
        verdict = "ok" if on.total() <= peer.total() else "ABOVE"
        lines.append(f"all RPCs: pynfsd-on {on.total()}, ganesha {peer.total()} "
                     f"(goal: no more than Ganesha): {verdict}")
    return lines


def report(runs: list[DelegRun]) -> str:
    first = runs[0]
    head = (f"== delegations: {first.files} files opened, read and closed {first.rounds} times "
            f"by one kernel client (NFSv4.0, AUTH_SYS, netns) ==")
    errors = [f"ERROR [{r.server}] {e} (console: {r.console_log}, server log: {r.server_log})"
              for r in runs for e in r.errors]
    return "\n".join([head, *(f"{r.server}: mount {r.mount}" for r in runs), ops_table(runs),
                      *goals(runs), *errors])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.delegations",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma list of {', '.join(SERVERS)} (default: all three)")
    parser.add_argument("--json", type=Path, default=None, help="write the runs here")
    parser.add_argument("--timeout", type=float, default=900.0, help="per guest boot")
    parser.add_argument("--workdir", type=Path, default=None, help="where each server's "
                        "export, logs and console go (default: /var/tmp/pynfsd-bench-deleg-<time>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [s for s in args.servers.split(",") if s]
    for name in names:
        if name not in SERVERS:
            raise SystemExit(f"unknown server {name!r} (one of {', '.join(SERVERS)})")
    root = args.workdir or Path(f"/var/tmp/pynfsd-bench-deleg-{time.strftime('%Y%m%d-%H%M%S')}")
    runs = [run_server(name, root / name, args.files, args.rounds, args.timeout)
            for name in names]
    print(report(runs))
    if args.json:
        doc = {"files": args.files, "rounds": args.rounds, "workdir": str(root),
               "runs": [{**asdict(r), "rpcs": r.rpcs()} for r in runs], "goals": goals(runs)}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if any(r.errors or r.centiseconds is None for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
