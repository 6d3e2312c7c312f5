"""The control tree mounted with FUSE by a real `pynfsd serve --nfsd-fs DIR`, used with plain
open/read/write/poll as rpc.mountd and exportfs use /proc/net/rpc and /proc/fs/nfsd.

* every file reads in the kernel's format; `<state-dir>/nfsd-fs` points at the mount;
* hostile writes (garbage replies, huge lines, writes to read-only files, unknown names) get
  the kernel's errno, and the server keeps serving;
* a channel reader in another process, blocked in poll(), wakes for the `auth.unix.ip`
  request of a new client and answers it: the client is served through that answer, and a
  negative answer refuses the next client after a flush;
* a reader that opens the channel and never answers: NFS4ERR_DELAY, then the fallback;
* SIGTERM unmounts; after a SIGKILL the stale mount is cleaned by the next start;
* `nfsd/` files: export_features, versions, threads, portlist with a socket passed by
  descriptor number from another process (rpc.nfsd's way), and a client served through it;
* `nfsd/clients/<n>`: made for a client with an open and a lock, seen by an inotify watcher
  (IN_CREATE), `info` (the address with the client's port) and `states` in knfsd's formats, `ctl` expire revokes the client and the
  directory goes (IN_DELETE);
* the unmodified rpc.nfsd starting a server begun with `--no-listen`, as it starts knfsd.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pynfsd.client.nfs4 import op
from pynfsd.gen import nfs4 as N
from tests.e2e.helpers import pynfsd
from tests.e2e.test_admin_cli import holder
from tests.hostile.test_upcall_daemon import getattr_from
from tests.serverproc import REPO, ServerProcess, assert_log_clean, probe

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"),
                                reason="no /dev/fuse: FUSE is not available on this machine")

WAIT = 30.0  # a bound on waiting, never asserted as a duration
CACHES = ("auth.unix.gid", "auth.unix.ip", "nfsd.export", "nfsd.fh")
HEADERS = {"auth.unix.ip": b"#class IP domain\n", "nfsd.export": b"#path domain(flags)\n"}

READER = """\
import os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
answer = sys.argv[2]
p = select.poll()
p.register(fd, select.POLLIN)
print("open", os.read(fd, 32768), flush=True)
while True:
    events = p.poll(30000)
    if not events:
        sys.exit("no request within 30 s")
    line = os.read(fd, 32768)
    print("request", line, flush=True)
    if not line:
        continue
    cls, ip = line.split()
    domain = b"" if answer == "-" else b" " + answer.encode()
    os.write(fd, b"%s %s %d%s\\n" % (cls, ip, time.time() + 600, domain))
    print("answered", flush=True)
