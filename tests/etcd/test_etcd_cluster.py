"""The test helper tests/etcd_cluster.py against real etcd members: a 3-member cluster
starts healthy, survives SIGKILL of its leader (a new leader is elected and a write
succeeds), the killed member rejoins with restart(), and stop() leaves no process and no
data dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.etcd_cluster import EtcdCluster

pytestmark = [
    pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (scripts/etcd-deps.sh)"),
    pytest.mark.slow,
]


def _put_get(c: EtcdCluster, key: str, value: str) -> str:
    assert c.etcdctl("put", key, value).returncode == 0
    return c.etcdctl("get", "--print-value-only", key).stdout.strip()


def test_three_members_leader_kill_restart_stop(tmp_path: Path) -> None:
    c = EtcdCluster(members=3, workdir=tmp_path / "etcd")
    with c:
        assert len(c.endpoints.split(",")) == 3
        assert _put_get(c, "/t/a", "1") == "1"
        old = c.leader()
        pids = [c.pid(i) for i in range(3)]
        c.kill(old)
        assert not c.running(old)
        new = c.leader()
        assert new != old
        assert _put_get(c, "/t/b", "2") == "2"
        c.restart(old)
        assert c.running(old)
        assert c.etcdctl("get", "--print-value-only", "/t/b", endpoints=[old]).stdout.strip() == "2"
    for pid in pids:
        assert pid is not None and _gone(pid)
    assert not any((tmp_path / "etcd").glob("member*/member"))


def _gone(pid: int) -> bool:
    try:
        return "etcd" not in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return True
