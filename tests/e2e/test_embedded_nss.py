"""The embedded resolver against the real system databases: glibc's hosts, netgroup, passwd and
group lookups through `EmbeddedWay` with its default (system) lookups.

A child Python process runs in a private mount namespace (`unshare --mount --propagation
private`) where `/etc` is replaced by a directory made by the test: links to every entry of
the host's `/etc` except `hosts`, `netgroup`, `nsswitch.conf` (`files` only), `passwd` and
`group`, which are the test's own.  The host's `/etc` is never changed.  The child asks the
four caches and prints the reply lines as JSON; the test checks them here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serverproc import REPO

ROOT = os.geteuid() == 0
TOOLS = all(shutil.which(t) for t in ("unshare", "mount"))
pytestmark = pytest.mark.skipif(not (ROOT and TOOLS),
                                reason="needs root, unshare(1) and mount(8) for a private /etc")

BIG_UID, BIG_GID, FIRST_GROUP, GROUPS = 61040, 61040, 62001, 40
HOSTS = """127.0.0.1 localhost
10.77.0.1 client1.pynfs.test client1
10.77.0.2 other.pynfs.test
10.77.0.3 10.77.0.9
"""  # 10.77.0.3's only name looks like another address: it never resolves back
NETGROUP = "trusted (client1,,) (10.77.0.5,,)\nempty\n"
NSSWITCH = "passwd: files\ngroup: files\nhosts: files\nnetgroup: files\n"
EXPORTS = """/srv/host client1.pynfs.test(rw)
/srv/wild *.pynfs.test(ro)
/srv/ng @trusted(rw,fsid=3)
/srv/spoof 10.77.0.*(rw)
"""
ASK = [
    ("auth.unix.ip", "nfsd 10.77.0.1"), ("auth.unix.ip", "nfsd 10.77.0.2"),
    ("auth.unix.ip", "nfsd 10.77.0.3"), ("auth.unix.ip", "nfsd 10.77.0.5"),
    ("auth.unix.ip", "nfsd 10.77.0.6"),
    ("nfsd.export", "10.77.0.1 /srv/host"), ("nfsd.export", "10.77.0.1 /srv/ng"),
    ("nfsd.export", "10.77.0.2 /srv/ng"),
    ("auth.unix.gid", str(BIG_UID)), ("auth.unix.gid", "61999"),
]


def _etc_files() -> dict[str, str]:
    passwd = Path("/etc/passwd").read_text().rstrip("\n")
    group = Path("/etc/group").read_text().rstrip("\n")
    passwd += f"\nbig:x:{BIG_UID}:{BIG_GID}::/nonexistent:/bin/false\n"
    group += f"\nbig:x:{BIG_GID}:\n" + "".join(
        f"g{n}:x:{FIRST_GROUP + n}:root,big\n" for n in range(GROUPS))
    return {"hosts": HOSTS, "netgroup": NETGROUP, "nsswitch.conf": NSSWITCH,
            "passwd": passwd, "group": group}


# ------------------------------------------------------------ the child, in its namespace
def _private_etc(tmp: Path, files: dict[str, str]) -> None:
    host, farm = tmp / "host-etc", tmp / "etc"
    host.mkdir()
    farm.mkdir()
    subprocess.run(["mount", "--bind", "/etc", str(host)], check=True)
    for name in os.listdir(host):
        if name not in files:
            os.symlink(host / name, farm / name)
    for name, text in files.items():
        (farm / name).write_text(text)
        (farm / name).chmod(0o644)
    subprocess.run(["mount", "--bind", str(farm), "/etc"], check=True)
    if os.path.isdir("/run/nscd"):  # no cached answers from a host daemon
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/nscd"], check=True)


async def _ask_all() -> dict[str, str]:
    from pynfsd.exports import parse_exports
    from pynfsd.exports.embedded import EmbeddedWay

    way = EmbeddedWay(parse_exports(EXPORTS))
    loop = asyncio.get_running_loop()
    out: dict[str, str] = {}
    try:
        for cache, request in ASK:
            fut: asyncio.Future[bytes] = loop.create_future()
            way.send(cache, request.encode() + b"\n", fut.set_result,
                     lambda why, f=fut: f.set_exception(RuntimeError(why)))
            out[f"{cache} {request}"] = (await asyncio.wait_for(fut, 60)).decode()
    finally:
        await way.close()
    return out


def _child(tmp: Path) -> None:
    _private_etc(tmp, json.loads((tmp / "files.json").read_text()))
    print(json.dumps(asyncio.run(_ask_all())))


# ------------------------------------------------------------ the test
@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    tmp = tmp_path_factory.mktemp("nss")
    (tmp / "files.json").write_text(json.dumps(_etc_files()))
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, __file__, str(tmp)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {k: v.split() for k, v in json.loads(proc.stdout).items()}


def test_a_host_name_wildcard_and_netgroup_through_glibc(answers: dict[str, list[str]]) -> None:
    # client1.pynfs.test: its name, the wildcard, and @trusted by its short name
    assert answers["auth.unix.ip nfsd 10.77.0.1"][3] == "*.pynfs.test,@trusted,client1.pynfs.test"
    assert answers["auth.unix.ip nfsd 10.77.0.2"][3] == "*.pynfs.test"
    assert answers["auth.unix.ip nfsd 10.77.0.5"][3] == "@trusted"  # by its address


def test_a_name_that_does_not_resolve_back_is_not_trusted(answers: dict[str, list[str]]) -> None:
    """/etc/hosts calls 10.77.0.3 "10.77.0.9", which resolves to 10.77.0.9: the wildcard
    10.77.0.* would match the name, but the forward check drops it."""
    assert len(answers["auth.unix.ip nfsd 10.77.0.3"]) == 3  # negative
    assert len(answers["auth.unix.ip nfsd 10.77.0.6"]) == 3


def test_exports_answered_for_the_domains(answers: dict[str, list[str]]) -> None:
    # rw, root_squash, wdelay, no_subtree_check: 0x424; with fsid=3 also NFSEXP_FSID
    assert answers["nfsd.export 10.77.0.1 /srv/host"][3:] == [
        "1060", "65534", "65534", "0", "secinfo", "1", "1", "1060"]
    assert answers["nfsd.export 10.77.0.1 /srv/ng"][3:] == [
        "9252", "65534", "65534", "3", "secinfo", "1", "1", "9252"]
    assert len(answers["nfsd.export 10.77.0.2 /srv/ng"]) == 3  # not in @trusted


def test_every_group_of_a_user_in_40_groups(answers: dict[str, list[str]]) -> None:
    words = answers[f"auth.unix.gid {BIG_UID}"]
    gids = [int(g) for g in words[3:]]
    assert int(words[2]) == len(gids) == GROUPS + 1
    assert sorted(gids) == [BIG_GID, *range(FIRST_GROUP, FIRST_GROUP + GROUPS)]
    assert len(answers["auth.unix.gid 61999"]) == 2  # unknown uid: negative


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
