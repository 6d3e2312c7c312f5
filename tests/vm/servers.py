"""The NFS server under test, as a small process abstraction.

``Server`` runs one server process (inside the test's network namespace when there is one),
logs it to ``workdir/<name>.log`` and ends only that process, by PID. Implementations:
``PynfsdServer`` (``python -m pynfsd serve``) and ``GaneshaServer`` (NFS-Ganesha, VFS FSAL,
NFSv4.0 only, no rpcbind). Both keep the export and their recovery state in ``workdir``, so a
``restart()`` finds the same files and client records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from tests.vm.network import Network
from tests.vm.qemu import GuestVM, Transcript

REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.1)
"""


class ServerError(RuntimeError):
    """The server did not start or stop as asked; the message holds its log tail."""


class Server(ABC):
    """One NFSv4.0 server process serving ``export_dir`` on ``network.server_bind:port``."""

    name = "abstract"

    def __init__(self, workdir: Path, network: Network, port: int | None = None,
                 lease: int = 10, grace: int = 10) -> None:
        self.workdir = workdir
        self.network = network
        self.export_dir = workdir / "export"
        self.state_dir = workdir / "state"
        self.port = port if port is not None else network.free_port()
        self.lease = lease
        self.grace = grace
        self.log_path = workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.restarting = False
        self.starts = 0              # successful start() calls, e.g. 2 after one restart()

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground."""

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def pid(self) -> int | None:
        """PID of the running server process, None when not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until its port accepts connections."""
        if self.pid is not None:
            raise ServerError(f"{self.name} already running as {self.pid}")
        self.export_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"==== start {time.strftime('%H:%M:%S')}: {self.command()}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(self.network.wrap(self.command()), stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self.environment(), cwd=self.workdir,
                                          start_new_session=True)
        self._wait_ready(timeout)
        self.starts += 1

    def _wait_ready(self, timeout: float) -> None:
        probe = [sys.executable, "-c", PROBE, self.network.server_bind, str(self.port),
                 str(timeout)]
        ready = subprocess.run(self.network.wrap(probe), capture_output=True).returncode == 0
        if not ready or self.pid is None:
            self.kill()
            raise ServerError(f"{self.name} did not come up on port {self.port}:\n"
                              f"{self.log_tail()}")

    def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return True
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        if not self._signal_and_wait(signal.SIGTERM, timeout):
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server process (only ours, by PID) and reap it."""
        self._signal_and_wait(signal.SIGKILL, 30.0)

    def restart(self) -> None:
        """Stop and start again on the same port with the same export and state."""
        self.restarting = True
        try:
            self.stop()
            self.start()
        finally:
            self.restarting = False

    def crash_restart(self) -> None:
        """SIGKILL (no clean shutdown) and start again: recovery from stable storage only."""
        self.restarting = True
        try:
            self.kill()
            self.start()
        finally:
            self.restarting = False

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class PynfsdServer(Server):
    """``python -m pynfsd serve`` from this repository."""

    name = "pynfsd"

    def __init__(self, workdir: Path, network: Network, port: int | None = None,
                 lease: int = 10, grace: int = 10, extra_args: Sequence[str] = ()) -> None:
        super().__init__(workdir, network, port, lease, grace)
        self.extra_args = list(extra_args)   # more `serve` options, e.g. --delegations off

    def command(self) -> list[str]:
        line = f"{self.export_dir} *(rw,no_root_squash,insecure)"
        return [sys.executable, "-m", "pynfsd", "serve", "--export", line,
                "--bind", self.network.server_bind, "--port", str(self.port),
                "--state-dir", str(self.state_dir), "--lease", str(self.lease),
                "--grace", str(self.grace), "--log-level", "info", *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                          env.get("PYTHONPATH")]))
        return env


GANESHA_CONF = """\
NFS_CORE_PARAM {{
    NFS_Port = {port};
    Bind_addr = {bind};
    Protocols = 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = false;
    Lease_Lifetime = {lease};
    Grace_Period = {grace};
    Minor_Versions = 0;
    RecoveryBackend = fs;
    RecoveryRoot = "{recovery}";
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = "{export}";
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


class GaneshaServer(Server):
    """NFS-Ganesha with the VFS FSAL, NFSv4.0 only (the comparison peer)."""

    name = "ganesha"

    def command(self) -> list[str]:
        conf = self.workdir / "ganesha.conf"
        recovery = self.state_dir / "recovery"
        recovery.mkdir(parents=True, exist_ok=True)
        conf.write_text(GANESHA_CONF.format(port=self.port, bind=self.network.server_bind,
                                            lease=self.lease, grace=self.grace,
                                            recovery=recovery, export=self.export_dir))
        return ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(self.workdir / "ganesha.nfsd.log"),
                "-p", str(self.workdir / "ganesha.pid"), "-N", "NIV_EVENT"]


def run_guest(server: Server, vm: GuestVM, errors: list[str],
              after: Callable[[], None] = lambda: None) -> Transcript:
    """Start ``server``, boot ``vm`` against it, then call ``after`` and stop the server. An
    exception is recorded in ``errors`` (the transcript is then what the guest printed, if
    anything), not raised."""
    transcript = Transcript()
    try:
        server.start()
        transcript = vm.run()
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        after()
        server.stop()
    return transcript


SERVERS: dict[str, type[Server]] = {"pynfsd": PynfsdServer, "ganesha": GaneshaServer}


def make_server(name: str, workdir: Path, network: Network) -> Server:
    """A server of the named kind (``pynfsd`` or ``ganesha``); not yet started."""
    return SERVERS[name](workdir, network)
