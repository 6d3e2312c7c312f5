"""Fixtures of the container tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.container.podman import Namespace


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A network namespace with only loopback, for the test's containers and clients."""
    ns = Namespace()
    try:
        yield ns
    finally:
        ns.close()
