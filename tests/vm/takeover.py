"""A takeover scene: two pynfsd nodes behind a floating address, kernel-client guests, a timeline.

    with TakeoverScene(workdir, "takeover", lease=10, grace=15) as scene:
        g1 = scene.guest("G1", hostname="t-one", unique_id="t-one-id")
        ...
        scene.kill_server()          # kill -9 the active node
        scene.take_over("b")         # move the service address to B, start B there
        with scene.contender("locked.dat") as c2: ...

The network is a ``FailoverNet`` (``tests/vm/failover.py``). Both nodes serve the same host
directory. Where they keep client records and the filehandle key (``store``):

* ``"state-dir"``: one shared ``--state-dir`` (the embedded file store on shared storage).
  Only one node runs at a time, which the state directory's lock enforces: B starts once A
  is dead and the address is on B's side; its grace period is the takeover's.
* ``"etcd"``: a 3-member etcd cluster in the bridge namespace (``tests/etcd_cluster.py``),
  which the nodes reach over their veths (``--recovery etcd://... --node-id a|b``, each node
  its own state directory). B runs from the start on its own address; when A's membership
  lapses, B begins the cluster's grace for A's clients, and only then does the test move the
  address to it (as a cluster manager moves a service address once the survivor is ready).

Either way A's clients reclaim their state on B within its grace period.

``Contender`` runs ``tests/vm/contender.py`` (a client of the project's library) in the bridge
namespace and keeps what it prints with the time each line arrived, on the timeline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pynfsd.admin import format_grace
from pynfsd.recovery.cluster import format_cluster
from tests.etcd_cluster import EtcdCluster
from tests.vm.failover import FLOATING_ADDR, FailoverNet
from tests.vm.multi import ConsoleLine
from tests.vm.network import Network
from tests.vm.scene import Scene
from tests.vm.servers import REPO_ROOT, PynfsdServer

STORES = ("state-dir", "etcd")


class TakeoverScene(Scene):
    """A ``Scene`` on a ``FailoverNet``: node A serves first, ``take_over`` moves to B."""

    def __init__(self, workdir: Path, title: str, *, lease: int = 10, grace: int = 10,
                 server_args: Sequence[str] = (), store: str = "state-dir") -> None:
        if store not in STORES:
            raise ValueError(f"store {store!r}: one of {STORES}")
        self.nodes: dict[str, PynfsdServer] = {}
        self.active = "a"
        self.store = store
        super().__init__(workdir, title, guests=1, lease=lease, grace=grace,
                         server_args=server_args, server=self._first_node, bridge=FailoverNet)
        standby = self._node("b")
        standby.lease, standby.grace = lease, grace
        standby.extra_args += server_args
        self.etcd: EtcdCluster | None = None
        if store == "etcd":
            self.etcd = EtcdCluster(3, host=self.failover.bridge_addr,
                                    wrap=self.failover.wrap([]), workdir=workdir / "etcd")
            self._use_etcd(f"etcd://{self.etcd.endpoints}/pynfsd-takeover")

    def _use_etcd(self, url: str) -> None:
        """Each node its own state directory; records, grace and handle key in etcd."""
        for name, node in self.nodes.items():
            node.state_dir = node.workdir / "state"
            node.extra_args += ["--recovery", url, "--node-id", name]

    def __enter__(self) -> TakeoverScene:
        if self.etcd is not None:
            try:
                self.etcd.start()
            except BaseException:
                self.etcd.stop()
                self.bridge.close()
                raise
            self.timeline.log("host", f"etcd: 3 members on {self.etcd.endpoints}")
        super().__enter__()
        if self.etcd is not None:
            self.nodes["b"].start()
            self.timeline.log("host", f"node b: pynfsd started (pid {self.nodes['b'].pid}), "
                              "standing by on its own address")
        return self

    @property
    def failover(self) -> FailoverNet:
        assert isinstance(self.bridge, FailoverNet)
        return self.bridge

    def _first_node(self, workdir: Path, network: Network) -> PynfsdServer:
        return self._node("a")

    def _node(self, name: str) -> PynfsdServer:
        """Node ``name`` in its namespace, with the shared export and state directories."""
        node = PynfsdServer(self.workdir / f"node-{name}", self.failover.node(name))
        node.workdir.mkdir(parents=True, exist_ok=True)
        node.export_dir = self.workdir / "export"
        node.state_dir = self.workdir / "state"
        self.nodes[name] = node
        return node

    def kill_server(self) -> None:
        pid = self.server.pid
        self.server.kill()
        self.timeline.log("host", f"kill -9 node {self.active}'s pynfsd (pid {pid}): no clean "
                          "shutdown")

    def take_over(self, to: str) -> None:
        """Node ``to`` takes the service address: with etcd, once it has begun the cluster's
        grace for the dead node's clients; on a shared state directory, it starts there."""
        node = self.nodes[to]
        if self.etcd is not None:
            grace = self.wait_in_grace(node, 60.0)
            self.timeline.log("host", f"node {to}: in grace ({format_grace(grace)})")
        self.failover.move_floating(to)
        self.timeline.log("host", f"service address {FLOATING_ADDR} moved to node {to} "
                          "(its interface and MAC with it)")
        self.server, self.active = node, to
        if self.etcd is not None:
            self.show_cluster(node)
        if self.etcd is None:
            node.start()
            self.timeline.log("host", f"node {to}: pynfsd started (pid {node.pid}) on the "
                              f"shared state: grace {node.grace}s for the takeover")

    def status(self, node: PynfsdServer) -> dict[str, Any]:
        """``pynfsd status --json`` of a running node."""
        argv = [sys.executable, "-m", "pynfsd", "status", "--json", "--state-dir",
                str(node.state_dir)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True,
                             env=node.environment(), cwd=REPO_ROOT).stdout
        data = json.loads(out)
        assert isinstance(data, dict)
        return data

    def show_cluster(self, node: PynfsdServer) -> dict[str, Any]:
        """The cluster as ``node`` sees it (``pynfsd status``), shown on the timeline."""
        cluster = dict(self.status(node).get("cluster") or {})
        for line in format_cluster(cluster):
            self.timeline.log("host", line)
        return cluster

    def wait_in_grace(self, node: PynfsdServer, timeout: float) -> dict[str, Any]:
        """The node's grace status once it reports being in grace."""
        end = time.monotonic() + timeout
        while True:
            grace = self.status(node).get("grace") or {}
            if grace.get("in_grace"):
                return dict(grace)
            if time.monotonic() > end:
                raise AssertionError(f"node not in grace after {timeout:.0f}s: {grace}\n"
                                     f"{self.timeline.text()}")
            time.sleep(0.5)

    def contender(self, file: str) -> Contender:
        argv = [sys.executable, "-m", "tests.vm.contender", FLOATING_ADDR,
                str(self.server.port), str(self.server.export_dir), file]
        return Contender(self.failover.wrap(argv), self.workdir / "contender.log",
                         self.timeline.log, self.server.environment())

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            for name, node in self.nodes.items():
                if name != self.active:
                    node.stop()
        finally:
            try:
                super().__exit__(et, ev, tb)   # guests, the active node, the namespaces
            finally:
                if self.etcd is not None:
                    self.etcd.stop()


