"""The two ways the guest reaches the server, both confined to this machine.

``UserNet``: qemu user-mode networking. The guest is 10.0.2.15 and reaches the host's loopback
as 10.0.2.2, so the server listens on 127.0.0.1. The server cannot connect back to the guest,
so the guest mounts with ``clientaddr=0.0.0.0`` (no callback channel, no delegations).

``NetnsNet``: a network namespace created for the test with a tap device on a private /24
(192.168.77.0/24 exists only inside the namespace). qemu and the server both run inside it
via ``ip netns exec``; the server can open the callback connection to the guest. The
namespace is deleted on ``close()`` (use it as a context manager), also after failures.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self


class Network:
    """What the harness needs from a network mode."""

    name = "abstract"
    server_bind = "127.0.0.1"    # where the server listens (in its namespace)
    server_addr = "10.0.2.2"     # how the guest reaches the server
    guest_ip = "10.0.2.15"
    guest_prefix = 24
    mount_extra = ""             # appended to the mount options

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` where the server and qemu must run."""
        return argv

    def qemu_args(self) -> list[str]:
        raise NotImplementedError

    def free_port(self) -> int:
        """A TCP port that is free where the server will listen."""
        return 2049

    def close(self) -> None:
        """Release what ``__init__`` created."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class UserNet(Network):
    """qemu user-mode networking; the server listens on the host's loopback."""

    name = "user"
    mount_extra = ",clientaddr=0.0.0.0"

    def qemu_args(self) -> list[str]:
        return ["-netdev", "user,id=n0,ipv6=off", "-device", "virtio-net-pci,netdev=n0"]

    def free_port(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


_counter = itertools.count()
NS_PREFIX = "pynfsd-e2e-"


def prune_stale_namespaces() -> None:
    """Delete namespaces left by test processes that no longer exist (named with their PID)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in (line.split()[0] for line in out.splitlines() if line.strip()):
        pid = name.removeprefix(NS_PREFIX).split("-")[0]
        if name.startswith(NS_PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _ip_in(ns: str, *args: str) -> None:
    """`ip ARGS` inside the network namespace `ns`."""
    _ip("netns", "exec", ns, "ip", *args)


class NetnsNet(Network):
    """A private network namespace with a tap device for qemu; deleted on close()."""

    name = "netns"
    server_bind = "192.168.77.1"
    server_addr = "192.168.77.1"
    guest_ip = "192.168.77.2"
    tap = "tap0"

    def __init__(self) -> None:
        prune_stale_namespaces()
        self.ns = f"{NS_PREFIX}{os.getpid()}-{next(_counter)}"
        _ip("netns", "add", self.ns)
        try:
            _ip_in(self.ns, "link", "set", "lo", "up")
            _ip_in(self.ns, "tuntap", "add", "dev", self.tap, "mode", "tap")
            _ip_in(self.ns, "addr", "add", f"{self.server_addr}/24", "dev", self.tap)
            _ip_in(self.ns, "link", "set", self.tap, "up")
        except BaseException:
            self.close()
            raise

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def qemu_args(self) -> list[str]:
        return ["-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
                "-device", "virtio-net-pci,netdev=n0"]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def make_network(name: str) -> Network:
    """``"user"`` or ``"netns"``."""
    if name == "user":
        return UserNet()
    if name == "netns":
        return NetnsNet()
    raise ValueError(f"unknown network mode {name!r}")
