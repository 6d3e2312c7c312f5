"""pynfsd with an exports file, run where /etc says what the test wants (the host's stays as is).

Exports by host name, wildcard and ``@netgroup`` and ``manage-gids`` are decided by the
server's name service: ``/etc/hosts``, ``/etc/netgroup``, ``/etc/passwd`` and ``/etc/group``
as ``/etc/nsswitch.conf`` selects them. ``EtcServer`` runs ``pynfsd serve --exports FILE`` in a
private mount namespace (``unshare --mount --propagation private``, so nothing leaks to the
host) in which a read-only overlay puts the test's files over the host's ``/etc``: every other
file is the host's, and a file the host lacks (``/etc/netgroup``) can be added, which a bind
mount cannot do; a host's nscd is hidden (an empty ``/run/nscd``). Only the server process and its threads see the test's ``/etc``; the admin
commands (``admin()``: ``pynfsd exportfs``, ``pynfsd cache``) run on the host and reach the
server through its control socket in the state directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.vm.network import Network
from tests.vm.servers import REPO_ROOT, PynfsdServer

NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetgroup: files\n"

# $0 is the directory with the test's files; the overlay's first lower layer wins. A host's
# nscd would answer from its own caches: its socket directory is hidden too.
OVERLAY = ('mount -t overlay pynfsd-test-etc -o "lowerdir=$0:/etc" /etc && '
           '{ [ ! -d /run/nscd ] || mount -t tmpfs pynfsd-test-nscd /run/nscd; } && exec "$@"')


def with_private_etc(etc_dir: Path, argv: list[str]) -> list[str]:
    """``argv`` run in a new mount namespace whose /etc shows ``etc_dir``'s files over the
    host's (the process keeps ``argv``'s PID: unshare and sh exec it)."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", OVERLAY,
            str(etc_dir), *argv]


def host_etc_with(name: str, extra: str) -> str:
    """The host's ``/etc/<name>`` followed by ``extra`` (e.g. passwd with one more user)."""
    text = Path("/etc", name).read_text()
    return text + ("" if text.endswith("\n") or not text else "\n") + extra


class EtcServer(PynfsdServer):
    """``pynfsd serve --exports FILE`` with the test's ``/etc`` files (name -> text).

    ``etc`` always gets an ``nsswitch.conf`` that reads only files (a given one wins).
    """

    def __init__(self, workdir: Path, network: Network, etc: Mapping[str, str],
                 exports: str, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, network)
        self.etc_dir = workdir / "etc"
        self.exports_file = workdir / "exports"
        self.extra_args = extra_args
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        for name, text in {"nsswitch.conf": NSSWITCH, **etc}.items():
            (self.etc_dir / name).write_text(text)
        self.exports_file.write_text(exports)

    def command(self) -> list[str]:
        argv = super().command()
        at = argv.index("--export")
        argv[at:at + 2] = ["--exports", str(self.exports_file)]
        return with_private_etc(self.etc_dir, [*argv, *self.extra_args])

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``pynfsd ARGS --state-dir D`` against this server, from the host; logged to its
        log file with the output."""
        argv = [sys.executable, "-m", "pynfsd", *args, "--state-dir", str(self.state_dir)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              env=self.environment(), cwd=REPO_ROOT)
        with open(self.log_path, "a") as log:
            log.write(f"==== pynfsd {' '.join(args)}: exit {done.returncode}\n{done.stdout}"
                      f"{done.stderr}")
        return done

    def hangup(self) -> None:
        """SIGHUP to the server process (by its PID)."""
        if self.pid is None:
            raise RuntimeError("the server is not running")
        os.kill(self.pid, signal.SIGHUP)
