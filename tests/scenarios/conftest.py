"""Fixtures for the scenarios: a real `pynfsd serve` with short leases, and a timeline.

The server announces a 4 s lease (enforced 0.4 s longer) and keeps an 8 s grace period,
so a whole scenario runs in seconds.  `pytest -s tests/scenarios` prints every timeline; a
failing scenario also carries its timeline in the report section "timeline".
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.scenarios.helpers import GRACE, LEASE, SCENARIO_TIMEOUT
from tests.scenarios.timeline import Timeline
from tests.serverproc import ServerProcess, assert_log_clean


@pytest.fixture(autouse=True)
def hang_guard() -> float:
    """A scenario may run longer than other coroutine tests: leases and grace run out in it."""
    return SCENARIO_TIMEOUT


@pytest.fixture
def timeline(request: pytest.FixtureRequest) -> Timeline:
    doc = (request.node.function.__doc__ or "").strip().splitlines()
    return Timeline(f"{request.node.name}: {doc[0] if doc else ''}")


@pytest.fixture
def export(tmp_path: Path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    return d


@pytest.fixture
def server(tmp_path: Path, export: Path) -> Iterator[ServerProcess]:
    """A running server exporting `export` as the root of its namespace (fsid=0); its log must stay free of tracebacks."""
    srv = ServerProcess([f"{export} *(rw,no_root_squash,insecure,fsid=0)"], tmp_path / "state",
                        extra_args=["--lease", str(LEASE), "--grace", str(GRACE)])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
    assert_log_clean(srv.log_text())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach a failed scenario's timeline to its report."""
    report = yield
    tl = getattr(item, "funcargs", {}).get("timeline")
    if isinstance(tl, Timeline) and report.when == "call" and report.failed:
        report.sections.append(("timeline", tl.text()))
    return report
