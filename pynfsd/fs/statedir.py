"""Small persistent state a backend keeps in its state directory.

``fh-key``: 32 random bytes, the handle MAC key. Created once, atomically (written to a
private temporary file with mode 0600, fsynced, then hard-linked into place so two racing
creators agree on one key); a key file that group or others can access is refused.
``boot-count``: incremented on every backend start (under an flock), used to keep the change
attribute monotonic across restarts.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager

KEY_FILE = "fh-key"
KEY_LEN = 32
BOOT_FILE = "boot-count"
LOCK_FILE = "lock"
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: str, data: bytes) -> None:
    """Create ``path`` (must not exist) with mode 0600 holding ``data``, on stable storage."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise OSError(errno.EACCES, "handle key must be a regular file of mode 0600", path)
        key = os.read(fd, KEY_LEN + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_LEN:
        raise OSError(errno.EINVAL, "corrupt handle key file", path)
    return key


def load_or_create_key(state_dir: str) -> bytes:
    """The handle MAC key kept in ``state_dir``, created on first use."""
    path = os.path.join(state_dir, KEY_FILE)
    if not os.path.lexists(path):
        tmp = os.path.join(state_dir, f".{KEY_FILE}.{secrets.token_hex(8)}")
        _write_private(tmp, secrets.token_bytes(KEY_LEN))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its key
        finally:
            os.unlink(tmp)
        _fsync_dir(state_dir)
    return _read_key(path)


@contextmanager
def _locked(state_dir: str) -> Iterator[None]:
    fd = os.open(os.path.join(state_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def next_boot_count(state_dir: str) -> int:
    """Increment and return the persistent start counter (1 on the first start)."""
    path = os.path.join(state_dir, BOOT_FILE)
    with _locked(state_dir):
        try:
            with open(path, "rb") as f:
                count = int(f.read().strip() or b"0") + 1
        except FileNotFoundError:
            count = 1
        tmp = f"{path}.{secrets.token_hex(8)}"
        _write_private(tmp, b"%d\n" % count)
        os.replace(tmp, path)
        _fsync_dir(state_dir)
    return count
