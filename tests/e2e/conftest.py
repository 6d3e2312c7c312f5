"""Fixtures for the kernel-client end-to-end tests (see tests/vm/__init__.py)."""

from __future__ import annotations

import os
import shutil

import pytest


def vm_skip_reason() -> str | None:
    """Why the VM tests cannot run here, or None. Only these two reasons skip."""
    if os.geteuid() != 0:
        return "kernel-client VM tests need root (netns, tap devices, cache in /var/cache)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 missing (run scripts/vm-deps.sh)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _require_vm_host() -> None:
    reason = vm_skip_reason()
    if reason is not None:
        pytest.skip(reason)
