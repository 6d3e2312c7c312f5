"""Fast tests of the VM harness pieces that do not boot a VM (cpio, helpers, parsing, netns)."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.vm.cpio import CpioWriter
from tests.vm.harness import WorkloadRun, parse_transcript
from tests.vm.initramfs import compile_helpers
from tests.vm.kernel import extract_vmlinux
from tests.vm.network import NetnsNet, UserNet
from tests.vm.privateetc import NSSWITCH, with_private_etc
from tests.vm.qemu import Transcript
from tests.vm.servers import GaneshaServer


def test_cpio_archive_extracts_with_gnu_cpio(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("cpio not installed (scripts/vm-deps.sh)")
    writer = CpioWriter()
    writer.add_bytes("etc/deep/file.txt", b"hello\n", 0o640)
    writer.add_bytes("odd", b"abc", 0o755)          # length not a multiple of 4
    writer.symlink("bin/sh", "busybox")
    writer.mkdir("empty")
    (tmp_path / "a.cpio").write_bytes(gzip.decompress(writer.gzipped()))
    out = tmp_path / "x"
    out.mkdir()
    with open(tmp_path / "a.cpio", "rb") as fh:
        subprocess.run(["cpio", "-id", "--quiet"], stdin=fh, cwd=out, check=True)
    assert (out / "etc/deep/file.txt").read_bytes() == b"hello\n"
    assert stat.S_IMODE((out / "etc/deep/file.txt").stat().st_mode) == 0o640
    assert (out / "odd").read_bytes() == b"abc"
    assert os.readlink(out / "bin/sh") == "busybox"
    assert (out / "empty").is_dir()


def test_extract_vmlinux_finds_the_elf_payload(tmp_path: Path) -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    decoy = lzma.compress(b"not an elf", format=lzma.FORMAT_XZ)
    (tmp_path / "vmlinuz").write_bytes(b"MZ setup" + decoy + b"\0" * 16 +
                                       lzma.compress(elf, format=lzma.FORMAT_XZ) + b"tail")
    assert extract_vmlinux(tmp_path / "vmlinuz", tmp_path / "vmlinux")
    assert (tmp_path / "vmlinux").read_bytes() == elf
    (tmp_path / "plain").write_bytes(b"no payload here")
    assert not extract_vmlinux(tmp_path / "plain", tmp_path / "none")


@pytest.fixture(scope="module")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The guest's static helpers, compiled for the host: name -> binary."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (scripts/vm-deps.sh)")
    try:
        binaries = compile_helpers(tmp_path_factory.mktemp("helpers"))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"static linking unavailable: {exc.stderr}")
    return {b.name: b for b in binaries}


@pytest.fixture(scope="module")
def locktest(helpers: dict[str, Path]) -> Path:
    return helpers["locktest"]


def _lock(binary: Path, *args: str) -> int:
    return subprocess.run([str(binary), *args], timeout=30).returncode


@pytest.mark.parametrize("kind", ["flock", "fcntl"])
def test_locktest_conflict_and_blocking_wait(locktest: Path, tmp_path: Path, kind: str) -> None:
    f, ready, released = (str(tmp_path / n) for n in ("f", "ready", "released"))
    assert _lock(locktest, kind, "ex", f, "try") == 0
    holder = subprocess.Popen([str(locktest), kind, "ex", f, "hold", "1", ready, released])
    while not os.path.exists(ready):
        time.sleep(0.01)
    assert _lock(locktest, kind, "ex", f, "try") == 1
    assert _lock(locktest, kind, "sh", f, "try") == 1
    assert _lock(locktest, kind, "ex", f, "wait", released) == 0
    assert holder.wait(30) == 0


def test_locktest_fcntl_ranges_and_getlk(locktest: Path, tmp_path: Path) -> None:
    f, ready, released = (str(tmp_path / n) for n in ("f", "ready", "released"))
    holder = subprocess.Popen([str(locktest), "fcntl", "ex", f, "hold", "1", ready, released,
                               "0", "100"])
    while not os.path.exists(ready):
        time.sleep(0.01)
    assert _lock(locktest, "fcntl", "ex", f, "try", "100", "100") == 0
    assert _lock(locktest, "fcntl", "ex", f, "try", "50", "100") == 1
    out = subprocess.run([str(locktest), "fcntl", "ex", f, "getlk", "50", "100"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "conflict ex 0 100\n"
    assert holder.wait(30) == 0


def test_parse_transcript_results_and_values(tmp_path: Path) -> None:
    lines = ["noise", "@@RESULT mount PASS", "@@RESULT flock FAIL rc=1: why|",
             "@@VALUE big_md5 abc123", "  [x] @@RESULT nested PASS"]
    run = WorkloadRun("s", "n", tmp_path, tmp_path / "c", tmp_path / "l", Transcript(lines))
    parse_transcript(run)
    assert run.results == {"mount": (True, ""), "flock": (False, "rc=1: why|")}
    assert run.values == {"big_md5": "abc123"}


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def test_netns_is_created_and_deleted() -> None:
    _need_root()
    with NetnsNet() as net:
        out = subprocess.run(net.wrap(["ip", "-brief", "addr"]), capture_output=True,
                             text=True, check=True).stdout
        assert "tap0" in out and "192.168.77.1/24" in out
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert net.ns not in names


def test_ganesha_server_start_restart_stop(tmp_path: Path) -> None:
    _need_root()
    if shutil.which("ganesha.nfsd") is None:
        pytest.skip("nfs-ganesha not installed (scripts/vm-deps.sh)")
    server = GaneshaServer(tmp_path, UserNet())
    server.start()
    try:
        first = server.pid
        assert first is not None
        server.restart()
        assert server.pid not in (None, first)
    finally:
        server.stop()
    assert server.pid is None


def test_asuser_runs_with_no_supplementary_groups(helpers: dict[str, Path]) -> None:
    _need_root()
    argv = [str(helpers["asuser"]), "5000", "5001", "sh", "-c",
            "grep -E '^(Uid|Gid|Groups):' /proc/self/status"]
    status = dict(line.split(":", 1) for line in subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=30).stdout.splitlines())
    assert status["Uid"].split() == ["5000"] * 4 and status["Gid"].split() == ["5001"] * 4
    assert status["Groups"].split() == []
    usage = subprocess.run([str(helpers["asuser"]), "x", "1", "true"], capture_output=True)
    assert usage.returncode == 2


def test_private_etc_names_the_loopback_for_its_process_only(tmp_path: Path) -> None:
    """The test's hosts and netgroup files are what a process under with_private_etc sees;
    the host's /etc is the same before and after."""
    _need_root()
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "hosts").write_text("127.0.0.1\tvmclient.pynfsd.test\n")
    (etc / "netgroup").write_text("testers (vmclient.pynfsd.test,,)\n")
    (etc / "nsswitch.conf").write_text(NSSWITCH)
    before = Path("/etc/hosts").read_text(), Path("/etc/netgroup").exists()
    probe = ("import socket, subprocess; print(socket.gethostbyaddr('127.0.0.1')[0]); "
             "print(subprocess.run(['getent', 'netgroup', 'testers'], capture_output=True, "
             "text=True).stdout.split()[1])")
    out = subprocess.run(with_private_etc(etc, [sys.executable, "-c", probe]),
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["vmclient.pynfsd.test", "(vmclient.pynfsd.test,,)"]
    assert (Path("/etc/hosts").read_text(), Path("/etc/netgroup").exists()) == before
