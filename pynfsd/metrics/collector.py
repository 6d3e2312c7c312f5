"""A `Snapshot` as Prometheus metric families, and as the text exposition format.

Theory of operation: `SnapshotCollector` is a prometheus_client custom collector over one
`Snapshot` (`pynfsd.metrics.snapshot`): `collect()` builds the metric families from its plain
values, so it touches nothing the event loop owns and may run in any thread.  `render` puts it
in a fresh registry beside prometheus_client's `ProcessCollector` (CPU seconds, resident and
virtual memory, open descriptors, from /proc) and returns the text a scrape gets.  Names
follow the Prometheus conventions: `pynfsd_` prefix, counters end in `_total`, durations are
in `_seconds`, sizes in `_bytes`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from pynfsd import __version__
from pynfsd.gen import rpc as R
from pynfsd.metrics.snapshot import GSS_LIFECYCLE, Snapshot, status_name
from pynfsd.metrics.stats import LATENCY_BUCKETS, Latency

AUTH_FLAVOUR_NAMES = {R.AUTH_NONE: "none", R.AUTH_SYS: "sys", R.RPCSEC_GSS: "rpcsec_gss"}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def labelled(family: CounterMetricFamily | GaugeMetricFamily,
             values: dict[str, int]) -> CounterMetricFamily | GaugeMetricFamily:
    """`family` with one sample per (label value, value) of `values`."""
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def histogram_buckets(lat: Latency) -> list[tuple[str, float]]:
    """Cumulative buckets, as Prometheus wants them, ending with +Inf."""
    out: list[tuple[str, float]] = []
    seen = 0
    for bound, n in zip(LATENCY_BUCKETS, lat.buckets, strict=False):
        seen += n
        out.append((repr(bound), seen))
    out.append(("+Inf", lat.count))
    return out


class SnapshotCollector(Collector):
    """The metric families of one snapshot (see the module docstring)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from self.operations()
        yield from self.rpc()
        yield from self.state()
        yield from self.grace()
        yield from self.drc()
        yield from self.connections()
        yield from self.gss()
        info = GaugeMetricFamily("pynfsd_build_info", "pynfsd version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def operations(self) -> Iterator[Metric]:
        snap = self.snap
        ops = CounterMetricFamily("pynfsd_operations", "NFSv4 operations by op and status",
                                  labels=["op", "status"])
        hist = HistogramMetricFamily("pynfsd_operation_duration_seconds",
                                     "NFSv4 operation latency by op and status",
                                     labels=["op", "status"])
        for (opnum, status), lat in sorted(snap.stats.ops.items()):
            labels = [snap.op_name(opnum), status_name(status)]
            ops.add_metric(labels, lat.count)
            hist.add_metric(labels, histogram_buckets(lat), lat.total)
        yield ops
        yield hist

    def rpc(self) -> Iterator[Metric]:
        st = self.snap.stats
        yield labelled(CounterMetricFamily(
            "pynfsd_rpc_calls", "RPC calls dispatched, by security flavour",
            labels=["flavor"]), self.snap.calls_by_flavour())
        errors = {AUTH_FLAVOUR_NAMES.get(f, str(f)): n for f, n in st.auth_errors.items()}
        yield labelled(CounterMetricFamily(
            "pynfsd_rpc_auth_errors", "RPC calls refused by authentication (MSG_DENIED), by "
            "auth flavour", labels=["flavor"]), errors)
        yield counter("pynfsd_read_bytes", "data bytes returned by READ", st.read_bytes)
        yield counter("pynfsd_write_bytes", "data bytes written by WRITE", st.write_bytes)
        yield counter("pynfsd_rpc_received_bytes", "bytes of RPC records received",
                      st.received_bytes)
        yield counter("pynfsd_rpc_sent_bytes", "bytes of RPC replies sent", st.sent_bytes)

    def state(self) -> Iterator[Metric]:
        snap = self.snap
        yield labelled(GaugeMetricFamily(
            "pynfsd_clients", "NFSv4 clients by state (active, courtesy, expired, unconfirmed)",
            labels=["state"]), snap.clients)
        yield labelled(CounterMetricFamily(
            "pynfsd_clients_dropped", "clients whose state was dropped, by reason",
            labels=["reason"]), snap.clients_dropped)
        yield gauge("pynfsd_open_owners", "open-owners held", snap.state["open_owners"])
        yield gauge("pynfsd_opens", "open files (open stateids)", snap.state["opens"])
        yield gauge("pynfsd_lock_states", "lock stateids", snap.state["lock_states"])
        yield gauge("pynfsd_locks", "byte-range locks held", snap.state["locks"])
        yield gauge("pynfsd_delegations", "delegations held by clients",
                    snap.state.get("delegations", 0))
        yield counter("pynfsd_client_id_collisions", "one co_ownerid from different "
                      "addresses or principals", snap.collisions)

    def grace(self) -> Iterator[Metric]:
        g = self.snap.grace
        if g is None:
            return
        yield gauge("pynfsd_grace_active", "1 while the server is in its grace period",
                    1 if g.get("in_grace") else 0)
        yield gauge("pynfsd_grace_seconds_left", "seconds of grace left",
                    float(g.get("seconds_left", 0)))
        yield gauge("pynfsd_grace_recorded_clients", "clients recorded as able to reclaim",
                    int(g.get("recorded", 0)))
        yield gauge("pynfsd_grace_reclaimed_clients", "recorded clients that reclaimed",
                    int(g.get("reclaimed", 0)))

    def drc(self) -> Iterator[Metric]:
        d = self.snap.drc
        if d is None:
            return
        yield counter("pynfsd_drc_hits", "retransmissions answered from the duplicate "
                      "request cache", d["hits"])
        yield counter("pynfsd_drc_in_progress_drops", "retransmissions dropped while the "
                      "original ran", d["in_progress_drops"])
        yield counter("pynfsd_drc_stored", "replies kept", d["stored"])
        yield counter("pynfsd_drc_too_large", "replies too large to keep", d["too_large"])
        yield labelled(CounterMetricFamily(
            "pynfsd_drc_evictions", "replies evicted, by reason (age, size)",
            labels=["reason"]), {"age": d["evicted_age"], "size": d["evicted_size"]})
        yield gauge("pynfsd_drc_entries", "replies in the cache", d["entries"])
        yield gauge("pynfsd_drc_bytes", "bytes the cache holds", d["bytes"])
        yield gauge("pynfsd_drc_max_bytes", "the cache's bound (--drc-size)", d["max_bytes"])

    def connections(self) -> Iterator[Metric]:
        c = self.snap.connections
        if c is None:
            return
        yield gauge("pynfsd_connections", "open TCP connections", c["open"])
        yield gauge("pynfsd_connections_max", "the bound (--max-connections)", c["max"])
        yield counter("pynfsd_connections_accepted", "TCP connections accepted", c["admitted"])
        yield counter("pynfsd_connections_refused", "TCP connections refused past the bound",
                      c["refused"])
        yield labelled(CounterMetricFamily(
            "pynfsd_connections_closed", "connections closed by the server, by reason "
            "(idle, partial_budget)", labels=["reason"]),
            {"idle": c["idle_closed"], "partial_budget": c["evicted"]})
        yield gauge("pynfsd_partial_record_bytes", "bytes of partially received requests",
                    c["partial_bytes"])

    def gss(self) -> Iterator[Metric]:
        g = self.snap.gss
        if g is None:
            return
        yield gauge("pynfsd_gss_contexts", "RPCSEC_GSS contexts held", g.get("contexts", 0))
        for event in GSS_LIFECYCLE:
            yield counter(f"pynfsd_gss_contexts_{event}", f"RPCSEC_GSS contexts {event}",
                          g.get(event, 0))
        refusals = {k: v for k, v in g.items() if k not in (*GSS_LIFECYCLE, "contexts")}
        yield labelled(CounterMetricFamily(
            "pynfsd_gss_rejections", "RPCSEC_GSS calls refused or dropped, by reason",
            labels=["reason"]), refusals)


def render(snap: Snapshot, proc: str = "/proc") -> bytes:
    """The text exposition of `snap` and of this process (reads /proc: call off the loop)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    ProcessCollector(registry=registry, proc=proc)
    return generate_latest(registry)
