"""The Linux kernel NFSv4.0 client (Debian, in qemu) against a pynfsd administered by the real
nfs-utils: `exportfs`, `rpc.mountd` and `nfsdclnts` under `pynfsd nfs-utils`.

One guest boot (``tests/vm/guest/nfsutils.sh``) against ``pynfsd serve --nfsd-fs DIR`` run with
the test's ``/etc`` (``tests/vm/privateetc.py``), whose ``/etc/hosts`` names the guest (seen
as 127.0.0.1) ``vmclient.pynfsd.test`` and whose ``/etc/exports`` gives ``share`` to that name
only.  The server's own exports file gives ``share`` to another host: the guest mounts only
through rpc.mountd's answers.  The tools run in the server's mount namespace (``nsenter``, so
they see its ``/etc`` and its control tree), each in its own private namespace made by
``pynfsd nfs-utils``, with ``/var/lib/nfs`` bound to the test's directory.  The guest:

1. mounts ``share`` once rpc.mountd runs (``exportfs -ra`` first), writes and reads back;
2. holds a file open with a whole-file lock while the host runs ``nfsdclnts``;
3. fails to write, on the same mount, once the host runs ``exportfs -o ro`` for it;
4. fails to read once the host runs ``exportfs -u`` for it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.test_kernel_caches import HOSTS, entries
from tests.e2e.test_kernel_client import vm_skip_reason
from tests.e2e.test_nfs_utils import children, fuse_ready, open_channels
from tests.e2e.test_nfs_utils import pytestmark as needs_tools
from tests.support_nfsutils import CACHES
from tests.vm.harness import WorkloadRun, run_workload
from tests.vm.initramfs import GUEST
from tests.vm.network import Network
from tests.vm.privateetc import EtcServer
from tests.vm.servers import REPO_ROOT, Server

pytestmark = [pytest.mark.vm, *needs_tools,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason())),
              pytest.mark.skipif(not fuse_ready(), reason="pyfuse3 or /dev/fuse missing")]

CLIENT = "vmclient.pynfsd.test"
OPTS = "insecure,no_root_squash,no_subtree_check"
MOUNTD = "exportfs -ra && exec rpc.mountd -F -d all -N 2 -N 3 --no-udp"


@dataclass
class Tools:
    """The nfs-utils commands of one run, in the server's namespace."""

    server: EtcServer
    varlib: Path
    done: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    mountd: subprocess.Popen[str] | None = None
    mountd_log: str = ""

    def argv(self, command: str) -> list[str]:
        assert self.server.pid is not None, "the server is not running"
        return ["nsenter", "-t", str(self.server.pid), "-m", "--",
                sys.executable, "-m", "pynfsd", "nfs-utils", "--state-dir",
                str(self.server.state_dir), "--", "sh", "-c",
                f"mount --bind {self.varlib} /var/lib/nfs && {command}"]

    def run(self, command: str) -> str:
        self.done[command] = done = subprocess.run(
            self.argv(command), capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
            env=self.server.environment())
        if done.returncode != 0:
            raise RuntimeError(f"{command}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def start_mountd(self) -> None:
        proc = subprocess.Popen(self.argv(MOUNTD), cwd=REPO_ROOT, env=self.server.environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.mountd = proc
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            kids = children(proc.pid)
            if kids and open_channels(kids[0]) == set(CACHES):
                return
            time.sleep(0.1)
        raise RuntimeError(f"rpc.mountd did not open the channels: {proc.poll()}")

    def stop_mountd(self) -> None:
        proc, self.mountd = self.mountd, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)  # pynfsd nfs-utils passes it on to rpc.mountd
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        self.mountd_log = out


@dataclass
class NfsUtilsRun:
    run: WorkloadRun
    tools: Tools
    shown: dict[str, str]

    def guest(self, name: str) -> str:
        ok, detail = self.run.results.get(name, (False, "no result"))
        assert ok, f"guest check {name}: {detail}\n{self.run.diagnostics()}"
        return detail


def share_of(server: Server) -> Path:
    return server.export_dir / "share"


def pause_handler(holder: list[Tools], shown: dict[str, str],
                  ) -> Callable[[Server], Callable[[str], str | None]]:
    def make(server: Server) -> Callable[[str], str | None]:
        assert isinstance(server, EtcServer)
        tools = Tools(server, server.workdir / "varlib")
        tools.varlib.mkdir()
        holder.append(tools)
        share = share_of(server)

        def show(key: str, *args: str) -> None:
            done = server.admin(*args)
            shown[key] = done.stdout if done.returncode == 0 else f"exit {done.returncode}"

        def on_pause(what: str) -> None:
            if what == "mountd":
                tools.start_mountd()
            elif what == "clients":
                shown["nfsdclnts"] = tools.run("nfsdclnts -q -t all --clientinfo")
                show("auth.unix.ip", "cache", "show", "auth.unix.ip")
                show("nfsd.export", "cache", "show", "nfsd.export")
            elif what == "ro":
                tools.run(f"exportfs -o ro,{OPTS} {CLIENT}:{share}")
                shown["exportfs -v"] = tools.run("exportfs -v")
            elif what == "unexport":
                tools.run(f"exportfs -u {CLIENT}:{share}")
            elif what == "end":
                tools.stop_mountd()
            else:
                raise ValueError(f"unknown pause request {what!r}")
        return on_pause
    return make


def make_server(name: str, workdir: Path, network: Network) -> Server:
    share = workdir / "export" / "share"
    share.mkdir(parents=True)
    share.chmod(0o777)
    ctl = workdir / "ctl"
    ctl.mkdir()
    etc = {"hosts": HOSTS, "exports": f"{share} {CLIENT}({OPTS},rw)\n"}
    own = f"{share} other.pynfsd.test({OPTS},rw)\n"  # not the guest: mountd decides
    return EtcServer(workdir, network, etc, own, extra_args=("--nfsd-fs", str(ctl)))


@pytest.fixture(scope="module")
def nfs_utils_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NfsUtilsRun]:
    workdir = tmp_path_factory.mktemp("nfsutils")
    holder: list[Tools] = []
    shown: dict[str, str] = {}
    try:
        run = run_workload("pynfsd", "user", workdir, bigdir_count=0, timeout=480.0,
                           make=make_server, script=GUEST / "nfsutils.sh",
                           pause=pause_handler(holder, shown))
    finally:
        for tools in holder:
            tools.stop_mountd()
    assert holder, "the harness made no server"
    yield NfsUtilsRun(run, holder[0], shown)


