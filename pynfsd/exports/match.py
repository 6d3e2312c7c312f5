"""Client matching: which of an export's client specifications applies to a client address.

Precedence follows exports(5): a single host beats a network, which beats a wildcard, which
beats a netgroup, which beats the anonymous ``*``; among specs of the same kind the first one
on the line wins. Host names and wildcards are compared with the names a reverse lookup
returns; the lookup is a parameter so that this module never touches DNS by itself.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence

from .types import ClientKind, ClientSpec, ExportOptions

log = logging.getLogger("pynfsd.exports")

#: Reverse lookup: client address -> host names (may block; callers run it in a thread).
ReverseLookup = Callable[[str], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: exports(5) precedence, best first.
PRECEDENCE: tuple[ClientKind, ...] = ("host", "network", "wildcard", "netgroup", "anonymous")

_warned_netgroups: set[str] = set()


def system_reverse_lookup(addr: str) -> list[str]:
    """Names for ``addr`` from the system resolver (blocking); [] when there are none."""
    try:
        name, aliases, _ = socket.gethostbyaddr(addr)
    except (OSError, UnicodeError):
        return []
    return [name, *aliases]


def parse_client_addr(addr: str) -> IPAddress:
    """Parse a client address; IPv4-mapped IPv6 addresses become IPv4, zone ids are dropped.

    Raises ValueError for anything that is not an IP address.
    """
    text = addr.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def needs_names(specs: Sequence[ClientSpec]) -> bool:
    """True when matching ``specs`` needs the client's host names (a name or a wildcard)."""
    return any(s.network is None and s.kind in ("host", "wildcard") for s in specs)


def _norm_name(name: str) -> str:
    return name.rstrip(".").lower()


def spec_matches(spec: ClientSpec, ip: IPAddress | None, names: Sequence[str]) -> bool:
    """Whether one client specification covers the client (``names`` from a reverse lookup).

    ``ip`` is None for a client without an IP address (e.g. a local socket); only the
    anonymous spec and names can match it.
    """
    if spec.kind == "anonymous":
        return True
    if spec.network is not None:
        return ip is not None and ip.version == spec.network.version and ip in spec.network
    if spec.kind == "netgroup":
        _warn_netgroup(spec.pattern)
        return False
    wanted = _norm_name(spec.pattern)
    if spec.kind == "host":
        return any(_norm_name(n) == wanted for n in names)
    return any(fnmatch.fnmatchcase(_norm_name(n), wanted) for n in names)


def _warn_netgroup(pattern: str) -> None:
    if pattern not in _warned_netgroups:
        _warned_netgroups.add(pattern)
        log.warning("netgroup %s: netgroups are not supported and never match", pattern)


def best_match(
    clients: Sequence[tuple[ClientSpec, ExportOptions]], addr: str, names: Sequence[str] = ()
) -> ExportOptions | None:
    """The options of the best matching client spec for ``addr``, or None (exports(5) order)."""
    ip: IPAddress | None
    try:
        ip = parse_client_addr(addr)
    except ValueError:
        ip = None
    for kind in PRECEDENCE:
        for spec, options in clients:
            if spec.kind == kind and spec_matches(spec, ip, names):
                return options
    return None
