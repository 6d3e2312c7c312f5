"""The server process the hostile tests attack: one `pynfsd serve` exporting the module's
`export` fixture (rw, no_root_squash, insecure) with the options of the test's indirect
`server` parameter; its log must be free of tracebacks and SERVERFAULTs at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ServerProcess, assert_log_clean


@pytest.fixture
def server(tmp_path: Path, export: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    extra = getattr(request, "param", ())
    with ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], tmp_path / "state",
                       extra_args=extra, log_level="INFO") as srv:
        yield srv
        assert_log_clean(srv.log_text())
