"""POSIX permission evaluation (pynfsd.fs.perm)."""

from __future__ import annotations

import pytest

from pynfsd.fs.backend import Attrs, FileType
from pynfsd.fs.perm import EXEC, READ, WRITE, check_access

ALL = READ | WRITE | EXEC


def attrs(mode: int, ftype: FileType = FileType.REG, uid: int = 10, gid: int = 20) -> Attrs:
    return Attrs(ftype, mode, 1, uid, gid, 0, 0, (0, 0), 1, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("mode", "uid", "gids", "granted"),
    [
        (0o700, 10, [], ALL),
        (0o070, 10, [20], 0),  # the owner class applies even if the group would allow
        (0o070, 11, [20], ALL),
        (0o007, 11, [20], 0),  # the group class applies even if other would allow
        (0o005, 11, [21], READ | EXEC),
        (0o640, 11, [5, 20], READ),
        (0o000, 10, [20], 0),
    ],
)
def test_class_selection(mode: int, uid: int, gids: list[int], granted: int) -> None:
    assert check_access(attrs(mode), uid, gids, ALL) == granted


def test_result_is_a_subset_of_want() -> None:
    assert check_access(attrs(0o777), 10, [], READ) == READ


def test_root_bypass() -> None:
    assert check_access(attrs(0o000), 0, [], ALL) == READ | WRITE
    assert check_access(attrs(0o001), 0, [], ALL) == ALL
    assert check_access(attrs(0o000, FileType.DIR), 0, [], ALL) == ALL
