"""`pynfsd nfs-utils -- CMD`: run the unmodified nfs-utils tools against pynfsd's control tree.

Theory of operation
-------------------
exportfs, rpc.mountd, rpc.nfsd and nfsdclnts talk to a kernel server only through files at
hard-coded paths: `/proc/fs/nfsd/*` and `/proc/net/rpc/<cache>/{channel,content,flush}`.
`pynfsd serve --nfsd-fs DIR` mounts a tree with that layout (`DIR/nfsd`, `DIR/rpc`) and keeps
the symlink `<state-dir>/nfsd-fs` -> DIR while it is mounted. This module shows that tree at the
kernel's paths to one command and everything it starts, and to nothing else:

1. The parent blocks the signals it forwards (and SIGCHLD), then forks.
2. The child unshares its mount namespace (CLONE_NEWNS) and makes every mount in it private,
   so nothing it mounts propagates back to the host;
3. binds `TREE/nfsd` over `/proc/fs/nfsd` (an ordinary directory of procfs);
4. covers `/proc/net`, which is a symlink to `self/net` (a per-process directory: a mount on
   `/proc/<pid>/net` would cover one process only): on a private tmpfs at `NET_DIR` it makes
   `net/` holding a symlink `/proc/self/net/<name>` for every entry of `/proc/self/net` (a
   snapshot, each still resolved per process, so `/proc/net/dev` and `/proc/net/tcp` keep
   working) plus `net/rpc`, a directory with `TREE/rpc` bound on it, and a symlink to `net/`.
   That symlink is cloned with open_tree(OPEN_TREE_CLONE | AT_SYMLINK_NOFOLLOW) and mounted
   over the `/proc/net` symlink itself with move_mount(MOVE_MOUNT_F_EMPTY_PATH) (without
   MOVE_MOUNT_T_SYMLINKS the target is not followed). The tmpfs is then made read-only;
5. restores the signal mask and default dispositions, and execs CMD (looked up in PATH).
   Setup and exec failures reach the parent through a close-on-exec pipe: no bytes means the
   exec happened. CMD gets SIGTERM if the parent dies (PR_SET_PDEATHSIG), so a daemon run
   in the foreground does not outlive a `pynfsd nfs-utils` killed with SIGKILL.
6. The parent waits with sigwaitinfo: a signal sent to it (kill, a service manager) is passed
   to CMD; one the terminal sent to the whole foreground process group (si_code SI_KERNEL)
   already reached CMD and is not sent twice. It exits with CMD's status, 128+N when CMD was
   killed by signal N, as a shell does.

The namespace lives as long as a process in it: a CMD that daemonizes keeps its view. The
host's `/proc/fs/nfsd` and `/proc/net` are untouched; the only host-visible trace is the empty
directory `NET_DIR` that every run mounts its own tmpfs on.

Privileges: CAP_SYS_ADMIN (unshare, mount, open_tree, move_mount), in practice root. Without
it nothing is started and the command exits 2 saying so; a container needs `--cap-add
SYS_ADMIN` (and a seccomp profile that allows open_tree and move_mount). pynfsd serve itself
needs none of this.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429  # the same on x86_64 and aarch64
CAP_SYS_ADMIN = 21
PR_SET_PDEATHSIG = 1
SI_KERNEL = 0x80

PROC_NFSD = "/proc/fs/nfsd"
PROC_NET = "/proc/net"
NET_DIR = "/run/pynfsd/nfs-utils"
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH)
EXIT_SETUP = 2
NO_TREE = "no control tree: start pynfsd serve --nfsd-fs DIR"

_libc = ctypes.CDLL(None, use_errno=True)


class NfsUtilsError(Exception):
    """Why CMD was not started: one line for stderr; `pynfsd nfs-utils` exits 2."""


class _ExecFailed(NfsUtilsError):
    """CMD could not be executed: 127 (not found) or 126 (not executable), as a shell exits."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def find_tree(state_dir: str, nfsd_fs: str | None) -> Path:
    """The control tree: --nfsd-fs TREE, else where `<state-dir>/nfsd-fs` points."""
    if nfsd_fs is not None:
        tree = Path(nfsd_fs)
    else:
        link = Path(state_dir) / "nfsd-fs"
        if not link.is_symlink() and not link.exists():
            raise NfsUtilsError(f"{NO_TREE} (no {link})")
        tree = link
    if not (tree / "nfsd").is_dir() or not (tree / "rpc").is_dir():
        raise NfsUtilsError(f"{NO_TREE} ({tree} has no nfsd/ and rpc/ directories)")
    return tree.resolve()


