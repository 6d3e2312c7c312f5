"""The export and credential caches with the Linux kernel NFSv4.0 client (Debian, in qemu).

One guest boot (``tests/vm/guest/caches.sh``) against one pynfsd that reads an exports file
and resolves names through an ``/etc`` made by this test (``tests/vm/privateetc.py``: a private
mount namespace, the host's ``/etc`` untouched). Over qemu user networking the server sees the
guest as 127.0.0.1, which that ``/etc/hosts`` names ``vmclient.pynfsd.test``. The guest:

1. mounts, writes and reads back exports given by host name, by wildcard and by ``@testers``
   (``/etc/netgroup``); mounts of exports for another name and another netgroup are refused;
2. mounts an ro export and fails to write; the host turns it rw in the exports file and runs
   ``pynfsd exportfs -r``: the same mount then writes. The host turns it back to ro, flushes
   the caches (``pynfsd cache flush``) and sends SIGHUP: the writes are refused again, and
   the mounts of the unchanged exports read and write as before;
3. as uid 5000 with no supplementary groups (``helpers/asuser.c``) writes into a directory
   owned by the 40th of the user's 40 groups (the server's ``/etc/group``): allowed on the
   export with ``manage-gids``, refused on the same directory of an export without it.

The host also reads the caches (``pynfsd cache show``): ``auth.unix.ip`` has the guest's
address with its domain while it is mounted and again, refilled on demand, after the flushes;
``nfsd.export`` has the mounted exports; ``auth.unix.gid`` has the user's 40 groups; and
``pynfsd exportfs -v`` shows the reloaded export rw.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_kernel_client import vm_skip_reason
from tests.vm.harness import WorkloadRun, run_workload
from tests.vm.initramfs import GUEST
from tests.vm.network import Network
from tests.vm.privateetc import EtcServer, host_etc_with
from tests.vm.servers import Server

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason()))]

CLIENT = "vmclient.pynfsd.test"
USER, USER_ID, USER_GID = "cacheuser", 5000, 5000
GROUPS = range(50001, 50041)     # the user's 40 supplementary groups; the directory is the 40th
GROUP_DIR = "g40"
OPTS = "no_root_squash,insecure"

HOSTS = f"""\
127.0.0.1\t{CLIENT} vmclient localhost
127.0.0.2\tother.pynfsd.test
::1\tlocalhost ip6-localhost
"""
NETGROUP = f"""\
testers (spare.pynfsd.test,,) ({CLIENT},,)
others (other.pynfsd.test,,)
"""
EXPORTS = f"""\
# exports for the kernel-client cache test; the flip export's access is edited by the test
{{root}}/byname      {CLIENT}({OPTS},rw)
{{root}}/bywild      *.pynfsd.test({OPTS},rw)
{{root}}/bynetgroup  @testers({OPTS},rw)
{{root}}/othername   other.pynfsd.test({OPTS},rw)
{{root}}/othergroup  @others({OPTS},rw)
{{root}}/flip        {CLIENT}({OPTS},{{flip}})
{{root}}/managed     {CLIENT}(insecure,rw,manage-gids)
{{root}}/unmanaged   {CLIENT}(insecure,rw)
"""
ALLOWED = ("byname", "bywild", "bynetgroup")
REFUSED = ("othername", "othergroup")


def exports(root: Path, flip: str) -> str:
    return EXPORTS.format(root=root, flip=flip)


def etc_files() -> dict[str, str]:
    """The server's /etc: names, netgroups, and a user in 40 groups (gids 50001..50040)."""
    groups = "".join(f"cachegroup{gid - 50000}:x:{gid}:{USER}\n" for gid in GROUPS)
    return {"hosts": HOSTS, "netgroup": NETGROUP,
            "passwd": host_etc_with("passwd", f"{USER}:x:{USER_ID}:{USER_GID}::/:/bin/false\n"),
            "group": host_etc_with("group", f"{USER}:x:{USER_GID}:\n{groups}")}


