"""One server per state directory: the lock file, its PID, the message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pynfsd.statelock import LOCK_FILE, StateDirBusy, lock_state_dir


def test_second_lock_names_the_holder_and_release_frees_it(tmp_path: Path) -> None:
    fd = lock_state_dir(str(tmp_path))
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(StateDirBusy) as busy:
        lock_state_dir(str(tmp_path))  # another open file description: flock conflicts
    assert busy.value.pid == os.getpid()
    assert str(busy.value) == f"state directory {tmp_path} is in use by pid {os.getpid()}"
    assert not os.get_inheritable(fd)
    os.close(fd)
    os.close(lock_state_dir(str(tmp_path)))  # free again


def test_stale_pid_is_overwritten_and_unknown_holder_reported(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("999999999 stale and long\n")
    fd = lock_state_dir(str(tmp_path))
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    os.ftruncate(fd, 0)  # a holder that has not written its PID yet
    with pytest.raises(StateDirBusy, match="in use by another process"):
        lock_state_dir(str(tmp_path))
    os.close(fd)


def test_missing_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        lock_state_dir(str(tmp_path / "absent"))
