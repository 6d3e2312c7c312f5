"""The takeover network without a VM: the service address follows its interface between nodes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.vm import failover
from tests.vm.failover import FLOATING_ADDR, FLOATING_MAC, FailoverNet
from tests.vm.network import NS_PREFIX

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

PORT = 2049
# a TCP service that answers every connection with its node's name
NAMER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen()
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[1].encode())
    c.close()
"""
# connect to ADDR:PORT from the bridge namespace: print what the service said, or the error
ASK = """
import socket, sys, time
for _ in range(50):
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as c:
            print(c.recv(16).decode())
            break
    except ConnectionRefusedError as e:
        time.sleep(0.1)
else:
    print("refused")
"""


@contextmanager
def namers(net: FailoverNet) -> Iterator[None]:
    """Each node's namespace runs a service answering its name (ended by PID)."""
    procs = [subprocess.Popen(net.node(name).wrap([sys.executable, "-c", NAMER, name,
                                                    str(PORT)]))
             for name in net.nodes]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def ask(net: FailoverNet, addr: str) -> str:
    out = subprocess.run(net.wrap([sys.executable, "-c", ASK, addr, str(PORT)]),
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.strip()


def neighbour(net: FailoverNet, addr: str) -> str:
    """The bridge namespace's ARP entry for ``addr`` (what a guest on the bridge learns)."""
    return subprocess.run(net.wrap(["ip", "neigh", "show", addr]), capture_output=True,
                          text=True, check=True).stdout


def test_the_service_address_moves_with_its_interface() -> None:
    with FailoverNet(1) as net, namers(net):
        assert ask(net, FLOATING_ADDR) == "a"
        assert FLOATING_MAC in neighbour(net, FLOATING_ADDR)
        assert [ask(net, node.addr) for node in net.nodes.values()] == ["a", "b"]
        net.move_floating("b")
        assert ask(net, FLOATING_ADDR) == "b"
        assert FLOATING_MAC in neighbour(net, FLOATING_ADDR), "the same MAC answers on B"
        assert [ask(net, node.addr) for node in net.nodes.values()] == ["a", "b"]
        net.move_floating("a")
        assert ask(net, FLOATING_ADDR) == "a"
        names = [net.ns, *(node.ns for node in net.nodes.values())]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [name for name in names if name in listed.split()]


def test_a_failed_setup_deletes_every_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(failover, "NODE_ADDRS", {"a": "192.168.77.11", "b": "not-an-address"})
    mine = f"{NS_PREFIX}{os.getpid()}-"
    with pytest.raises(subprocess.CalledProcessError):
        FailoverNet(1)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in listed.splitlines() if line.startswith(mine)]
