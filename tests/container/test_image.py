"""The container image, served to the Linux kernel client, survives a container restart.

The image is built from ``docker/Dockerfile`` with podman (runc, ``containers.conf`` from this
directory; the ``debian:bookworm-slim`` base is made locally by ``scripts/container-deps.sh``)
and run the way its header documents: ``--cap-drop ALL`` plus exactly the capabilities the
header's example adds, the state directory and the export as volumes, the image's default
export line (root_squash). The container joins a network namespace made for the test (a
bridge with 192.168.77.1, ``tests/vm/multi.py``) with ``--network ns:``, where one kernel-client
guest reaches it. The guest mounts, writes and reads files; a guest process opens a file and a
``lockwriter`` holds an fcntl lock and appends fsync'ed records. Then the container is stopped
(SIGTERM) and started again with the same volumes. The client, still mounted, continues: the
file opened before the restart is read after it (same filehandle), the writer keeps its lock
and loses no record, and the server lists the client's reclaimed open and lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.podman import podman, podman_skip_reason, pynfsd_image, unique_name
from tests.e2e.test_kernel_client import vm_skip_reason
from tests.e2e.test_kernel_scenarios import RECORD, fsynced, lost_lock_messages, record
from tests.scenarios.timeline import Timeline
from tests.vm.kernel import guest_kernel
from tests.vm.multi import BridgeNet, Guest, GuestConfig
from tests.vm.servers import PROBE, REPO_ROOT

DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
SQUASHED = 65534              # the anonymous uid/gid root_squash maps client root to
LEASE = 10
GRACE = 15
COUNT = 60                    # records the writer appends, 200 ms apart
KEPT_TEXT = "opened before the restart"


def skip_reason() -> str | None:
    return vm_skip_reason() or podman_skip_reason()


pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))]


def documented_caps() -> list[str]:
    """The capabilities the Dockerfile's run example adds after ``--cap-drop ALL``."""
    text = DOCKERFILE.read_text()
    m = re.search(r"--cap-drop ALL --cap-add ([A-Z_,]+)", text)
    assert m, "docker/Dockerfile documents its run line with --cap-drop ALL --cap-add ..."
    return m.group(1).split(",")


def default_command(image: str) -> list[str]:
    """The image's CMD: the default export line the test must also use."""
    out = podman("image", "inspect", "--format", "{{json .Config.Cmd}}", image).stdout
    cmd = json.loads(out)
    assert isinstance(cmd, list) and all(isinstance(a, str) for a in cmd)
    return cmd


@pytest.fixture(scope="module")
def image() -> str:
    return pynfsd_image()


