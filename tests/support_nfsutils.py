"""A control tree as plain files, with the layout `pynfsd serve --nfsd-fs DIR` mounts (the
kernel's /proc/fs/nfsd as `nfsd/`, /proc/net/rpc as `rpc/`), and `pynfsd nfs-utils` run on it.

Plain files keep what a tool writes, so a test reads back exactly the bytes exportfs or
rpc.nfsd wrote (each open without O_APPEND writes from offset 0: a file keeps its last write).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.serverproc import REPO

CACHES = ("auth.unix.ip", "auth.unix.gid", "nfsd.export", "nfsd.fh")
# knfsd's export_features: NFSEXP_ALLFLAGS and NFSEXP_SECINFO_FLAGS
EXPORT_FEATURES = "0x3feff 0xf\n"
VERSIONS = "-2 -3 +4 +4.0 -4.1 -4.2\n"


def plain_tree(root: Path) -> Path:
    """`root` made into a control tree of empty cache files; `root` itself returned."""
    nfsd = root / "nfsd"
    (nfsd / "clients").mkdir(parents=True)
    (nfsd / "export_features").write_text(EXPORT_FEATURES)
    (nfsd / "versions").write_text(VERSIONS)
    (nfsd / "threads").write_text("8\n")
    (nfsd / "portlist").write_text("tcp 2049\n")
    for cache in CACHES:
        (root / "rpc" / cache).mkdir(parents=True)
        for name in ("channel", "content", "flush"):
            (root / "rpc" / cache / name).write_text("")
    return root


def nfs_utils_argv(tree: Path | None, *cmd: str, state_dir: Path | None = None) -> list[str]:
    """`pynfsd nfs-utils` with `--nfsd-fs TREE` (or `--state-dir`) running CMD."""
    where = ["--nfsd-fs", str(tree)] if tree is not None else ["--state-dir", str(state_dir)]
    return [sys.executable, "-m", "pynfsd", "nfs-utils", *where, "--", *cmd]


def nfs_utils(tree: Path | None, *cmd: str, state_dir: Path | None = None,
              prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`[PREFIX] pynfsd nfs-utils --nfsd-fs TREE -- CMD`, its output captured as text."""
    return subprocess.run([*prefix, *nfs_utils_argv(tree, *cmd, state_dir=state_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def in_sandbox(tmp_path: Path, exports: str, command: str) -> tuple[str, ...]:
    """`sh -c` arguments that run `command` with a temporary /etc/exports and /var/lib/nfs
    (`tmp_path/exports`, `tmp_path/varlib`) bound over the real ones: the binds are made inside
    the private namespace, so the host's files stay as they are."""
    (tmp_path / "exports").write_text(exports)
    (tmp_path / "varlib").mkdir()
    return ("sh", "-c", f"mount --bind {tmp_path / 'exports'} /etc/exports && "
            f"mount --bind {tmp_path / 'varlib'} /var/lib/nfs && {command}")
