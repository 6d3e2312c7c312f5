"""A minimal writer for the ``newc`` cpio format the kernel unpacks as an initramfs.

Only what an initramfs needs: directories, regular files, symlinks and character devices.
Concatenated gzip'd archives are unpacked in order by the kernel, later ones overlaying earlier.
"""

from __future__ import annotations

import gzip
import stat
from pathlib import Path

TRAILER = "TRAILER!!!"


class CpioWriter:
    """Accumulates entries in memory; ``gzipped()`` returns the finished archive."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]
        header = "070701" + "".join(f"{v:08x}" for v in fields)
        self._ino += 1
        self._parts.append(_pad(header.encode() + name.encode() + b"\0") + _pad(data))

    def mkdir(self, name: str, mode: int = 0o755) -> None:
        """Add a directory and any missing parents."""
        name = name.strip("/")
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub and sub not in self._dirs:
                self._dirs.add(sub)
                self._entry(sub, stat.S_IFDIR | mode)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file (parents are created)."""
        name = name.strip("/")
        if "/" in name:
            self.mkdir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def add_file(self, name: str, source: Path, mode: int | None = None) -> None:
        """Add a host file under ``name``, keeping its permission bits unless ``mode`` is given."""
        perm = stat.S_IMODE(source.stat().st_mode) if mode is None else mode
        self.add_bytes(name, source.read_bytes(), perm)

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link."""
        name = name.strip("/")
        if "/" in name:
            self.mkdir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node (e.g. /dev/console before devtmpfs is mounted)."""
        self._entry(name.strip("/"), stat.S_IFCHR | mode, rdev=(major, minor))

    def gzipped(self) -> bytes:
        """The archive with its trailer, gzip-compressed."""
        self._entry(TRAILER, 0)
        raw = b"".join(self._parts)
        return gzip.compress(raw, compresslevel=6, mtime=0)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)
