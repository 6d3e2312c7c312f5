"""Server CPU per operation: parse the guest's lines, aggregate rounds, print and plot.

Theory of operation
-------------------
A ``Sample`` is one phase of one guest boot: the row (``create``, ``stat``, ..., ``seqread``),
the flavour, the round, what the guest did (files, listings, MiB or I/Os), its duration, the
server CPU seconds the host read at the guest's marks, and the RPCs the client sent during the
phase (``/proc/self/mountstats`` after minus before). The unit a row is priced in comes from
those real RPC counts where the row is one RPC kind (create: OPEN, stat: LOOKUP, unlink:
REMOVE, rename: RENAME, 4 KiB random read/write: READ/WRITE), so a client that coalesced or
skipped calls cannot flatter either server; a listing of the directory for readdir (its
READDIR RPCs are printed), and a GiB for the sequential rows. Each sample gives CPU per unit;
a row's figure is the median over rounds, its spread the lowest and highest round, and the
ratio's spread pairs round i of pynfsd with round i of the peer (the two alternate within a
round). CPU time comes in 10 ms ticks, so a phase under 0.5 s of CPU is flagged as coarse.
"""

from __future__ import annotations

import re
import statistics
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bench.report import format_table


@dataclass(frozen=True)
class Row:
    phase: str
    label: str
    unit: str              # what one "operation" of the row is
    scale: float           # CPU seconds per unit -> printed number
    printed: str           # unit of the printed number
    rpc: tuple[str, ...]   # RPC kinds counted as the row's operations; () = use the amount
    bar: float             # the bar on pynfsd / peer


CPUOP_RE = re.compile(r"^@@CPUOP (\w+) (\w+) (\d+) (\d+) (-?\d+)\s*$")
OPS_RE = re.compile(r"^@@OPS (before|after) (\w+) (\w+) (\w+) (\d+)\s*$")
TICK = 0.01          # /proc/PID/stat resolution, seconds
COARSE_BELOW = 0.5   # a phase with less CPU has more than 2 % tick granularity
ROWS = (
    Row("create", "file create", "OPEN", 1e6, "µs/op", ("OPEN",), 1.5),
    Row("stat", "stat", "LOOKUP", 1e6, "µs/op", ("LOOKUP",), 1.5),
    Row("unlink", "unlink", "REMOVE", 1e6, "µs/op", ("REMOVE",), 1.5),
    Row("rename", "rename", "RENAME", 1e6, "µs/op", ("RENAME",), 1.5),
    Row("readdir", "readdir, whole directory", "listing", 1e3, "ms/listing", (), 1.5),
    Row("randread", "4 KiB random read", "READ", 1e6, "µs/op", ("READ",), 1.0),
    Row("randwrite", "4 KiB random write", "WRITE", 1e6, "µs/op", ("WRITE",), 1.0),
    Row("seqwrite", "sequential write", "GiB", 1e3, "ms/GiB", (), 1.0),
    Row("seqread", "sequential read", "GiB", 1e3, "ms/GiB", (), 1.0),
)
ROW = {r.phase: r for r in ROWS}
SEQUENTIAL = ("seqwrite", "seqread")



@dataclass
class Sample:
    server: str
    sec: str
    phase: str
    round: int
    amount: int                  # files, listings, MiB or I/Os, as the guest counted them
    centis: int                  # guest wall time
    cpu: float | None            # server CPU seconds between the marks
    rpcs: dict[str, int] = field(default_factory=dict)   # RPCs sent during the phase

    def units(self) -> float:
        row = ROW[self.phase]
        if row.rpc:
            return float(sum(self.rpcs.get(op, 0) for op in row.rpc))
        return self.amount / 1024 if self.phase in SEQUENTIAL else float(self.amount)

    def cpu_per_unit(self) -> float | None:
        units = self.units()
        return None if self.cpu is None or units <= 0 else self.cpu / units


