"""What the local kernel lets a user do, for tests that compare pynfsd with it.

`as_user(uid, gid, argv)` runs a command as that user (real, effective and filesystem ids,
no supplementary groups, through `setpriv`), the reference a request over NFS is held to.
`set_acl` writes a POSIX access ACL straight into the `system.posix_acl_access` extended
attribute (the `setfacl` tool need not be installed).  `kernel_dir()` is a fresh directory
under /tmp whose ancestors a user can search (pytest's tmp_path is under a 0700 directory).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF


def as_user(argv: Sequence[str], uid: int = NOBODY, gid: int | None = None) -> int:
    """The exit status of ``argv`` run as ``uid``/``gid`` with no supplementary groups."""
    g = uid if gid is None else gid
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={g}", "--clear-groups", "--", *argv]
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode


def sh_as_user(script: str, uid: int = NOBODY, gid: int | None = None) -> int:
    return as_user(["sh", "-c", script], uid, gid)


def set_acl(path: str | os.PathLike[str], users: dict[int, int]) -> None:
    """Give ``path`` an access ACL: its mode's owner/group/other entries, plus one named-user
    entry per ``users`` item (uid -> rwx bits, 0-7) and the mask that lets them apply."""
    mode = os.lstat(path).st_mode
    mask = (mode >> 3) & 7
    for bits in users.values():
        mask |= bits
    entries = [(_USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID)]
    entries += [(_USER, bits, uid) for uid, bits in sorted(users.items())]
    entries += [(_GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED_ID), (_MASK, mask, _UNDEFINED_ID),
                (_OTHER, mode & 7, _UNDEFINED_ID)]  # fmt: skip
    blob = struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)
    os.setxattr(path, "system.posix_acl_access", blob)


def acls_supported(path: str | os.PathLike[str]) -> bool:
    probe = Path(path) / ".acl-probe"
    probe.write_bytes(b"")
    try:
        set_acl(probe, {NOBODY: 0})
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


@contextmanager
def kernel_dir() -> Iterator[Path]:
    """A new 0755 directory under /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="pynfsd-authz-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
