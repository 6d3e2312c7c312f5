"""exportfs's check of each export (`validate_export`: its `-test-client-` lines) against a
running `pynfsd serve --nfsd-fs DIR`, answered as knfsd answers them: exportfs reports what it
reports with knfsd, for a directory it can export (nothing), a filesystem without file
handles (/proc/sys: "does not support NFS export"), and one without a device or a statfs
fsid (the FUSE control tree itself: "requires fsid= for NFS export", unless given `fsid=`)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_nfs_utils import live, live_server
from tests.e2e.test_nfs_utils import pytestmark as needs_tools
from tests.support_nfsutils import in_sandbox, nfs_utils

pytestmark = needs_tools
OPTS = "rw,no_subtree_check"


@live
def test_exportfs_reports_what_it_reports_with_knfsd(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (tmp_path / "sandbox").mkdir()
    with live_server(tmp_path, "127.0.0.1(rw,insecure)") as srv:
        ctl = tmp_path / "ctl"
        exports = (f"{good} 127.0.0.1({OPTS})\n/proc/sys 127.0.0.1({OPTS})\n"
                   f"{ctl} 127.0.0.1({OPTS})\n{ctl / 'nfsd'} 127.0.0.1({OPTS},fsid=9)\n")
        sandbox = in_sandbox(tmp_path / "sandbox", exports, "exportfs -ra")
        done = nfs_utils(None, *sandbox, state_dir=srv.state_dir)
        srv.healthy()
        log = srv.log_text()
    assert sorted(done.stderr.splitlines()) == sorted([
        f"exportfs: {ctl} requires fsid= for NFS export",
        "exportfs: /proc/sys does not support NFS export"]), done.stderr
    assert done.returncode == 1  # exportfs's status after an error line, as with knfsd
    assert f"exportfs test of {good} (with fsid): exportable" in log, log
    assert f"exportfs test of {ctl} (without fsid): Invalid argument" in log, log
    assert f"exportfs test of {ctl} (with fsid): exportable" in log, log
    assert f"exportfs test of {ctl / 'nfsd'} (with fsid): exportable" in log, log