class Contender:
    """The ``tests.vm.contender`` process: commands on stdin, ``@@`` lines kept as they come."""

    label = "C2"

    def __init__(self, argv: list[str], log: Path, show: Callable[[str, str], None],
                 env: dict[str, str]) -> None:
        self.show = show
        self.lines: list[ConsoleLine] = []
        self._cond = threading.Condition()
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, cwd=REPO_ROOT, env=env,
                                         start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="contender", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        last = ""
        for raw in self.proc.stdout:
            text = raw.rstrip("\n")
            with self._cond:
                self.lines.append(ConsoleLine(time.monotonic(), text))
                self._cond.notify_all()
            if text != last:
                self.show(self.label, text)   # repeated answers (@@LOCK polls) shown once
            last = text
        with self._cond:
            self._cond.notify_all()

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.show("host", f"C2 <- {command}")
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def find(self, pattern: str) -> list[ConsoleLine]:
        rx = re.compile(pattern)
        with self._cond:
            return [ln for ln in self.lines if rx.search(ln.text)]

    def wait_line(self, pattern: str, timeout: float) -> ConsoleLine:
        """The first line matching ``pattern``, waiting up to ``timeout`` seconds for it."""
        end = time.monotonic() + timeout
        with self._cond:
            while not (found := self.find(pattern)):
                if time.monotonic() > end or not self._reader.is_alive():
                    seen = "\n".join(ln.text for ln in self.lines[-20:])
                    raise AssertionError(f"C2: no line /{pattern}/ in {timeout:.0f}s:\n{seen}")
                self._cond.wait(1.0)
        return found[0]

    def stop(self) -> None:
        """End the process (ours, by PID) if it is still running."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 9)
        self.proc.wait(10)
        self._reader.join(10)

    def __enter__(self) -> Contender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
