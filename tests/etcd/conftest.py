"""One real 3-member etcd cluster per test module (tests/etcd_cluster.py); each test uses its
own key prefix, and puts back any member it killed."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator

import pytest

from tests.etcd_cluster import EtcdCluster

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.skip("needs etcd (scripts/etcd-deps.sh)")
    pytest.importorskip("aetcd")
    with EtcdCluster(members=3, workdir=tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture
def cluster(etcd: EtcdCluster) -> Iterator[EtcdCluster]:
    """The module's cluster, every member running again after the test."""
    yield etcd
    for i in range(len(etcd.names)):
        if not etcd.running(i):
            etcd.restart(i, wait=False)
    etcd.wait_healthy()


@pytest.fixture
def url(cluster: EtcdCluster) -> str:
    return f"etcd://{cluster.endpoints}/t{next(_prefixes)}"


