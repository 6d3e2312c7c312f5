"""Per-thread filesystem credentials: the worker that runs a request's filesystem calls acts
as the caller, so the kernel applies its own rules (ACLs, set-id clearing, setgid directories,
sticky directories, protected links) exactly as for a local user.

Theory of operation
-------------------
Linux credentials belong to a thread, but glibc's ``setgroups``/``setfsuid`` wrappers change
every thread of the process (nptl "setxid" broadcast), and ``os.setgroups`` goes through them.
So the raw system calls are made through ``syscall(2)``: ``setfsuid``, ``setfsgid`` and
``setgroups`` of the calling thread only, as NFS-Ganesha does. The real and effective uid stay
0, so the thread can always switch back.

Changing the fsuid from 0 to another id drops the filesystem capabilities (CAP_CHOWN,
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID, CAP_MKNOD, ...) from the
thread's effective set, and changing it back to 0 restores them (capabilities(7), "Effect of
user ID changes on capabilities"). What else a user would not have and that a filesystem call
consults -- CAP_SYS_RESOURCE (reserved blocks, quotas) and CAP_LINUX_IMMUTABLE -- is dropped
from the effective set with ``capset`` while acting as a user and raised again for root.

A thread keeps its identity between calls and changes only what differs for the next call:
a worker serving one user after another makes no system call at all, two users of the same
groups cost a setfsuid and a setfsgid, and the capability set is touched only between root
and a user.  ``supported()`` proves once, in a scratch thread, that a switch really takes
effect (the ids read back, CAP_DAC_OVERRIDE gone), so no switch has to read its ids back.  ``as_root()`` is the
short section a backend needs for what only root may do (``open_by_handle_at`` needs
CAP_DAC_READ_SEARCH); it restores the caller's identity afterwards.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

NGROUPS_MAX: Final = 65536
CAP_LINUX_IMMUTABLE: Final = 9
CAP_SYS_RESOURCE: Final = 24
# Capabilities a user does not have and that filesystem calls consult beyond the fs set.
_USER_DROPS: Final = (1 << CAP_LINUX_IMMUTABLE) | (1 << CAP_SYS_RESOURCE)
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522

# (setgroups, setfsuid, setfsgid, capget, capset, faccessat2) per architecture
_SYSCALLS: Final = {
    "x86_64": (116, 122, 123, 125, 126, 439),
    "aarch64": (159, 151, 152, 90, 91, 439),
}


@dataclass(frozen=True, slots=True)
class Identity:
    """The ids filesystem calls act as: fsuid, fsgid and the supplementary groups."""

    uid: int
    gid: int
    gids: tuple[int, ...] = ()

    @property
    def groups(self) -> tuple[int, ...]:
        """The primary and supplementary groups, for permission checks."""
        return (self.gid, *self.gids)


ROOT: Final = Identity(0, 0, ())


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_NR = _SYSCALLS.get(platform.machine())
_local = threading.local()


_probe: list[bool] = []


def supported() -> bool:
    """Whether per-thread credentials work here: Linux x86_64/aarch64, running as root, and a
    switch in a scratch thread reads back the ids and leaves no CAP_DAC_OVERRIDE."""
    if not _probe:
        _probe.append(_NR is not None and os.geteuid() == 0 and _probe_switch())
    return _probe[0]


def _probe_switch() -> bool:
    result: list[bool] = []

    def run() -> None:
        try:
            assume(Identity(65534, 65534, (65534,)))
            uid = _syscall(_nr(1), ctypes.c_uint32(0xFFFFFFFF))
            gid = _syscall(_nr(2), ctypes.c_uint32(0xFFFFFFFF))
            dac_override = effective_caps() & (1 << 1)
            assume(ROOT)
            result.append((uid, gid, dac_override) == (65534, 65534, 0))
        except OSError:
            result.append(False)

    t = threading.Thread(target=run, name="pynfsd-creds-probe")
    t.start()
    t.join()
    return result == [True]


def _syscall(nr: int, *args: object) -> int:
    ret = _libc.syscall(ctypes.c_long(nr), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def _nr(i: int) -> int:
    if _NR is None:
        raise OSError(38, f"per-thread credentials are not supported on {platform.machine()}")
    return _NR[i]


def _caps() -> tuple[_CapHeader, ctypes.Array[_CapData]]:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _syscall(_nr(3), ctypes.byref(hdr), data)
    return hdr, data


def effective_caps() -> int:
    """The calling thread's effective capability set (bit n = capability n)."""
    _, data = _caps()
    return data[0].effective | (data[1].effective << 32)


def _set_user_caps(user: bool) -> None:
    """Drop (user) or raise again (root) the capabilities in ``_USER_DROPS``."""
    hdr, data = _caps()
    if user:
        data[0].effective &= ~_USER_DROPS & 0xFFFFFFFF
    else:
        data[0].effective |= data[0].permitted & _USER_DROPS
    _syscall(_nr(4), ctypes.byref(hdr), data)


def _apply(ident: Identity, prev: Identity | None) -> None:
    """Make the calling thread's filesystem calls act as ``ident`` (this thread only),
    changing what differs from ``prev`` (everything when it is None: state unknown)."""
    if prev is None or ident.gids != prev.gids:
        # No local process can hold more groups than the kernel's NGROUPS_MAX either
        # (initgroups keeps the first ones): the same groups, the same decisions.
        gids = ident.gids[:NGROUPS_MAX]
        groups = (ctypes.c_uint32 * max(1, len(gids)))(*gids)
        _syscall(_nr(0), ctypes.c_size_t(len(gids)), groups)
    if prev is None or ident.gid != prev.gid:
        _syscall(_nr(2), ctypes.c_uint32(ident.gid))
    if prev is None or ident.uid != prev.uid:
        _syscall(_nr(1), ctypes.c_uint32(ident.uid))  # 0 <-> user: the fs capabilities too
    if prev is None or (ident.uid == 0) != (prev.uid == 0):
        _set_user_caps(ident.uid != 0)


def current() -> Identity:
    """The identity the calling thread's filesystem calls act as (ROOT while unknown: a
    failed switch is redone in full by the next ``assume``, before any call is made)."""
    return getattr(_local, "ident", None) or ROOT


def assume(ident: Identity) -> None:
    """Act as ``ident`` from now on in this thread; no system call when it already does."""
    prev: Identity | None = getattr(_local, "ident", ROOT)
    if prev == ident:
        return
    _local.ident = None  # if a step fails half-way, the next assume() redoes all of it
    _apply(ident, prev)
    _local.ident = ident


@contextmanager
def as_root() -> Iterator[None]:
    """Run a short section with root's filesystem identity, then the caller's again."""
    saved = current()
    if saved == ROOT:
        yield
        return
    assume(ROOT)
    try:
        yield
    finally:
        assume(saved)


AT_EMPTY_PATH: Final = 0x1000
AT_EACCESS: Final = 0x200


def faccess_fd(fd: int, mode: int) -> bool:
    """Whether the calling thread's fs identity may access the object ``fd`` names (``O_PATH``
    descriptors too) with ``mode`` (``os.R_OK``/``W_OK``/``X_OK``): the kernel's own
    decision, ACLs included (``faccessat2(fd, "", mode, AT_EMPTY_PATH|AT_EACCESS)``)."""
    try:
        _syscall(_nr(5), ctypes.c_int(fd), b"", ctypes.c_int(mode),
                 ctypes.c_int(AT_EMPTY_PATH | AT_EACCESS))  # fmt: skip
    except PermissionError:  # EACCES or EPERM; EROFS and the rest are raised
        return False
    return True
