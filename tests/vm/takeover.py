"""A takeover scene: two pynfsd nodes behind a floating address, kernel-client guests, a timeline.

    with TakeoverScene(workdir, "takeover", lease=10, grace=15) as scene:
        g1 = scene.guest("G1", hostname="t-one", unique_id="t-one-id")
        ...
        scene.kill_server()          # kill -9 the active node
        scene.take_over("b")         # move the service address to B, start B there
        with scene.contender("locked.dat") as c2: ...

The network is a ``FailoverNet`` (``tests/vm/failover.py``). Both nodes serve the same host
directory and keep their client records and filehandle key in one shared ``--state-dir``
(the embedded file store on shared storage: only one node runs at a time, which the state
directory's lock enforces). B starts once A is dead and the address is on B's side: its
grace period is the takeover's, and A's clients reclaim their state on B within it.

``Contender`` runs ``tests/vm/contender.py`` (a client of the project's library) in the bridge
namespace and keeps what it prints with the time each line arrived, on the timeline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from tests.vm.failover import FLOATING_ADDR, FailoverNet
from tests.vm.multi import ConsoleLine
from tests.vm.network import Network
from tests.vm.scene import Scene
from tests.vm.servers import REPO_ROOT, PynfsdServer


class TakeoverScene(Scene):
    """A ``Scene`` on a ``FailoverNet``: node A serves first, ``take_over`` moves to B."""

    def __init__(self, workdir: Path, title: str, *, lease: int = 10, grace: int = 10,
                 server_args: Sequence[str] = ()) -> None:
        self.nodes: dict[str, PynfsdServer] = {}
        self.active = "a"
        super().__init__(workdir, title, guests=1, lease=lease, grace=grace,
                         server_args=server_args, server=self._first_node, bridge=FailoverNet)
        standby = self._node("b")
        standby.lease, standby.grace = lease, grace
        standby.extra_args += server_args

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

    def take_over(self, to: str) -> None:
        """Move the service address to node ``to`` and start pynfsd there (its grace)."""
        self.failover.move_floating(to)
        self.timeline.log("host", f"service address {FLOATING_ADDR} moved to node {to} "
                          "(its interface and MAC with it)")
        self.server, self.active = self.nodes[to], to
        self.server.start()
        self.timeline.log("host", f"node {to}: pynfsd started (pid {self.server.pid}) on the "
                          f"shared state: grace {self.server.grace}s for the takeover")

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
            super().__exit__(et, ev, tb)


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
