"""Fast tests of the Kerberos guest pieces that do not boot a VM: ELF library closure, the
guest's krb5.conf against a real KDC (on the host and inside a namespace), the krb5 server
command lines and the benchmark's transcript parsing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.kernel_krb5_bench import CpuMarks, Sample, ServerResult, log_notes, merge, parse, table
from tests.vm.krb5guest import (
    GUEST_NAME,
    SERVER_NAME,
    GuestRealm,
    Krb5GaneshaServer,
    Krb5PynfsdServer,
    elf_needed,
    hosts_file,
    krb5_conf,
    library_closure,
    start_guest_realm,
)
from tests.vm.network import NetnsNet, Network, UserNet
from tests.vm.qemu import Transcript


def _need_realm() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if importlib.util.find_spec("k5test") is None or shutil.which("kinit") is None:
        pytest.skip("MIT krb5 tools or k5test missing (scripts/krb5-deps.sh)")


def test_library_closure_of_a_host_binary_is_complete() -> None:
    closure = library_closure(Path("/"), Path(sys.executable).resolve())
    assert "libc.so.6" in closure
    for soname, path in closure.items():
        assert path.exists() and path.name == soname
        for needed in elf_needed(path):
            assert needed in closure or needed.startswith("ld-linux"), (soname, needed)


def test_library_closure_names_a_missing_library(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="libc.so.6"):
        library_closure(tmp_path, Path(sys.executable).resolve())


def test_guest_files_name_both_hosts() -> None:
    net = UserNet()
    assert f"10.0.2.15 {GUEST_NAME}" in hosts_file(net)
    assert f"10.0.2.2 {SERVER_NAME}" in hosts_file(net)
    conf = krb5_conf("R.TEST", "10.0.2.2", 88)
    assert "kdc = 10.0.2.2:88" in conf and "udp_preference_limit = 1" in conf


def _kinit_as_guest(realm: GuestRealm, net: Network, kdc_addr: str, tmp: Path) -> str:
    """kinit with the guest's keytab through the guest's krb5.conf, then get the NFS ticket."""
    conf = tmp / "guest-krb5.conf"
    conf.write_text(krb5_conf(realm.realm, kdc_addr, realm.kdc_port))
    env = {"PATH": os.environ["PATH"], "KRB5_CONFIG": str(conf),
           "KRB5CCNAME": f"FILE:{tmp}/guest.cc"}
    guest = f"nfs/{GUEST_NAME}@{realm.realm}"
    for argv in (["kinit", "-k", "-t", str(realm.guest_keytab), guest],
                 ["kvno", f"nfs/{SERVER_NAME}@{realm.realm}"]):
        subprocess.run(net.wrap(argv), env=env, check=True, capture_output=True, timeout=30)
    return subprocess.run(["klist", "-e"], env=env, check=True, capture_output=True,
                          text=True).stdout


@pytest.mark.parametrize("net_name", ["user", "netns"])
def test_guest_krb5_conf_gets_the_nfs_ticket(tmp_path: Path, net_name: str) -> None:
    _need_realm()
    net: Network = UserNet() if net_name == "user" else NetnsNet()
    with net:
        realm = start_guest_realm(net, tmp_path)
        try:
            kdc_addr = "127.0.0.1" if net_name == "user" else net.server_addr
            listing = _kinit_as_guest(realm, net, kdc_addr, tmp_path)
        finally:
            realm.stop()
    assert f"nfs/{SERVER_NAME}@{realm.realm}" in listing
    assert not os.path.exists(f"/proc/{realm.kdc_pid}"), "KDC still running after stop()"


def _realm_stub(tmp_path: Path) -> GuestRealm:
    (tmp_path / "server.keytab").write_bytes(b"")
    return GuestRealm(None, UserNet(), tmp_path / "server.keytab", tmp_path / "guest.keytab", 0)


def test_krb5_pynfsd_command_has_sec_list_and_keytab(tmp_path: Path) -> None:
    server = Krb5PynfsdServer(tmp_path, UserNet(), _realm_stub(tmp_path), "sys:krb5p")
    argv = server.command()
    assert f"{server.export_dir} *(rw,sec=sys:krb5p,no_root_squash,insecure)" in argv
    assert argv[argv.index("--keytab") + 1] == str(tmp_path / "server.keytab")


def test_krb5_ganesha_config_turns_kerberos_on(tmp_path: Path) -> None:
    server = Krb5GaneshaServer(tmp_path, UserNet(), _realm_stub(tmp_path), "krb5, krb5p")
    server.command()
    conf = (tmp_path / "ganesha.conf").read_text()
    assert "Active_krb5 = true;" in conf and "Active_krb5 = false" not in conf
    assert f'KeytabPath = "{tmp_path / "server.keytab"}"' in conf
    assert "SecType = krb5, krb5p;" in conf


def test_bench_parse_and_table(tmp_path: Path) -> None:
    marks = CpuMarks(Krb5PynfsdServer(tmp_path, UserNet(), _realm_stub(tmp_path)))
    marks.spent[("write", "krb5p", 1)] = 0.5
    lines = ["@@MOUNT krb5p 10.0.2.2:/e /mnt/bench nfs4 rw,sec=krb5p 0 0",
             "@@KBENCH write sys 1 1048576 10", "@@KBENCH write krb5p 1 1048576 40",
             "@@KBENCH read krb5p 1 1048576 20", "@@KBENCHDONE"]
    result = ServerResult("pynfsd", "user")
    parse(Transcript(lines), marks, result)
    assert not result.errors and result.mounts["krb5p"].endswith("sec=krb5p 0 0")
    assert result.rate("write", "krb5p") == pytest.approx(1.048576 / 0.4)
    assert result.cpu_per_gib("write", "krb5p") == pytest.approx(512.0)
    assert result.cpu_per_gib("read", "krb5p") is None
    text = table(result, ServerResult("ganesha", "user"))
    assert "| krb5p | write | 2.6 | 0.25x | - |" in text


def test_bench_rounds_pool_their_samples() -> None:
    first = ServerResult("pynfsd", "netns", [Sample("write", "sys", 1, 1 << 20, 10, 0.1)],
                         {"sys": "m1"}, ["e1"], ["n1"], (0.5, 1.0), "/w1")
    second = ServerResult("pynfsd", "netns", [Sample("write", "sys", 1, 1 << 20, 30, None)],
                          {"krb5": "m2"}, ["e2"], ["n1", "n2"], (1.0, 1.5), "/w2")
    both = merge(first, second)
    assert both.rate("write", "sys") == pytest.approx((1.048576 / 0.1 + 1.048576 / 0.3) / 2)
    assert both.mounts == {"sys": "m1", "krb5": "m2"} and both.errors == ["e1", "e2"]
    assert both.log_notes == ["n1", "n2"] and both.host_load == (0.5, 1.5)
    assert both.cpu_per_gib("write", "sys") == pytest.approx(0.1 * 1024)


def test_bench_parse_reports_an_unfinished_guest(tmp_path: Path) -> None:
    marks = CpuMarks(Krb5PynfsdServer(tmp_path, UserNet(), _realm_stub(tmp_path)))
    result = ServerResult("pynfsd", "user")
    parse(Transcript(["@@BENCHFAIL mount sec=krb5: denied"], timed_out=True), marks, result)
    assert result.errors == ["@@BENCHFAIL mount sec=krb5: denied", "the VM hit its timeout"]


def test_bench_marks_name_a_stuck_phase(tmp_path: Path) -> None:
    now = [100.0]
    server = Krb5PynfsdServer(tmp_path, UserNet(), _realm_stub(tmp_path))
    marks = CpuMarks(server, limit=60.0, clock=lambda: now[0])
    marks("mark begin write krb5i 1")
    now[0] += 61.0
    assert marks.stuck() == "phase write krb5i 1 still running after 60s"
    marks("mark end write krb5i 1")
    assert marks.stuck() == "pynfsd exited"   # never started here
    with pytest.raises(ValueError):
        marks("mark sideways write krb5i 1")


def test_bench_log_notes_count_repeats(tmp_path: Path) -> None:
    log = tmp_path / "pynfsd.log"
    log.write_text("2026-11-21 23:30:06,430 WARNING cb: client 0xc60a down\n"
                   "2026-11-21 23:30:07,100 WARNING cb: client 0xc60b down\n"
                   "2026-11-21 23:30:08,000 INFO nothing to see\n")
    assert log_notes(log) == ["(x2) WARNING cb: client  down"]
    (tmp_path / "quiet.log").write_text("INFO fine\n")
    assert log_notes(tmp_path / "quiet.log")[0].startswith("nothing about krb5/GSS")