def rpc_deltas(lines: Iterable[str]) -> dict[tuple[str, str], dict[str, int]]:
    """(phase, sec) -> RPCs sent during the phase, from the ``@@OPS before|after`` lines."""
    seen: dict[tuple[str, str, str], dict[str, int]] = {}
    for line in lines:
        if m := OPS_RE.match(line):
            seen.setdefault((m[1], m[2], m[3]), {})[m[4]] = int(m[5])
    deltas: dict[tuple[str, str], dict[str, int]] = {}
    for (when, phase, sec), after in seen.items():
        if when == "after":
            before = seen.get(("before", phase, sec), {})
            delta = {op: n - before.get(op, 0) for op, n in after.items()}
            deltas[(phase, sec)] = {op: n for op, n in delta.items() if n > 0}
    return deltas


def parse_samples(server: str, lines: Sequence[str],
                  cpu: dict[tuple[str, str, int], float | None]) -> list[Sample]:
    """The samples of one boot; ``cpu`` is the marks' (phase, sec, round) -> seconds."""
    deltas = rpc_deltas(lines)
    samples = []
    for line in lines:
        if m := CPUOP_RE.match(line):
            phase, sec, rnd = m[1], m[2], int(m[3])
            if phase in ROW:
                samples.append(Sample(server, sec, phase, rnd, int(m[4]), int(m[5]),
                                      cpu.get((phase, sec, rnd)), deltas.get((phase, sec), {})))
    return samples


@dataclass(frozen=True)
class Figure:
    """One server's row: median CPU per unit (in the row's printed unit) and its spread."""

    median: float
    low: float
    high: float
    rounds: int
    coarse: bool           # some phase had less than COARSE_BELOW s of CPU
    rpcs: dict[str, int]   # median RPCs per phase, by kind
    per_unit_rpcs: float   # all RPCs of the phase per unit


def figure(samples: Sequence[Sample]) -> Figure | None:
    """The figure of one (server, sec, phase), or None without a usable sample."""
    usable = [s for s in samples if s.cpu_per_unit() is not None]
    if not usable:
        return None
    row = ROW[usable[0].phase]
    values = [row.scale * (s.cpu_per_unit() or 0.0) for s in usable]
    kinds = sorted({op for s in usable for op in s.rpcs})
    rpcs = {op: int(statistics.median(s.rpcs.get(op, 0) for s in usable)) for op in kinds}
    per_unit = statistics.median(sum(s.rpcs.values()) / s.units() for s in usable)
    return Figure(statistics.median(values), min(values), max(values), len(usable),
                  any((s.cpu or 0.0) < COARSE_BELOW for s in usable), rpcs, per_unit)


def pick(samples: Iterable[Sample], server: str, sec: str, phase: str) -> list[Sample]:
    return sorted((s for s in samples if (s.server, s.sec, s.phase) == (server, sec, phase)),
                  key=lambda s: s.round)


def round_ratios(ours: Sequence[Sample], peer: Sequence[Sample]) -> list[float]:
    """pynfsd / peer CPU per unit, round by round (rounds both servers completed)."""
    theirs = {s.round: s.cpu_per_unit() for s in peer}
    out = []
    for s in ours:
        a, b = s.cpu_per_unit(), theirs.get(s.round)
        if a is not None and b:
            out.append(a / b)
    return out


@dataclass(frozen=True)
class Line:
    """One printed row: both servers' figures, the ratio, its spread and the verdict."""

    sec: str
    row: Row
    ours: Figure | None
    peer: Figure | None
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "-"
        return "ok" if self.ratio <= self.row.bar else "ABOVE"


def lines_for(samples: Sequence[Sample], ours: str, peer: str, secs: Sequence[str]) -> list[Line]:
    out = []
    for sec in secs:
        for row in ROWS:
            mine, theirs = pick(samples, ours, sec, row.phase), pick(samples, peer, sec, row.phase)
            a, b = figure(mine), figure(theirs)
            ratio = None if a is None or b is None or b.median == 0 else a.median / b.median
            per_round = round_ratios(mine, theirs)
            out.append(Line(sec, row, a, b, ratio, min(per_round, default=None),
                            max(per_round, default=None)))
    return out


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _spread(f: Figure | None) -> str:
    return "-" if f is None else f"{_num(f.low)}–{_num(f.high)}"


