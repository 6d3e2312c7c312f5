"""Reporting of `bench.saturation`: one line per run, the summary table, JSON and the plot.

A row per operation holds, for each server, the median ops/s over the runs that count (or over
all runs, marked ``*``, when none counts) with its lowest and highest, and the ratio pynfsd ÷
peer: the median of the per-round ratios of rounds where both runs count, with their range.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.sat_gen import GEN_LIMIT, SERVER_FLOOR, Window, pct


@dataclass
class RunResult:
    """One generator run against one server: its window, or why there is none."""

    server: str
    op: str
    round: int
    window: Window | None
    failure: str = ""

    @property
    def counts(self) -> bool:
        return self.window is not None and not self.window.why_not_counted()

    def line(self) -> str:
        head = f"round {self.round} {self.server:<8} {self.op:<10}"
        w = self.window
        if w is None:
            return f"{head} FAILED: {self.failure}  (does not count)"
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(w.out.kinds.items()))
        per_cpu = w.ops_per_cpu_s
        why = w.why_not_counted()
        gen_us = w.gen_us_per_call
        return (f"{head} {w.ops_per_s:>9,.0f} ops/s  "
                f"{'?' if per_cpu is None else f'{per_cpu:,.0f}':>9} per server CPU-s  "
                f"server {pct(w.server_use):>5}  generator {pct(w.gen_use):>5} "
                f"({'?' if gen_us is None else f'{gen_us:.1f}'} µs/call)  "
                f"cores {w.server_cpu}:{pct(w.core_use(w.server_cpu))} "
                f"{w.gen_cpu}:{pct(w.core_use(w.gen_cpu))}  "
                f"replies {w.out.done[0]:,} errors {w.errors}{' (' + kinds + ')' if kinds else ''}"
                f"  {'counts' if not why else 'DOES NOT COUNT: ' + why}")


@dataclass
class Side:
    """One server's figures for one operation."""

    median: float = 0.0
    low: float = 0.0
    high: float = 0.0
    counted: int = 0
    runs: int = 0
    server_use: float | None = None
    gen_use: float | None = None
    measured: int = 0       # runs with figures (a failed run has none)

    @property
    def mark(self) -> str:
        return "" if self.counted else "*"


@dataclass
class Row:
    op: str
    sides: dict[str, Side] = field(default_factory=dict)
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None


def _side(results: Sequence[RunResult]) -> Side:
    counted = [r for r in results if r.counts]
    pool = [r.window for r in (counted or results) if r.window is not None]
    if not pool:
        return Side(runs=len(results))
    rates = [w.ops_per_s for w in pool]
    uses = [w.server_use for w in pool if w.server_use is not None]
    gens = [w.gen_use for w in pool if w.gen_use is not None]
    return Side(statistics.median(rates), min(rates), max(rates), len(counted), len(results),
                statistics.median(uses) if uses else None,
                statistics.median(gens) if gens else None, len(pool))


def summarize(results: Sequence[RunResult], ops: Sequence[str], ours: str,
              peer: str | None) -> list[Row]:
    rows = []
    for op_name in ops:
        row = Row(op_name)
        for server in filter(None, (ours, peer)):
            row.sides[server] = _side([r for r in results if (r.op, r.server) == (op_name, server)])
        if peer is not None:
            ratios = _round_ratios([r for r in results if r.op == op_name], ours, peer)
            if ratios:
                row.ratio = statistics.median(ratios)
                row.ratio_low, row.ratio_high = min(ratios), max(ratios)
        rows.append(row)
    return rows


def _round_ratios(results: Sequence[RunResult], ours: str, peer: str) -> list[float]:
    """ours ÷ peer ops/s for every round in which both runs count."""
    by = {(r.server, r.round): r for r in results if r.counts}
    out = []
    for (server, rnd), r in by.items():
        other = by.get((peer, rnd))
        if server == ours and other is not None and r.window and other.window:
            if other.window.ops_per_s > 0:
                out.append(r.window.ops_per_s / other.window.ops_per_s)
    return out


