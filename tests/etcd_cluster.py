"""Start a real etcd cluster (Debian `etcd-server`) as child processes for tests.

    with EtcdCluster(members=3, workdir=tmp_path) as cluster:
        url = f"etcd://{cluster.endpoints}/pynfsd"       # "127.0.0.1:P1,127.0.0.1:P2,..."
        cluster.kill(cluster.leader())                    # SIGKILL; the others elect a leader
        cluster.restart(i)                                # same data dir, rejoins the cluster

Each member listens on `host` (client and peer ports picked free on this host, or given) and
keeps its data in `workdir/member<i>`; its stdout and stderr go to `workdir/member<i>.log`.
`wrap` is an argv prefix every etcd and etcdctl command runs under, e.g.
`["ip", "netns", "exec", NS]` to run the members inside a network namespace on that
namespace's address (then pass `ports=` or let free ports be picked: a fresh namespace has
all of them free). `start()` waits until every running member answers `etcdctl endpoint
health`. `stop()` kills only the PIDs this object started and removes their data dirs.
Needs `etcd` and `etcdctl` on PATH (scripts/etcd-deps.sh installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


class EtcdError(RuntimeError):
    """A member did not start, or the cluster did not become healthy in time."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that are free on this host right now (bound to port 0, then closed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdCluster:
    """`members` etcd processes forming one cluster; see the module docstring."""

    def __init__(
        self,
        members: int = 3,
        host: str = "127.0.0.1",
        wrap: Sequence[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        *,
        ports: Sequence[int] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.wrap = list(wrap or [])
        self.workdir = Path(workdir) if workdir else Path(
            f"/tmp/pynfsd-etcd-{os.getpid()}-{int(time.monotonic() * 1000)}")
        self.start_timeout = start_timeout
        if ports is None:
            ports = free_ports(2 * members, "127.0.0.1" if self.wrap else host)
        if len(ports) != 2 * members:
            raise ValueError("ports needs two per member: client ports, then peer ports")
        self.client_ports = list(ports[:members])
        self.peer_ports = list(ports[members:])
        self.names = [f"m{i}" for i in range(members)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self.killed: set[int] = set()  # members kill() stopped on purpose
        self.token = f"pynfsd-test-{os.getpid()}-{id(self)}"

    # ----------------------------------------------------------------- addresses
    @property
    def endpoints(self) -> str:
        """`HOST:PORT,HOST:PORT,...` of every member (the part after `etcd://`)."""
        return ",".join(f"{self.host}:{p}" for p in self.client_ports)

    def client_url(self, i: int) -> str:
        return f"http://{self.host}:{self.client_ports[i]}"

    def _peer_url(self, i: int) -> str:
        return f"http://{self.host}:{self.peer_ports[i]}"

    def data_dir(self, i: int) -> Path:
        return self.workdir / f"member{i}"

    def log_path(self, i: int) -> Path:
        return self.workdir / f"member{i}.log"

    # ----------------------------------------------------------------- lifecycle
    def _argv(self, i: int) -> list[str]:
        initial = ",".join(f"{n}={self._peer_url(j)}" for j, n in enumerate(self.names))
        return [*self.wrap, "etcd", "--name", self.names[i],
                "--data-dir", str(self.data_dir(i)),
                "--listen-client-urls", self.client_url(i),
                "--advertise-client-urls", self.client_url(i),
                "--listen-peer-urls", self._peer_url(i),
                "--initial-advertise-peer-urls", self._peer_url(i),
                "--initial-cluster", initial,
                "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new"]

    def _spawn(self, i: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.killed.discard(i)
        with open(self.log_path(i), "ab") as log:
            self.procs[i] = subprocess.Popen(self._argv(i), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)

    def start(self) -> EtcdCluster:
        if shutil.which("etcd") is None:
            raise EtcdError("etcd is not installed (sh scripts/etcd-deps.sh)")
        for i in range(len(self.names)):
            if not self.running(i):
                self._spawn(i)
        self.wait_healthy()
        return self

    def running(self, i: int) -> bool:
        p = self.procs[i]
        return p is not None and p.poll() is None

    def pid(self, i: int) -> int | None:
        p = self.procs[i]
        return p.pid if p is not None and p.poll() is None else None

    def kill(self, i: int) -> None:
        """SIGKILL member i (no clean shutdown; its data dir stays for restart())."""
        p = self.procs[i]
        self.killed.add(i)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)

    def restart(self, i: int, wait: bool = True) -> None:
        """Start member i again on its data dir (after kill); wait until the cluster is healthy."""
        self.kill(i)
        self._spawn(i)
        if wait:
            self.wait_healthy()

    def stop(self) -> None:
        """Kill every member this object started (by PID) and remove the data dirs."""
        for i in range(len(self.names)):
            self.kill(i)
        for i in range(len(self.names)):
            shutil.rmtree(self.data_dir(i), ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ----------------------------------------------------------------- queries
    def etcdctl(self, *args: str, endpoints: Sequence[int] | None = None,
                timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        idx = list(endpoints) if endpoints is not None else self.live()
        eps = ",".join(self.client_url(i) for i in idx)
        argv = [*self.wrap, "etcdctl", "--endpoints", eps, "--command-timeout=3s", *args]
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=timeout, env=env)

    def live(self) -> list[int]:
        return [i for i in range(len(self.names)) if self.running(i)]

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until every running member reports healthy (the cluster has a leader)."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last = ""
        while time.monotonic() < deadline:
            for i in range(len(self.names)):
                p = self.procs[i]
                if p is not None and i not in self.killed and p.poll() is not None:
                    raise EtcdError(f"etcd member {i} exited with {p.returncode}; "
                                    f"log: {self._tail(i)}")
            try:
                r = self.etcdctl("endpoint", "health")
                if r.returncode == 0:
                    return
                last = r.stderr + r.stdout
            except subprocess.TimeoutExpired as exc:
                last = str(exc)
            time.sleep(0.2)
        raise EtcdError(f"etcd cluster not healthy after {timeout or self.start_timeout}s: {last}")

    def leader(self, timeout: float = 20.0) -> int:
        """The index of the current leader among the running members (waits for an election)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self._leader_once()
            if found is not None:
                return found
            time.sleep(0.2)
        raise EtcdError(f"no etcd leader among members {self.live()} after {timeout}s")

    def _leader_once(self) -> int | None:
        live = self.live()
        try:
            r = self.etcdctl("endpoint", "status", "-w", "json", endpoints=live)
        except subprocess.TimeoutExpired:
            return None
        try:
            rows = json.loads(r.stdout or "[]")
        except ValueError:
            return None
        by_url = {self.client_url(i): i for i in live}
        for row in rows:
            st = row.get("Status", {})
            if st.get("leader") and st.get("header", {}).get("member_id") == st["leader"]:
                return by_url.get(row.get("Endpoint"))
        return None

    def _tail(self, i: int, n: int = 2000) -> str:
        try:
            return self.log_path(i).read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""