class Container:
    """One pynfsd container in the test's namespace; removed (by its name) on ``remove()``."""

    def __init__(self, image: str, netns: str, bind: str, workdir: Path,
                 timeline: Timeline) -> None:
        self.name = unique_name()
        self.image = image
        self.netns = netns
        self.bind = bind
        self.timeline = timeline
        self.export_dir = workdir / "export"
        self.state_dir = workdir / "state"
        self.caps = documented_caps()
        self.created = False

    def run(self) -> None:
        """Create and start the container with the image's default export and short leases."""
        self.export_dir.mkdir(parents=True)
        os.chown(self.export_dir, SQUASHED, SQUASHED)
        self.state_dir.mkdir(mode=0o700, parents=True)
        cmd = default_command(self.image)
        argv = ["run", "-d", "--name", self.name, "--network", f"ns:/run/netns/{self.netns}",
                "--cap-drop", "ALL", "--cap-add", ",".join(self.caps),
                "-v", f"{self.state_dir}:/var/lib/pynfsd", "-v", f"{self.export_dir}:/export",
                self.image, *cmd, "--bind", self.bind, "--lease", str(LEASE),
                "--grace", str(GRACE)]
        self.created = True
        podman(*argv)
        self.timeline.log("host", f"podman run {self.name}: --cap-drop ALL --cap-add "
                          f"{','.join(self.caps)}; {' '.join(cmd)}")
        self.wait_ready()

    def stop(self) -> None:
        podman("stop", "--time", "30", self.name)
        self.timeline.log("host", f"podman stop {self.name} (SIGTERM)")

    def start(self) -> None:
        podman("start", self.name)
        self.timeline.log("host", f"podman start {self.name}: same container, same volumes")
        self.wait_ready()

    def wait_ready(self) -> None:
        probe = ["ip", "netns", "exec", self.netns, sys.executable, "-c", PROBE, self.bind,
                 "2049", "30"]
        up = subprocess.run(probe, capture_output=True).returncode == 0
        assert up, f"pynfsd in {self.name} did not listen:\n{self.logs()}"

    def healthy(self) -> bool:
        """The image's HEALTHCHECK (`pynfsd status`), run now."""
        return podman("healthcheck", "run", self.name, check=False).returncode == 0

    def clients(self) -> list[dict[str, Any]]:
        out = podman("exec", self.name, "pynfsd", "clients", "--json").stdout
        data = json.loads(out)
        return data if isinstance(data, list) else list(data.get("clients", []))

    def effective_caps(self) -> int:
        status = podman("exec", self.name, "cat", "/proc/1/status").stdout
        m = re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.M)
        assert m, status
        return int(m.group(1), 16)

    def logs(self, limit: int | None = 4000) -> str:
        """The server's log (its last ``limit`` characters)."""
        done = podman("logs", self.name, check=False)
        text = done.stdout + done.stderr
        return text if limit is None else text[-limit:]

    def remove(self) -> None:
        if self.created:
            podman("rm", "--force", "--time", "5", self.name, check=False)


