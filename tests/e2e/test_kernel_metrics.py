"""Metrics under the Linux kernel client (a Debian kernel booted in qemu): the server runs with
`--metrics`, the guest writes a file with dd and creates, stats and removes small files, and
the endpoint is scraped all along and at the end.  The scraped series must count what the
workload did: the client's own per-op counts (from its /proc/self/mountstats, printed by the
guest) equal the server's op counters (a floor if the client reconnected, when it may have
retransmitted) and are a floor for its RPC calls under AUTH_SYS, the bytes written cover the
data, and every latency histogram counts exactly its op counter.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.test_kernel_client import vm_skip_reason
from tests.metrics_support import Samples, fetch, parse, scrape, total, value
from tests.vm.harness import WorkloadRun, parse_transcript, user_net_server, workload_config
from tests.vm.initramfs import GUEST, assemble
from tests.vm.kernel import guest_kernel
from tests.vm.qemu import GuestVM, Transcript
from tests.vm.servers import PynfsdServer

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason()))]

BIG_MB = 8
SMALL_FILES = 200
STEPS = "big_file small_files"
CLIENT_OPS = re.compile(r"\[ops\] (\w+): (\d+)")
LOGGED = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


class MetricsServer(PynfsdServer):
    """pynfsd with its metrics endpoint on a free loopback port (read from its log)."""

    def command(self) -> list[str]:
        return [*super().command(), "--metrics", "127.0.0.1:0"]

    @property
    def metrics_port(self) -> int:
        found = LOGGED.findall(self.log_path.read_text(errors="replace"))
        assert found, self.log_tail()
        return int(found[-1])


@dataclass
class Scraper:
    """Scrapes `port` every `interval` seconds in a thread until stopped."""

    port: int
    interval: float = 1.0
    samples: list[Samples] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Scraper:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(scrape(self.port))
            except OSError as e:
                self.failures.append(repr(e))


@dataclass
class MeteredRun:
    run: WorkloadRun
    during: list[Samples]
    failures: list[str]
    final: Samples
    client_ops: dict[str, int]


def metered_workload(workdir: Path) -> MeteredRun:
    kernel = guest_kernel()
    with user_net_server(workdir, MetricsServer) as (net, server):
        assert isinstance(server, MetricsServer)
        with Scraper(server.metrics_port) as scraper:
            config = workload_config(net, server.port, server.export_dir, BIG_MB=BIG_MB,
                                     SMALL_FILES=SMALL_FILES, BIGDIR_COUNT=0, ONLY=STEPS,
                                     STEP_TIMEOUT=400)
            initrd = assemble(kernel, GUEST / "workload.sh", config, workdir / "initrd.img")
            vm = GuestVM(kernel, initrd, net, workdir, 600.0)
            run = WorkloadRun("pynfsd", net.name, server.export_dir, vm.console_log,
                              server.log_path, Transcript())
            run.transcript = vm.run()
            final = parse(fetch(server.metrics_port))
    parse_transcript(run)
    ops = {m.group(1): int(m.group(2)) for line in run.transcript.lines
           if (m := CLIENT_OPS.search(line))}
    shown = {n: (ops.get(n, 0), total(final, "pynfsd_operations_total", op=n))
             for n in ("OPEN", "WRITE", "READ", "CLOSE", "REMOVE", "COMMIT")}
    print(f"\n{len(scraper.samples)} scrapes during the run; client vs server op counts {shown}; "
          f"bytes written {value(final, 'pynfsd_write_bytes_total'):.0f}")
    return MeteredRun(run, scraper.samples, scraper.failures, final, ops)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeteredRun]:
    yield metered_workload(tmp_path_factory.mktemp("metrics"))


def ops(samples: Samples, name: str) -> float:
    return total(samples, "pynfsd_operations_total", op=name)


def test_the_workload_passed(metered: MeteredRun) -> None:
    for step in STEPS.split():
        ok, detail = metered.run.results.get(step, (False, "no result"))
        assert ok, f"{step}: {detail}\n{metered.run.diagnostics()}"
    assert metered.client_ops, metered.run.diagnostics()  # the guest printed its op counts


def test_scraped_during_the_workload_and_counters_only_grow(metered: MeteredRun) -> None:
    assert not metered.failures
    assert len(metered.during) >= 2
    series = [*metered.during, metered.final]
    for name in ("pynfsd_operations_total", "pynfsd_rpc_calls_total", "pynfsd_write_bytes_total"):
        totals = [total(s, name) for s in series]
        assert totals == sorted(totals), name
    assert total(metered.during[0], "pynfsd_operations_total") < total(
        metered.final, "pynfsd_operations_total")


def test_counts_match_the_workload(metered: MeteredRun) -> None:
    final, client = metered.final, metered.client_ops
    # Over TCP a client retransmits only on a new connection: with one connection the server
    # ran exactly the client's operations; otherwise they are a floor.
    exact = value(final, "pynfsd_connections_accepted_total") == 1
    for name in ("WRITE", "OPEN", "CLOSE", "REMOVE", "READ", "COMMIT"):
        if exact:
            assert ops(final, name) == client.get(name, 0), (name, client)
        assert ops(final, name) >= client.get(name, 0), (name, client)
    assert ops(final, "OPEN") >= SMALL_FILES + 1  # every small file and the big one
    assert ops(final, "REMOVE") >= SMALL_FILES
    assert ops(final, "WRITE") >= 1
    written = value(final, "pynfsd_write_bytes_total")
    assert written >= BIG_MB * (1 << 20) + sum(len(f"file {i}\n") for i in range(SMALL_FILES))
    assert value(final, "pynfsd_read_bytes_total") >= BIG_MB * (1 << 20)  # read back for md5
    sys_calls = value(final, "pynfsd_rpc_calls_total", flavor="sys")
    assert sys_calls > 0 and sys_calls >= sum(client.values())
    assert value(final, "pynfsd_connections_accepted_total") >= 1
    assert value(final, "process_cpu_seconds_total") > 0


def test_each_latency_histogram_counts_its_op(metered: MeteredRun) -> None:
    final = metered.final
    counters = final["pynfsd_operations_total"]
    assert counters
    for key, count in counters.items():
        assert final["pynfsd_operation_duration_seconds_count"][key] == count, key
        inf = tuple(sorted((*key, ("le", "+Inf"))))
        assert final["pynfsd_operation_duration_seconds_bucket"][inf] == count, key
        assert final["pynfsd_operation_duration_seconds_sum"][key] > 0, key
