"""The Linux kernel NFSv4.0 client with sec=krb5, krb5i and krb5p (rpc.gssd in the guest).

One guest boot per (server, network mode): a throwaway MIT realm (KDC on the host for user-mode
networking, inside the namespace for netns), the server exporting ``sec=krb5:krb5i:krb5p``
with ``nfs/nfs-server.test`` in its keytab, the guest with rpc.gssd and the machine principal
``nfs/guest.test`` (``tests/vm/krb5guest.py``). The guest (``guest/krb5_driver.sh``) checks
that ``sec=sys`` is refused (NFS4ERR_WRONGSEC, RFC 7530 §3.3) and that a mount without ``sec=``
negotiates a krb5 flavour through SECINFO, then runs a compact sys workload once per flavour
on its own subdirectory: 32 MiB dd with fsync read back after drop_caches (md5 compared on the
host), 200 small files, renames, symlinks, fcntl locks. Servers: ``$PYNFSD_E2E_SERVERS``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.test_kernel_client import md5_file, vm_skip_reason
from tests.vm.harness import NETWORKS, RESULT_RE, VALUE_RE, servers_under_test, tail_file
from tests.vm.kernel import guest_kernel
from tests.vm.krb5guest import DRIVER, FLAVOURS, assemble_krb5, guest_config, krb5_setup
from tests.vm.qemu import GuestVM, Transcript

BIG_MB = 32
SMALL_FILES = 200
STEPS = "big_file small_files renames symlinks fcntl_locks"
SEC_RE = re.compile(r"^@@SEC (\S+)$")


def krb5_skip_reason() -> str | None:
    if (why := vm_skip_reason()) is not None:
        return why
    if shutil.which("krb5kdc") is None and not Path("/usr/sbin/krb5kdc").exists():
        return "MIT KDC missing (run scripts/krb5-deps.sh)"
    if importlib.util.find_spec("k5test") is None:
        return "k5test missing (run scripts/krb5-deps.sh)"
    return None


pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(krb5_skip_reason() is not None, reason=str(krb5_skip_reason()))]

RUNS = [(server, net) for server in servers_under_test() for net in NETWORKS]


@dataclass
class Krb5Run:
    """One guest boot: results and values keyed by (flavour, name); flavour "" = outside."""

    server: str
    network: str
    workdir: Path
    transcript: Transcript = field(default_factory=Transcript)
    results: dict[tuple[str, str], tuple[bool, str]] = field(default_factory=dict)
    values: dict[tuple[str, str], str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def export_dir(self) -> Path:
        return self.workdir / "export"

    def diagnostics(self) -> str:
        extra = "".join(f"harness: {e}\n" for e in self.errors)
        if self.transcript.timed_out:
            extra += "harness: the VM hit its hard timeout\n"
        return (f"[{self.server}/{self.network}] workdir {self.workdir} (console.log, "
                f"{self.server}.log, kdc.log)\n{extra}--- console tail ---\n"
                f"{self.transcript.tail(60)}\n--- server log tail ---\n"
                f"{tail_file(self.workdir / f'{self.server}.log', 25)}")


def parse(run: Krb5Run) -> None:
    sec = ""
    for line in run.transcript.lines:
        if m := SEC_RE.match(line):
            sec = "" if m.group(1) == "-" else m.group(1)
        elif m := RESULT_RE.match(line):
            run.results[(sec, m.group(1))] = (m.group(2) == "PASS", m.group(3))
        elif m := VALUE_RE.match(line):
            run.values[(sec, m.group(1))] = m.group(2).strip()
        elif line.startswith("  [mount] ") and " nfs4 " in line:
            run.mounts[sec] = line


def boot(server_name: str, net_name: str, workdir: Path) -> Krb5Run:
    """Realm, server and one guest boot through every flavour; never raises for guest failures."""
    kernel = guest_kernel()
    run = Krb5Run(server_name, net_name, workdir)
    with krb5_setup(server_name, net_name, workdir) as (realm, server):
        for sec in FLAVOURS:
            (server.export_dir / sec).mkdir(parents=True, exist_ok=True)
        config = guest_config(server, realm.network, SECS=" ".join(FLAVOURS), CHECK_WRONGSEC=1,
                              BIG_MB=BIG_MB, SMALL_FILES=SMALL_FILES, ONLY=STEPS,
                              STEP_TIMEOUT=120)
        initrd = assemble_krb5(kernel, DRIVER, config, realm, workdir / "initrd.img")
        vm = GuestVM(kernel, initrd, realm.network, workdir, 420.0,
                     watchdog=lambda: None if server.pid else f"{server_name} exited")
        try:
            server.start()
            run.transcript = vm.run()
        except Exception as exc:
            run.errors.append(repr(exc))
        finally:
            server.stop()
    parse(run)
    return run


@pytest.fixture(scope="module", params=RUNS, ids=[f"{s}-{n}" for s, n in RUNS])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Krb5Run:
    server, net = request.param
    return boot(server, net, tmp_path_factory.mktemp(f"krb5-{server}-{net}"))


def assert_guest(run: Krb5Run, name: str, sec: str = "") -> str:
    """The guest printed ``@@RESULT <name> PASS`` (inside flavour ``sec``); returns its detail."""
    if (sec, name) not in run.results:
        pytest.fail(f"guest printed no result for {name!r} under {sec!r}\n{run.diagnostics()}")
    ok, detail = run.results[(sec, name)]
    if not ok:
        pytest.fail(f"guest step {name!r} under {sec!r} failed: {detail}\n{run.diagnostics()}")
    return detail


def test_vm_ran_to_completion(run: Krb5Run) -> None:
    assert not run.errors and not run.transcript.timed_out, run.diagnostics()
    assert any(line.startswith("@@EXIT 0") for line in run.transcript.lines), run.diagnostics()


def test_gssd_started(run: Krb5Run) -> None:
    assert_guest(run, "gssd")


def test_kdc_issued_the_nfs_ticket_with_a_kernel_enctype(run: Krb5Run) -> None:
    """gssd got nfs/nfs-server.test from the KDC with an aes-sha1 session key (17 or 18)."""
    log = tail_file(run.workdir / "kdc.log", 200)
    issued = [line for line in log.splitlines()
              if "TGS_REQ" in line and "ISSUE" in line and "for nfs/nfs-server.test@" in line]
    assert issued, f"no service ticket in the KDC log:\n{log}"
    assert re.search(r"ses=aes(256|128)-cts-hmac-sha1-96\((17|18)\)", issued[0]), issued[0]


def test_sys_mount_of_krb5_export_refused(run: Krb5Run) -> None:
    assert_guest(run, "sys_refused")
    assert not (run.export_dir / "sys-was-here").exists()


def test_mount_without_sec_negotiates_krb5(run: Krb5Run) -> None:
    assert_guest(run, "sec_negotiated")


@pytest.mark.parametrize("sec", FLAVOURS)
def test_mount(run: Krb5Run, sec: str) -> None:
    assert_guest(run, "mount", sec)
    assert f",sec={sec}," in run.mounts.get(sec, ""), run.mounts


@pytest.mark.parametrize("sec", FLAVOURS)
def test_big_file_write_read_md5(run: Krb5Run, sec: str) -> None:
    assert_guest(run, "big_file", sec)
    big = run.export_dir / sec / "keep" / "big"
    assert big.stat().st_size == BIG_MB << 20
    assert md5_file(big) == run.values.get((sec, "big_md5")), "file on the server's disk differs"


@pytest.mark.parametrize("sec", FLAVOURS)
def test_small_files(run: Krb5Run, sec: str) -> None:
    assert_guest(run, "small_files", sec)
    assert not (run.export_dir / sec / "small").exists()


@pytest.mark.parametrize("sec", FLAVOURS)
def test_renames(run: Krb5Run, sec: str) -> None:
    assert_guest(run, "renames", sec)
    assert (run.export_dir / sec / "keep" / "renamed").read_text() == "keep\n"
    assert not (run.export_dir / sec / "ren").exists()


@pytest.mark.parametrize("sec", FLAVOURS)
def test_symlinks(run: Krb5Run, sec: str) -> None:
    assert_guest(run, "symlinks", sec)
    assert os.readlink(run.export_dir / sec / "keep" / "symlink") == "some/target/path"


@pytest.mark.parametrize("sec", FLAVOURS)
def test_fcntl_locks(run: Krb5Run, sec: str) -> None:
    assert_guest(run, "fcntl_locks", sec)


@pytest.mark.parametrize("sec", FLAVOURS)
def test_unmount(run: Krb5Run, sec: str) -> None:
    assert_guest(run, "unmount", sec)