@pytest.fixture
def world(image: str, tmp_path: Path) -> Iterator[tuple[Container, Guest, Timeline]]:
    """A bridge namespace, the container on it, one booted guest; all removed afterwards."""
    timeline = Timeline("the pynfsd image: kernel client, container restart, reclaim")
    kernel = guest_kernel()
    bridge = BridgeNet(1)
    container = Container(image, bridge.ns, bridge.server_addr, tmp_path, timeline)
    guest: Guest | None = None
    try:
        container.run()
        guest = Guest(GuestConfig("G1", "ctr-guest", "pynfsd-image-test-guest", 0), kernel,
                      bridge.guest(0), tmp_path / "vm-G1", 2049, "/export", timeline)
        guest.start()
        yield container, guest, timeline
    finally:
        try:
            if guest is not None:
                guest.stop()
        finally:
            log = tmp_path / "pynfsd.log"
            log.write_text(container.logs(limit=None))
            print(f"--- container log ({log}), tail ---\n{container.logs()}")
            container.remove()
            bridge.close()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_image_serves_the_kernel_client_across_a_restart(
        world: tuple[Container, Guest, Timeline]) -> None:
    container, g1, tl = world
    caps = container.effective_caps()
    tl.check(caps == sum(1 << n for n in (1, 2, 6, 7)),
             "the server runs with exactly DAC_OVERRIDE, DAC_READ_SEARCH, SETGID and SETUID "
             f"(CapEff {caps:x})")
    tl.check(container.healthy(), "the HEALTHCHECK (pynfsd status) passes")
    kept = container.export_dir / "kept.txt"
    kept.write_text(KEPT_TEXT + "\n")
    os.chown(kept, SQUASHED, SQUASHED)

    g1.ok("nfs_identity && nfs_mount")
    g1.ok("dd if=/dev/urandom of=$M/data.bin bs=64k count=64 conv=fsync 2>&1 && "
          "md5sum $M/data.bin > /tmp/data.md5 && cat /tmp/data.md5")
    g1.ok("mkdir $M/tree && for i in $(seq 1 50); do echo file $i > $M/tree/f$i; done && "
          "mv $M/tree/f1 $M/tree/renamed && chmod 640 $M/tree/f2 && ls $M/tree | wc -l")
    out = g1.ok("echo 3 > /proc/sys/vm/drop_caches && md5sum $M/data.bin && cat $M/tree/f50")
    guest_md5 = out[0].split()[0]
    tl.check(guest_md5 == md5(container.export_dir / "data.bin"),
             "the 4 MiB file reads back in the guest as it is on the host's disk")
    tl.check(out[-1] == "file 50", "a small file reads back")
    tree = container.export_dir / "tree"
    tl.check(sorted(p.name for p in tree.iterdir()) ==
             sorted(["renamed"] + [f"f{i}" for i in range(2, 51)]) and
             (tree / "f2").stat().st_mode & 0o777 == 0o640,
             "the tree, the rename and the chmod are on the host's disk")
    st = (container.export_dir / "data.bin").stat()
    tl.check((st.st_uid, st.st_gid) == (SQUASHED, SQUASHED),
             "files the guest's root created belong to 65534 (the default export squashes root)")

    g1.ok("(exec 3< $M/kept.txt; while [ ! -e /tmp/read-now ]; do sleep 0.2; done; "
          "echo 3 > /proc/sys/vm/drop_caches; say \"@@KEPT $(cat <&3)\") > /dev/console 2>&1 &")
    g1.ok(f"writer journal.dat G1 {COUNT} 200")
    g1.wait_line(r"^@@FSYNCED G1 15$", 60)
    # Under a write delegation the kernel keeps its fcntl lock to itself (RFC 7530 §10.4):
    # the server then holds the delegation instead of the lock.
    tl.check(any(c["opens"] and (c["locks"] or c.get("delegations")) for c in container.clients()),
             "pynfsd clients: the guest holds opens and a lock (or the write delegation under "
             "which its kernel keeps the lock)")

    container.stop()
    before = fsynced(g1, "G1")
    tl.note(f"last record the guest saw fsync'ed before the stop: {before}")
    container.start()
    restarted = container.logs(limit=None).split("pynfsd: stopping", 1)[-1]
    tl.check("1 client record(s) in /var/lib/pynfsd/clients" in restarted,
             "the restarted server finds the guest's client record in the state volume")
    g1.wait_line(rf"^@@FSYNCED G1 {before + 5}$", GRACE + LEASE + 60)
    mine = [c for c in container.clients()
            if "pynfsd-image-test-guest" in str(c.get("co_ownerid", ""))]
    tl.check(len(mine) == 1 and int(mine[0]["opens"]) >= 1
             and int(mine[0]["locks"]) + int(mine[0].get("delegations", 0)) >= 1,
             "after the restart the server has the guest's opens and lock (or write "
             "delegation) again (reclaimed)")
    tl.check(container.healthy(), "the HEALTHCHECK passes after the restart")
    g1.ok("touch /tmp/read-now")
    kept_line = g1.wait_line(r"^@@KEPT", 60)
    tl.check(kept_line.text == f"@@KEPT {KEPT_TEXT}",
             "the file opened before the restart is read through the same descriptor after it "
             "(its filehandle is still valid)")
    done = g1.wait_line(r"^@@DONE G1 ", GRACE + LEASE + 120)
    tl.check(done.text == f"@@DONE G1 {COUNT} 0", "the writer finished without an error")
    tl.check(not lost_lock_messages(g1), "the guest kernel lost no lock or open")
    out = g1.ok("md5sum $M/data.bin")
    tl.check(out[0].split()[0] == guest_md5, "the file written before the restart reads the same")
    data = (container.export_dir / "journal.dat").read_bytes()
    records = [data[i:i + RECORD] for i in range(0, len(data), RECORD)]
    tl.check(records == [record("G1", n) for n in range(1, COUNT + 1)],
             f"all {COUNT} fsync'ed records are on the host's disk, in order and intact")
    g1.ok("umount $M")
