"""Debian's unmodified nfs-utils tools run by `pynfsd nfs-utils`.

Against a control tree of plain files (tests/support_nfsutils.py): what exportfs, rpc.nfsd and
nfsdclnts read and write at /proc/fs/nfsd and /proc/net/rpc, byte for byte.  Against a running
`pynfsd serve --nfsd-fs DIR`: rpc.mountd answers the server's upcalls and a client is served
through its answers, exportfs -ra flushes the server's caches, rpc.nfsd sets its threads.  The
host's /etc/exports, /var/lib/nfs and /proc stay untouched (the tools get temporary ones inside
their namespace).  scripts/nfs-utils-deps.sh installs the tools (nfs-kernel-server)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N
from tests.serverproc import REPO, ServerProcess, assert_log_clean, lookup_path
from tests.support_nfsutils import CACHES, in_sandbox, nfs_utils, nfs_utils_argv, plain_tree

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need CAP_SYS_ADMIN"),
    pytest.mark.skipif(shutil.which("exportfs", path="/usr/sbin") is None,
                       reason="nfs-kernel-server missing (scripts/nfs-utils-deps.sh)"),
]
HOST_FILES = ("/etc/exports", "/var/lib/nfs/etab")


def host_state() -> list[tuple[str, bytes | None, float | None]]:
    """Contents and mtimes of the host files exportfs would change."""
    return [(p, Path(p).read_bytes(), os.stat(p).st_mtime) if os.path.exists(p) else (p, None, None)
            for p in HOST_FILES]


def test_exportfs_ra_writes_test_entries_and_flushes(tmp_path: Path) -> None:
    tree = plain_tree(tmp_path / "tree")
    share = tmp_path / "share"
    share.mkdir()
    before = host_state()
    t0 = int(time.time())
    done = nfs_utils(tree, *in_sandbox(
        tmp_path, f"{share} 127.0.0.1(rw,no_root_squash,no_subtree_check,fsid=1)\n",
        "exportfs -ra && exportfs -v"))
    t1 = int(time.time())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(share), "127.0.0.1(sync,wdelay,hide,no_subtree_check,fsid=1,"
                                   "sec=sys,rw,secure,no_root_squash,no_all_squash)"]
    rpc = tree / "rpc"
    # The kernel-facing writes: an already expired test entry per cache (knfsd accepts and
    # drops it; a server rejects flags it does not support) ...
    assert (rpc / "auth.unix.ip" / "channel").read_text() == \
        "nfsd 0.0.0.0 2147483647 -test-client-\n"
    assert (rpc / "nfsd.export" / "channel").read_text() == \
        f"-test-client- {share}  3 9248 65534 65534 0\n"
    # ... then the time to each cache's flush file: measured to be up to a second after the
    # current time (so that entries made in the current second are invalid too).
    for cache in CACHES:
        flush = (rpc / cache / "flush").read_text()
        assert flush.endswith("\n") and t0 <= int(flush) <= t1 + 1, (cache, flush)
    assert "fsid=1" in (tmp_path / "varlib" / "etab").read_text()
    assert host_state() == before


def test_exportfs_with_no_export_writes_only_flushes(tmp_path: Path) -> None:
    tree = plain_tree(tmp_path / "tree")
    done = nfs_utils(tree, *in_sandbox(tmp_path, "", "exportfs -ra"))
    assert done.returncode == 0, done.stderr
    for cache in CACHES:
        assert (tree / "rpc" / cache / "channel").read_text() == ""
        assert int((tree / "rpc" / cache / "flush").read_text()) > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_rpc_nfsd_writes_versions_listeners_and_threads(tmp_path: Path) -> None:
    tree = plain_tree(tmp_path / "tree")
    nfsd = tree / "nfsd"
    (nfsd / "portlist").write_text("")  # an empty portlist reads as "knfsd is down"
    done = nfs_utils(tree, "rpc.nfsd", "--debug", "--no-udp", "-H", "127.0.0.1",
                     "-p", str(free_port()), "-N", "3", "-V", "4.0", "-N", "4.1", "-N", "4.2", "8")
    assert done.returncode == 0, done.stderr
    assert "knfsd is currently down" in done.stderr
    assert "Created AF_INET TCP socket." in done.stderr
    assert (nfsd / "versions").read_text().splitlines()[0] == "-2 -3 +4.0 -4.1 -4.2"
    assert (nfsd / "threads").read_text() == "8\n"
    # the descriptor number of its listening socket, for the server to take with pidfd_getfd
    assert (nfsd / "portlist").read_text().strip().isdigit()


KNFSD_INFO = """\
clientid: 0x6574c2a500000007
address: "127.0.0.1:851"
status: confirmed
seconds from last renew: 3
name: "Linux NFSv4.0 web-1"
minor version: 0
callback state: UP
callback address: "127.0.0.1:0"
admin-revoked states: 0
"""
KNFSD_STATES = """\
- 0x00000001a5c27465000000070001: { type: open, access: rw, deny: --, superblock: "fd:01:1234", \
filename: "dir/a.txt", owner: "open id:\\x00\\x00\\x00\\x01" }
- 0x00000001a5c27465000000070002: { type: lock, superblock: "fd:01:1234", filename: \
"dir/a.txt", owner: "lock id:\\x00\\x00\\x00\\x02" }
"""


def test_nfsdclnts_prints_a_client_in_knfsd_formats(tmp_path: Path) -> None:
    tree = plain_tree(tmp_path / "tree")
    done = nfs_utils(tree, "nfsdclnts")
    assert (done.returncode, done.stdout + done.stderr) == (1, "Nothing to process\n")
    client = tree / "nfsd" / "clients" / "7"
    client.mkdir()
    (client / "info").write_text(KNFSD_INFO)
    (client / "states").write_text(KNFSD_STATES)
    (client / "ctl").write_text("")
    done = nfs_utils(tree, "nfsdclnts", "-q", "-t", "all", "--clientinfo")
    assert done.returncode == 0, done.stderr
    assert [line.split("|") for line in done.stdout.splitlines()] == [
        ["1234         ", " open   ", " rw     ", " --   ", " 127.0.0.1:851         ",
         " 0x6574c2a500000007  ", " 4.0  ", " a.txt"],
        ["1234         ", " lock   ", "        ", "      ", " 127.0.0.1:851         ",
         " 0x6574c2a500000007  ", " 4.0  ", " a.txt"]]


# ---- against a running `pynfsd serve --nfsd-fs DIR`

def fuse_ready() -> bool:
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return False
    return os.path.exists("/dev/fuse")


live = pytest.mark.skipif(not fuse_ready(), reason="pyfuse3 or /dev/fuse missing")


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


@contextmanager
def live_server(tmp_path: Path, clients: str) -> Iterator[ServerProcess]:
    """`pynfsd serve --nfsd-fs tmp_path/ctl` exporting tmp_path/share to `clients`; its log
    clean of tracebacks while it runs.  A mount its exit left stale is removed."""
    share, ctl = tmp_path / "share", tmp_path / "ctl"
    share.mkdir()
    share.chmod(0o777)
    ctl.mkdir()
    srv = ServerProcess([f"{share} {clients}"], tmp_path / "state",
                        extra_args=["--nfsd-fs", str(ctl)])
    try:
        with srv:
            yield srv
            assert_log_clean(srv.log_text())
    finally:
        if is_mounted(ctl):  # stat() of a stale FUSE mount fails: ismount() cannot tell
            subprocess.run(["fusermount3", "-u", "-z", str(ctl)], check=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with live_server(tmp_path, "*(rw,no_root_squash,insecure)") as srv:
        yield srv


def open_channels(pid: int) -> set[str]:
    """The caches whose channel file process `pid` holds open."""
    names = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        parts = target.split("/")
        if len(parts) > 2 and parts[-1] == "channel" and parts[-3] == "rpc":
            names.add(parts[-2])
    return names


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextmanager
def mountd(state: Path, sandbox: tuple[str, ...]) -> Iterator[subprocess.Popen[str]]:
    """rpc.mountd -F (NFSv4 only) under `pynfsd nfs-utils`, once it holds all four channels
    open; ended by the PID of `pynfsd nfs-utils`, which passes SIGTERM on."""
    proc = subprocess.Popen(nfs_utils_argv(None, *sandbox, state_dir=state), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            kids = children(proc.pid)
            if kids and open_channels(kids[0]) == set(CACHES):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"rpc.mountd did not open the channels: {proc.poll()}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def served(srv: ServerProcess, path: Path) -> int:
    """The status of a client's LOOKUP of `path` and GETATTR."""
    c = await srv.connect()
    try:
        res = await c.compound([*lookup_path(path), op.getattr(N.FATTR4_TYPE)])
    finally:
        await c.close()
    status: int = res.status
    return status


