"""The first run of `pynfsd serve`, as a process: every mistake an administrator can make on
the command line or in the exports file gets one line naming the place and a defined exit
code (`pynfsd serve --help` lists them), and the start-up log says once where the server
listens, what it exports with which options, and how a client mounts it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynfsd.cli import EXIT_CONFIG, EXIT_UNAVAILABLE
from pynfsd.client.nfs4 import op
from tests.e2e.helpers import pynfsd
from tests.serverproc import HOST, REPO, ServerProcess, lookup_path

NOBODY = 65534
LOG_PREFIX = re.compile(r"^\S+ \S+ (INFO|WARNING|ERROR|DEBUG) \S+: ", re.M)


def serve(tmp_path: Path, *args: str) -> tuple[int, str]:
    """`pynfsd serve ARGS` on 127.0.0.1 with a state directory in `tmp_path`; it must exit."""
    done = pynfsd("serve", "--bind", HOST, "--state-dir", str(tmp_path / "state"), *args)
    return done.returncode, done.stderr


def serve_without(caps: str, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`serve` as root without the capabilities `caps` (setpriv(1) syntax: -cap,-cap)."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv(1) to drop capabilities")
    argv = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", sys.executable, "-m",
            "pynfsd", "serve", "--bind", HOST, "--state-dir", str(tmp_path / "state"), *args]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30)
    return done.returncode, done.stderr


def one_line_error(stderr: str) -> str:
    """The error line: the only line not written by the logger, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not LOG_PREFIX.match(line)]
    assert len(lines) == 1, stderr
    return lines[0]


# ------------------------------------------------------------------ exports errors: file:line


def test_file_as_export_directory_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    code, err = serve(tmp_path, "--export", str(tmp_path), "--export", f"{tmp_path}/file *(ro)",
                      "--port", "0")
    assert code == EXIT_CONFIG
    assert one_line_error(err) == f"pynfsd: --export #2: {tmp_path}/file: not a directory"


@pytest.mark.parametrize(("line", "message"), [
    ("{tmp}/missing 10.0.0.0/8(ro)", "{tmp}/missing: does not exist"),
    ("relative *(rw)", "export path 'relative' is not absolute"),
    ("/tmp *(rw,bogus)", "unknown option 'bogus'"),
    ("/tmp 10.0.0.0/33(rw)", "bad network '10.0.0.0/33'"),
    ("/tmp *(sec=krb6)", "unknown security flavour 'krb6' in sec=krb6"),
])  # fmt: skip
def test_bad_line_in_an_exports_file_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    exports = tmp_path / "exports"
    exports.write_text(f"# site exports\n{tmp_path} *(ro)\n" + line.format(tmp=tmp_path) + "\n")
    code, err = serve(tmp_path, "--exports", str(exports), "--port", "0")
    assert code == EXIT_CONFIG
    assert one_line_error(err) == f"pynfsd: {exports}:3: " + message.format(tmp=tmp_path)


def test_missing_and_unreadable_exports_file(tmp_path: Path) -> None:
    code, err = serve(tmp_path, "--exports", str(tmp_path / "nope"), "--port", "0")
    assert code == EXIT_CONFIG
    assert one_line_error(err) == f"pynfsd: {tmp_path}/nope: does not exist"
    exports = tmp_path / "exports"
    exports.write_text("/tmp *\n")
    exports.chmod(0o600)
    os.chown(exports, NOBODY, NOBODY)
    code, err = serve_without("-dac_override,-dac_read_search", tmp_path, "--exports", str(exports),
                              "--port", "0")
    assert code == EXIT_CONFIG
    assert one_line_error(err) == f"pynfsd: {exports}: cannot read: Permission denied"