"""


def unmount_if_mounted(mnt: Path) -> None:
    """A test never leaves a mount behind, even when it fails."""
    try:
        os.stat(mnt)
        mounted = os.path.ismount(mnt)
    except OSError:
        mounted = True
    if mounted:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "nfsd-fs"
    path.mkdir()
    yield path
    unmount_if_mounted(path)


@pytest.fixture
def make(tmp_path: Path, mnt: Path) -> Iterator[Any]:
    export = tmp_path / "export"
    export.mkdir()
    servers: list[ServerProcess] = []

    def factory(*extra: str) -> ServerProcess:
        srv = ServerProcess([f"{export} *(rw,no_root_squash,insecure)"], tmp_path / "state",
                            extra_args=["--nfsd-fs", str(mnt), *extra], log_level="INFO")
        servers.append(srv)
        return srv.start()

    yield factory
    for srv in servers:
        srv.stop()
        assert_log_clean(srv.log_text())


def read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, flags: int = os.O_WRONLY) -> int:
    """One write(2); 0 or the errno of the open or the write."""
    try:
        fd = os.open(path, flags)
    except OSError as e:
        return e.errno or -1
    try:
        os.write(fd, data)
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        os.close(fd)


def start_reader(tmp_path: Path, mnt: Path, answer: str) -> subprocess.Popen[str]:
    script = tmp_path / "reader.py"
    script.write_text(READER)
    proc = subprocess.Popen([sys.executable, str(script), str(mnt / "rpc/auth.unix.ip/channel"),
                             answer], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "open b''\n"  # nothing queued: EOF
    return proc


def stop(proc: subprocess.Popen[str]) -> str:
    proc.kill()
    out, _ = proc.communicate(timeout=WAIT)
    return out


def test_files_read_as_the_kernels_and_hostile_writes_change_nothing(make: Any, mnt: Path) -> None:
    srv = make()
    assert os.readlink(srv.state_dir / "nfsd-fs") == str(mnt)
    assert sorted(os.listdir(mnt / "rpc")) == list(CACHES)
    for name in CACHES:
        assert sorted(os.listdir(mnt / "rpc" / name)) == ["channel", "content", "flush"]
        content = read(mnt / "rpc" / name / "content")
        assert content.startswith(HEADERS.get(name, b"#"))
        assert read(mnt / "rpc" / name / "channel") == b""  # no request: EOF
        assert write(mnt / "rpc" / name / "flush", b"%d\n" % time.time()) == 0
        assert int(read(mnt / "rpc" / name / "flush")) > 0
    ip = mnt / "rpc/auth.unix.ip"
    srv.healthy()
    before = read(ip / "content")
    assert b"127.0.0.1" in before
    assert write(ip / "flush", b"now\n") == errno.EINVAL
    assert write(ip / "content", b"x\n") == errno.EACCES
    assert write(ip / "channel", b"this is not a reply \\x\n") == errno.EINVAL
    assert write(ip / "channel", b"nfsd 127.0.0.9 2000000000 *\n") == errno.EINVAL  # unasked
    assert write(ip / "channel", b"nfsd 127.0.0.1 2000000000 " + b"x" * (2 << 20) + b"\n") \
        == errno.EINVAL
    assert write(mnt / "rpc/auth.unix.ip/nope", b"x") == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        read(mnt / "rpc/nfsd.nope/content")
    with pytest.raises(PermissionError):
        os.mkdir(mnt / "rpc/mine")
    assert read(ip / "content") == before
    srv.healthy()
    srv.wait_log("malformed reply refused")


def test_a_channel_reader_answers_the_clients_address(make: Any, mnt: Path,
                                                      tmp_path: Path) -> None:
    srv = make()
    reader = start_reader(tmp_path, mnt, "*")
    try:
        assert asyncio.run(getattr_from(srv, "127.0.0.5")) == "NFS4_OK"
        assert b"nfsd 127.0.0.5 *\n" in read(mnt / "rpc/auth.unix.ip/content")
    finally:
        out = stop(reader)
    assert "request b'nfsd 127.0.0.5\\n'" in out and "answered" in out
    # a negative answer: the next client of that address is refused
    assert write(mnt / "rpc/auth.unix.ip/flush", b"%d\n" % time.time()) == 0
    reader = start_reader(tmp_path, mnt, "-")
    try:
        assert asyncio.run(getattr_from(srv, "127.0.0.5")) != "NFS4_OK"
        assert b"nfsd 127.0.0.5 -no-domain-\n" in read(mnt / "rpc/auth.unix.ip/content")
    finally:
        stop(reader)
    # with no reader the embedded resolver answers again
    assert write(mnt / "rpc/auth.unix.ip/flush", b"%d\n" % time.time()) == 0
    assert asyncio.run(getattr_from(srv, "127.0.0.5")) == "NFS4_OK"


def test_a_reader_that_never_answers_means_delay_then_the_fallback(make: Any,
                                                                   mnt: Path) -> None:
    srv = make("--cache-wait", "1", "--upcall-timeout", "3")
    fd = os.open(mnt / "rpc/auth.unix.ip/channel", os.O_RDWR)  # open, never read or answered
    try:
        seen = [asyncio.run(getattr_from(srv, "127.0.0.6"))]
        deadline = time.monotonic() + WAIT
        while seen[-1] != "NFS4_OK" and time.monotonic() < deadline:
            time.sleep(0.5)
            seen.append(asyncio.run(getattr_from(srv, "127.0.0.6")))
    finally:
        os.close(fd)
    assert seen[0] == "NFS4ERR_DELAY" and seen[-1] == "NFS4_OK", seen
    srv.wait_log("the channel way did not answer")


def test_sigterm_unmounts_and_a_stale_mount_is_cleaned_at_start(make: Any, mnt: Path) -> None:
    srv = make()
    assert os.path.ismount(mnt)
    srv.kill9()
    with pytest.raises(OSError) as e:
        os.stat(mnt)
    assert e.value.errno == errno.ENOTCONN  # what a crash leaves
    srv.start()
    srv.wait_log("a stale mount")
    assert sorted(os.listdir(mnt / "rpc")) == list(CACHES)
    srv.healthy()
    assert srv.stop() == 0
    assert not os.path.ismount(mnt) and os.listdir(mnt) == []
    assert not os.path.lexists(srv.state_dir / "nfsd-fs")


def test_an_unusable_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    done = pynfsd("serve", "--export", str(export), "--state-dir", str(tmp_path / "state"),
                  "--bind", "127.0.0.1", "--port", "0", "--nfsd-fs", str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"pynfsd: --nfsd-fs {tmp_path / 'missing'}: No such file or directory"]


PASS_SOCKET = """\
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
fd = os.open(sys.argv[1], os.O_WRONLY)
os.write(fd, b"%d\\n" % s.fileno())
print(s.getsockname()[1], flush=True)
f = os.open("/etc/hostname", os.O_RDONLY)
try:
    os.write(fd, b"%d\\n" % f)
