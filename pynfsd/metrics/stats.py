"""Counters the hot paths update inline: per-operation counts and latencies, RPC calls by
flavour, bytes of READ and WRITE data and of RPC records.

Theory of operation: `Stats` is a plain object of integers and dicts, updated on the event
loop by the code that does the work (the COMPOUND loop, `RpcServer`, the transport, the
READ and WRITE handlers), with no lock and no Prometheus object: one dict lookup, a few
additions and one `bisect` per operation.  It is handed to them as a collaborator; nothing
here imports them.  Latencies come from the clock it is given (seconds).  Everything that
already counts for itself (the reply cache, the connection table, RPCSEC_GSS, the state
manager, the grace period) is read when metrics are asked for, not counted twice
(`pynfsd.metrics.snapshot`).  `copy()` is the cheap snapshot taken on the event loop.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the latency histogram buckets; one more bucket holds the rest.
#: From a GETATTR answered from memory (tens of µs) to a WRITE waiting for the disk (seconds);
#: each bound is a line per series in every scrape, so there are few.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0, 5.0,
)


@dataclass(slots=True)
class Latency:
    """Count, sum and bucket counts (not cumulative; the last is +Inf) of some durations."""

    count: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def copy(self) -> Latency:
        return Latency(self.count, self.total, list(self.buckets))


class Stats:
    """The server's own counters (see the module docstring); `clock` gives seconds."""

    __slots__ = ("clock", "ops", "calls", "auth_errors", "read_bytes", "write_bytes",
                 "received_bytes", "sent_bytes")

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        #: (op number, nfsstat4) -> latencies of the ops that ended with that status
        self.ops: dict[tuple[int, int], Latency] = {}
        #: dispatched RPC calls by security flavour (`Credential.sec_flavor`)
        self.calls: dict[int, int] = {}
        #: calls refused with MSG_DENIED, by the RPC auth flavour of their credential
        self.auth_errors: dict[int, int] = {}
        self.read_bytes = 0  # data returned by READ
        self.write_bytes = 0  # data written by WRITE
        self.received_bytes = 0  # RPC records received (after record marking)
        self.sent_bytes = 0  # RPC replies sent (record markers included)

    def op_done(self, opnum: int, status: int, seconds: float) -> None:
        """One operation of a COMPOUND ended with `status` after `seconds`."""
        entry = self.ops.get((opnum, status))
        if entry is None:
            entry = self.ops[(opnum, status)] = Latency()
        entry.count += 1  # inline, no method call: this runs for every operation
        entry.total += seconds
        entry.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def call(self, sec_flavor: int) -> None:
        """One call passed authentication and goes to its procedure."""
        calls = self.calls
        calls[sec_flavor] = calls.get(sec_flavor, 0) + 1

    def auth_error(self, flavor: int) -> None:
        self.auth_errors[flavor] = self.auth_errors.get(flavor, 0) + 1

    def copy(self) -> StatsCopy:
        """A consistent copy (taken on the event loop; safe to read in another thread)."""
        return StatsCopy(
            ops={key: lat.copy() for key, lat in self.ops.items()},
            calls=dict(self.calls),
            auth_errors=dict(self.auth_errors),
            read_bytes=self.read_bytes,
            write_bytes=self.write_bytes,
            received_bytes=self.received_bytes,
            sent_bytes=self.sent_bytes,
        )


@dataclass(frozen=True, slots=True)
class StatsCopy:
    """What `Stats.copy` returns: plain values nobody updates."""

    ops: dict[tuple[int, int], Latency]
    calls: dict[int, int]
    auth_errors: dict[int, int]
    read_bytes: int
    write_bytes: int
    received_bytes: int
    sent_bytes: int

    def ops_total(self) -> int:
        return sum(lat.count for lat in self.ops.values())