def prepare(root: Path) -> None:
    """The exported directories; in the two group exports a directory of the 40th group."""
    for name in (*ALLOWED, *REFUSED, "flip", "managed", "unmanaged"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in ("managed", "unmanaged"):
        group_dir = root / name / GROUP_DIR
        group_dir.mkdir()
        os.chown(group_dir, 0, GROUPS[-1])
        os.chmod(group_dir, 0o2770)


@dataclass
class CacheRun:
    run: WorkloadRun
    admin: dict[str, subprocess.CompletedProcess[str]]

    def output(self, what: str) -> str:
        done = self.admin.get(what)
        assert done is not None, f"the host never ran {what!r}\n{self.run.diagnostics()}"
        assert done.returncode == 0, (f"{what}: exit {done.returncode}\n{done.stdout}"
                                      f"{done.stderr}")
        return done.stdout


def pause_handler(record: dict[str, subprocess.CompletedProcess[str]],
                  ) -> Callable[[Server], Callable[[str], str | None]]:
    """What the host does when the guest pauses; each admin command's result goes into
    ``record`` under "<pause>: <command>"."""
    def make(server: Server) -> Callable[[str], str | None]:
        assert isinstance(server, EtcServer)

        def run(what: str, *args: str) -> None:
            record[f"{what}: {' '.join(args)}"] = done = server.admin(*args)
            if done.returncode != 0:
                raise RuntimeError(f"pynfsd {' '.join(args)}: {done.stderr}")

        def on_pause(what: str) -> None:
            if what == "reload":     # the guest has its mounts: the caches hold its entries
                run(what, "cache", "show", "auth.unix.ip")
                run(what, "cache", "show", "nfsd.export")
                server.exports_file.write_text(exports(server.export_dir, "rw"))
                run(what, "exportfs", "-r")
                run(what, "exportfs", "-v")
            elif what == "sighup":
                server.exports_file.write_text(exports(server.export_dir, "ro"))
                run(what, "cache", "flush")
                server.hangup()
            elif what == "end":      # refilled on demand since the flush
                run(what, "cache", "show", "auth.unix.ip")
                run(what, "cache", "show", "auth.unix.gid")
            else:
                raise ValueError(f"unknown pause request {what!r}")
        return on_pause
    return make


def make_server(name: str, workdir: Path, network: Network) -> Server:
    root = workdir / "export"
    prepare(root)
    return EtcServer(workdir, network, etc_files(), exports(root, "ro"))


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory: pytest.TempPathFactory) -> CacheRun:
    workdir = tmp_path_factory.mktemp("caches")
    admin: dict[str, subprocess.CompletedProcess[str]] = {}
    run = run_workload("pynfsd", "user", workdir, bigdir_count=0, timeout=420.0,
                       make=make_server, script=GUEST / "caches.sh",
                       settings={"USER_ID": USER_ID, "USER_GID": USER_GID},
                       pause=pause_handler(admin))
    return CacheRun(run, admin)


def assert_guest(cache_run: CacheRun, name: str) -> str:
    """The guest printed ``@@RESULT <name> PASS ...``; returns the detail."""
    run = cache_run.run
    ok, detail = run.results.get(name, (False, "no result"))
    assert ok, f"guest check {name}: {detail}\n{run.diagnostics()}"
    return detail


def test_vm_ran_to_completion(cache_run: CacheRun) -> None:
    run = cache_run.run
    assert not run.errors and not run.transcript.timed_out, run.diagnostics()
    assert any(line.startswith("@@EXIT 0") for line in run.transcript.lines), run.diagnostics()
    assert_guest(cache_run, "unmount")


@pytest.mark.parametrize("name", ALLOWED)
def test_export_by_name_wildcard_and_netgroup(cache_run: CacheRun, name: str) -> None:
    assert_guest(cache_run, f"mount_{name}")
    written = cache_run.run.export_dir / name / "guest-file"
    assert written.read_text() == f"written by the guest through {name}\n"


