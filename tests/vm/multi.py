"""Several kernel-client guests at once against one server, driven command by command.

``BridgeNet`` is a network namespace made for the run with a bridge ``br0`` holding the server
address 192.168.77.1/24 and one tap per guest (``tap0``, ``tap1``, ...), so every guest has its
own address (192.168.77.2, .3, ...) and MAC, and the server sees distinct clients. The
namespace is deleted on ``close()``.

``Guest`` boots one VM running ``guest/scenario_agent.sh`` in a thread. ``guest.sh(cmd)`` sends
one shell command to the agent over ttyS1 and returns its exit status and output; console
lines the guest's background jobs print (``@@FSYNCED``, ``@@IOERR``, ...) are kept with the
time they arrived, and ``wait_line()`` waits for one. ``kill()`` pulls the plug on the VM.
Everything a guest or the host does is logged on a ``Timeline``.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.scenarios.timeline import Timeline
from tests.vm.initramfs import GUEST, assemble
from tests.vm.kernel import GuestKernel
from tests.vm.network import NS_PREFIX, Network, _counter, _ip, _ip_in, prune_stale_namespaces
from tests.vm.qemu import GuestVM, Transcript

AGENT = GUEST / "scenario_agent.sh"
SUBNET = "192.168.77"
BOOT_TIMEOUT = 120.0
QUIET = re.compile(r"^@@(OUT|RC|PAUSE) ")   # agent protocol lines, not worth a timeline line


class BridgeNet:
    """A private namespace with a bridge for the server and one tap per guest."""

    bridge_addr = f"{SUBNET}.1"                 # br0's own address in the namespace
    server_bind = server_addr = bridge_addr     # where the guests find the server

    def __init__(self, guests: int) -> None:
        prune_stale_namespaces()
        self.ns = f"{NS_PREFIX}{os.getpid()}-{next(_counter)}"
        self.guests = guests
        _ip("netns", "add", self.ns)
        try:
            _ip_in(self.ns, "link", "set", "lo", "up")
            _ip_in(self.ns, "link", "add", "br0", "type", "bridge")
            _ip_in(self.ns, "addr", "add", f"{self.bridge_addr}/24", "dev", "br0")
            for i in range(guests):
                _ip_in(self.ns, "tuntap", "add", "dev", f"tap{i}", "mode", "tap")
                _ip_in(self.ns, "link", "set", f"tap{i}", "master", "br0")
                _ip_in(self.ns, "link", "set", f"tap{i}", "up")
            _ip_in(self.ns, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def server_view(self) -> GuestNet:
        """What ``Server`` needs (wrap, bind address, a port)."""
        return GuestNet(self, 0)

    def guest(self, index: int) -> GuestNet:
        if not 0 <= index < self.guests:
            raise ValueError(f"guest {index}: the bridge has {self.guests} taps")
        return GuestNet(self, index)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)

    def __enter__(self) -> BridgeNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GuestNet(Network):
    """One guest's view of a ``BridgeNet``: its tap, MAC and address."""

    name = "bridge"

    def __init__(self, bridge: BridgeNet, index: int) -> None:
        self.bridge = bridge
        self.index = index
        self.server_bind = self.server_addr = bridge.server_addr
        self.guest_ip = f"{SUBNET}.{2 + index}"

    def wrap(self, argv: list[str]) -> list[str]:
        return self.bridge.wrap(argv)

    def qemu_args(self) -> list[str]:
        return ["-netdev", f"tap,id=n0,ifname=tap{self.index},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:77:00:{2 + self.index:02x}"]

    def free_port(self) -> int:
        return 2049   # the namespace is ours alone


@dataclass
class ConsoleLine:
    at: float          # time.monotonic() when the host read it
    text: str


@dataclass
class GuestConfig:
    """Who a guest is: its label on the timeline, hostname and nfs4 unique id ('' = none)."""

    label: str
    hostname: str
    unique_id: str = ""
    index: int = 0      # which tap of the bridge (and so which address)


