"""Server CPU per operation, pynfsd against NFS-Ganesha, under the same kernel-client workloads.

``python -m bench.cpu_per_op [--secs sys,krb5p] [--rounds R] [--files N] [--entries E]
[--listings L] [--size-mb [SEC=]M,...] [--random-ops K] [--net netns|user] [--plot PNG]
[--json OUT] [--workdir DIR]``; ``--from-json OUT [--plot PNG]`` prints (and plots) an
earlier run again.

Each round boots the guest kernel (``tests/vm``, rpc.gssd from ``tests/vm/krb5guest.py``) once
per server, the two servers in alternating order (A B, B A, ...), each exporting
``sec=sys:krb5:krb5i:krb5p`` with the same throwaway realm's keys and a fresh directory per
flavour under the same work directory (same disk and filesystem). The guest
(``bench/guest/cpu_per_op.sh``) runs, per flavour: create, stat, rename and unlink of N files,
readdir of a directory of E entries (made by the host before the boot), listed L times from
cold caches, a sequential write and read of M MiB (dd bs=1M; M per flavour, so that each phase
gets enough server CPU), and K random 4 KiB O_DIRECT reads and writes in that file. The file
operations and the random I/O come from ``bench/guest/fsops.c``, compiled static on the host
and added to the guest's initramfs as one more layer (no fork per operation in the guest).
The host reads the server process's CPU time (user+system, all threads, ``/proc/PID/stat``)
at the guest's marks around each phase; the guest prints the RPCs it sent in each phase from
``/proc/self/mountstats``, and the CPU is divided by those real counts
(``bench/cpu_per_op_report.py``). Printed: CPU µs per operation (ms per GiB, ms per listing)
for both servers with the spread over rounds, the ratio with its per-round spread, the issue's
bars (pynfsd/Ganesha ≤ 1.5 for metadata rows, ≤ 1.0 for I/O rows), the RPC mix per phase,
host load; ``--plot`` writes the PNG. The guest is TCG-emulated and shares the host's CPUs, so
durations move with load; server CPU per operation is the steadier figure. Nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.cpu_per_op_report import (
    COARSE_BELOW,
    TICK,
    Sample,
    cpu_table,
    lines_for,
    parse_samples,
    plot,
    rpc_table,
)
from bench.kernel_krb5_bench import CpuMarks, log_notes
from bench.report import guest_outcome
from tests.vm.cpio import CpioWriter
from tests.vm.kernel import guest_kernel
from tests.vm.krb5guest import assemble_krb5, guest_config, krb5_setup
from tests.vm.qemu import GuestVM, Transcript

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / "guest" / "cpu_per_op.sh"
FSOPS = HERE / "guest" / "fsops.c"


@dataclass(frozen=True)
class Params:
    secs: tuple[str, ...] = ("sys", "krb5p")
    files: int = 2500
    entries: int = 10000
    listings: int = 20
    size_mb: tuple[tuple[str, int], ...] = (("sys", 1024), ("", 256))   # "": other flavours
    random_ops: int = 4000
    timeout: float = 3600.0       # per guest boot
    phase_timeout: float = 900.0  # one phase; a stuck server costs no more than this


@dataclass
class Boot:
    """One guest boot against one server: its samples and what went wrong."""

    server: str
    round: int
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    mount: str = ""
    log_notes: list[str] = field(default_factory=list)
    host_load: tuple[float, float] = (0.0, 0.0)
    workdir: str = ""


def fsops_layer(workdir: Path) -> bytes:
    """A gzip'd cpio with ``/bin/fsops``, compiled static from ``bench/guest/fsops.c``."""
    binary = workdir / "fsops"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(binary), str(FSOPS)],
                   check=True, capture_output=True, text=True)
    cpio = CpioWriter()
    cpio.add_file("bin/fsops", binary, 0o755)
    return cpio.gzipped()


