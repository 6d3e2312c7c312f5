"""`pynfsd nfs-utils`: finding the control tree, the privilege check, and the private mount
namespace itself, run for real on a control tree of plain files (tests/support_nfsutils.py):
what a command and its children see at /proc/fs/nfsd and /proc/net, what the host keeps seeing,
exit statuses and signals."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from pynfsd import nfsutils
from pynfsd.cli import build_parser
from tests.serverproc import REPO
from tests.support_nfsutils import nfs_utils, nfs_utils_argv, plain_tree

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need CAP_SYS_ADMIN")
AUTH_CONTENT = "#class IP domain\nnfsd 127.0.0.1 *\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = plain_tree(tmp_path / "tree")
    (t / "rpc" / "auth.unix.ip" / "content").write_text(AUTH_CONTENT)
    return t


def test_tree_given_or_found_through_the_state_dir_symlink(tree: Path, tmp_path: Path) -> None:
    assert nfsutils.find_tree("/nonexistent", str(tree)) == tree.resolve()
    state = tmp_path / "state"
    state.mkdir()
    (state / "nfsd-fs").symlink_to(tree)
    assert nfsutils.find_tree(str(state), None) == tree.resolve()


@pytest.mark.parametrize("setup", ["no-symlink", "dangling", "not-a-tree"])
def test_no_tree_is_one_clear_error(tmp_path: Path, setup: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if setup == "dangling":
        (state / "nfsd-fs").symlink_to(tmp_path / "unmounted")
    elif setup == "not-a-tree":
        (tmp_path / "empty").mkdir()
        (state / "nfsd-fs").symlink_to(tmp_path / "empty")
    with pytest.raises(nfsutils.NfsUtilsError, match="^no control tree: start pynfsd serve "
                       r"--nfsd-fs DIR \(.*\)$"):
        nfsutils.find_tree(str(state), None)


def test_capability_from_the_status_text() -> None:
    assert nfsutils.has_capability("Name:\tx\nCapEff:\t000001ffffffffff\n", 21)
    assert not nfsutils.has_capability("CapEff:\t000001ffffdfffff\n", 21)
    assert not nfsutils.has_capability("Name:\tx\n", 21)


def test_command_line() -> None:
    args = build_parser().parse_args(["nfs-utils", "--state-dir", "S", "--", "exportfs", "-ra"])
    assert (args.command, args.state_dir, args.nfsd_fs, args.cmd) == (
        "nfs-utils", "S", None, ["--", "exportfs", "-ra"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nfs-utils", "--state-dir", "S", "--nfsd-fs", "T", "--", "x"])


def test_missing_tree_exits_2_with_the_message(tmp_path: Path) -> None:
    done = nfs_utils(tmp_path / "none", "true")
    assert done.returncode == 2
    assert done.stderr == ("pynfsd nfs-utils: no control tree: start pynfsd serve --nfsd-fs DIR "
                           f"({tmp_path / 'none'} has no nfsd/ and rpc/ directories)\n")


@root_only
def test_the_command_and_its_children_see_the_tree(tree: Path) -> None:
    script = ("cat /proc/fs/nfsd/versions /proc/net/rpc/auth.unix.ip/content; "
              "sh -c 'sh -c \"ls /proc/net/rpc\"'; head -1 /proc/net/dev; "
              "grep -c local_address /proc/net/tcp; "
              "echo 'nfsd 127.0.0.1 2147483647 *' > /proc/net/rpc/auth.unix.ip/channel")
    done = nfs_utils(tree, "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    versions = (tree / "nfsd" / "versions").read_text().strip()
    assert lines[:3] == [versions, *AUTH_CONTENT.split("\n")[:2]]
    assert lines[3:7] == ["auth.unix.gid", "auth.unix.ip", "nfsd.export", "nfsd.fh"]
    assert lines[7].startswith("Inter-|") and lines[8] == "1"
    channel = tree / "rpc" / "auth.unix.ip" / "channel"
    assert channel.read_text() == "nfsd 127.0.0.1 2147483647 *\n"


@root_only
def test_the_host_view_stays_while_the_command_runs(tree: Path) -> None:
    nfsd_before = sorted(os.listdir("/proc/fs/nfsd"))
    proc = subprocess.Popen(nfs_utils_argv(tree, "sh", "-c", "ls /proc/net/rpc; read x"), cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "auth.unix.gid\n"
        assert not os.path.exists("/proc/net/rpc")
        assert os.readlink("/proc/net") == "self/net"
        assert sorted(os.listdir("/proc/fs/nfsd")) == nfsd_before
        assert "versions" not in nfsd_before
        assert os.listdir(nfsutils.NET_DIR) == []  # the tmpfs is the namespace's only
    finally:
        proc.communicate("\n", timeout=30)
    assert proc.returncode == 0


@root_only
@pytest.mark.parametrize(("cmd", "status", "stderr"), [
    (["sh", "-c", "exit 7"], 7, ""),
    (["sh", "-c", "kill -KILL $$"], 128 + 9, ""),
    (["no-such-command-here"], 127, "pynfsd nfs-utils: no-such-command-here: No such file or "
     "directory\n"),
    ([], 2, "pynfsd nfs-utils: no command given (pynfsd nfs-utils -- CMD [ARGS...])\n"),
])
def test_exit_status_is_the_commands(tree: Path, cmd: list[str], status: int, stderr: str) -> None:
    done = nfs_utils(tree, *cmd)
    assert (done.returncode, done.stderr) == (status, stderr)


@root_only
def test_without_cap_sys_admin_nothing_runs(tree: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = nfs_utils(tree, "touch", str(marker), prefix=("setpriv", "--bounding-set", "-sys_admin"))
    assert done.returncode == 2
    assert done.stderr == ("pynfsd nfs-utils: needs CAP_SYS_ADMIN (run as root) to make a private "
                           "mount namespace and mount the control tree on /proc/fs/nfsd and "
                           "/proc/net/rpc\n")
    assert not marker.exists()


@root_only
def test_signals_are_passed_to_the_command(tree: Path) -> None:
    # "ready" only once the background child is sleep itself: a TERM sent to the shell's
    # forked child before its exec is caught by the shell's inherited trap and lost.
    script = ("trap 'kill $p; echo got TERM; exit 42' TERM; sleep 60 & p=$!; "
              "until [ \"$(cat /proc/$p/comm 2>/dev/null)\" = sleep ]; do :; done; "
              "echo ready; wait")
    proc = subprocess.Popen(nfs_utils_argv(tree, "sh", "-c", script), cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (42, "got TERM\n")


@root_only
def test_the_command_is_ended_when_pynfsd_is_killed(tree: Path, tmp_path: Path) -> None:
    ended = tmp_path / "ended"
    script = f"trap 'kill $p; echo TERM > {ended}; exit 0' TERM; sleep 60 & p=$!; echo ready; wait"
    proc = subprocess.Popen(nfs_utils_argv(tree, "sh", "-c", script), cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.kill()
        proc.wait(timeout=30)
        assert proc.stdout.read() == ""  # EOF: the command, the last writer, has exited
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    assert ended.read_text() == "TERM\n"


@root_only
def test_every_proc_net_entry_is_still_there(tree: Path) -> None:
    done = nfs_utils(tree, "ls", "/proc/net/")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted([*os.listdir("/proc/self/net"), "rpc"])
