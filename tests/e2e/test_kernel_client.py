"""The Linux kernel NFSv4.0 client (a Debian kernel booted in qemu) against the server.

One guest boot per (server, network mode) runs the whole workload in ``tests/vm/guest/
workload.sh``; each test below asserts on one ``@@RESULT`` line the guest printed and, where
the point is what reached the server's disk, on the exported files themselves. A failure
message names the failed step and carries the console and server log tails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.vm.harness import NETWORKS, WorkloadRun, run_workload, servers_under_test


def vm_skip_reason() -> str | None:
    """Why the VM tests cannot run here, or None. Only these two reasons skip."""
    if os.geteuid() != 0:
        return "kernel-client VM tests need root (netns, tap devices, cache in /var/cache)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 missing (run scripts/vm-deps.sh)"
    return None


pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(vm_skip_reason() is not None, reason=str(vm_skip_reason()))]

BIG_MB = 256
BIG_FILE_NETWORK = "netns"   # the 256 MiB dd runs once per server, over the faster mode
RUNS = [(server, net) for server in servers_under_test() for net in NETWORKS]


@pytest.fixture(scope="module", params=RUNS, ids=[f"{s}-{n}" for s, n in RUNS])
def run(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> WorkloadRun:
    server, net = request.param
    workdir = tmp_path_factory.mktemp(f"{server}-{net}")
    big = BIG_MB if net == BIG_FILE_NETWORK else 0
    return run_workload(server, net, workdir, big_mb=big, timeout=600.0)


def assert_guest(run: WorkloadRun, name: str) -> None:
    """The guest printed ``@@RESULT <name> PASS``."""
    if name not in run.results:
        pytest.fail(f"guest printed no result for {name!r}\n{run.diagnostics()}")
    ok, detail = run.results[name]
    if not ok:
        pytest.fail(f"guest step {name!r} failed: {detail}\n{run.diagnostics()}")


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def md5_list(root: Path) -> str:
    """md5 of the guest's ``find . -type f | sort | xargs md5sum`` listing, built on the host."""
    files = sorted("./" + str(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and not p.is_symlink())
    listing = "".join(f"{md5_file(root / f[2:])}  {f}\n" for f in files)
    return hashlib.md5(listing.encode()).hexdigest()


def test_vm_ran_to_completion(run: WorkloadRun) -> None:
    assert not run.errors and not run.transcript.timed_out, run.diagnostics()
    assert run.transcript.aborted is None, run.diagnostics()
    assert any(line.startswith("@@EXIT") for line in run.transcript.lines), run.diagnostics()


def test_mount_vers_4_0(run: WorkloadRun) -> None:
    assert_guest(run, "mount")


def test_big_file_write_read_md5(run: WorkloadRun) -> None:
    if run.network != BIG_FILE_NETWORK:
        pytest.skip(f"the {BIG_MB} MiB dd runs once per server, over {BIG_FILE_NETWORK}")
    assert_guest(run, "big_file")
    big = run.export_dir / "keep" / "big"
    assert big.stat().st_size == BIG_MB << 20
    assert md5_file(big) == run.values.get("big_md5"), "file on the server's disk differs"
    big.unlink()


def test_small_files_create_stat_remove(run: WorkloadRun) -> None:
    assert_guest(run, "small_files")
    assert not (run.export_dir / "small").exists()


def test_tree_copy(run: WorkloadRun) -> None:
    assert_guest(run, "tree_copy")
    assert md5_list(run.export_dir / "keep" / "tree") == run.values.get("tree_md5")


def test_renames(run: WorkloadRun) -> None:
    assert_guest(run, "renames")
    assert (run.export_dir / "keep" / "renamed").read_text() == "keep\n"
    assert not (run.export_dir / "ren").exists()


def test_symlinks(run: WorkloadRun) -> None:
    assert_guest(run, "symlinks")
    assert os.readlink(run.export_dir / "keep" / "symlink") == "some/target/path"


def test_hard_links(run: WorkloadRun) -> None:
    assert_guest(run, "hard_links")
    one, two = (os.stat(run.export_dir / "keep" / n) for n in ("hl1", "hl2"))
    assert (one.st_ino, one.st_nlink) == (two.st_ino, 2)


def test_attributes_both_sides(run: WorkloadRun) -> None:
    assert_guest(run, "attributes")
    st = os.stat(run.export_dir / "keep" / "attrs")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    assert (int(st.st_mtime), st.st_size) == (981173106, 100000)
    assert stat.S_IMODE(os.stat(run.export_dir / "keep" / "attrdir").st_mode) == 0o1750


def test_nested_directories(run: WorkloadRun) -> None:
    assert_guest(run, "directories")
    assert not (run.export_dir / "dirs").exists()


def test_large_directory_listing(run: WorkloadRun) -> None:
    assert_guest(run, "large_directory")


def test_exclusive_create(run: WorkloadRun) -> None:
    assert_guest(run, "exclusive_create")


def test_offsets_beyond_4_gib(run: WorkloadRun) -> None:
    assert_guest(run, "large_offsets")
    sparse = run.export_dir / "keep" / "sparse"
    assert sparse.stat().st_size == 1048578 * 4096
    with open(sparse, "rb") as fh:
        fh.seek(1048577 * 4096)
        block = fh.read(4096)
    assert hashlib.md5(block).hexdigest() == run.values.get("sparse_block_md5")
    sparse.unlink()


def test_concurrent_writers_one_file(run: WorkloadRun) -> None:
    assert_guest(run, "concurrent_writes")
    assert md5_file(run.export_dir / "keep" / "concurrent") == run.values.get("concurrent_md5")


def test_flock(run: WorkloadRun) -> None:
    assert_guest(run, "flock")


def test_fcntl_locks(run: WorkloadRun) -> None:
    assert_guest(run, "fcntl_locks")


def test_version_negotiation_to_4_0(run: WorkloadRun) -> None:
    assert_guest(run, "negotiation")


def test_server_restart_while_mounted(run: WorkloadRun) -> None:
    assert_guest(run, "server_restart")
    assert run.server_starts >= 2, f"server started {run.server_starts} times"
    held = run.export_dir / "keep" / "restart-held"
    assert held.read_text() == "line1\nline2\nline3\n"
    assert (run.export_dir / "restart" / "new").read_text() == "after\n"


def test_server_killed_and_restarted_while_mounted(run: WorkloadRun) -> None:
    """SIGKILL, no clean shutdown: data the client committed and its state must survive."""
    assert_guest(run, "server_crash")
    assert run.server_starts == 3, f"server started {run.server_starts} times, expected 3"
    held = run.export_dir / "keep" / "crash-held"
    assert held.read_text() == "line1\nline2\nline3\n"
    assert (run.export_dir / "crash" / "new").read_text() == "after\n"


def test_unmount(run: WorkloadRun) -> None:
    assert_guest(run, "unmount")
