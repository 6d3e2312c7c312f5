"""Turn guest timings into rates and print the pynfsd-vs-Ganesha comparison table.

A ``PhaseSample`` is one timed phase of one repetition as the guest measured it (centiseconds
from ``/proc/uptime``) plus the server CPU seconds the host read around it. Rates are the median
over repetitions. Goals: pynfsd at least 0.8x Ganesha for sequential I/O and 0.5x for metadata.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PHASES = ("write", "read", "create", "stat", "remove")
UNITS = {"write": "MB/s", "read": "MB/s", "create": "creates/s", "stat": "stats/s",
         "remove": "removes/s"}
GOALS = {"write": 0.8, "read": 0.8, "create": 0.5, "stat": 0.5, "remove": 0.5}


@dataclass
class PhaseSample:
    """One timed phase: ``amount`` MiB (write/read) or files, in ``centiseconds``."""

    phase: str
    rep: int
    centiseconds: int
    amount: int
    server_cpu: float | None = None   # server CPU seconds spent inside the phase

    @property
    def rate(self) -> float:
        """MiB/s or operations/s (10 ms resolution; a zero duration counts as 10 ms)."""
        return self.amount / (max(self.centiseconds, 1) / 100)


@dataclass
class ServerRun:
    """Everything measured for one server over one network mode."""

    server: str
    network: str
    samples: list[PhaseSample] = field(default_factory=list)
    cpu_total: float | None = None    # server CPU seconds from start to the end of the workload
    mount: str = ""
    ops: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    console_log: str = ""
    server_log: str = ""
    host_load: tuple[float, float] = (0.0, 0.0)   # 1-min load average before and after

    def rate(self, phase: str) -> float | None:
        rates = [s.rate for s in self.samples if s.phase == phase]
        return statistics.median(rates) if rates else None

    def phase_cpu(self, phase: str) -> float | None:
        cpus = [s.server_cpu for s in self.samples if s.phase == phase]
        known = [c for c in cpus if c is not None]
        return sum(known) if known else None

    def phase_amount(self, phase: str) -> int:
        return sum(s.amount for s in self.samples if s.phase == phase)


def guest_outcome(lines: Iterable[str], timed_out: bool, errors: list[str]) -> str:
    """The ``@@MOUNT`` line of a bench guest's transcript; adds to ``errors`` its
    ``@@BENCHFAIL`` lines, a timeout, or (when nothing else went wrong) a missing
    ``@@BENCHDONE``."""
    mount, done = "", False
    for line in lines:
        if line.startswith("@@MOUNT "):
            mount = line[len("@@MOUNT "):]
        elif line.startswith("@@BENCHFAIL"):
            errors.append(line)
        done = done or line.startswith("@@BENCHDONE")
    if timed_out:
        errors.append("the VM hit its timeout")
    if not done and not errors:
        errors.append("the guest did not finish the workload")
    return mount


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def comparison_rows(ours: ServerRun, peer: ServerRun) -> list[list[str]]:
    """Rows of measure, pynfsd, ganesha, ratio, goal, verdict."""
    rows = []
    for phase in PHASES:
        a, b = ours.rate(phase), peer.rate(phase)
        r = ratio(a, b)
        verdict = "-" if r is None else ("ok" if r >= GOALS[phase] else "BELOW")
        rows.append([f"{phase} {UNITS[phase]}", _num(a), _num(b), _num(r, 2),
                     f">= {GOALS[phase]}x", verdict])
    return rows


def cpu_rows(ours: ServerRun, peer: ServerRun) -> list[list[str]]:
    """Server CPU seconds per phase (summed over repetitions), per unit of work, and in total."""
    rows = []
    for phase in PHASES:
        a, b = ours.phase_cpu(phase), peer.phase_cpu(phase)
        per = "ms/MiB" if UNITS[phase] == "MB/s" else "ms/op"
        unit_a = None if a is None else 1000 * a / max(ours.phase_amount(phase), 1)
        unit_b = None if b is None else 1000 * b / max(peer.phase_amount(phase), 1)
        rows.append([f"cpu s {phase}", _num(a, 2), _num(b, 2), _num(ratio(a, b), 2),
                     f"{_num(unit_a, 3)} vs {_num(unit_b, 3)} {per}", ""])
    total = ratio(ours.cpu_total, peer.cpu_total)
    rows.append(["cpu s whole run", _num(ours.cpu_total, 2), _num(peer.cpu_total, 2),
                 _num(total, 2), "", ""])
    return rows


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def comparison_table(ours: ServerRun, peer: ServerRun) -> str:
    header = ["measure", ours.server, peer.server, "ratio", "goal", ""]
    return format_table(header, comparison_rows(ours, peer) + cpu_rows(ours, peer))


def ops_table(ours: ServerRun, peer: ServerRun) -> str:
    """Client-side NFS operation counts (from the guest's mountstats) for both servers."""
    names = sorted(set(ours.ops) | set(peer.ops), key=lambda n: -(ours.ops.get(n, 0)))
    rows = [[n, str(ours.ops.get(n, 0)), str(peer.ops.get(n, 0))] for n in names]
    return format_table(["client op", ours.server, peer.server], rows)