def _cells(s: Side) -> list[str]:
    """ops/s, its lowest–highest, server and generator core use, runs counted."""
    if not s.measured:
        return ["-", "-", "-", f"0/{s.runs}"]
    return [f"{s.median:,.0f}{s.mark}", f"{s.low:,.0f}–{s.high:,.0f}",
            f"{pct(s.server_use)} / {pct(s.gen_use)}", f"{s.counted}/{s.runs}"]


def _ratio_cells(row: Row) -> list[str]:
    if row.ratio is None or row.ratio_low is None or row.ratio_high is None:
        return ["-", "-", "no round where both count"]
    ok = "met" if row.ratio >= 1.0 else "not met"
    return [f"{row.ratio:.2f}×", f"{row.ratio_low:.2f}–{row.ratio_high:.2f}", f"≥ 1.0×: {ok}"]


def table(rows: Sequence[Row], ours: str, peer: str | None) -> str:
    """A markdown table: per server ops/s, spread, core use (server / generator) and runs
    counted; with a peer the ratio, its spread and the goal."""
    names = [ours] + ([peer] if peer else [])
    head = ["operation"]
    for n in names:
        head += [f"{n} ops/s", "low–high", "core use server / generator", "counted"]
    if peer:
        head += [f"{ours} ÷ {peer}", "low–high", "goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.op] + [c for n in names for c in _cells(row.sides[n])]
        if peer:
            cells += _ratio_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\n(* no run counted: median of all runs. A run counts when the generator uses "
                 f"< {GEN_LIMIT:.0%} of its core, the server ≥ {SERVER_FLOOR:.0%} of its own, "
                 f"and no error was seen.)")
    return "\n".join(lines)


def to_json(results: Sequence[RunResult], rows: Sequence[Row], meta: dict[str, Any]) -> dict[str, Any]:
    def window(w: Window | None) -> dict[str, Any] | None:
        if w is None:
            return None
        return {"ops": w.ops, "ops_per_s": w.ops_per_s, "ops_per_cpu_s": w.ops_per_cpu_s,
                "server_use": w.server_use, "gen_use": w.gen_use,
                "server_core_use": w.core_use(w.server_cpu), "gen_core_use": w.core_use(w.gen_cpu),
                "replies": w.out.done[0], "errors": w.errors, "error_kinds": w.out.kinds,
                "lost": w.out.lost, "why_not_counted": w.why_not_counted()}

    return {"meta": meta,
            "runs": [{"server": r.server, "op": r.op, "round": r.round, "counts": r.counts,
                      "failure": r.failure, "window": window(r.window)} for r in results],
            "rows": [{"op": row.op, "ratio": row.ratio, "ratio_low": row.ratio_low,
                      "ratio_high": row.ratio_high,
                      "sides": {n: vars(s) for n, s in row.sides.items()}} for row in rows]}


def _tick(row: Row, servers: Sequence[str]) -> str:
    if row.ratio is None or len(servers) < 2:
        return row.op
    return f"{row.op}\n{row.ratio:.2f}× {servers[1]}"


def plot(rows: Sequence[Row], path: str, title: str) -> None:
    """Bars of ops/s per operation, one per server side by side, lowest–highest as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = list(rows[0].sides) if rows else []
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.8 / max(1, len(servers))
    for i, server in enumerate(servers):
        xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(rows))]
        sides = [row.sides[server] for row in rows]
        meds = [s.median for s in sides]
        err = [[s.median - s.low for s in sides], [s.high - s.median for s in sides]]
        bars = ax.bar(xs, meds, width, yerr=err, capsize=4, label=server)
        ax.bar_label(bars, labels=[f"{m:,.0f}{s.mark}" for m, s in zip(meds, sides, strict=True)],
                     fontsize=8, padding=2)
    ax.set_xticks(range(len(rows)), [_tick(row, servers) for row in rows])
    if any(side.mark for row in rows for side in row.sides.values()):
        fig.text(0.01, 0.01, "* no run counted: median of all runs", fontsize=8)
    ax.set_ylabel("operations/s, server on one core")
    ax.set_xlabel(f"(under each operation: {servers[0]} ÷ {servers[-1]}, median of the rounds)"
                  if len(servers) > 1 else "")
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
