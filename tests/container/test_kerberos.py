"""The compose file's Kerberos profile works as written: the KDC image makes the realm, the
service key and a krb5.conf in the keytab volume, and the pynfsd image, started with the
``pynfsd-krb5`` service's command, capabilities and volumes, accepts an RPCSEC_GSS krb5p
context for that key and refuses AUTH_SYS on the krb5 export.

Both containers join one network namespace made for the test (``--network ns:``); the client
(``krb5_client.py``, python-gssapi) runs in it too, with the krb5.conf the KDC wrote, after
``kinit`` from a client keytab the KDC also made. Nothing listens outside the namespace.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.container.podman import (
    Namespace,
    build,
    podman,
    podman_skip_reason,
    pynfsd_image,
    unique_name,
)
from tests.vm.servers import REPO_ROOT

COMPOSE = REPO_ROOT / "docker" / "compose.yaml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
REALM = "EXAMPLE.TEST"
SERVER_NAME = "nfs-server.example.test"
CLIENT = "alice"


def skip_reason() -> str | None:
    if (why := podman_skip_reason()) is not None:
        return why
    for tool in ("kinit", "ip"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            return f"{tool} missing (run scripts/krb5-deps.sh)"
    try:
        import gssapi  # noqa: F401
    except ImportError:
        return "python-gssapi missing (run scripts/krb5-deps.sh)"
    return None


pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def compose_service(name: str) -> str:
    """The text of one service of docker/compose.yaml (up to the next service)."""
    text = COMPOSE.read_text()
    m = re.search(rf"^  {re.escape(name)}:\n((?:    .*\n|\n)*)", text, re.M)
    assert m, f"no service {name} in {COMPOSE}"
    return m.group(1)


def compose_command(service: str) -> list[str]:
    """The service's ``command:`` list (one ``- item`` per line)."""
    block = compose_service(service).split("    command:\n", 1)[1]
    items = []
    for line in block.splitlines():
        if not line.startswith("      - "):
            break
        items.append(line[len("      - "):])
    return items


def test_compose_runs_with_the_documented_capabilities() -> None:
    documented = re.search(r"--cap-drop ALL --cap-add ([A-Z_,]+)", DOCKERFILE.read_text())
    in_compose = re.search(r"cap_drop: \[ALL\]\n  cap_add: \[([A-Z_, ]+)\]", COMPOSE.read_text())
    assert documented and in_compose
    assert documented.group(1).split(",") == in_compose.group(1).replace(" ", "").split(",")


def test_kerberos_profile_serves_krb5p(netns: Namespace, tmp_path: Path) -> None:
    kdc_image = "localhost/pynfsd-kdc:test"
    build(REPO_ROOT / "docker" / "kdc.Dockerfile", REPO_ROOT / "docker", kdc_image)
    image = pynfsd_image()
    keytab, kdb, state, export = (tmp_path / d for d in ("keytab", "kdb", "state", "export"))
    for d in (keytab, kdb, state, export):
        d.mkdir()
    kdc, server = unique_name("kdc"), unique_name()
    started: list[str] = []
    try:
        podman("run", "-d", "--name", kdc, "--network", f"ns:/run/netns/{netns.name}",
               "-e", f"REALM={REALM}", "-e", f"NFS_SERVER_NAME={SERVER_NAME}",
               "-e", "KDC_HOST=127.0.0.1", "-e", f"EXTRA_PRINCIPALS={CLIENT}",
               "-v", f"{kdb}:/var/lib/krb5kdc", "-v", f"{keytab}:/keytab", kdc_image)
        started.append(kdc)
        assert netns.wait_port(88), podman("logs", kdc, check=False).stdout
        assert podman("healthcheck", "run", kdc, check=False).returncode == 0

        caps = re.search(r"cap_add: \[([A-Z_, ]+)\]", COMPOSE.read_text())
        assert caps
        command = compose_command("pynfsd-krb5")
        assert "--keytab" in command and "sec=krb5p" in " ".join(command)
        podman("run", "-d", "--name", server, "--network", f"ns:/run/netns/{netns.name}",
               "--cap-drop", "ALL", "--cap-add", caps.group(1).replace(" ", ""),
               "-e", "KRB5_CONFIG=/keytab/krb5.conf",
               "-v", f"{state}:/var/lib/pynfsd", "-v", f"{export}:/export",
               "-v", f"{keytab}:/keytab:ro", image, *command)
        started.append(server)
        assert netns.wait_port(2049), podman("logs", server, check=False).stderr
        log = podman("logs", server).stderr + podman("logs", server).stdout
        assert "RPCSEC_GSS (krb5, krb5i, krb5p) with keytab /keytab/nfs.keytab" in log, log

        env = {**os.environ, "KRB5_CONFIG": str(keytab / "krb5.conf"),
               "KRB5CCNAME": f"FILE:{tmp_path / 'ccache'}",
               "PYTHONPATH": str(REPO_ROOT)}
        kinit = netns.run(["kinit", "-k", "-t", str(keytab / "clients.keytab"),
                           f"{CLIENT}@{REALM}"], env)
        assert kinit.returncode == 0, kinit.stderr
        began = time.monotonic()
        client = netns.run([sys.executable, "-m", "tests.container.krb5_client", "127.0.0.1",
                            "2049", f"nfs@{SERVER_NAME}"], env)
        assert client.returncode == 0, client.stderr + podman("logs", server).stderr[-3000:]
        result = json.loads(client.stdout)
        print(f"krb5 client: {result} in {time.monotonic() - began:.1f} s")
        assert result == {"krb5p": "NFS4_OK", "sys": "NFS4ERR_WRONGSEC"}, result
    finally:
        for name in started:
            podman("rm", "--force", "--time", "5", name, check=False)
