"""What the metrics cost under the kernel-client benchmark (``kernel_bench --metrics``).

Two pynfsd runs of the same guest workload, alternating like the Ganesha comparison:

* ``pynfsd``: metrics off.  With ``--baseline TREE`` this is the pynfsd of another source
  tree (e.g. ``git archive`` of the commit before the counters), so the hot-path counters
  are measured too; without it, this tree without ``--metrics``.
* ``pynfsd+metrics``: this tree with ``--metrics 127.0.0.1:0``, scraped every
  ``--scrape-interval`` seconds (default 1) by a small process in the server's network (a
  Prometheus scrapes every 15 to 60 s: once a second is the pessimistic case).  Every scrape's outcome is counted; a failed one is an error.

The CPU rows of the table are the figure: server CPU per MiB and per operation, on over off.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.vm.network import Network
from tests.vm.servers import PynfsdServer

SCRAPE_INTERVAL = 1.0
LOGGED = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
SCRAPER = """
import sys, time, urllib.request
url, interval, ok, failed = sys.argv[1], float(sys.argv[2]), 0, 0
while True:
    time.sleep(interval)
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            reply.read()
        ok += 1
    except OSError as e:
        failed += 1
        print("scrape failed:", e, flush=True)
    print(f"scrapes ok={ok} failed={failed}", flush=True)
"""


class BaselinePynfsd(PynfsdServer):
    """pynfsd from another source tree (metrics off)."""

    def __init__(self, workdir: Path, network: Network, tree: Path) -> None:
        super().__init__(workdir, network)
        self.tree = tree

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["PYTHONPATH"] = str(self.tree)
        return env


class MeteredPynfsd(PynfsdServer):
    """pynfsd with ``--metrics``, scraped every `interval` seconds while it runs."""

    name = "pynfsd+metrics"

    def __init__(self, workdir: Path, network: Network,
                 interval: float = SCRAPE_INTERVAL) -> None:
        super().__init__(workdir, network)
        self.interval = interval
        self.scrape_log = workdir / "scrapes.log"
        self._scraper: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [*super().command(), "--metrics", "127.0.0.1:0"]

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        found = LOGGED.findall(self.log_path.read_text(errors="replace"))
        url = f"http://127.0.0.1:{found[-1]}/metrics"
        argv = [sys.executable, "-c", SCRAPER, url, str(self.interval)]
        with open(self.scrape_log, "ab") as log:
            self._scraper = subprocess.Popen(self.network.wrap(argv), stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, timeout: float = 20.0) -> None:
        if self._scraper is not None and self._scraper.poll() is None:
            os.kill(self._scraper.pid, signal.SIGTERM)
            self._scraper.wait(10)
        self._scraper = None
        super().stop(timeout)

    def scrapes(self) -> tuple[int, int]:
        """(successful, failed) scrapes of the last run."""
        runs = re.findall(r"scrapes ok=(\d+) failed=(\d+)", self.scrape_log.read_text())
        return (int(runs[-1][0]), int(runs[-1][1])) if runs else (0, 0)
