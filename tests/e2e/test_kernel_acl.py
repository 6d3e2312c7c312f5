"""NFSv4 ACLs through the Linux kernel client (a Debian kernel in qemu) with Debian's
nfs4-acl-tools in the guest (``tests/vm/acltools.py``): the owner of a 0600 file gives a
second user (an AUTH_SYS uid in the guest) a read ACE with ``nfs4_setfacl``, that user reads
it, a chmod from the client shows in the ACL, and after the ACE is removed the user is
refused; on the server ``getfacl`` shows the POSIX ACL each time (``tests/vm/guest/acl.sh``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.test_kernel_client import vm_skip_reason
from tests.vm.acltools import acl_tools_layer
from tests.vm.harness import WorkloadRun, run_workload
from tests.vm.initramfs import GUEST
from tests.vm.network import Network
from tests.vm.servers import Server, make_server

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason())),
    pytest.mark.skipif(shutil.which("getfacl") is None, reason="needs getfacl (scripts/acl-deps.sh)"),
]
OWNER_ID, USER_ID = 1000, 1001


@dataclass
class AclRun:
    run: WorkloadRun
    server_acls: dict[str, list[str]] = field(default_factory=dict)


def _make(name: str, workdir: Path, net: Network) -> Server:
    server = make_server(name, workdir, net)
    secret = server.export_dir / "secret"
    server.export_dir.mkdir(parents=True, exist_ok=True)
    secret.write_text("only for the owner\n")
    os.chown(secret, OWNER_ID, OWNER_ID)
    secret.chmod(0o600)
    return server


def getfacl(path: Path) -> list[str]:
    out = subprocess.run(["getfacl", "-cnp", str(path)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return [line.split("\t")[0] for line in out.splitlines() if line]


def _pause(acls: dict[str, list[str]]) -> Callable[[Server], Callable[[str], None]]:
    def handler(server: Server) -> Callable[[str], None]:
        def on_pause(what: str) -> None:
            acls[what] = getfacl(server.export_dir / "secret")
        return on_pause
    return handler


@pytest.fixture(scope="module")
def acl_run(tmp_path_factory: pytest.TempPathFactory) -> AclRun:
    workdir = tmp_path_factory.mktemp("acl")
    acls: dict[str, list[str]] = {}
    run = run_workload("pynfsd", "user", workdir, bigdir_count=0, timeout=420.0, make=_make,
                       script=GUEST / "acl.sh", layers=[acl_tools_layer()],
                       settings={"OWNER_ID": OWNER_ID, "USER_ID": USER_ID},
                       pause=_pause(acls))
    return AclRun(run, acls)


def assert_guest(acl_run: AclRun, name: str) -> str:
    return acl_run.run.passed(name)


def test_vm_ran_to_completion(acl_run: AclRun) -> None:
    acl_run.run.assert_exited()
    assert_guest(acl_run, "unmount")


def test_nfs4_getfacl_shows_the_mode_as_knfsd(acl_run: AclRun) -> None:
    detail = assert_guest(acl_run, "getfacl_before")
    assert detail.split() == ["A::OWNER@:rwatTcCy", "A::GROUP@:tcy", "A::EVERYONE@:tcy"]


def test_an_ace_for_a_second_user_lets_it_read(acl_run: AclRun) -> None:
    assert_guest(acl_run, "refused_before")
    assert f"A::{USER_ID}:rtcy" in assert_guest(acl_run, "setfacl")
    assert_guest(acl_run, "granted")
    assert acl_run.server_acls["getfacl-granted"] == [
        "user::rw-", f"user:{USER_ID}:r--", "group::---", "mask::r--", "other::---",
    ]  # fmt: skip


def test_a_chmod_from_the_client_shows_in_the_acl(acl_run: AclRun) -> None:
    assert f"A::{USER_ID}:tcy" in assert_guest(acl_run, "chmod")
    assert_guest(acl_run, "refused_after_chmod")
    assert "mask::---" in acl_run.server_acls["getfacl-chmod"]
    assert_guest(acl_run, "granted_again")


def test_removing_the_ace_refuses_the_user(acl_run: AclRun) -> None:
    assert str(USER_ID) not in assert_guest(acl_run, "removed")
    assert_guest(acl_run, "refused_after_removal")
    assert acl_run.server_acls["getfacl-removed"] == ["user::rw-", "group::---", "other::---"]
