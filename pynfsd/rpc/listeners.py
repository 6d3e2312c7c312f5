"""Listening sockets from outside: systemd socket activation, and addresses added at run time.

Theory of operation
-------------------
**Sockets passed in** follow sd_listen_fds(3) without libsystemd.  The service manager binds
the sockets, starts the server with them open as descriptors 3, 4, ... and sets
`LISTEN_FDS` (their count), `LISTEN_PID` (the pid they are meant for: a child that inherits
the environment must not take them) and optionally `LISTEN_FDNAMES` (colon-separated names,
one per descriptor).  `listen_env` is the sans-IO reading of those variables: no `LISTEN_PID`,
or one that is not ours, means no sockets were passed to us.  `passed_sockets` then unsets the
variables (so children do not inherit them), marks each descriptor close-on-exec and checks it
is a listening TCP socket of IPv4 or IPv6: anything else is refused with one line
(`ListenerError`), because serving from a descriptor we do not understand would fail later and
less clearly.

**Addresses added at run time** (the nfssvc "add socket" idea, knfsd's `portlist`) are parsed
by `parse_hostport` ("ADDR:PORT", "[V6ADDR]:PORT"; numeric only, so nothing blocks on DNS)
and bound by `bind_listener`.  An IPv6 socket added this way is IPV6_V6ONLY: `[::]:2050` takes
IPv6 only, and `0.0.0.0:2050` can be added beside it.  The transport
(`pynfsd/rpc/transport.py`) keeps the listeners, their bound (`max_listeners`) and removal.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass

SD_LISTEN_FDS_START = 3
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
DEFAULT_MAX_LISTENERS = 64
#: sd_listen_fds(3) names the passed sockets; beyond this many something is wrong.
MAX_PASSED = 1024
BACKLOG = 1024


class ListenerError(Exception):
    """A listening socket that cannot be used; the message is one line for the administrator."""


@dataclass(frozen=True, slots=True)
class PassedSocket:
    """A listening socket the service manager passed in, with its fd and LISTEN_FDNAMES name."""

    sock: socket.socket
    fd: int
    name: str


def listen_env(environ: MutableMapping[str, str], pid: int) -> list[str]:
    """The names of the sockets passed to process `pid` (one per descriptor from 3), or [].

    Names come from LISTEN_FDNAMES, or are "unknown" as in sd_listen_fds_with_names(3)."""
    owner = environ.get("LISTEN_PID")
    if owner is None or "LISTEN_FDS" not in environ:
        return []
    if not owner.isdigit() or int(owner) != pid:
        return []  # meant for another process (sd_listen_fds returns 0)
    text = environ["LISTEN_FDS"]
    if not text.isdigit() or int(text) > MAX_PASSED:
        raise ListenerError(f"LISTEN_FDS={text!r}: not a count of passed sockets")
    count = int(text)
    names = environ.get("LISTEN_FDNAMES")
    if names is None:
        return ["unknown"] * count
    split = names.split(":") if count else []
    if len(split) != count:
        raise ListenerError(f"LISTEN_FDNAMES names {len(names.split(':'))} sockets, "
                            f"LISTEN_FDS passes {count}")
    return split


def passed_sockets(environ: MutableMapping[str, str] | None = None,
                   pid: int | None = None) -> list[PassedSocket]:
    """The checked listening sockets of sd_listen_fds(3); the variables are unset."""
    env = os.environ if environ is None else environ
    try:
        names = listen_env(env, os.getpid() if pid is None else pid)
    finally:
        for name in LISTEN_VARIABLES:
            env.pop(name, None)
    return [PassedSocket(listening_socket(fd), fd, name)
            for fd, name in enumerate(names, SD_LISTEN_FDS_START)]


def listening_socket(fd: int) -> socket.socket:
    """Descriptor `fd` as a non-blocking, close-on-exec listening TCP socket (ListenerError)."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise ListenerError(f"passed descriptor {fd} is not a socket: {e.strerror}") from None
    problem = _unusable(sock)
    if problem:
        sock.detach()  # not ours to close
        raise ListenerError(f"passed descriptor {fd} is {problem}; pynfsd serves listening "
                            "TCP sockets (ListenStream= in the .socket unit)")
    sock.setblocking(False)
    return sock


def _unusable(sock: socket.socket) -> str | None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return f"a socket of family {sock.family.name}, not IPv4 or IPv6"
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM:
        return "not a stream (TCP) socket"
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return "a TCP socket that is not listening"
    return None


def parse_hostport(text: str) -> tuple[socket.AddressFamily, str, int]:
    """"ADDR:PORT" or "[V6ADDR]:PORT" (numeric addresses) as (family, address, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ListenerError(f"{text!r}: expected ADDR:PORT, e.g. 0.0.0.0:2049 or [::1]:2049")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        addr = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ListenerError(f"{text!r}: {host or 'nothing'} is not a numeric IPv4 or [IPv6] "
                            "address") from None
    if addr.version == 6 and not bracketed:
        raise ListenerError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:2049")
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    return family, str(addr), int(port)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_tcp(family: socket.AddressFamily, host: str, port: int, v6only: bool) -> socket.socket:
    """A non-blocking listening TCP socket on (host, port) (OSError if it cannot be)."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_listener(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    """`bind_tcp` for an address added at run time (IPv6 only on an IPv6 socket)."""
    try:
        return bind_tcp(family, host, port, v6only=True)
    except OSError as e:
        raise ListenerError(f"cannot listen on {format_hostport(host, port)}: "
                            f"{e.strerror or e}") from None
