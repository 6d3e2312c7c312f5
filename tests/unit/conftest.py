"""Fixtures shared by the COMPOUND tests, and a small tmpfs for the tests of filesystem facts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nfs4_fixtures import World, make_world


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    """An in-process server: one rw export, the in-memory backend, a manual clock."""
    world = make_world(tmp_path)
    yield world
    world.close()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (unmounted even when it fails); root only."""
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "pynfsd-test", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