def test_same_path_twice_is_a_warning_naming_both_lines(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.write_text(f"{tmp_path} 10.0.0.0/8(rw,insecure)\n")
    with ServerProcess([f"{tmp_path} *(ro,insecure)"], tmp_path / "state",
                       extra_args=["--exports", str(exports)], log_level="INFO") as srv:
        log = srv.log_text()
        srv.healthy()
    assert (f"WARNING pynfsd.exports: --export #1: {tmp_path} is already exported at "
            f"{exports}:1; the clients of both are merged") in log


# ------------------------------------------------------------------ option validation


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--port", "99999", "99999: must be from 0 to 65535"),
    ("--port", "-1", "-1: must be from 0 to 65535"),
    ("--port", "nfs", "not a whole number: 'nfs'"),
    ("--lease", "-5", "-5: must be from 1 to 3600"),
    ("--lease", "0", "0: must be from 1 to 3600"),
    ("--lease", "86400", "86400: must be from 1 to 3600"),
    ("--grace", "-1", "-1: must be from 0 to 3600"),
    ("--max-compound-ops", "0", "0: must be at least 1"),
    ("--max-mounts", "0", "0: must be at least 1"),
    ("--max-connections", "0", "0: must be at least 1"),
    ("--max-connections", "-3", "-3: must be at least 1"),
    ("--idle-timeout", "-1", "-1: must be a finite number of seconds >= 0"),
    ("--idle-timeout", "nan", "nan: must be a finite number of seconds >= 0"),
    ("--idle-timeout", "inf", "inf: must be a finite number of seconds >= 0"),
    ("--drc-size", "-1", "not a size: '-1'"),
    ("--max-reply-size", "1000", "1000: must be at least"),
    ("--partial-record-budget", "1K", "1K: must hold one record of the maximum size"),
    ("--log-level", "LOUD", "invalid choice: 'LOUD'"),
])  # fmt: skip
def test_bad_option_value_is_a_usage_error(tmp_path: Path, option: str, value: str, message: str) -> None:
    code, err = serve(tmp_path, "--export", str(tmp_path), f"{option}={value}")
    assert code == EXIT_CONFIG
    assert "Traceback" not in err and err.startswith("usage: pynfsd serve"), err
    assert f"pynfsd serve: error: argument {option}: {message}" in err.splitlines()[-1]
    assert not (tmp_path / "state").exists()  # rejected before anything is touched


@pytest.mark.parametrize(("args", "message"), [
    (["--state-dir", "{tmp}/file/state"], "cannot create state directory {tmp}/file/state: Not a directory"),
    (["--state-dir", "{tmp}/file"], "state directory {tmp}/file is not a directory"),
    (["--keytab", "{tmp}/none.keytab"], "--keytab {tmp}/none.keytab: no such file"),
    (["--keytab", "{tmp}/file", "--principal-map", "{tmp}/none"],
     "--principal-map {tmp}/none: No such file or directory"),
])  # fmt: skip
def test_unusable_files_are_configuration_errors(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "file").write_text("x")
    code, err = serve(tmp_path, "--export", str(tmp_path), "--port", "0",
                      *[a.format(tmp=tmp_path) for a in args])
    assert code == EXIT_CONFIG
    assert one_line_error(err) == "pynfsd: " + message.format(tmp=tmp_path)


# ------------------------------------------------------------------ cannot listen: exit 3


@pytest.fixture()
def busy_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        yield busy.getsockname()[1]


def test_port_in_use(tmp_path: Path, busy_port: int) -> None:
    code, err = serve(tmp_path, "--export", str(tmp_path), "--port", str(busy_port))
    assert code == EXIT_UNAVAILABLE
    assert one_line_error(err) == f"pynfsd: cannot listen on {HOST} port {busy_port}: Address already in use"


def test_address_not_on_this_host(tmp_path: Path) -> None:
    done = pynfsd("serve", "--export", str(tmp_path), "--bind", "192.0.2.1", "--port", "0",
                  "--state-dir", str(tmp_path / "state"))
    assert done.returncode == EXIT_UNAVAILABLE
    assert one_line_error(done.stderr) == "pynfsd: cannot listen on 192.0.2.1 port 0: Cannot assign requested address"


def test_privileged_port_without_privilege(tmp_path: Path) -> None:
    code, err = serve_without("-net_bind_service", tmp_path, "--export", str(tmp_path), "--port", "1")
    assert code == EXIT_UNAVAILABLE
    assert one_line_error(err) == f"pynfsd: cannot listen on {HOST} port 1: Permission denied"


