"""A listener added at run time serves a kernel mount.

pynfsd starts listening only on the test namespace's loopback, where the guest cannot reach
it; once it runs, `pynfsd listen add 192.168.77.1:2049` (through the control socket) gives it
the address the guest mounts.  The guest (the Linux NFSv4.0 client in qemu) mounts, writes
4 MiB with fsync, reads them back after dropping its caches, and unmounts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_kernel_client import md5_file, vm_skip_reason
from tests.vm.harness import WorkloadRun, run_workload
from tests.vm.network import Network
from tests.vm.servers import REPO_ROOT, PynfsdServer, Server

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason()))]

LOOPBACK = "127.0.0.1"
BIG_MB = 4


class AddedListenerServer(PynfsdServer):
    """pynfsd bound to the namespace's loopback; the guest's address is added once it runs."""

    def command(self) -> list[str]:
        argv = super().command()
        argv[argv.index("--bind") + 1] = LOOPBACK
        return argv

    def _wait_ready(self, timeout: float) -> None:
        address = f"{self.network.server_bind}:{self.port}"
        argv = [sys.executable, "-m", "pynfsd", "listen", "add", address,
                "--state-dir", str(self.state_dir)]
        deadline = time.monotonic() + timeout
        while True:  # until the control socket answers
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                  env=self.environment(), cwd=REPO_ROOT)
            if done.returncode == 0 or self.pid is None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        with open(self.log_path, "a") as log:
            log.write(f"==== pynfsd listen add {address}: {done.returncode} {done.stdout}"
                      f"{done.stderr}\n")
        super()._wait_ready(timeout)  # probes the added address


def make(name: str, workdir: Path, network: Network) -> Server:
    return AddedListenerServer(workdir, network)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> WorkloadRun:
    workdir = tmp_path_factory.mktemp("listen-add")
    return run_workload("pynfsd", "netns", workdir, big_mb=BIG_MB, only="big_file",
                        bigdir_count=0, timeout=600.0, make=make)


def test_a_listener_added_at_run_time_serves_a_kernel_mount(run: WorkloadRun) -> None:
    assert not run.errors and not run.transcript.timed_out, run.diagnostics()
    for step in ("mount", "big_file", "unmount"):
        ok, detail = run.results.get(step, (False, "no result"))
        assert ok, f"guest step {step}: {detail}\n{run.diagnostics()}"
    big = run.export_dir / "keep" / "big"
    assert big.stat().st_size == BIG_MB << 20
    assert md5_file(big) == run.values.get("big_md5"), "the file on the server's disk differs"
    log = run.server_log.read_text(errors="replace")
    assert f"listening on {LOOPBACK} port 2049\n" in log  # at start: the loopback only
    assert "pynfsd listen add 192.168.77.1:2049: 0 listening on 192.168.77.1:2049" in log
    assert "listening on 192.168.77.1 port 2049 (added)" in log
