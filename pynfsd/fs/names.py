"""Validation of the path components and symlink targets a backend accepts."""

from __future__ import annotations

import errno
import os

from pynfsd.fs.backend import NAME_MAX

PATH_MAX = 4096


def oserror(code: int, what: str = "") -> OSError:
    """An ``OSError`` carrying ``code`` and its standard message."""
    return OSError(code, os.strerror(code), what) if what else OSError(code, os.strerror(code))


def check_name(name: bytes) -> bytes:
    """Return ``name`` if it is one usable component, else raise EINVAL / ENAMETOOLONG."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise oserror(errno.EINVAL, repr(name))
    if len(name) > NAME_MAX:
        raise oserror(errno.ENAMETOOLONG)
    return name


def check_target(target: bytes) -> bytes:
    """Return a symlink ``target`` if Linux would store it (non-empty, no NUL, < PATH_MAX)."""
    if b"\0" in target:
        raise oserror(errno.EINVAL, "NUL in symlink target")
    if not target:
        raise oserror(errno.ENOENT, "empty symlink target")
    if len(target) >= PATH_MAX:
        raise oserror(errno.ENAMETOOLONG)
    return target
