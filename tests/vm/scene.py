"""One scenario's world: a bridge namespace, one pynfsd, kernel-client guests and a timeline.

    with Scene(workdir, "a: same hostname", guests=2, lease=10, grace=10) as scene:
        g1 = scene.guest("G1", hostname="ctr")
        ...
        scene.crash_restart_server()
        scene.clients()            # `pynfsd clients --json`, shown on the timeline

The server runs inside the namespace (so it can reach each guest's callback address); its
control socket lives in ``--state-dir``, so ``pynfsd clients`` works from the host. On exit
every guest is stopped (qemu killed by PID if it does not power off), then the server, then
the namespace is deleted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.scenarios.timeline import Timeline
from tests.vm.initramfs import assemble
from tests.vm.kernel import guest_kernel
from tests.vm.multi import BridgeNet, Guest, GuestConfig
from tests.vm.network import Network
from tests.vm.servers import REPO_ROOT, PynfsdServer


class ConsoleFilter:
    """Which guest console lines go on the timeline: the helpers' ``@@`` events, without the
    per-record ``@@FSYNCED`` lines and with repeated identical ``@@IOERR`` errors shown once."""

    def __init__(self) -> None:
        self.last_error = ""

    def __call__(self, line: str) -> bool:
        if not line.startswith("@@") or line.startswith(("@@FSYNCED", "@@READY", "@@AGENT")):
            return False
        if line.startswith("@@IOERR"):
            error = " ".join(line.split()[3:])
            if error == self.last_error:
                return False
            self.last_error = error
        return True


class Scene:
    """A bridge with ``guests`` taps, a pynfsd on it, and the guests booted so far."""

    def __init__(self, workdir: Path, title: str, *, guests: int, lease: int = 10,
                 grace: int = 10, server_args: Sequence[str] = (),
                 server: Callable[[Path, Network], PynfsdServer] | None = None,
                 bridge: Callable[[int], BridgeNet] = BridgeNet) -> None:
        """``server`` makes the server on the bridge (default: a plain ``PynfsdServer``);
        ``lease``, ``grace`` and ``server_args`` apply to it either way. ``bridge`` makes the
        network from the number of guests (default: a ``BridgeNet``)."""
        self.workdir = workdir
        self.timeline = Timeline(title)
        self.kernel = guest_kernel()
        self.bridge = bridge(guests)
        try:
            self.server = (server or PynfsdServer)(workdir, self.bridge.server_view())
        except BaseException:
            self.bridge.close()
            raise
        self.server.lease, self.server.grace = lease, grace
        self.server.extra_args += server_args
        self.guests: list[Guest] = []
        self._taps_used = 0

    def __enter__(self) -> Scene:
        try:
            self.server.export_dir.mkdir(parents=True, exist_ok=True)
            self.server.start()
            self.timeline.log("host", f"pynfsd started (pid {self.server.pid}, lease "
                              f"{self.server.lease}s, grace {self.server.grace}s)")
        except BaseException:
            self.bridge.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            for guest in self.guests:
                guest.stop()
        finally:
            try:
                self.server.stop()
            finally:
                self.bridge.close()

    def guest(self, label: str, hostname: str, unique_id: str = "", wait: bool = True,
              assembler: Callable[..., Path] | None = None) -> Guest:
        """Boot a guest on the next free tap (each tap is used once: a rebooted machine gets
        a fresh tap and so a fresh address, which does not matter to NFSv4.0 identity)."""
        index = self._taps_used
        self._taps_used += 1
        config = GuestConfig(label, hostname, unique_id, index)
        guest = Guest(config, self.kernel, self.bridge.guest(index),
                      self.workdir / f"vm-{label}", self.server.port,
                      str(self.server.export_dir), self.timeline,
                      printer=ConsoleFilter(), assembler=assembler or assemble)
        self.guests.append(guest)
        guest.start(wait=wait)
        return guest

    def kill_server(self) -> None:
        self.server.kill()
        self.timeline.log("host", "kill -9 pynfsd (no clean shutdown)")

    def start_server(self) -> None:
        self.server.start()
        self.timeline.log("host", f"pynfsd started again (pid {self.server.pid}): grace "
                          f"{self.server.grace}s")

    def crash_restart_server(self) -> None:
        self.kill_server()
        self.start_server()

    def server_log(self) -> str:
        return self.server.log_path.read_text(errors="replace")

    def log_lines(self, needle: str) -> list[str]:
        """Server log lines containing ``needle``, shown on the timeline."""
        lines = [ln for ln in self.server_log().splitlines() if needle in ln]
        for ln in lines:
            self.timeline.log("server", ln.split(" ", 2)[-1][:400])
        return lines

    def clients(self) -> list[dict[str, Any]]:
        """``pynfsd clients --json`` of the running server, shown on the timeline."""
        argv = [sys.executable, "-m", "pynfsd", "clients", "--state-dir",
                str(self.server.state_dir)]
        env = self.server.environment()
        table = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env,
                               cwd=REPO_ROOT, check=True).stdout
        self.timeline.log("host", "$ pynfsd clients")
        for line in table.rstrip().splitlines():
            self.timeline.log("host", f"  {line}")
        out = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=30,
                             env=env, cwd=REPO_ROOT, check=True).stdout
        data = json.loads(out)
        return data if isinstance(data, list) else list(data.get("clients", []))

    def diagnostics(self) -> str:
        tails = "\n".join(g.tail(30) for g in self.guests)
        return f"{tails}\n--- server log tail ---\n{self.server.log_tail(30)}"
