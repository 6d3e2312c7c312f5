"""`pynfsd serve --nfsd-fs DIR`: the option, its checks before listening, and the mount.

Theory of operation.  `check` runs with the other option checks, before the server listens:
pyfuse3 must import, `/dev/fuse` must open and DIR must be a directory (or a stale mount,
cleaned at start); otherwise `serve` stops with one line and exit code 2.  Without the option
nothing here imports pyfuse3.  `start` builds the tree (`tree.add_caches`, `nfsd.add_nfsd`),
mounts it (`fuse.ControlMount`) and returns the mount, which `serve` closes on the way out.
"""

from __future__ import annotations

import argparse
import errno
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynfsd.nfsdfs.fuse import ControlMount

FUSE_DEVICE = "/dev/fuse"


def add_argument(s: argparse.ArgumentParser) -> None:
    s.add_argument("--nfsd-fs", metavar="DIR",
                   help="mount the control tree at DIR with FUSE: DIR/nfsd as /proc/fs/nfsd and "
                        "DIR/rpc as /proc/net/rpc, for rpc.mountd, exportfs, rpc.nfsd and "
                        "nfsdclnts (`pynfsd nfs-utils`); needs pyfuse3 and CAP_SYS_ADMIN")


def check(args: argparse.Namespace) -> None:
    """ValueError (one line) when --nfsd-fs cannot work here."""
    where = args.nfsd_fs
    if not where:
        return
    try:
        import pyfuse3  # noqa: F401
    except ImportError as e:
        raise ValueError(f"--nfsd-fs {where}: pyfuse3 is not installed ({e}); "
                         "install it with `pip install pyfuse3` (needs libfuse3-dev)") from None
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR))
    except OSError as e:
        raise ValueError(f"--nfsd-fs {where}: cannot open {FUSE_DEVICE}: {e.strerror} "
                         "(FUSE needs the fuse module and CAP_SYS_ADMIN)") from None
    try:
        os.stat(where)
    except OSError as e:
        if e.errno != errno.ENOTCONN:  # a stale mount: cleaned at start
            raise ValueError(f"--nfsd-fs {where}: {e.strerror}") from None
        return
    if not os.path.isdir(where):
        raise ValueError(f"--nfsd-fs {where}: not a directory")


async def start(args: argparse.Namespace, exports: Any, listeners: Any, nfs: Any) -> ControlMount:
    """Build the tree over the server's parts (its caches, listeners, worker pool and client
    state) and mount it at --nfsd-fs."""
    from pynfsd.nfsdfs.fuse import ControlMount, ControlOps
    from pynfsd.nfsdfs.nfsd import Nfsd, add_nfsd
    from pynfsd.nfsdfs.tree import Tree, add_caches

    tree = Tree(exports.channel_way)
    add_caches(tree, exports.caches, time.time, exports.views.forget)
    add_nfsd(tree, Nfsd(listeners, nfs.pool, time.monotonic))
    mount = ControlMount(ControlOps(tree), args.nfsd_fs, args.state_dir)
    await mount.start()
    return mount
