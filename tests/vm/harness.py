"""One complete workload run: network + server + guest boot, with parsed results.

``run_workload(server_name, net_name, workdir, ...)`` prepares the export (a host-made file with
known attributes and a 10,000-entry directory), starts the server inside the chosen network,
boots the guest with ``guest/workload.sh``, restarts the server when the guest asks
(``@@PAUSE restart``: SIGTERM + start; ``@@PAUSE crash``: SIGKILL + start), and returns a ``WorkloadRun`` with the guest's ``@@RESULT`` and
``@@VALUE`` lines and the export directory for host-side checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.vm.initramfs import GUEST, assemble
from tests.vm.kernel import guest_kernel
from tests.vm.network import Network, UserNet, make_network
from tests.vm.qemu import GuestVM, Transcript
from tests.vm.servers import SERVERS, Server, make_server

RESULT_RE = re.compile(r"^@@RESULT (\S+) (PASS|FAIL)\s*(.*)$")
VALUE_RE = re.compile(r"^@@VALUE (\S+) (.*)$")

NETWORKS = ("user", "netns")

HOST_FILE_TEXT = "made on the host\n"
HOST_FILE_MODE = 0o604
HOST_FILE_OWNER = (4321, 8765)
HOST_FILE_MTIME = 1234567890


@dataclass
class WorkloadRun:
    """Outcome of one guest boot against one server over one network mode."""

    server: str
    network: str
    export_dir: Path
    console_log: Path
    server_log: Path
    transcript: Transcript
    results: dict[str, tuple[bool, str]] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    server_starts: int = 0

    def diagnostics(self, lines: int = 60) -> str:
        """Console tail, server log tail and harness errors, for assertion messages."""
        head = f"[{self.server}/{self.network}] console: {self.console_log}\n"
        extra = "".join(f"harness: {e}\n" for e in self.errors)
        if self.transcript.timed_out:
            extra += "harness: the VM hit its hard timeout\n"
        if self.transcript.aborted:
            extra += f"harness: VM stopped early: {self.transcript.aborted}\n"
        server_tail = tail_file(self.server_log, 25)
        return (f"{head}{extra}--- console tail ---\n{self.transcript.tail(lines)}\n"
                f"--- server log tail ({self.server_log}) ---\n{server_tail}")

    def passed(self, name: str) -> str:
        """The detail of the guest's ``@@RESULT <name> PASS`` line (AssertionError, with the
        diagnostics, when it failed or is missing)."""
        ok, detail = self.results.get(name, (False, "no result"))
        assert ok, f"guest check {name}: {detail}\n{self.diagnostics()}"
        return detail

    def assert_exited(self) -> None:
        """The guest ran its workload to ``@@EXIT 0`` without harness errors or timeout."""
        assert not self.errors and not self.transcript.timed_out, self.diagnostics()
        exits = [line for line in self.transcript.lines if line.startswith("@@EXIT")]
        assert exits and exits[-1].split()[:2] == ["@@EXIT", "0"], self.diagnostics()


def tail_file(path: Path, n: int) -> str:
    """The last `n` lines of a log, or "(missing)"."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(missing)"


def servers_under_test() -> list[str]:
    """``$PYNFSD_E2E_SERVERS`` (comma separated), default ``pynfsd`` only."""
    names = [n.strip() for n in os.environ.get("PYNFSD_E2E_SERVERS", "pynfsd").split(",")]
    unknown = [n for n in names if n and n not in SERVERS]
    if unknown:
        raise ValueError(f"PYNFSD_E2E_SERVERS: unknown {unknown}; known: {sorted(SERVERS)}")
    return [n for n in names if n]


def prepare_export(export_dir: Path, bigdir_count: int) -> None:
    """Content the guest checks: a file with host-set attributes and a large directory."""
    export_dir.mkdir(parents=True, exist_ok=True)
    host_file = export_dir / "hostfile"
    host_file.write_text(HOST_FILE_TEXT)
    os.chown(host_file, *HOST_FILE_OWNER)
    os.chmod(host_file, HOST_FILE_MODE)
    os.utime(host_file, (HOST_FILE_MTIME, HOST_FILE_MTIME))
    bigdir = export_dir / "bigdir"
    bigdir.mkdir()
    for i in range(bigdir_count):
        (bigdir / f"entry-{i:05d}").touch()