def test_vm_ran_to_completion(nfs_utils_run: NfsUtilsRun) -> None:
    run = nfs_utils_run.run
    for name, (ok, detail) in run.results.items():
        print(f"{name}: {'PASS' if ok else 'FAIL'} {detail}")  # shown with pytest -rA
    for key, text in nfs_utils_run.shown.items():
        print(f"---- {key}\n{text}")
    assert not run.errors and not run.transcript.timed_out, run.diagnostics()
    assert any(line.startswith("@@EXIT 0") for line in run.transcript.lines), run.diagnostics()
    nfs_utils_run.guest("unmount")


def test_a_hostname_export_mounts_through_mountd(nfs_utils_run: NfsUtilsRun) -> None:
    nfs_utils_run.guest("mount")
    share = nfs_utils_run.run.export_dir / "share"
    assert (share / "guest-file").read_text() == "written by the guest through mountd\n"
    ip = nfs_utils_run.shown["auth.unix.ip"]
    guest = [w for w in entries(ip) if w[:2] == ["nfsd", "127.0.0.1"]]
    assert guest == [["nfsd", "127.0.0.1", CLIENT]], ip  # mountd's domain: the host name
    assert str(share) in {w[0] for w in entries(nfs_utils_run.shown["nfsd.export"])}
    log = nfs_utils_run.tools.mountd_log
    assert f"nfsd_export: inbuf '{CLIENT} {share}'" in log, log


def test_nfsdclnts_prints_the_guests_open_and_lock(nfs_utils_run: NfsUtilsRun) -> None:
    nfs_utils_run.guest("locked")
    out = nfs_utils_run.shown["nfsdclnts"]
    # inode | type | access | deny | address | clientid | version | file name
    rows = [[c.strip() for c in line.split("|")] for line in out.splitlines() if "|" in line]
    held = [r for r in rows if r[-1] == "locked-file"]
    assert sorted(r[1] for r in held) == ["lock", "open"], out
    assert all(r[6] == "4.0" and r[4].partition(":")[0] == "127.0.0.1" for r in held), out
    assert [r[2] for r in held if r[1] == "open"] == ["-w"], out  # lockwriter: O_WRONLY


def test_exportfs_o_ro_refuses_writes_without_remount(nfs_utils_run: NfsUtilsRun) -> None:
    detail = nfs_utils_run.guest("ro_live")
    assert "Read-only file system" in detail, detail
    nfs_utils_run.guest("ro_reads")
    assert not (nfs_utils_run.run.export_dir / "share" / "after-ro").exists()
    listed = [line for line in nfs_utils_run.shown["exportfs -v"].splitlines() if CLIENT in line]
    assert listed and re.search(r"[(,]ro[,)]", listed[0]), nfs_utils_run.shown["exportfs -v"]


def test_exportfs_u_ends_the_guests_access(nfs_utils_run: NfsUtilsRun) -> None:
    nfs_utils_run.guest("unexported")