def _ratio(line: Line) -> str:
    if line.ratio is None:
        return "-"
    if line.ratio_low is None or line.ratio_high is None:
        return f"{line.ratio:.2f}"
    return f"{line.ratio:.2f} ({line.ratio_low:.2f}–{line.ratio_high:.2f})"


def cpu_table(lines: Sequence[Line], ours: str = "pynfsd", peer: str = "ganesha") -> str:
    """Markdown: CPU per unit for both servers, spreads, the ratio and the issue's bar."""
    head = (f"| flavour | workload | unit | {ours} | spread | {peer} | spread | "
            f"{ours}/{peer} (rounds) | bar | |")
    rows = [head, "|" + "---|" * 10]
    for ln in lines:
        coarse = " †" if (ln.ours and ln.ours.coarse) or (ln.peer and ln.peer.coarse) else ""
        rows.append(
            f"| {ln.sec} | {ln.row.label} | {ln.row.printed} | "
            f"{_num(ln.ours.median if ln.ours else None)} | {_spread(ln.ours)} | "
            f"{_num(ln.peer.median if ln.peer else None)} | {_spread(ln.peer)} | "
            f"{_ratio(ln)} | ≤ {ln.row.bar:.1f} | {ln.verdict}{coarse} |")
    return "\n".join(rows)


def _mix(f: Figure | None, top: int = 4) -> str:
    if f is None:
        return "-"
    kinds = sorted(f.rpcs.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{op} {n:,}" for op, n in kinds[:top])
    rest = sum(n for _, n in kinds[top:])
    return shown + (f", +{rest:,} other" if rest else "")


def rpc_table(lines: Sequence[Line], ours: str = "pynfsd", peer: str = "ganesha") -> str:
    """What the client sent per phase (median of the rounds) and RPCs per priced unit."""
    rows = [["flavour", "workload", "unit", f"{ours} RPCs", "per unit", f"{peer} RPCs",
             "per unit"]]
    for ln in lines:
        rows.append([ln.sec, ln.row.phase, ln.row.unit, _mix(ln.ours),
                     "-" if ln.ours is None else f"{ln.ours.per_unit_rpcs:.2f}",
                     _mix(ln.peer), "-" if ln.peer is None else f"{ln.peer.per_unit_rpcs:.2f}"])
    return format_table(rows[0], rows[1:])


def plot(lines: Sequence[Line], path: str, ours: str = "pynfsd", peer: str = "ganesha") -> None:
    """One panel per flavour: CPU per unit of both servers side by side for each workload row
    (log scale: the units differ), the spread over rounds as error bars, the ratio on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    secs = list(dict.fromkeys(ln.sec for ln in lines))
    fig, axes = plt.subplots(len(secs), 1, figsize=(12, 4.2 * len(secs)), squeeze=False)
    for ax, sec in zip(axes[:, 0], secs, strict=True):
        mine = [ln for ln in lines if ln.sec == sec]
        xs = list(range(len(mine)))
        for offset, name, get, color in ((-0.2, ours, lambda ln: ln.ours, "tab:blue"),
                                         (0.2, peer, lambda ln: ln.peer, "tab:orange")):
            figs = [get(ln) for ln in mine]
            heights = [f.median if f else 0.0 for f in figs]
            errs = [[f.median - f.low if f else 0.0 for f in figs],
                    [f.high - f.median if f else 0.0 for f in figs]]
            ax.bar([x + offset for x in xs], heights, 0.4, yerr=errs, capsize=3, label=name,
                   color=color)
        for x, ln in zip(xs, mine, strict=True):
            top = max((f.high for f in (ln.ours, ln.peer) if f), default=0.0)
            if ln.ratio is not None and top > 0:
                ax.annotate(f"{ln.ratio:.2f}×", (x, top), textcoords="offset points",
                            xytext=(0, 4), ha="center", fontsize=8,
                            color="black" if ln.ratio <= ln.row.bar else "tab:red")
        ax.set_xticks(xs, [f"{textwrap.fill(ln.row.label, 16)}\n({ln.row.printed})"
                           for ln in mine], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("server CPU per operation")
        ax.set_title(f"sec={sec}: server CPU (user+system) per operation, "
                     f"{ours}/{peer} ratio on top (red: above the bar)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
