"""podman for the container tests: runc and explicit ulimits (``containers.conf`` here),
image builds that trust the host's CA bundle (for pip behind a TLS-intercepting proxy), and
why the tests cannot run on this host.

Containers and network namespaces are named after the test process (``pynfsd-test-PID-N``)
and removed by those names only.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.vm.network import NS_PREFIX, _counter, prune_stale_namespaces
from tests.vm.servers import PROBE, REPO_ROOT

HERE = Path(__file__).resolve().parent
CONTAINERS_CONF = HERE / "containers.conf"
BASE_IMAGE = "localhost/debian:bookworm-slim"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

_names = itertools.count()


def unique_name(kind: str = "pynfsd") -> str:
    """A container name no other test process uses."""
    return f"{kind}-test-{os.getpid()}-{next(_names)}"


def podman(*args: str, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    return subprocess.run(["podman", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=check)


def podman_skip_reason() -> str | None:
    """Why podman containers cannot run here, or None."""
    if os.geteuid() != 0:
        return "container tests need root (rootful podman, network namespaces)"
    if shutil.which("podman") is None:
        return "podman missing (run scripts/container-deps.sh)"
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        return f"no {BASE_IMAGE} image (run scripts/container-deps.sh)"
    return None


def build(dockerfile: Path, context: Path, tag: str) -> tuple[float, int]:
    """``podman build`` (runc, docker format so HEALTHCHECK is kept); (seconds, image bytes).
    podman's layer cache makes a rebuild of an unchanged tree quick."""
    argv = ["build", "--runtime", "runc", "--format", "docker", "-f", str(dockerfile),
            "-t", tag]
    if HOST_CA.exists():
        argv += ["-v", f"{HOST_CA}:/run/build-ca.crt:ro", "--build-arg",
                 "PIP_CERT=/run/build-ca.crt"]
    started = time.monotonic()
    built = podman(*argv, str(context), check=False, timeout=1800)
    took = time.monotonic() - started
    if built.returncode != 0:
        raise AssertionError(f"podman build -f {dockerfile} failed:\n"
                             f"{built.stdout[-3000:]}{built.stderr[-3000:]}")
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    print(f"\nimage {tag}: built in {took:.0f} s, {size / 1e6:.0f} MB", flush=True)
    return took, size


def pynfsd_image() -> str:
    """The image of docker/Dockerfile, built (or found in podman's cache)."""
    tag = "localhost/pynfsd:test"
    build(REPO_ROOT / "docker" / "Dockerfile", REPO_ROOT, tag)
    return tag


class Namespace:
    """A network namespace with only loopback, deleted on close."""

    def __init__(self) -> None:
        prune_stale_namespaces()
        self.name = f"{NS_PREFIX}{os.getpid()}-{next(_counter)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"],
                       check=True)

    def run(self, argv: list[str], env: dict[str, str] | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True,
                              text=True, env=env, timeout=timeout)

    def wait_port(self, port: int) -> bool:
        probe = [sys.executable, "-c", PROBE, "127.0.0.1", str(port), "30"]
        return self.run(probe).returncode == 0

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

