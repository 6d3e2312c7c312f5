"""Helpers the end-to-end tests of a running `pynfsd` share."""

from __future__ import annotations

import subprocess
import sys

from tests.serverproc import REPO


def pynfsd(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m pynfsd ARGS` from the repository, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "pynfsd", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