def test_second_server_on_a_state_dir_is_unavailable(tmp_path: Path) -> None:
    with ServerProcess([f"{tmp_path} *(rw,insecure)"], tmp_path / "state") as srv:
        code, err = serve(tmp_path, "--export", str(tmp_path), "--port", "0")
        srv.healthy()
    assert code == EXIT_UNAVAILABLE
    assert one_line_error(err) == f"pynfsd: state directory {tmp_path / 'state'} is in use by pid {srv.pid}"


def test_help_lists_the_exit_codes() -> None:
    done = pynfsd("serve", "--help")
    assert done.returncode == 0
    codes = done.stdout.split("exit codes:", 1)[1]
    for code, meaning in (("0", "SIGTERM"), ("1", "internal error"), ("2", "configuration error"),
                          ("3", "unavailable")):
        assert re.search(rf"^  {code}  .*{meaning}", codes, re.M), codes


# ------------------------------------------------------------------ the start-up log


async def test_startup_log_lists_listening_once_exports_and_mount_commands(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name in ("pub", "sec"):
        (root / name).mkdir(parents=True)
        (root / name / f"{name}-marker").write_text(name)
    (tmp_path / "outside").mkdir()
    exports = tmp_path / "exports"
    exports.write_text(f"{root} *(ro,fsid=0,insecure)\n"
                       f"{root}/pub -rw,insecure *(no_root_squash) 127.0.0.1(anonuid=7)\n"
                       f"{tmp_path}/outside *(rw,insecure)\n")
    with ServerProcess([f"{root}/sec *(rw,sec=krb5p:sys,insecure)"], tmp_path / "state",
                       extra_args=["--exports", str(exports)], log_level="INFO") as srv:
        port = srv.port
        log = srv.wait_log(f"port={port},sec=krb5p 127.0.0.1:/sec /mnt")  # the last line
        mounts = re.findall(r"INFO pynfsd:   mount .* 127\.0\.0\.1:(\S+) /mnt", log)
        c = await srv.connect()
        try:  # each path the log tells clients to mount reaches that export
            for path, marker in zip(mounts, ["", "pub-marker", "sec-marker"], strict=True):
                await c.check([*lookup_path(path), *([op.lookup(marker.encode())] if marker else [])])
        finally:
            await c.close()
    assert log.count(" listening on ") == 1 and "listening for RPC" not in log
    assert f"INFO pynfsd: listening on 127.0.0.1 port {port}\n" in log
    lines = [m.group(1) for m in re.finditer(r"INFO pynfsd: (?:exporting )?(.*)", log)
             if "exporting" in m.group(0) or m.group(1).startswith("  mount")]
    assert lines == [
        f"{root}  *(ro,sec=sys,insecure,root_squash,no_all_squash,fsid=0) ({exports}:1)",
        f"  mount -t nfs4 -o vers=4.0,port={port} 127.0.0.1:/ /mnt",
        f"{root}/pub  *(rw,sec=sys,insecure,no_root_squash,no_all_squash) ({exports}:2)",
        f"{root}/pub  127.0.0.1(rw,sec=sys,insecure,root_squash,no_all_squash,anonuid=7) ({exports}:2)",
        f"  mount -t nfs4 -o vers=4.0,port={port} 127.0.0.1:/pub /mnt",
        f"{tmp_path}/outside  *(rw,sec=sys,insecure,root_squash,no_all_squash) ({exports}:3)",
        f"{root}/sec  *(rw,sec=krb5p:sys,insecure,root_squash,no_all_squash) (--export #1)",
        f"  mount -t nfs4 -o vers=4.0,port={port},sec=krb5p 127.0.0.1:/sec /mnt",
    ]
    assert (f"WARNING pynfsd: {tmp_path}/outside cannot be reached by *: it is outside that "
            "client's fsid=0 export") in log


def test_bare_directory_is_logged_with_its_defaults_and_sigterm_exits_0(tmp_path: Path) -> None:
    srv = ServerProcess([str(tmp_path)], tmp_path / "state", log_level="INFO").start()
    try:
        srv.wait_log(f"exporting {tmp_path}  *(rw,sec=sys,secure,root_squash,no_all_squash) (--export #1)")
    finally:
        assert srv.stop() == 0
