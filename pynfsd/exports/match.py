"""Client matching: which of an export's client specifications applies to a client address.

Precedence follows exports(5): a single host beats a network, which beats a wildcard, which
beats a netgroup, which beats the anonymous ``*``; among specs of the same kind the first one
on the line wins.  Matching itself is pure: it is given the client's address, its host names
and the netgroups it is in (a `ClientId`).

Finding those is blocking work for a worker thread (`identify`).  Host names come from a
reverse lookup **with forward check**, as rpc.mountd's `host_reliable_addrinfo`: a name
counts only if it resolves back to the client's address, so whoever controls the reverse
zone of an address cannot claim any name.  Netgroups are asked of the system
(:mod:`pynfsd.exports.netgroup`) with those names and the address.  The lookups are
parameters, so that tests inject them and this module never touches DNS by itself.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .netgroup import Innetgr, netgroups_of, system_innetgr
from .types import ClientKind, ClientSpec, ExportOptions

#: Reverse lookup: client address -> host names (may block; callers run it in a thread).
ReverseLookup = Callable[[str], list[str]]
#: Forward lookup: host name -> its addresses (may block).
ForwardLookup = Callable[[str], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: exports(5) precedence, best first.
PRECEDENCE: tuple[ClientKind, ...] = ("host", "network", "wildcard", "netgroup", "anonymous")


def system_reverse_lookup(addr: str) -> list[str]:
    """Names for ``addr`` from the system resolver (blocking); [] when there are none."""
    try:
        name, aliases, _ = socket.gethostbyaddr(addr)
    except (OSError, UnicodeError):
        return []
    return [name, *aliases]


def system_forward_lookup(name: str) -> list[str]:
    """The addresses of host ``name`` from the system resolver (blocking); [] when none."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


def checked_names(addr: str, reverse: ReverseLookup, forward: ForwardLookup) -> list[str]:
    """The names of ``addr`` that resolve back to it (blocking)."""
    try:
        ip = parse_client_addr(addr)
    except ValueError:
        return []
    out: list[str] = []
    for name in reverse(str(ip)):
        if name not in out and _resolves_to(name, ip, forward):
            out.append(name)
    return out


def _resolves_to(name: str, ip: IPAddress, forward: ForwardLookup) -> bool:
    for text in forward(name):
        try:
            if parse_client_addr(text) == ip:
                return True
        except ValueError:
            continue
    return False


def system_checked_names(addr: str) -> list[str]:
    """`checked_names` through the system resolver."""
    return checked_names(addr, system_reverse_lookup, system_forward_lookup)


@dataclass(frozen=True, slots=True)
class ClientId:
    """What matching knows of a client: its address, its (checked) host names and the
    netgroups (``@name`` as written) it is a member of."""

    addr: str
    names: tuple[str, ...] = ()
    netgroups: frozenset[str] = frozenset()


def identify(
    addr: str, specs: Sequence[ClientSpec], names_of: ReverseLookup = system_checked_names,
    innetgr: Innetgr = system_innetgr,
) -> ClientId:
    """The `ClientId` of ``addr`` for matching ``specs`` (blocking: run it in a worker).
    ``names_of`` gives the names to trust (forward-checked by default); lookups are made
    only when some spec needs them."""
    if not needs_names(specs):
        return ClientId(addr)
    try:
        text = str(parse_client_addr(addr))
    except ValueError:
        return ClientId(addr)
    names = tuple(names_of(text))
    groups = [s.pattern for s in specs if s.kind == "netgroup"]
    return ClientId(addr, names, netgroups_of(groups, text, names, innetgr) if groups else frozenset())


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
    """True when matching ``specs`` needs the client's host names (a name, a wildcard or a
    netgroup)."""
    return any(s.network is None and s.kind in ("host", "wildcard", "netgroup") for s in specs)


def _norm_name(name: str) -> str:
    return name.rstrip(".").lower()


def spec_matches(
    spec: ClientSpec, ip: IPAddress | None, names: Sequence[str],
    netgroups: frozenset[str] = frozenset(),
) -> bool:
    """Whether one client specification covers the client (``names`` from a checked reverse
    lookup, ``netgroups`` the ``@group`` patterns it is a member of).

    ``ip`` is None for a client without an IP address (e.g. a local socket); only the
    anonymous spec, names and netgroups can match it.
    """
    if spec.kind == "anonymous":
        return True
    if spec.network is not None:
        return ip is not None and ip.version == spec.network.version and ip in spec.network
    if spec.kind == "netgroup":
        return spec.pattern in netgroups
    wanted = _norm_name(spec.pattern)
    if spec.kind == "host":
        return any(_norm_name(n) == wanted for n in names)
    return any(fnmatch.fnmatchcase(_norm_name(n), wanted) for n in names)


def best_match(
    clients: Sequence[tuple[ClientSpec, ExportOptions]], addr: str, names: Sequence[str] = (),
    netgroups: frozenset[str] = frozenset(),
) -> ExportOptions | None:
    """The options of the best matching client spec for ``addr``, or None (exports(5) order)."""
    found = best_spec(clients, ClientId(addr, tuple(names), netgroups))
    return None if found is None else found[1]


def best_spec(
    clients: Sequence[tuple[ClientSpec, ExportOptions]], client: ClientId
) -> tuple[ClientSpec, ExportOptions] | None:
    """The best matching (spec, options) of ``clients`` for ``client`` (exports(5) order)."""
    ip = _ip_or_none(client.addr)
    return best_by(clients, lambda s: spec_matches(s, ip, client.names, client.netgroups))


def best_by(
    clients: Sequence[tuple[ClientSpec, ExportOptions]], covers: Callable[[ClientSpec], bool]
) -> tuple[ClientSpec, ExportOptions] | None:
    """The first (spec, options) in exports(5) order whose spec ``covers`` the client."""
    for kind in PRECEDENCE:
        for spec, options in clients:
            if spec.kind == kind and covers(spec):
                return spec, options
    return None


def matching_specs(specs: Sequence[ClientSpec], client: ClientId) -> list[ClientSpec]:
    """Every spec of ``specs`` that covers ``client``."""
    ip = _ip_or_none(client.addr)
    return [s for s in specs if spec_matches(s, ip, client.names, client.netgroups)]


def _ip_or_none(addr: str) -> IPAddress | None:
    try:
        return parse_client_addr(addr)
    except ValueError:
        return None
