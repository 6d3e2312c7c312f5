"""Scraping a running server's metrics endpoint (`pynfsd serve --metrics`) in tests.

`metrics_port(srv)` reads the port the server logged ("metrics on http://HOST:PORT/metrics",
so `--metrics 127.0.0.1:0` works); `scrape(port)` GETs /metrics and returns
`{sample name: {labels: value}}`, labels as a sorted tuple of (name, value) pairs;
`value(samples, name, **labels)` picks one sample (0 when absent).
"""

from __future__ import annotations

import re
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.serverproc import ServerProcess

_METRICS = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def metrics_port(srv: ServerProcess, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        m = _METRICS.search(srv.log_text())
        if m:
            return int(m.group(1))
        assert time.monotonic() < deadline, f"no metrics address logged:\n{srv.log_text()}"
        time.sleep(0.05)


def fetch(port: int, path: str = "/metrics", timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
        body: bytes = reply.read()
        return body


def parse(text: bytes) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def scrape(port: int) -> Samples:
    return parse(fetch(port))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for k, v in samples.get(name, {}).items() if want <= set(k))
