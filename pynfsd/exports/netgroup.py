"""Netgroup membership (`@group` client specifications) through the system's netgroup database.

Theory of operation.  exports(5) lets an export name an NIS netgroup, `@trusted`; whether a
client belongs to it is the system's answer: glibc's `innetgr(group, host, NULL, NULL)`,
which reads the `netgroup:` source of nsswitch.conf (`/etc/netgroup` with `files`, NIS, LDAP
through sssd...).  It is called through ctypes, may block (a directory server), and is not
thread-safe (it walks the database with the process-wide setnetgrent state), so every call
holds one lock and runs in a worker thread, never on the event loop.

A client is tried as rpc.mountd's `check_netgroup` tries it: each of its forward-checked host
names, the address as text, then the names without their domain part (`host` for
`host.example.com`), since netgroup triples often hold short names.  A C library without
`innetgr` (musl) makes every netgroup empty, with one warning.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger("pynfsd.exports")

#: `innetgr(group, host)`: is `host` a member of netgroup `group` (without the `@`)? May block.
Innetgr = Callable[[str, str], bool]

_lock = threading.Lock()
_function: Callable[..., int] | None = None
_loaded = False


def _load() -> Callable[..., int] | None:
    global _function, _loaded
    if not _loaded:
        _loaded = True
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = getattr(libc, "innetgr", None)
        if fn is None:
            log.warning("the C library has no innetgr(): @netgroup clients never match")
        else:
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
            fn.restype = ctypes.c_int
        _function = fn
    return _function


def system_innetgr(group: str, host: str) -> bool:
    """glibc `innetgr(group, host, NULL, NULL)`, serialised (blocking)."""
    with _lock:
        fn = _load()
        if fn is None:
            return False
        return bool(fn(group.encode("utf-8", "surrogateescape"),
                       host.encode("utf-8", "surrogateescape"), None, None))  # fmt: skip


def candidates(addr: str, names: Sequence[str]) -> list[str]:
    """The host strings a client is tried as: its names, its address, its short names."""
    short = [n.split(".", 1)[0] for n in names if "." in n.strip(".")]
    out: list[str] = []
    for host in (*names, addr, *short):
        if host and host not in out:
            out.append(host)
    return out


def netgroups_of(
    patterns: Iterable[str], addr: str, names: Sequence[str], innetgr: Innetgr
) -> frozenset[str]:
    """The `@group` patterns (as written) that have the client as a member (blocking)."""
    hosts = candidates(addr, names)
    return frozenset(p for p in set(patterns)
                     if any(innetgr(p.removeprefix("@"), h) for h in hosts))  # fmt: skip
