"""The test dependencies leave no service behind on the host.

``scripts/test-all`` installs NFS-Ganesha, the MIT KDC and kadmind, gssproxy and podman (and,
with Ganesha, rpcbind and nfs-common). The suite starts its own short-lived instances of the
daemons it needs; none of these packages may leave a daemon enabled at boot (a system
nfs-ganesha would take port 2049 from ``scripts/serve``), and none may be running as a system
service.

"Enabled" is read from the files a boot would use, for every unit and init script the
installed packages ship (``dpkg -L``), not from a list kept by hand: systemd ``.wants`` /
``.requires`` links under ``/etc/systemd/system`` and ``S`` links in ``/etc/rc?.d``.
A daemon process counts as a system service when it runs with the system's own
configuration: ganesha.nfsd without ``-f`` or with a file under ``/etc``, gssproxy without
``-c``, krb5kdc/kadmind without a ``KRB5_KDC_PROFILE`` of their own (k5test realms set one),
and any rpcbind (no test starts one). Processes in another PID namespace (a container's
KDC, for instance) are not the host's services.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

PACKAGES = ("nfs-ganesha", "nfs-ganesha-vfs", "rpcbind", "nfs-common", "krb5-kdc",
            "krb5-admin-server", "gssproxy", "podman", "containernetworking-plugins")
UNIT_DIRS = ("/lib/systemd/system/", "/usr/lib/systemd/system/")
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target")
DAEMONS = ("ganesha.nfsd", "gssproxy", "krb5kdc", "kadmind", "rpcbind")


def installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                         text=True)
    return out.returncode == 0 and "install ok installed" in out.stdout


def shipped(package: str) -> tuple[list[str], list[str]]:
    """The systemd unit names and init script names a package installs."""
    files = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    units = [Path(f).name for f in files
             if f.startswith(UNIT_DIRS) and f.endswith(UNIT_SUFFIXES) and "/" not in
             f.split("/system/", 1)[1]]
    scripts = [Path(f).name for f in files if f.startswith("/etc/init.d/")]
    return units, scripts


def enabled_links(units: list[str], scripts: list[str], etc: Path = Path("/etc")) -> list[str]:
    """Boot-time links under ``etc`` that would start one of ``units`` or ``scripts``."""
    found = []
    for unit in units:
        for kind in ("wants", "requires"):
            found += [str(p) for p in (etc / "systemd/system").glob(f"*.{kind}/{unit}")]
    for script in scripts:
        rx = re.compile(rf"^S\d\d{re.escape(script)}$")
        for rc in sorted(etc.glob("rc[0-6S].d")):
            found += [str(p) for p in rc.iterdir() if rx.match(p.name)]
    return found


def test_no_daemon_of_the_test_dependencies_is_enabled() -> None:
    present = [p for p in PACKAGES if installed(p)]
    if not present:
        pytest.skip("none of the test dependencies' daemon packages is installed here")
    left = {}
    for package in present:
        units, scripts = shipped(package)
        if links := enabled_links(units, scripts):
            left[package] = links
    assert not left, ("enabled at boot (run scripts/no-services.sh; it misses these?): "
                      f"{left}")


def test_the_check_sees_enabled_links(tmp_path: Path) -> None:
    """The link check reads what a boot reads: a wants link as ``systemctl enable`` makes it
    and an S link as ``update-rc.d enable`` makes it are found (in a scratch tree, so the
    host is untouched); K links are not enabled."""
    wants = tmp_path / "systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "nfs-ganesha.service").symlink_to("/lib/systemd/system/nfs-ganesha.service")
    (tmp_path / "rc2.d").mkdir()
    (tmp_path / "rc2.d/S01krb5-kdc").symlink_to("../init.d/krb5-kdc")
    (tmp_path / "rc2.d/K01rpcbind").symlink_to("../init.d/rpcbind")
    assert enabled_links(["nfs-ganesha.service", "gssproxy.service"],
                         ["krb5-kdc", "rpcbind"], tmp_path) == [
        str(wants / "nfs-ganesha.service"), str(tmp_path / "rc2.d/S01krb5-kdc")]


def daemon_processes() -> list[tuple[int, str, list[str], dict[str, str]]]:
    """(pid, name, argv, environment) of every process of the daemons in ``DAEMONS`` that
    runs in this PID namespace."""
    procs = []
    own_ns = os.readlink("/proc/self/ns/pid")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != own_ns:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            name = (entry / "comm").read_text().strip()
            env_raw = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue   # gone, or not ours to read
        exe = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else name
        if exe not in DAEMONS and name not in DAEMONS:
            continue
        env = dict(kv.decode(errors="replace").split("=", 1) for kv in env_raw if b"=" in kv)
        procs.append((int(entry.name), exe if exe in DAEMONS else name,
                      [a.decode(errors="replace") for a in argv if a], env))
    return procs


def is_system_service(name: str, argv: list[str], env: dict[str, str]) -> bool:
    """Whether a daemon process runs with the system's configuration (see the module doc)."""
    def option(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv[:-1] else None

    if name == "ganesha.nfsd":
        conf = option("-f")
        return conf is None or conf.startswith("/etc/")
    if name == "gssproxy":
        return option("-c") is None
    if name in ("krb5kdc", "kadmind"):
        return "KRB5_KDC_PROFILE" not in env
    return name == "rpcbind"


def test_no_daemon_runs_as_a_system_service() -> None:
    if os.geteuid() != 0:
        pytest.skip("reading other processes' environment needs root")
    services = [(pid, argv) for pid, name, argv, env in daemon_processes()
                if is_system_service(name, argv, env)]
    assert not services, f"daemons running with the system configuration: {services}"


def test_a_test_started_daemon_is_not_a_system_service() -> None:
    """The rule tells the suite's own instances from system services."""
    k5test_env = {"KRB5_KDC_PROFILE": "/tmp/k5test/kdc.conf", "KRB5_CONFIG": "/tmp/k5/krb5.conf"}
    assert not is_system_service("krb5kdc", ["krb5kdc", "-n"], k5test_env)
    assert is_system_service("krb5kdc", ["/usr/sbin/krb5kdc"], {"PATH": "/usr/bin"})
    assert not is_system_service("gssproxy", ["gssproxy", "-i", "-c", "/tmp/g.conf"], {})
    assert is_system_service("gssproxy", ["/usr/sbin/gssproxy", "-D"], {})
    assert not is_system_service("ganesha.nfsd", ["ganesha.nfsd", "-F", "-f", "/tmp/w/g.conf"],
                                 {})
    assert is_system_service("ganesha.nfsd", ["/usr/bin/ganesha.nfsd"], {})
    assert is_system_service("rpcbind", ["/sbin/rpcbind", "-f", "-w"], {})
