"""Helpers the end-to-end tests of a running `pynfsd` share."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable
from typing import TypeVar

from tests.serverproc import REPO

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Run a client coroutine on its own event loop, failing it after 60 s."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


def pynfsd(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m pynfsd ARGS` from the repository, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "pynfsd", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
