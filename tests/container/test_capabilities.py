"""The capabilities docker/Dockerfile documents are enough, and each one is needed.

The image runs with ``--cap-drop ALL --cap-add`` the documented set (SETUID, SETGID,
DAC_READ_SEARCH, DAC_OVERRIDE), its default root_squash export and the state and export as
volumes, in a loopback-only namespace; a client there (``sys_client.py``, AUTH_SYS root,
squashed to 65534) creates, writes and reads back a file. With the whole set it succeeds;
with any one capability left out the same workload fails, and the test names where.
With a no_root_squash export, client root's chown needs CAP_CHOWN as well: refused with the
set, allowed with the set plus the no_root_squash extras the Dockerfile lists.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.container.podman import (
    Namespace,
    podman,
    podman_skip_reason,
    pynfsd_image,
    unique_name,
)
from tests.container.test_image import documented_caps
from tests.vm.servers import REPO_ROOT

SQUASHED = 65534

pytestmark = pytest.mark.skipif(podman_skip_reason() is not None,
                                reason=str(podman_skip_reason()))


@pytest.fixture(scope="module")
def image() -> str:
    return pynfsd_image()


def serve_and_write(image: str, netns: Namespace, workdir: Path, caps: list[str],
                    serve: tuple[str, ...] = (), chown: bool = False) -> dict[str, str]:
    """Run the image with ``caps`` (and ``serve`` arguments instead of its default) and the
    client workload; the client's JSON result."""
    state, export = workdir / "state", workdir / "export"
    state.mkdir(parents=True)
    export.mkdir()
    os.chown(export, SQUASHED, SQUASHED)
    name = unique_name()
    cap_add = ["--cap-add", ",".join(caps)] if caps else []
    try:
        podman("run", "-d", "--name", name, "--network", f"ns:/run/netns/{netns.name}",
               "--cap-drop", "ALL", *cap_add, "-v", f"{state}:/var/lib/pynfsd",
               "-v", f"{export}:/export", image, *serve)
        assert netns.wait_port(2049), podman("logs", name, check=False).stderr
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        client = netns.run([sys.executable, "-m", "tests.container.sys_client", "127.0.0.1",
                            "2049", f"file-{workdir.name}", *(["chown"] if chown else [])], env)
        assert client.returncode == 0, client.stderr
        result: dict[str, str] = json.loads(client.stdout)
        return result
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def test_the_documented_set_serves_a_root_squash_export(image: str, netns: Namespace,
                                                        tmp_path: Path) -> None:
    caps = documented_caps()
    assert sorted(caps) == ["DAC_OVERRIDE", "DAC_READ_SEARCH", "SETGID", "SETUID"]
    result = serve_and_write(image, netns, tmp_path / "all", caps)
    assert result == {"status": "NFS4_OK", "step": "done"}, result
    made = tmp_path / "all" / "export" / "file-all"
    assert made.read_bytes() == b"written through the container\n"
    assert (made.stat().st_uid, made.stat().st_gid) == (SQUASHED, SQUASHED)


@pytest.mark.parametrize("missing", ["SETUID", "SETGID", "DAC_READ_SEARCH", "DAC_OVERRIDE"])
def test_each_documented_capability_is_needed(image: str, netns: Namespace, tmp_path: Path,
                                              missing: str) -> None:
    caps = [c for c in documented_caps() if c != missing]
    result = serve_and_write(image, netns, tmp_path / missing.lower(), caps)
    print(f"without {missing}: {result}")
    assert result["status"] != "NFS4_OK", f"the workload succeeded without {missing}"


NO_ROOT_SQUASH = ("serve", "--export", "/export *(rw,no_root_squash,insecure)")
NO_ROOT_SQUASH_EXTRAS = ["CHOWN", "FOWNER", "FSETID", "MKNOD"]


def test_no_root_squash_chown_needs_the_extras(image: str, netns: Namespace,
                                               tmp_path: Path) -> None:
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    assert all(c in dockerfile for c in NO_ROOT_SQUASH_EXTRAS)
    base = documented_caps()
    refused = serve_and_write(image, netns, tmp_path / "base", base, NO_ROOT_SQUASH, chown=True)
    assert refused == {"status": "NFS4ERR_PERM", "step": "chown"}, refused
    allowed = serve_and_write(image, netns, tmp_path / "extras", base + NO_ROOT_SQUASH_EXTRAS,
                              NO_ROOT_SQUASH, chown=True)
    assert allowed == {"status": "NFS4_OK", "step": "done"}, allowed
    made = (tmp_path / "extras" / "export" / "file-extras").stat()
    assert (made.st_uid, made.st_gid) == (4321, 8765)