@dataclass
class Guest:
    """One agent-driven VM; ``start()`` boots it, ``sh()`` runs commands, ``stop()`` ends it."""

    config: GuestConfig
    kernel: GuestKernel
    net: GuestNet
    workdir: Path
    server_port: int
    export_path: str
    timeline: Timeline
    lines: list[ConsoleLine] = field(default_factory=list)
    _commands: queue.Queue[str] = field(default_factory=queue.Queue)
    _results: queue.Queue[tuple[int, list[str]] | None] = field(default_factory=queue.Queue)
    _output: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _vm: GuestVM | None = None
    transcript: Transcript | None = None
    printer: Callable[[str], bool] = lambda line: False   # which console lines go on the timeline
    # builds the initramfs from (kernel, agent script, /config values, output path)
    assembler: Callable[[GuestKernel, Path, dict[str, str | int], Path], Path] = assemble

    @property
    def label(self) -> str:
        return self.config.label

    def start(self, wait: bool = True) -> None:
        """Boot the VM; with ``wait``, until the agent is ready (``@@READY``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg: dict[str, str | int] = {
            "SERVER_IP": self.net.server_addr, "NFS_PORT": self.server_port,
            "EXPORT_PATH": self.export_path, "MOUNT_EXTRA": "",
            "GUEST_IP": self.net.guest_ip, "GUEST_PREFIX": 24,
            "GUEST_NAME": self.config.hostname, "UNIQUE_ID": self.config.unique_id}
        initrd = self.assembler(self.kernel, AGENT, cfg, self.workdir / "initrd.img")
        self._vm = GuestVM(self.kernel, initrd, self.net, self.workdir, timeout=900.0,
                           on_pause=self._next_command, on_line=self._on_line,
                           smp=1, memory=512)
        self.timeline.log(self.label, f"boot (hostname={self.config.hostname!r}, "
                          f"nfs4 identifier={self.config.unique_id!r}, ip={self.net.guest_ip})")
        self._thread = threading.Thread(target=self._run, name=f"vm-{self.label}", daemon=True)
        self._thread.start()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        self.wait_line(r"^@@READY", BOOT_TIMEOUT)
        self.timeline.log(self.label, "booted, agent ready")

    def _run(self) -> None:
        assert self._vm is not None
        try:
            self.transcript = self._vm.run()
        finally:
            self._results.put(None)
            with self._cond:
                self._cond.notify_all()

    def _on_line(self, text: str) -> None:
        with self._cond:
            self.lines.append(ConsoleLine(time.monotonic(), text))
            self._cond.notify_all()
        if text.startswith("@@OUT "):
            self._output.append(text[6:])
        elif text.startswith("@@RC "):
            self._results.put((int(text[5:]), self._output))
            self._output = []
        elif not QUIET.match(text) and self.printer(text):
            self.timeline.log(self.label, f"console: {text}")

    def _next_command(self, what: str) -> str | None:
        """The agent asks for its next command: wait for one (or for the VM to die)."""
        if what != "cmd":
            return None
        while True:
            try:
                return self._commands.get(timeout=1.0)
            except queue.Empty:
                if self._vm is None or not self._vm.running():
                    return "quit"

    def sh(self, command: str, limit: int = 60, show: bool = True) -> tuple[int, list[str]]:
        """Run one shell command in the guest; (exit status, output lines)."""
        if "\n" in command:
            raise ValueError("one line only")
        if show:
            self.timeline.log(self.label, f"$ {command}")
        self._commands.put(f"{limit} {command}")
        try:
            result = self._results.get(timeout=limit + 30)
        except queue.Empty:
            result = None
        if result is None:
            raise AssertionError(f"{self.label}: no answer to {command!r} (VM gone or stuck)\n"
                                 f"{self.tail()}\n{self.timeline.text()}")
        rc, out = result
        if show:
            for line in out[-12:]:
                self.timeline.log(self.label, f"  {line}")
            self.timeline.log(self.label, f"  -> rc={rc}")
        return rc, out

    def ok(self, command: str, limit: int = 60) -> list[str]:
        """``sh`` that must succeed."""
        rc, out = self.sh(command, limit)
        self.timeline.check(rc == 0, f"{self.label}: `{command}` succeeds")
        return out

    def find(self, pattern: str, since: float = 0.0) -> list[ConsoleLine]:
        rx = re.compile(pattern)
        with self._cond:
            return [ln for ln in self.lines if ln.at >= since and rx.search(ln.text)]

    def wait_line(self, pattern: str, timeout: float, since: float = 0.0) -> ConsoleLine:
        """The first console line matching ``pattern`` (read after ``since``), waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.find(pattern, since)
                if found:
                    return found[0]
                alive = self._thread is not None and self._thread.is_alive()
                left = deadline - time.monotonic()
                if left <= 0 or not alive:
                    raise AssertionError(f"{self.label}: no console line /{pattern}/ within "
                                         f"{timeout:.0f}s\n{self.tail()}\n{self.timeline.text()}")
                self._cond.wait(min(left, 1.0))

    def kill(self) -> None:
        """Pull the plug (SIGKILL qemu): the guest's processes and locks die unannounced."""
        self.timeline.log(self.label, "VM powered off hard (qemu SIGKILL)")
        if self._vm is not None:
            self._vm.kill()
        self._join()

    def stop(self) -> None:
        """End the agent (the guest powers off); kill the VM if it does not."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._commands.put("quit")
        self._thread.join(20)
        if self._thread.is_alive() and self._vm is not None:
            self._vm.kill()
        self._join()

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join(30)

    def tail(self, n: int = 40) -> str:
        with self._cond:
            text = "\n".join(ln.text for ln in self.lines[-n:])
        return f"--- {self.label} console tail ({self.workdir / 'console.log'}) ---\n{text}"


@contextmanager
def guests_stopped(guests: list[Guest]) -> Iterator[list[Guest]]:
    """Stop every guest at the end, also after a failure."""
    try:
        yield guests
    finally:
        for guest in guests:
            guest.stop()
