"""The Linux kernel NFSv4.0 client (Debian, in qemu) against a pynfsd administered by the real
nfs-utils: `rpc.nfsd`, `exportfs`, `rpc.mountd` and `nfsdclnts` under `pynfsd nfs-utils`.

One guest boot (``tests/vm/guest/nfsutils.sh``) against ``pynfsd serve --exports FILE
--nfsd-fs DIR --no-listen``, whose own exports file gives ``share`` to another host (a name
nothing resolves).  The server starts with no socket, as knfsd does: ``rpc.nfsd --port P``
passes it its listening socket on 127.0.0.1:P, and the guest mounts with ``port=P``.  The tools run under ``pynfsd nfs-utils``, in whose private namespace the test's
``/etc`` files lie over the host's (``tests/vm/privateetc.py``'s overlay): ``/etc/hosts``
names the guest (seen as 127.0.0.1) ``vmclient.pynfsd.test``, ``/etc/exports`` gives
``share`` to that name only, and ``/var/lib/nfs`` is the test's directory.  The guest mounts
only through rpc.mountd's answers.  The guest:

1. mounts ``share`` on rpc.nfsd's port once rpc.mountd runs (``exportfs -ra`` first), writes and reads back;
2. holds a file open with a whole-file lock while the host runs ``nfsdclnts``;
3. fails to write, on the same mount, once the host runs ``exportfs -o ro`` for it;
4. fails to read once the host runs ``exportfs -u`` for it.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.test_kernel_caches import HOSTS, entries
from tests.e2e.test_kernel_client import vm_skip_reason
from tests.e2e.test_nfs_utils import fuse_ready, is_mounted, mountd
from tests.e2e.test_nfs_utils import pytestmark as needs_tools
from tests.support_nfsutils import nfs_utils
from tests.vm.harness import WorkloadRun, run_workload
from tests.vm.initramfs import GUEST
from tests.vm.network import Network
from tests.vm.privateetc import NSSWITCH, OVERLAY
from tests.vm.servers import PynfsdServer, Server

pytestmark = [pytest.mark.vm, *needs_tools,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason())),
              pytest.mark.skipif(not fuse_ready(), reason="pyfuse3 or /dev/fuse missing")]

CLIENT = "vmclient.pynfsd.test"
OPTS = "insecure,no_root_squash,no_subtree_check"
MOUNTD = "exportfs -ra && exec rpc.mountd -F -d all -N 2 -N 3 --no-udp"


class ExportsServer(PynfsdServer):
    """``pynfsd serve --exports FILE --nfsd-fs DIR --no-listen`` in the host's mount namespace,
    where ``pynfsd nfs-utils`` finds its control tree; once the tree is up, ``rpc.nfsd`` under
    ``pynfsd nfs-utils`` passes it a listening socket on ``port`` (what the guest mounts)."""

    def __init__(self, workdir: Path, network: Network, exports: str) -> None:
        super().__init__(workdir, network)
        self.exports_file, self.ctl = workdir / "exports", workdir / "ctl"
        self.exports_file.write_text(exports)
        self.ctl.mkdir()
        self.portlist: list[str] = []  # portlist before and after rpc.nfsd
        self.rpc_nfsd: subprocess.CompletedProcess[str] | None = None

    def command(self) -> list[str]:
        argv = super().command()
        at = argv.index("--export")
        argv[at:at + 2] = ["--exports", str(self.exports_file), "--nfsd-fs", str(self.ctl)]
        at = argv.index("--bind")
        argv[at:at + 4] = ["--no-listen"]  # no --bind ADDR --port P: rpc.nfsd gives the socket
        return argv

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while b"no listening socket yet" not in self.log_path.read_bytes():
            if self.pid is None or time.monotonic() > deadline:
                raise RuntimeError(f"pynfsd --no-listen did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        portlist = self.ctl / "nfsd" / "portlist"
        self.portlist.append(portlist.read_text())
        self.rpc_nfsd = nfs_utils(None, "rpc.nfsd", "--debug", "--no-udp", "-N", "3",
                                  "-H", self.network.server_bind, "--port", str(self.port), "4",
                                  state_dir=self.state_dir)
        self.portlist.append(portlist.read_text())
        super()._wait_ready(timeout)  # the guest's port now accepts connections


@dataclass
class Tools:
    """The nfs-utils commands of one run: each under `pynfsd nfs-utils`, in whose namespace
    the test's /etc files (hosts, exports) lie over the host's and /var/lib/nfs is the
    test's directory."""

    server: ExportsServer
    etc: Path
    varlib: Path
    done: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)
    mountd: subprocess.Popen[str] | None = None
    mountd_log: str = ""

    def sandbox(self, command: str) -> tuple[str, ...]:
        return ("sh", "-c", OVERLAY, str(self.etc), "sh", "-c",
                f"mount --bind {self.varlib} /var/lib/nfs && {command}")

    def run(self, command: str) -> str:
        self.done[command] = done = nfs_utils(None, *self.sandbox(command),
                                              state_dir=self.server.state_dir)
        if done.returncode != 0:
            raise RuntimeError(f"{command}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def start_mountd(self) -> None:
        self.stack.callback(self._keep_log)  # runs after the context below has ended it
        self.mountd = self.stack.enter_context(mountd(self.server.state_dir,
                                                      self.sandbox(MOUNTD)))

    def _keep_log(self) -> None:
        proc, self.mountd = self.mountd, None
        if proc is not None and proc.stdout is not None:
            self.mountd_log = proc.stdout.read()

    def stop_mountd(self) -> None:
        """rpc.mountd ended by the PID of `pynfsd nfs-utils` (which passes SIGTERM on)."""
        self.stack.close()


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
        assert isinstance(server, ExportsServer)
        tools = Tools(server, server.workdir / "etc", server.workdir / "varlib")
        tools.varlib.mkdir()
        holder.append(tools)
        share = share_of(server)

        def show(cache: str) -> None:
            shown[cache] = (server.ctl / "rpc" / cache / "content").read_text()

        def on_pause(what: str) -> None:
            if what == "mountd":
                tools.start_mountd()
            elif what == "clients":
                shown["nfsdclnts"] = tools.run("nfsdclnts -q -t all --clientinfo")
                show("auth.unix.ip")
                show("nfsd.export")
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
    etc = workdir / "etc"
    etc.mkdir()
    (etc / "hosts").write_text(HOSTS)  # names the guest, for mountd and exportfs only
    (etc / "nsswitch.conf").write_text(NSSWITCH)
    (etc / "exports").write_text(f"{share} {CLIENT}({OPTS},rw)\n")
    # the server's own table: another host, whose name nothing resolves; mountd decides
    return ExportsServer(workdir, network, f"{share} other.pynfsd.test({OPTS},rw)\n")


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
            if is_mounted(tools.server.ctl):  # a server killed with its tree mounted
                subprocess.run(["fusermount3", "-u", "-z", str(tools.server.ctl)], check=False)
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


def test_rpc_nfsd_passes_the_socket_the_guest_mounts_through(nfs_utils_run: NfsUtilsRun,
                                                            ) -> None:
    server = nfs_utils_run.tools.server
    assert "--no-listen" in server.command() and "--port" not in server.command()
    done = server.rpc_nfsd
    assert done is not None and done.returncode == 0, done
    assert "knfsd is currently down" in done.stderr, done.stderr
    assert "Created AF_INET TCP socket." in done.stderr, done.stderr
    assert server.portlist == ["", f"tcp {server.port}\n"]
    log = server.log_path.read_text()
    assert re.search(rf"listening on 127\.0\.0\.1 port {server.port} \(portlist fd \d+", log), log
    detail = nfs_utils_run.guest("mount")  # the guest's own /proc/mounts line
    assert f"port={server.port}" in detail, detail


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
    # knfsd's info address: the guest's address (as the server sees it) and source port
    assert all(r[6] == "4.0" and re.fullmatch(r"127\.0\.0\.1:\d+", r[4]) for r in held), out
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
