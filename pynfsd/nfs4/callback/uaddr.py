"""Universal addresses of callback endpoints (RFC 5665 §5.2.3.3-4), sans-IO."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pynfsd.nfs4.callback.errors import BadUniversalAddress

MAX_UADDR = 64  # longer than any TCP/TCP6 universal address
MAX_NETID = 16  # longer than any netid of RFC 5665 (tcp, tcp6, rdma6, ...)
_PORT_BYTE = re.compile(r"[0-9]{1,3}")


@dataclass(frozen=True, slots=True)
class CallbackAddress:
    """A TCP endpoint from a universal address; `host` is a plain IPv4 or IPv6 literal (an
    IPv4-mapped IPv6 address becomes IPv4, and `netid` "tcp" with it)."""

    netid: str
    host: str
    port: int

    @property
    def uaddr(self) -> str:
        return universal_address(self.host, self.port)


def parse_universal_address(netid: str, uaddr: str) -> CallbackAddress:
    """RFC 5665 §5.2.3.3 ("tcp": h1.h2.h3.h4.p1.p2) and §5.2.3.4 ("tcp6": an RFC 4291 IPv6
    address followed by .p1.p2); the port is p1 * 256 + p2."""
    if netid not in ("tcp", "tcp6"):
        raise BadUniversalAddress(f"unsupported callback netid {netid!r} (pynfsd calls back over TCP)")
    if len(uaddr) > MAX_UADDR or uaddr.count(".") < 2:
        raise BadUniversalAddress(f"malformed universal address {uaddr[:MAX_UADDR]!r}")
    text, p1, p2 = uaddr.rsplit(".", 2)
    port = _port_byte(p1, uaddr) << 8 | _port_byte(p2, uaddr)
    host = _host(netid, text, uaddr)
    if port == 0:
        raise BadUniversalAddress(f"universal address {uaddr!r} has port 0")
    return CallbackAddress("tcp6" if ":" in host else "tcp", host, port)


def _port_byte(text: str, uaddr: str) -> int:
    if not _PORT_BYTE.fullmatch(text) or int(text) > 255:
        raise BadUniversalAddress(f"bad port octet {text!r} in universal address {uaddr!r}")
    return int(text)


def _host(netid: str, text: str, uaddr: str) -> str:
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address
        addr = ipaddress.IPv4Address(text) if netid == "tcp" else ipaddress.IPv6Address(text)
    except ValueError:
        raise BadUniversalAddress(f"bad {netid} host in universal address {uaddr!r}") from None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:
            raise BadUniversalAddress(f"scoped IPv6 address in universal address {uaddr!r}")
        addr = addr.ipv4_mapped or addr
    if addr.is_unspecified or addr.is_multicast or str(addr) == "255.255.255.255":
        raise BadUniversalAddress(f"universal address {uaddr!r} names no single host")
    return str(addr)


def universal_address(host: str, port: int) -> str:
    """The universal address of an IPv4 or IPv6 literal and a port (the inverse of parsing)."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    return f"{ipaddress.ip_address(host)}.{port >> 8}.{port & 0xFF}"
