"""The control tree mounted with FUSE by a real `pynfsd serve --nfsd-fs DIR`, used with plain
open/read/write/poll as rpc.mountd and exportfs use /proc/net/rpc and /proc/fs/nfsd.

* every file reads in the kernel's format; `<state-dir>/nfsd-fs` points at the mount;
* hostile writes (garbage replies, huge lines, writes to read-only files, unknown names) get
  the kernel's errno, and the server keeps serving;
* a channel reader in another process, blocked in poll(), wakes for the `auth.unix.ip`
  request of a new client and answers it: the client is served through that answer, and a
  negative answer refuses the next client after a flush;
* a reader that opens the channel and never answers: NFS4ERR_DELAY, then the fallback;
* SIGTERM unmounts; after a SIGKILL the stale mount is cleaned by the next start.
"""

from __future__ import annotations

import asyncio
import errno
import os
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
from tests.serverproc import ServerProcess, assert_log_clean, probe

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


async def getattr_status(srv: ServerProcess, addr: str = "127.0.0.1") -> str:
    c = await srv.connect(local_addr=addr)
    try:
        res = await asyncio.wait_for(c.compound([op.putrootfh(), op.getattr(N.FATTR4_TYPE)]), WAIT)
    finally:
        await c.close()
    return N.nfsstat4_names.get(res.status, str(res.status))


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
        assert asyncio.run(getattr_status(srv, "127.0.0.5")) == "NFS4_OK"
        assert b"nfsd 127.0.0.5 *\n" in read(mnt / "rpc/auth.unix.ip/content")
    finally:
        out = stop(reader)
    assert "request b'nfsd 127.0.0.5\\n'" in out and "answered" in out
    # a negative answer: the next client of that address is refused
    assert write(mnt / "rpc/auth.unix.ip/flush", b"%d\n" % time.time()) == 0
    reader = start_reader(tmp_path, mnt, "-")
    try:
        assert asyncio.run(getattr_status(srv, "127.0.0.5")) != "NFS4_OK"
        assert b"nfsd 127.0.0.5 -no-domain-\n" in read(mnt / "rpc/auth.unix.ip/content")
    finally:
        stop(reader)
    # with no reader the embedded resolver answers again
    assert write(mnt / "rpc/auth.unix.ip/flush", b"%d\n" % time.time()) == 0
    assert asyncio.run(getattr_status(srv, "127.0.0.5")) == "NFS4_OK"


def test_a_reader_that_never_answers_means_delay_then_the_fallback(make: Any,
                                                                   mnt: Path) -> None:
    srv = make("--cache-wait", "1", "--upcall-timeout", "3")
    fd = os.open(mnt / "rpc/auth.unix.ip/channel", os.O_RDWR)  # open, never read or answered
    try:
        seen = [asyncio.run(getattr_status(srv, "127.0.0.6"))]
        deadline = time.monotonic() + WAIT
        while seen[-1] != "NFS4_OK" and time.monotonic() < deadline:
            time.sleep(0.5)
            seen.append(asyncio.run(getattr_status(srv, "127.0.0.6")))
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