@pytest.mark.parametrize("name", REFUSED)
def test_export_for_another_name_or_netgroup_is_refused(cache_run: CacheRun,
                                                         name: str) -> None:
    assert_guest(cache_run, f"refused_{name}")
    assert not (cache_run.run.export_dir / name / "guest-file").exists()


def entries(shown: str) -> list[list[str]]:
    """The words of each entry of a cache's content (comment lines left out)."""
    return [line.split() for line in shown.splitlines()
            if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("when", ["reload", "end"])
def test_auth_unix_ip_lists_the_guest_with_its_domain(cache_run: CacheRun, when: str) -> None:
    """``cache show auth.unix.ip`` shows ``nfsd 127.0.0.1 DOMAIN`` while the guest has its
    mounts, and again at the end: refilled on demand after the flushes."""
    shown = cache_run.output(f"{when}: cache show auth.unix.ip")
    guest = [words for words in entries(shown) if words[:2] == ["nfsd", "127.0.0.1"]]
    assert len(guest) == 1 and len(guest[0]) == 3, shown
    assert guest[0][2] != "-no-domain-", shown


def test_nfsd_export_holds_the_mounted_exports(cache_run: CacheRun) -> None:
    shown = cache_run.output("reload: cache show nfsd.export")
    paths = {words[0] for words in entries(shown)}
    root = cache_run.run.export_dir
    assert {str(root / name) for name in (*ALLOWED, "flip")} <= paths, shown


def test_exportfs_r_turns_ro_to_rw_without_remount(cache_run: CacheRun) -> None:
    refused = assert_guest(cache_run, "ro_before_reload")
    assert re.search(r"Read-only file system|Permission denied", refused), refused
    assert_guest(cache_run, "rw_after_reload")
    flip = cache_run.run.export_dir / "flip"
    assert not (flip / "before").exists()
    assert (flip / "after-reload").read_text() == "attempt\n"
    cache_run.output("reload: exportfs -r")
    listed = [line for line in cache_run.output("reload: exportfs -v").splitlines()
              if f"{flip}" in line]
    assert listed and all(re.search(r"[(,]rw[,)]", line) for line in listed), listed


def test_sighup_reloads_the_exports(cache_run: CacheRun) -> None:
    refused = assert_guest(cache_run, "ro_after_sighup")
    assert re.search(r"Read-only file system|Permission denied", refused), refused
    assert not (cache_run.run.export_dir / "flip" / "after-sighup").exists()


def test_unchanged_exports_keep_working_across_reloads(cache_run: CacheRun) -> None:
    assert_guest(cache_run, "unchanged_after_reload")
    cache_run.output("sighup: cache flush")
    for name in ALLOWED:
        assert (cache_run.run.export_dir / name / "after-reload").read_text() == \
            "after the reload\n"


def test_manage_gids_reaches_the_40th_group(cache_run: CacheRun) -> None:
    detail = assert_guest(cache_run, "groups_managed")
    assert re.search(r"Groups:\s+the 40th group lets me in", detail), detail  # no groups sent
    made = cache_run.run.export_dir / "managed" / GROUP_DIR / "by-user"
    st = made.stat()
    assert (st.st_uid, st.st_gid) == (USER_ID, GROUPS[-1])
    assert made.read_text() == "the 40th group lets me in\n"
    shown = cache_run.output("end: cache show auth.unix.gid")
    user = [words for words in entries(shown) if words[0] == str(USER_ID)]
    assert user and all(str(gid) in user[0] for gid in GROUPS), shown


def test_without_manage_gids_the_40th_group_is_denied(cache_run: CacheRun) -> None:
    detail = assert_guest(cache_run, "groups_unmanaged")
    assert "Permission denied" in detail, detail
    assert not (cache_run.run.export_dir / "unmanaged" / GROUP_DIR / "by-user").exists()
