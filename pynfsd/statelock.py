"""One server per state directory: an exclusive lock on `<state-dir>/pynfsd.lock`.

Two servers sharing a state directory would hand out the same client records and filehandle
keys and fight over the control socket.  The server takes this lock before anything else
touches the directory and holds it until it exits (the kernel drops it with the process,
so a crash never leaves a stale lock).  The file holds the owner's PID for the message a
second server prints.  `flock` locks belong to the open file description, so the lock is not
shared with children: the descriptor is close-on-exec.
"""

from __future__ import annotations

import fcntl
import os

LOCK_FILE = "pynfsd.lock"


class StateDirBusy(Exception):
    """Another process holds the state directory; `pid` is its PID (0 if unknown)."""

    def __init__(self, state_dir: str, pid: int) -> None:
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"state directory {state_dir} is in use by {holder}")
        self.state_dir, self.pid = state_dir, pid


def lock_state_dir(state_dir: str) -> int:
    """Lock `state_dir` for this process and return the descriptor to keep open.

    Raises `StateDirBusy` when another server holds it, `OSError` when the file cannot be
    opened."""
    path = os.path.join(state_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise StateDirBusy(state_dir, pid) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).strip() or b"0")
    except (OSError, ValueError):
        return 0  # the holder is still writing it, or the file is not ours
