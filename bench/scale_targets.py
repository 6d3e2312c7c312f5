"""The servers the scale benchmark drives, each with its own memory probe.

`ProcessTarget` starts a real ``python -m pynfsd serve`` (through `tests.serverproc`, or
``bench.profiled_serve`` when a pstats file is asked for) and measures its resident set from
``/proc/PID/status``; clients come over TCP connections.  `InProcessTarget` builds an
`NFSServer` in this process and runs COMPOUNDs straight through it (no sockets); its probe is
tracemalloc, counting only the live allocations made under the state manager's modules
(``pynfsd/nfs4/state/*.py``) and, as a wider figure, under any server-side package.

Both export a fresh temporary directory through a `LocalBackend`, with a long lease so no
client lapses during a long run.
"""

from __future__ import annotations

import fnmatch
import functools
import gc
import shutil
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from bench.cpu import cpu_seconds
from pynfsd.client.nfs4 import Nfs4Client, in_process
from pynfsd.rpc.client import AuthSysCred
from tests.serverproc import HOST, ServerProcess

LEASE = 3600
STATE_FILTER = "*/pynfsd/nfs4/state/*.py"
SERVER_FILTERS = ("*/pynfsd/nfs4/*", "*/pynfsd/rpc/*", "*/pynfsd/fs/*", "*/pynfsd/exports/*")
TRACE_FRAMES = 12


class Target(Protocol):
    export: Path

    async def connect(self, n: int) -> list[Nfs4Client]: ...

    def memory(self) -> dict[str, int]:
        """Bytes, by probe name; the first key is the headline figure."""
        ...

    def cpu(self) -> float | None: ...

    def close(self) -> None: ...


def _export_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pynfsd-scale-"))


class _ProfiledServer(ServerProcess):
    """A ServerProcess run under ``bench.profiled_serve`` (one pstats file at exit)."""

    def __init__(self, pstats_out: Path, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.pstats_out = pstats_out

    def argv(self) -> list[str]:
        argv = super().argv()
        serve = argv.index("serve")
        return [sys.executable, "-m", "bench.profiled_serve", str(self.pstats_out), *argv[serve:]]


class ProcessTarget:
    """A real server process; memory is its VmRSS."""

    def __init__(self, pstats_out: Path | None = None) -> None:
        self.export = _export_dir()
        self.workdir = Path(tempfile.mkdtemp(prefix="pynfsd-scale-state-"))
        lines = [f"{self.export} *(rw,no_root_squash,insecure)"]
        extra = ["--lease", str(LEASE), "--grace", "0"]
        state = self.workdir / "state"
        if pstats_out is None:
            self.server = ServerProcess(lines, state, extra_args=extra, log_level="INFO")
        else:
            self.server = _ProfiledServer(pstats_out, lines, state, extra_args=extra, log_level="INFO")
        self.server.start()

    async def connect(self, n: int) -> list[Nfs4Client]:
        return [await Nfs4Client.connect(HOST, self.server.port, cred=AuthSysCred(0, 0)) for _ in range(n)]

    def memory(self) -> dict[str, int]:
        return {"rss": 1024 * self.server.rss_kib()}

    def cpu(self) -> float | None:
        return cpu_seconds(self.server.pid)

    def log_tail(self) -> str:
        return self.server.log_text()[-4000:]

    def close(self) -> None:
        self.server.stop(timeout=120)
        shutil.rmtree(self.export, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


class InProcessTarget:
    """An NFSServer in this process; memory is what tracemalloc saw it keep."""

    def __init__(self, trace: bool) -> None:
        from pynfsd.exports import parse_export_line
        from pynfsd.exports.resolver import StaticExportResolver
        from pynfsd.nfs4.server import NFSServer, ServerConfig

        self.export = _export_dir()
        self.workdir = Path(tempfile.mkdtemp(prefix="pynfsd-scale-state-"))
        state = self.workdir / "state"
        state.mkdir()
        config = ServerConfig(state_dir=str(state), lease_time=LEASE, grace_time=0)
        resolver = StaticExportResolver([parse_export_line(f"{self.export} *(rw,no_root_squash)")])
        self.server = NFSServer(config, resolver)
        self.trace = trace

    async def connect(self, n: int) -> list[Nfs4Client]:
        return [in_process(self.server) for _ in range(n)]

    def start_tracing(self) -> None:
        """Trace from here on: the baseline is taken after warm-up, so it is ~0."""
        if self.trace:
            gc.collect()
            tracemalloc.start(TRACE_FRAMES)

    def memory(self) -> dict[str, int]:
        if not tracemalloc.is_tracing():
            return {}
        totals = {"state": 0, "server": 0}
        for stat, where in _classified(self._snapshot()):
            if where is not None:
                totals["state"] += stat.size
            if where is not None or _server_side(stat.traceback):
                totals["server"] += stat.size
        return totals

    def top_allocations(self, limit: int = 12) -> list[tuple[str, int, int]]:
        """The state manager's largest live allocation sites: (file:line, bytes, blocks).

        A site is the innermost ``state*.py`` line of the allocation's traceback.
        """
        sites: dict[str, list[int]] = {}
        for stat, where in _classified(self._snapshot()):
            if where is not None:
                acc = sites.setdefault(where, [0, 0])
                acc[0] += stat.size
                acc[1] += stat.count
        ranked = sorted(sites.items(), key=lambda kv: -kv[1][0])[:limit]
        return [(where, size, count) for where, (size, count) in ranked]

    def _snapshot(self) -> tracemalloc.Snapshot:
        gc.collect()
        return tracemalloc.take_snapshot()

    def cpu(self) -> float | None:
        return None

    def close(self) -> None:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        self.server.close()
        shutil.rmtree(self.export, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _classified(snap: tracemalloc.Snapshot) -> Iterator[tuple[tracemalloc.Statistic, str | None]]:
    """Live allocations grouped by traceback, each with its innermost state-manager line.

    (tracemalloc's own fnmatch filters take ~1 ms per trace: far too slow for a million.)
    """
    for stat in snap.statistics("traceback"):
        where = None
        for frame in reversed(list(stat.traceback)):  # most recent frame last
            if _is_state(frame.filename):
                where = f"{_short(frame.filename)}:{frame.lineno}"
                break
        yield stat, where


@functools.cache
def _is_state(filename: str) -> bool:
    return fnmatch.fnmatch(filename, STATE_FILTER)


@functools.cache
def _is_server(filename: str) -> bool:
    return any(fnmatch.fnmatch(filename, p) for p in SERVER_FILTERS)


def _server_side(tb: tracemalloc.Traceback) -> bool:
    return any(_is_server(frame.filename) for frame in tb)


def _short(path: str) -> str:
    at = path.rfind("pynfsd/")
    return path[at:] if at >= 0 else path
