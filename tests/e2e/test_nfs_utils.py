"""Debian's unmodified nfs-utils tools run by `pynfsd nfs-utils` against a control tree of plain
files (tests/support_nfsutils.py): what exportfs, rpc.nfsd and nfsdclnts read and write at
/proc/fs/nfsd and /proc/net/rpc, byte for byte, with the host's /etc/exports, /var/lib/nfs and
/proc untouched.  scripts/nfs-utils-deps.sh installs the tools (nfs-kernel-server)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.support_nfsutils import CACHES, in_sandbox, nfs_utils, plain_tree

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
