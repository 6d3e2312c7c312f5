"""`bench.cache_clients` at a tiny size, so that the benchmark keeps working.

* the addresses: distinct, inside 127.0.0.0/8, never 127.0.0.1, each with one hosts line;
* the network variant against a real `pynfsd serve`: every round makes one call from each
  address and none fails, the server's CPU and memory are read, and (once pynfsd has
  `pynfsd cache`) one `auth.unix.ip` entry appears per address and the flushed rounds run;
* the names variant in its private mount namespace (skipped where `unshare --mount` is not
  permitted), with NFS-Ganesha as the peer when it is installed: the bench itself checks
  that an address without a host name is refused, and every named address is served.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.cache_clients import main
from bench.cache_targets import MAX_ADDRESSES, addresses, has_cache_command, hosts_text

N = 8


def run_bench(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = tmp_path / "cache_clients.json"
    assert main(["--addresses", str(N), "--concurrency", "3", "--json", str(out), *args]) == 0
    runs: list[dict[str, Any]] = json.loads(out.read_text())["runs"]
    return runs


def assert_every_call_served(run: dict[str, Any], flush: bool) -> None:
    expected = ["cold", "warm"] + (["flushed", "warm-again"] if flush else [])
    assert list(run["rounds"]) == expected, run["server"]
    for rnd in run["rounds"].values():
        assert (rnd["calls"], rnd["errors"]) == (N, 0), rnd
        assert rnd["server_cpu"] is not None
    assert run["errors"] == []
    assert all(run["rss"][when] > 0 for when in ["before", *expected])


def test_addresses_are_distinct_loopback_clients() -> None:
    addrs = addresses(MAX_ADDRESSES)
    assert len(set(addrs)) == MAX_ADDRESSES and "127.0.0.1" not in addrs
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8") for a in addrs)
    assert addrs[253:255] == ["127.0.1.254", "127.0.2.1"]
    assert hosts_text(addrs[253:255]).splitlines() == [
        "127.0.0.1\tlocalhost", "127.0.1.254\tc-1-254.bench.pynfsd.test",
        "127.0.2.1\tc-2-1.bench.pynfsd.test"]
    with pytest.raises(ValueError):
        addresses(MAX_ADDRESSES + 1)


def test_network_variant(tmp_path: Path) -> None:
    cache_cli = has_cache_command()
    [run] = run_bench(tmp_path, "--variant", "network", "--peer", "none")
    assert (run["server"], run["variant"]) == ("pynfsd", "network")
    assert_every_call_served(run, cache_cli)
    if cache_cli:
        assert run["ip_entries"]["cold"] - run["ip_entries"]["before"] == N


def _mount_namespace_permitted() -> bool:
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    return shutil.which("unshare") is not None and subprocess.run(probe).returncode == 0


@pytest.mark.skipif(not _mount_namespace_permitted(), reason="unshare --mount not permitted")
def test_names_variant_with_peer(tmp_path: Path) -> None:
    runs = run_bench(tmp_path, "--variant", "names", "--peer", "ganesha")
    servers = {r["server"]: r for r in runs}
    assert set(servers) == ({"pynfsd", "ganesha"} if shutil.which("ganesha.nfsd") else {"pynfsd"})
    assert_every_call_served(servers["pynfsd"], has_cache_command())
    if "ganesha" in servers:
        assert_every_call_served(servers["ganesha"], False)