except OSError as e:
    print(e.errno, flush=True)
"""


def test_nfsd_files_and_rpc_nfsd_passing_a_socket(make: Any, mnt: Path, tmp_path: Path) -> None:
    srv = make()
    nfsd = mnt / "nfsd"
    assert sorted(os.listdir(nfsd)) == ["clients", "export_features", "portlist", "threads",
                                        "versions"]
    assert read(nfsd / "export_features") == b"0x3feff 0xf\n"
    assert read(nfsd / "versions") == b"-2 -3 +4 +4.0 -4.1 -4.2\n"
    assert write(nfsd / "versions", b"-2 -3 +4.0 +4.1 +4.2\n") == 0  # as rpc.nfsd writes it
    assert read(nfsd / "versions") == b"-2 -3 +4 +4.0 -4.1 -4.2\n"
    assert write(nfsd / "versions", b"-4\n") == errno.EBUSY
    assert write(nfsd / "export_features", b"0x1 0x1\n") == errno.EACCES
    assert write(nfsd / "threads", b"4\n") == 0 and read(nfsd / "threads") == b"4\n"
    assert write(nfsd / "threads", b"100000\n") == errno.EINVAL
    assert read(nfsd / "threads") == b"4\n"
    assert read(nfsd / "portlist") == b"tcp %d\n" % srv.port
    # rpc.nfsd's way: a listening socket's descriptor number, taken from the writer
    script = tmp_path / "pass.py"
    script.write_text(PASS_SOCKET)
    done = subprocess.run([sys.executable, str(script), str(nfsd / "portlist")],
                          capture_output=True, text=True, timeout=WAIT)
    port_text, refused = done.stdout.split()
    assert int(refused) == errno.ENOTSOCK, done.stderr
    port = int(port_text)
    assert read(nfsd / "portlist") == b"tcp %d\ntcp %d\n" % (srv.port, port)
    asyncio.run(probe(port))  # a client served through the socket rpc.nfsd passed
    assert write(nfsd / "portlist", b"%d\n" % 999) == errno.EBADF
    assert write(nfsd / "portlist", b"tcp nonsense\n") == errno.EINVAL
    assert write(nfsd / "portlist", b"+tcp 127.0.0.1 %d\n" % port) == errno.EADDRINUSE
    srv.healthy()


class Inotify:
    """inotify(7) through ctypes: the events of one watched directory."""

    IN_CREATE, IN_DELETE = 0x100, 0x200

    def __init__(self, path: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        assert self.libc.inotify_add_watch(self.fd, os.fsencode(path),
                                           self.IN_CREATE | self.IN_DELETE) >= 0

    def wait(self) -> list[tuple[int, str]]:
        """The next events, (mask, name) each; AssertionError after WAIT seconds."""
        ready, _, _ = select.select([self.fd], [], [], WAIT)
        assert ready, "no inotify event"
        data, events = os.read(self.fd, 65536), []
        while data:
            _, mask, _, size = struct.unpack_from("iIII", data)
            name = data[16:16 + size].rstrip(b"\0").decode()
            events.append((mask & (self.IN_CREATE | self.IN_DELETE), name))
            data = data[16 + size:]
        return events

    def close(self) -> None:
        os.close(self.fd)


def test_client_directories_for_inotify_and_nfsdclnts(make: Any, mnt: Path,
                                                      tmp_path: Path) -> None:
    srv = make()
    clients = mnt / "nfsd/clients"
    assert os.listdir(clients) == []
    watch = Inotify(clients)
    try:
        asyncio.run(client_session(srv, mnt, clients, watch, tmp_path / "export"))
    finally:
        watch.close()
    srv.healthy()


async def client_session(srv: ServerProcess, mnt: Path, clients: Path, watch: Inotify,
                         export: Path) -> None:
    a = await holder(srv, b"client-A", b"a.txt")
    try:
        events = await asyncio.to_thread(watch.wait)
        assert [m for m, _ in events] == [Inotify.IN_CREATE], events
        name = events[0][1]
        assert os.listdir(clients) == [name]
        assert sorted(os.listdir(clients / name)) == ["ctl", "info", "states"]
        info = dict(line.split(": ", 1) for line in read(clients / name / "info").decode()
                    .splitlines())
        assert info["clientid"] == f"0x{a.clientid:x}" and info["name"] == '"client-A"'
        assert info["status"] == "confirmed" and info["minor version"] == "0"
        transport = a.c.rpc._transport  # the connection that sent SETCLIENTID
        assert transport is not None
        host, port = transport.get_extra_info("sockname")[:2]
        assert info["address"] == f'"{host}:{port}"'  # knfsd's "127.0.0.1:851"
        st = os.stat(export / "a.txt")
        sb = f'"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"'
        states = read(clients / name / "states").decode().splitlines()
        assert len(states) == 2, states
        assert "type: open, access: rw, deny: --, superblock: " + sb in states[0]
        assert 'filename: "export/a.txt"' in states[0]
        assert "type: lock, superblock: " + sb in states[1]
        assert write(clients / name / "info", b"x") == errno.EACCES
        assert write(clients / name / "ctl", b"forget\n") == errno.EINVAL
        assert write(clients / name / "ctl", b"expire\n") == 0
        events = await asyncio.to_thread(watch.wait)
        assert events == [(Inotify.IN_DELETE, name)], events
        assert os.listdir(clients) == []
        unlock = op.locku(N.WRITE_LT, 2, a.lock_sid, 0, 4)
        res = await a.c.compound([op.putfh(a.fh), unlock])
        assert N.nfsstat4_names[res.status] == "NFS4ERR_ADMIN_REVOKED"
    finally:
        await a.c.close()


def test_without_fuse_serve_nfsd_fs_is_one_line_and_exit_2(tmp_path: Path, mnt: Path) -> None:
    """In a mount namespace whose /dev has no fuse device (an empty tmpfs over it)."""
    export = tmp_path / "export"
    export.mkdir()
    serve = [sys.executable, "-m", "pynfsd", "serve", "--export", str(export), "--state-dir",
             str(tmp_path / "state"), "--bind", "127.0.0.1", "--port", "0", "--nfsd-fs", str(mnt)]
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           'mount -t tmpfs none /dev && exec "$@"', "sh", *serve],
                          cwd=REPO, capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"pynfsd: --nfsd-fs {mnt}: cannot open /dev/fuse: No such file or directory "
        "(FUSE needs the fuse module and CAP_SYS_ADMIN)"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("rpc.nfsd") is None,
                    reason="rpc.nfsd (Debian nfs-kernel-server) is not installed")
def test_real_rpc_nfsd_starts_a_server_begun_with_no_listen(tmp_path: Path, mnt: Path) -> None:
    """As knfsd starts: `serve --no-listen` has an empty portlist, so the unmodified rpc.nfsd
    (in a mount namespace where /proc/fs/nfsd is the tree) sets versions, passes its own
    listening socket by descriptor number and sets the threads; a client is served on it."""
    export = tmp_path / "export"
    export.mkdir()
    log_path = tmp_path / "serve.log"
    serve = [sys.executable, "-m", "pynfsd", "serve", "--export", f"{export} *(rw,insecure)",
             "--state-dir", str(tmp_path / "state"), "--no-listen", "--nfsd-fs", str(mnt)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(serve, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT
        while b"no listening socket yet" not in log_path.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        assert read(mnt / "nfsd/portlist") == b""
        port = free_port()
        done = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" /proc/fs/nfsd && exec rpc.nfsd -N 3 --no-udp -H 127.0.0.1 '
             '-p "$2" 6', "sh", str(mnt / "nfsd"), str(port)],
            capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 0, done.stderr
        assert read(mnt / "nfsd/portlist") == b"tcp %d\n" % port
        assert read(mnt / "nfsd/threads") == b"6\n"
        assert read(mnt / "nfsd/versions") == b"-2 -3 +4 +4.0 -4.1 -4.2\n"
        asyncio.run(probe(port))
    finally:
        proc.terminate()
        proc.wait(WAIT)
    text = log_path.read_text()
    assert "(portlist fd" in text and "version 4.1 is not served" in text
    assert_log_clean(text)