def parse_sizes(text: str) -> tuple[tuple[str, int], ...]:
    """``1024`` (every flavour) or ``sys=1024,krb5p=256`` (and ``=256`` for the others)."""
    sizes = []
    for item in text.split(","):
        sec, _, mb = item.rpartition("=")
        sizes.append((sec.strip(), int(mb)))
    return tuple(sizes)


def size_for(params: Params, sec: str) -> int:
    sizes = dict(params.size_mb)
    return sizes.get(sec, sizes.get("", 256))


def guest_settings(params: Params, rnd: int) -> dict[str, str | int]:
    return {"SECS": " ".join(params.secs), "ROUND": rnd, "FILES": params.files,
            "ENTRIES": params.entries, "LISTINGS": params.listings,
            "RANDOM_OPS": params.random_ops,
            **{f"SIZE_MB_{sec}": size_for(params, sec) for sec in params.secs}}


def fill_listing(directory: Path, entries: int) -> None:
    """The directory the guest lists: ``entries`` empty files, made here on the server's disk
    (creating them through the client would cost minutes of emulated guest per boot)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(entries):
        (directory / f"e{i}").touch()


def parse_boot(transcript: Transcript, marks: CpuMarks, boot: Boot) -> None:
    boot.samples = parse_samples(boot.server, transcript.lines, marks.spent)
    boot.mount = guest_outcome(transcript.lines, transcript.timed_out, boot.errors)
    if transcript.aborted:
        boot.errors.append(f"VM stopped: {transcript.aborted}")
    boot.errors.extend(transcript.pause_errors)


def run_boot(name: str, rnd: int, net_name: str, workdir: Path, params: Params) -> Boot:
    """One guest boot (all flavours) against server ``name``; errors recorded, not raised."""
    boot = Boot(name, rnd, workdir=str(workdir))
    load_before = os.getloadavg()[0]
    kernel = guest_kernel()
    with krb5_setup(name, net_name, workdir, sys_too=True) as (realm, server):
        for sec in params.secs:
            fill_listing(server.export_dir / sec / "listing", params.entries)
        initrd = workdir / "initrd.img"
        assemble_krb5(kernel, WORKLOAD, guest_config(server, realm.network,
                                                     **guest_settings(params, rnd)),
                      realm, initrd)
        with open(initrd, "ab") as fh:
            fh.write(fsops_layer(workdir))   # the kernel unpacks concatenated archives
        marks = CpuMarks(server, params.phase_timeout)
        vm = GuestVM(kernel, initrd, realm.network, workdir, params.timeout, on_pause=marks,
                     watchdog=marks.stuck)
        transcript = Transcript()
        try:
            server.start()
            transcript = vm.run()
        except Exception as exc:
            boot.errors.append(repr(exc))
        finally:
            server.stop()
        parse_boot(transcript, marks, boot)
    log = workdir / ("ganesha.nfsd.log" if name == "ganesha" else f"{name}.log")
    boot.log_notes = log_notes(log)
    boot.host_load = (load_before, os.getloadavg()[0])
    return boot


def report(boots: list[Boot], params: Params, plot_path: str | None) -> None:
    samples = [s for b in boots for s in b.samples]
    lines = lines_for(samples, "pynfsd", "ganesha", params.secs)
    rounds = max((b.round for b in boots), default=0)
    sizes = ", ".join(f"{size_for(params, sec)} MiB {sec}" for sec in params.secs)
    print(f"\n== server CPU per operation: {params.files:,} files, {params.listings} listings "
          f"of {params.entries:,} entries, sequential {sizes}, {params.random_ops:,} random "
          f"4 KiB I/Os; "
          f"{rounds} round(s), median (lowest–highest) ==")
    for b in boots:
        print(f"round {b.round} {b.server}: host load {b.host_load[0]:.1f} -> "
              f"{b.host_load[1]:.1f} ({os.cpu_count()} CPUs); {b.workdir}")
    print(cpu_table(lines))
    print(f"† a phase had under {COARSE_BELOW} s of server CPU: {TICK * 1000:.0f} ms ticks are "
          f"over {TICK / COARSE_BELOW:.0%} of it\n")
    print(rpc_table(lines))
    for b in boots:
        for note in b.log_notes:
            print(f"LOG [{b.server} round {b.round}] {note}")
        for err in b.errors:
            print(f"ERROR [{b.server} round {b.round}] {err}")
    if plot_path:
        plot(lines, plot_path)
        print(f"plot: {plot_path}")


COUNTS = (("files", "files created, stat'ed, renamed and unlinked"),
          ("entries", "entries of the directory the readdir row lists"),
          ("listings", "listings of that directory, each from cold caches"),
          ("random_ops", "4 KiB O_DIRECT reads, and as many writes"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.cpu_per_op",
                                 description=__doc__.split("\n\n")[0])
    d = Params()
    ap.add_argument("--secs", default=",".join(d.secs), help="flavours, in order")
    ap.add_argument("--rounds", type=int, default=2, help="boots per server, alternating")
    ap.add_argument("--servers", default="pynfsd,ganesha")
    for name, what in COUNTS:
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name),
                        help=f"{what} (default {getattr(d, name)})")
    ap.add_argument("--size-mb", type=parse_sizes, default=d.size_mb,
                    help="MiB of the sequential rows: M, or SEC=M,...,=M (default "
                    "sys=1024,=256)")
    ap.add_argument("--net", default="netns", choices=["netns", "user"])
    for name, seconds in (("timeout", d.timeout), ("phase-timeout", d.phase_timeout)):
        ap.add_argument(f"--{name}", type=float, default=seconds, help="seconds")
    ap.add_argument("--plot", metavar="PNG", help="write the bar chart here")
    ap.add_argument("--json", type=Path, default=None, help="write all samples here")
    ap.add_argument("--from-json", type=Path, default=None, metavar="JSON",
                    help="measure nothing: print the tables (and --plot) of an earlier --json")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="default: a new /var/tmp/pynfsd-cpu-per-op-<time>")
    return ap.parse_args(argv)


def dump(path: Path, params: Params, boots: list[Boot]) -> None:
    doc = {"params": asdict(params), "boots": [asdict(b) for b in boots]}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def load(path: Path) -> tuple[Params, list[Boot]]:
    """The parameters and boots of an earlier run's ``--json``."""
    doc = json.loads(path.read_text())
    p = doc["params"]
    params = Params(tuple(p["secs"]), p["files"], p["entries"], p["listings"],
                    tuple((sec, mb) for sec, mb in p["size_mb"]), p["random_ops"],
                    p["timeout"], p["phase_timeout"])
    boots = []
    for b in doc["boots"]:
        boot = Boot(**{k: v for k, v in b.items() if k != "samples"})
        boot.samples = [Sample(**s) for s in b["samples"]]
        boot.host_load = (b["host_load"][0], b["host_load"][1])
        boots.append(boot)
    return params, boots


def measure(args: argparse.Namespace, params: Params) -> list[Boot]:
    root = args.workdir or Path(f"/var/tmp/pynfsd-cpu-per-op-{time.strftime('%Y%m%d-%H%M%S')}")
    servers = [s for s in args.servers.split(",") if s]
    boots = []
    for rnd in range(1, args.rounds + 1):
        for name in servers if rnd % 2 else servers[::-1]:
            boots.append(run_boot(name, rnd, args.net, root / f"{name}-round{rnd}", params))
            print(f"round {rnd} {name}: {len(boots[-1].samples)} phases, "
                  f"{len(boots[-1].errors)} errors", flush=True)
    if args.json:
        dump(args.json, params, boots)
    return boots


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = Params(tuple(s for s in args.secs.split(",") if s), args.files, args.entries,
                    args.listings, args.size_mb, args.random_ops, args.timeout,
                    args.phase_timeout)
    if args.from_json:
        params, boots = load(args.from_json)
    else:
        boots = measure(args, params)
    report(boots, params, args.plot)
    return 1 if any(b.errors or not b.samples for b in boots) else 0


if __name__ == "__main__":
    sys.exit(main())