def has_capability(status: str, cap: int) -> bool:
    """Whether the CapEff line of a /proc/PID/status text has capability `cap`."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def check_privileges() -> None:
    with open("/proc/self/status") as f:
        if not has_capability(f.read(), CAP_SYS_ADMIN):
            raise NfsUtilsError("needs CAP_SYS_ADMIN (run as root) to make a private mount "
                                f"namespace and mount the control tree on {PROC_NFSD} and "
                                f"{PROC_NET}/rpc")
    if not os.path.isdir(PROC_NFSD):
        raise NfsUtilsError(f"{PROC_NFSD} does not exist, so there is nothing to mount the "
                            "tree on")


def _check(ret: int, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def _enc(s: str | None) -> bytes | None:
    return s.encode() if s is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    _check(_libc.mount(_enc(source), target.encode(), _enc(fstype), ctypes.c_ulong(flags),
                       _enc(data)), f"mount {source or ''} on {target}")


def mount_symlink_over(symlink: str, target: str) -> None:
    """Mount the symlink `symlink` over the path `target` itself (which may be a symlink)."""
    fd = _check(_libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD),
                              symlink.encode(), ctypes.c_uint(
                                  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW)),
                f"open_tree {symlink}")
    try:
        _check(_libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(fd), b"",
                             ctypes.c_int(AT_FDCWD), target.encode(),
                             ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount on {target}")
    finally:
        os.close(fd)


def cover_proc_net(rpc: Path, net_dir: str = NET_DIR) -> None:
    """Make `/proc/net/rpc` show `rpc` and every other `/proc/net` entry still work."""
    os.makedirs(net_dir, mode=0o755, exist_ok=True)
    _mount("tmpfs", net_dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m")
    net = os.path.join(net_dir, "net")
    os.mkdir(net)
    for name in sorted(os.listdir("/proc/self/net")):
        if name != "rpc":
            os.symlink(f"/proc/self/net/{name}", os.path.join(net, name))
    os.mkdir(os.path.join(net, "rpc"))
    _mount(str(rpc), os.path.join(net, "rpc"), None, MS_BIND | MS_REC)
    link = os.path.join(net_dir, "proc-net")
    os.symlink(net, link)
    mount_symlink_over(link, PROC_NET)
    _mount(None, net_dir, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
           | MS_NOEXEC)


def enter_namespace(tree: Path, net_dir: str = NET_DIR) -> None:
    """In this (single-threaded) process: a private mount namespace showing `tree`."""
    _check(_libc.unshare(ctypes.c_int(CLONE_NEWNS)), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount(str(tree / "nfsd"), PROC_NFSD, None, MS_BIND | MS_REC)
    cover_proc_net(tree / "rpc", net_dir)


def _child(tree: Path, argv: Sequence[str], report: int, mask: set[int | signal.Signals],
           net_dir: str, parent: int) -> None:
    """The forked child: namespace, then exec; never returns."""
    code = EXIT_SETUP
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(128 + signal.SIGTERM)
        enter_namespace(tree, net_dir)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        code = 127
        os.execvp(argv[0], list(argv))
    except OSError as e:
        if code == 127:
            code = 127 if e.errno == errno.ENOENT else 126
            message = f"{argv[0]}: {e.strerror}"
        else:
            message = str(e.strerror or e)
        os.write(report, message.encode())
    except BaseException as e:  # noqa: BLE001 - a forked child must never return
        os.write(report, f"{type(e).__name__}: {e}".encode())
    finally:
        os._exit(code)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait(pid: int, waited: set[signal.Signals]) -> int:
    """Wait for the child, passing signals on; its exit status as a shell shows it."""
    while True:
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            if info.si_code != SI_KERNEL:
                os.kill(pid, info.si_signo)
            continue
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def run(tree: Path, argv: Sequence[str], net_dir: str = NET_DIR) -> int:
    """Run `argv` in a private mount namespace showing `tree`; its exit status."""
    waited = {*FORWARDED, signal.SIGCHLD}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            _child(tree, argv, report_w, mask, net_dir, parent)
        os.close(report_w)
        try:
            failure = _read_all(report_r).decode(errors="replace")
        finally:
            os.close(report_r)
        code = _wait(pid, waited)
        if failure:
            raise NfsUtilsError(failure) if code == EXIT_SETUP else _ExecFailed(failure, code)
        return code
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


NFS_UTILS_TEXT = f"""
Run CMD (exportfs, rpc.mountd, rpc.nfsd, nfsdclnts, a shell...) in a private mount namespace
where {PROC_NFSD} and {PROC_NET}/rpc are the control tree of the server running with
--state-dir (mounted by pynfsd serve --nfsd-fs DIR), or the tree given by --nfsd-fs; the
rest of the system, and the host's view of /proc, stay as they are.  Needs CAP_SYS_ADMIN
(root).  Exits with CMD's status (128+N when a signal N ended it), 2 when the tree or the
privilege is missing, 126/127 when CMD cannot be run.  Signals sent to pynfsd are passed to
CMD.  Example: pynfsd nfs-utils -- exportfs -ra
"""


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                default_state_dir: str) -> None:
    p = sub.add_parser("nfs-utils", help="run an nfs-utils tool against the server (root only)",
                       description=" ".join(NFS_UTILS_TEXT.split()),
                       usage="%(prog)s [--state-dir DIR | --nfsd-fs TREE] -- CMD [ARGS...]")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state-dir", default=default_state_dir, metavar="DIR",
                       help=f"the running server's --state-dir (default {default_state_dir}); "
                       "its nfsd-fs symlink names the tree")
    where.add_argument("--nfsd-fs", metavar="TREE",
                       help="the control tree itself (a directory with nfsd/ and rpc/)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")


def nfs_utils_main(args: argparse.Namespace) -> int:
    argv = list(args.cmd)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("pynfsd nfs-utils: no command given (pynfsd nfs-utils -- CMD [ARGS...])",
              file=sys.stderr)
        return EXIT_SETUP
    try:
        tree = find_tree(args.state_dir, args.nfsd_fs)
        check_privileges()
        return run(tree, argv)
    except _ExecFailed as e:
        print(f"pynfsd nfs-utils: {e}", file=sys.stderr)
        return e.code
    except NfsUtilsError as e:
        print(f"pynfsd nfs-utils: {e}", file=sys.stderr)
        return EXIT_SETUP
