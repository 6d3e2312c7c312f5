"""Fixtures shared by the COMPOUND tests."""

from __future__ import annotations

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