def parse_transcript(run: WorkloadRun) -> None:
    for line in run.transcript.lines:
        if m := RESULT_RE.match(line):
            run.results[m.group(1)] = (m.group(2) == "PASS", m.group(3))
        elif m := VALUE_RE.match(line):
            run.values[m.group(1)] = m.group(2).strip()


def workload_config(net: Network, port: int, export_dir: Path,
                    **settings: str | int) -> dict[str, str | int]:
    """The guest's /config for ``guest/workload.sh``: how to reach the server, and `settings`
    (BIG_MB, SMALL_FILES, BIGDIR_COUNT, ONLY, STEP_TIMEOUT)."""
    return {"SERVER_IP": net.server_addr, "NFS_PORT": port, "EXPORT_PATH": str(export_dir),
            "MOUNT_EXTRA": net.mount_extra, "GUEST_IP": net.guest_ip,
            "GUEST_PREFIX": net.guest_prefix, **settings}


@contextmanager
def user_net_server(workdir: Path, make: Callable[[Path, Network], Server],
                    ) -> Iterator[tuple[Network, Server]]:
    """A user-mode network and a running server (`make(workdir, net)`) whose export holds
    the host-made file and an empty large directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    with UserNet() as net:
        server = make(workdir, net)
        prepare_export(server.export_dir, 0)
        with server:
            yield net, server


def run_workload(server_name: str, net_name: str, workdir: Path, *, big_mb: int = 0,
                 small_files: int = 2000, bigdir_count: int = 10000,
                 timeout: float = 300.0, only: str = "", step_timeout: int = 120,
                 make: Callable[[str, Path, Network], Server] = make_server,
                 script: Path = GUEST / "workload.sh",
                 settings: Mapping[str, str | int] | None = None,
                 pause: Callable[[Server], Callable[[str], str | None]] | None = None,
                 layers: Sequence[Path] = (),
                 ) -> WorkloadRun:
    """Boot the guest once and run the workload (``only``: space-separated step names, default
    all; ``make``: the server, by default the named kind); never raises for guest failures.
    Another guest script runs with ``script`` (more /config entries in ``settings``), and
    ``pause(server)`` answers its ``@@PAUSE`` requests (default: restart and crash).
    ``layers``: more gzip'd cpio archives appended to the initrd (tools for the guest)."""
    kernel = guest_kernel()
    workdir.mkdir(parents=True, exist_ok=True)
    with make_network(net_name) as net:
        server = make(server_name, workdir, net)
        prepare_export(server.export_dir, bigdir_count)
        config = workload_config(net, server.port, server.export_dir, BIG_MB=big_mb,
                                 SMALL_FILES=small_files, BIGDIR_COUNT=bigdir_count,
                                 ONLY=only, STEP_TIMEOUT=step_timeout, **(settings or {}))
        initrd = assemble(kernel, script, config, workdir / "initrd.img")
        with open(initrd, "ab") as out:
            for layer in layers:
                out.write(layer.read_bytes())
        vm = GuestVM(kernel, initrd, net, workdir, timeout,
                     on_pause=(pause or _pause_handler)(server),
                     watchdog=_server_watchdog(server))
        run = WorkloadRun(server_name, net_name, server.export_dir, vm.console_log,
                          server.log_path, Transcript())
        try:
            server.start()
            run.transcript = vm.run()
        except Exception as exc:
            run.errors.append(repr(exc))
        finally:
            if server.pid is None and not run.errors:
                run.errors.append(f"{server_name} was not running at the end of the workload")
            server.stop()
            run.server_starts = server.starts
    run.errors.extend(run.transcript.pause_errors)
    parse_transcript(run)
    return run


def _server_watchdog(server: Server) -> Callable[[], str | None]:
    def check() -> str | None:
        if server.pid is None and not server.restarting:
            return f"{server.name} exited during the workload (see {server.log_path})"
        return None
    return check


def _pause_handler(server: Server) -> Callable[[str], None]:
    def on_pause(what: str) -> None:
        if what == "restart":
            server.restart()
        elif what == "crash":
            server.crash_restart()
        else:
            raise ValueError(f"unknown pause request {what!r}")
    return on_pause
