"""Two server nodes and a floating service address, for takeover tests with kernel clients.

Layout (every namespace is made for the run and deleted on ``close()``, also after failures)::

    bridge namespace (FailoverNet.ns)          node namespace A            node namespace B
    br0 192.168.77.1/24 ── tap0 (guest .2)
         ├── veth-a ─────────────────────────── eth0 192.168.77.11/24
         ├── veth-b ──────────────────────────────────────────────────── eth0 192.168.77.12/24
         └── veth-f ─────────────────────────── float0 192.168.77.10/32  (moves to B)

The guests, and any host-side helper client run with ``wrap``, live in the bridge namespace;
each node runs with ``node(name).wrap`` in its own namespace and listens on all of its
addresses. The service address 192.168.77.10 is the only address of ``float0``, one end of a
veth pair whose other end sits on the bridge. ``move_floating(to)`` moves ``float0`` itself
into the other node's namespace (``ip link set float0 netns ...``) and puts the address back
on it: the interface keeps its MAC address, so the guests' ARP entries and the bridge's
forwarding table stay right and no gratuitous ARP is needed, exactly as when a cluster
manager moves a service IP. Until the move, packets to the address reach the old node's
namespace (which answers with RST once its server died); after it, the new node's.

The address is a /32 and each node namespace answers ARP only for addresses of the
interface asked on (``arp_ignore=1``, ``arp_announce=2``), so the node's own ``eth0`` never
claims the service address and its replies leave by ``eth0`` (the connected route of the
/24) without confusing anyone.
"""

from __future__ import annotations

import subprocess

from tests.vm.multi import SUBNET, BridgeNet
from tests.vm.network import Network, _ip, _ip_in

FLOATING_ADDR = f"{SUBNET}.10"
FLOATING_MAC = "52:54:00:77:00:0a"
FLOATING_DEV = "float0"
NODE_ADDRS = {"a": f"{SUBNET}.11", "b": f"{SUBNET}.12"}
NODE_SYSCTLS = {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2",
                "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}


class NodeNet(Network):
    """One node's namespace, as a ``Server`` sees it: listen everywhere in it, port 2049."""

    name = "node"
    server_bind = "0.0.0.0"

    def __init__(self, ns: str, addr: str) -> None:
        self.ns = ns
        self.addr = addr            # the node's own fixed address (not the service address)

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def free_port(self) -> int:
        return 2049   # the namespace is ours alone


class FailoverNet(BridgeNet):
    """A ``BridgeNet`` whose server is one of two node namespaces, found at a floating address."""

    server_bind = server_addr = FLOATING_ADDR

    def __init__(self, guests: int) -> None:
        super().__init__(guests)
        self.nodes = {name: NodeNet(f"{self.ns}-{name}", addr)
                      for name, addr in NODE_ADDRS.items()}
        self.holder = ""
        try:
            for name, node in self.nodes.items():
                self._add_node(name, node)
            _ip_in(self.ns, "link", "add", "veth-f", "type", "veth", "peer", "name",
                   FLOATING_DEV, "address", FLOATING_MAC)
            self._plug("veth-f")
            self.move_floating("a")
        except BaseException:
            self.close()
            raise

    def _plug(self, dev: str) -> None:
        """Put the bridge-side end ``dev`` of a veth pair on br0."""
        _ip_in(self.ns, "link", "set", dev, "master", "br0")
        _ip_in(self.ns, "link", "set", dev, "up")

    def _add_node(self, name: str, node: NodeNet) -> None:
        _ip("netns", "add", node.ns)
        _ip_in(node.ns, "link", "set", "lo", "up")
        for key, value in NODE_SYSCTLS.items():
            _sysctl(node.ns, key, value)
        _ip_in(self.ns, "link", "add", f"veth-{name}", "type", "veth", "peer", "name", "eth0",
               "netns", node.ns)
        self._plug(f"veth-{name}")
        _ip_in(node.ns, "addr", "add", f"{node.addr}/24", "dev", "eth0")
        _ip_in(node.ns, "link", "set", "eth0", "up")

    def node(self, name: str) -> NodeNet:
        return self.nodes[name]

    def move_floating(self, to: str) -> None:
        """Move the service address (its interface, with its MAC) to node ``to``."""
        if to == self.holder:
            return
        source = self.nodes[self.holder].ns if self.holder else self.ns
        _ip_in(source, "link", "set", FLOATING_DEV, "netns", self.nodes[to].ns)
        target = self.nodes[to].ns
        _ip_in(target, "addr", "add", f"{FLOATING_ADDR}/32", "dev", FLOATING_DEV)
        _ip_in(target, "link", "set", FLOATING_DEV, "up")
        self.holder = to

    def close(self) -> None:
        for node in getattr(self, "nodes", {}).values():
            subprocess.run(["ip", "netns", "del", node.ns], capture_output=True)
        super().close()


def _sysctl(ns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl inside ``ns``."""
    path = "/proc/sys/" + key.replace(".", "/")
    subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > {path}"],
                   check=True, capture_output=True)