@live
async def test_mountd_answers_the_servers_upcalls(server: ServerProcess, tmp_path: Path) -> None:
    share, state = tmp_path / "share", tmp_path / "state"
    (tmp_path / "sandbox").mkdir()
    sandbox = in_sandbox(tmp_path / "sandbox",
                         f"{share} 127.0.0.1(rw,no_root_squash,insecure,no_subtree_check,fsid=7)\n",
                         "exportfs -ra && exec rpc.mountd -F -d all -N 2 -N 3 --no-udp")
    with mountd(state, sandbox) as proc:
        assert await served(server, share) == N.NFS4_OK
        rpc = tmp_path / "ctl" / "rpc"
        ip = (rpc / "auth.unix.ip" / "content").read_text()
        export = (rpc / "nfsd.export" / "content").read_text()
    log = proc.stdout.read() if proc.stdout else ""
    assert "nfsd 127.0.0.1 127.0.0.1\n" in ip
    assert f"{share}\t127.0.0.1(" in export and "fsid=7" in export
    assert f"granted access to {share} for 127.0.0.1" in log
    assert "Caught signal 15" in log


@live
async def test_a_hostname_export_is_served_only_through_mountd(tmp_path: Path) -> None:
    """The server's own table does not let 127.0.0.1 in; mountd's exports name the client by
    host name, which only mountd resolves: the client is served through mountd's answers."""
    share, state = tmp_path / "share", tmp_path / "state"
    (tmp_path / "sandbox").mkdir()
    with live_server(tmp_path, "192.0.2.1(rw,insecure)") as srv:
        denied = await served(srv, share)
        # exportfs -ra flushes the server's caches: the next request asks again, now mountd
        sandbox = in_sandbox(tmp_path / "sandbox",
                             f"{share} localhost(rw,insecure,no_subtree_check)\n",
                             "exportfs -ra && exec rpc.mountd -F -d all -N 2 -N 3 --no-udp")
        with mountd(state, sandbox) as proc:
            status = await served(srv, share)
            export = (tmp_path / "ctl" / "rpc" / "nfsd.export" / "content").read_text()
        log = proc.stdout.read() if proc.stdout else ""
        assert status == N.NFS4_OK, log
    assert N.nfsstat4_names[denied] == "NFS4ERR_ACCESS"
    assert f"granted access to {share} for localhost" in log, log
    assert f"{share}\tlocalhost(" in export, export


@live
def test_rpc_nfsd_sets_the_threads_of_a_running_server(server: ServerProcess) -> None:
    """rpc.nfsd reads portlist first: a server that listens is "up", so it passes no socket
    and writes only the thread count, which the server applies."""
    done = nfs_utils(None, "rpc.nfsd", "--debug", "--no-udp", "-H", "127.0.0.1",
                     "-p", str(free_port()), "-N", "3", "8", state_dir=server.state_dir)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "rpc.nfsd: knfsd is currently up\n"
    nfsd = server.state_dir.parent / "ctl" / "nfsd"
    assert (nfsd / "threads").read_text() == "8\n"
    assert (nfsd / "portlist").read_text() == f"tcp {server.port}\n"
    assert "nfsd/threads: 8 worker threads" in server.log_text()
