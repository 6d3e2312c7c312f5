"""MemoryBackend specifics: injected clock, limits, per-instance handles."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from pynfsd.fs.backend import SET_TO_NOW
from pynfsd.fs.memory import MemoryBackend
from tests.clock import ManualClock

Z8 = bytes(8)


def expect(code: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code


def test_times_come_from_the_injected_clock() -> None:
    clock = ManualClock(1_000_000_000)
    fs = MemoryBackend(clock=clock)
    clock.now = 5_000
    h, attrs, _ = fs.create_file(fs.root(), b"f", 0o644, 0, 0, True)
    assert (attrs.atime_ns, attrs.mtime_ns, attrs.ctime_ns) == (5_000, 5_000, 5_000)
    assert fs.getattr(fs.root()).mtime_ns == 5_000
    clock.now = 6_000
    fs.write(h, 0, b"x", False)
    assert fs.getattr(h).mtime_ns == 6_000
    clock.now = 7_000
    attrs = fs.setattr(h, atime=SET_TO_NOW)
    assert (attrs.atime_ns, attrs.mtime_ns, attrs.ctime_ns) == (7_000, 6_000, 7_000)


def test_change_grows_even_with_a_frozen_clock() -> None:
    fs = MemoryBackend(clock=ManualClock(1_000_000_000))
    h, _, _ = fs.create_file(fs.root(), b"f", 0o644, 0, 0, True)
    values = []
    for i in range(10):
        fs.write(h, i, b"y", False)
        values.append(fs.getattr(h).change)
    assert values == sorted(set(values))


def test_space_and_file_limits() -> None:
    fs = MemoryBackend(capacity_bytes=100, max_files=3)
    h, _, _ = fs.create_file(fs.root(), b"a", 0o644, 0, 0, True)
    expect(errno.EFBIG, fs.write, h, 100, b"x", False)
    expect(errno.EFBIG, fs.setattr, h, size=101)
    fs.write(h, 0, bytes(60), False)
    h2, _, _ = fs.create_file(fs.root(), b"b", 0o644, 0, 0, True)
    expect(errno.ENOSPC, fs.write, h2, 0, bytes(50), False)
    expect(errno.ENOSPC, fs.mkdir, fs.root(), b"c", 0o755, 0, 0)
    assert fs.statfs(fs.root()).bytes_free == 40
    fs.remove(fs.root(), b"a")
    assert fs.write(h2, 0, bytes(50), False) == 50


def test_handles_of_another_instance_are_stale() -> None:
    a, b = MemoryBackend(), MemoryBackend()
    expect(errno.ESTALE, b.getattr, a.root())


def test_readdir_rejects_cookies_never_issued() -> None:
    fs = MemoryBackend()
    fs.create_file(fs.root(), b"a", 0o644, 0, 0, True)
    (entry,), eof, verf = fs.readdir(fs.root(), 0, Z8, 10)
    assert eof
    expect(errno.EINVAL, fs.readdir, fs.root(), entry.cookie + 1, verf, 10)
    assert fs.readdir(fs.root(), entry.cookie, verf, 10)[:2] == ([], True)


def test_close_makes_handles_stale() -> None:
    fs = MemoryBackend()
    root = fs.root()
    fs.close()
    expect(errno.ESTALE, fs.getattr, root)
