"""Fetch and unpack the Debian guest kernel (the real Linux NFSv4.0 client we boot in qemu).

The kernel package is fetched with ``apt-get download`` (no repository lists are touched beyond
what apt already has), unpacked with ``dpkg -x``, given a ``modules.dep`` with ``depmod -b`` and,
when possible, its uncompressed ``vmlinux`` is extracted from the XZ payload of ``vmlinuz`` so
that qemu can boot it through the PVH entry point (no in-guest decompression under TCG).
"""

from __future__ import annotations

import fcntl
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class GuestKernel:
    """An unpacked kernel: version, bootable image and module tree root (``.../lib/modules/KVER``)."""

    version: str
    image: Path
    modules_dir: Path


def cache_dir() -> Path:
    """The VM cache directory: ``$PYNFSD_VM_CACHE`` or ``/var/cache/pynfsd-vm``."""
    path = Path(os.environ.get("PYNFSD_VM_CACHE", "/var/cache/pynfsd-vm"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise cache builds between concurrent test processes."""
    with open(cache_dir() / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def debian_kernel_package() -> str:
    """Name of the concrete image package the ``linux-image-amd64`` metapackage points at."""
    out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], check=True,
                         capture_output=True, text=True).stdout
    match = re.search(r"^\s*Depends:\s*(linux-image-\S+)", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no kernel image package in apt-cache output:\n{out}")
    return match.group(1)


def _download_deb(package: str, workdir: Path) -> Path:
    subprocess.run(["apt-get", "download", package], cwd=workdir, check=True,
                   capture_output=True, text=True)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} produced no .deb in {workdir}")
    return debs[0]


def extract_vmlinux(vmlinuz: Path, out: Path) -> bool:
    """Decompress the XZ payload of a bzImage into an ELF ``vmlinux``; False if not possible."""
    data = vmlinuz.read_bytes()
    start = data.find(XZ_MAGIC)
    while start >= 0:
        try:
            payload = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        except lzma.LZMAError:
            payload = b""
        if payload.startswith(ELF_MAGIC):
            out.write_bytes(payload)
            return True
        start = data.find(XZ_MAGIC, start + 1)
    return False


def _unpack(deb: Path, dest: Path) -> str:
    subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True)
    versions = [p.name for p in (dest / "lib" / "modules").iterdir() if p.is_dir()]
    if len(versions) != 1:
        raise RuntimeError(f"expected one module tree in {deb}, found {versions}")
    kver = versions[0]
    subprocess.run(["depmod", "-b", str(dest), kver], check=True)  # dpkg -x gives no modules.dep
    return kver


def _kernel_from(dest: Path, kver: str) -> GuestKernel:
    vmlinux = dest / "vmlinux"
    image = vmlinux if vmlinux.exists() else dest / "boot" / f"vmlinuz-{kver}"
    return GuestKernel(kver, image, dest / "lib" / "modules" / kver)


def guest_kernel() -> GuestKernel:
    """Return the cached guest kernel, downloading and unpacking it on first use."""
    package = debian_kernel_package()
    dest = cache_dir() / package
    with cache_lock("kernel"):
        stamp = dest / ".complete"
        if stamp.exists():
            return _kernel_from(dest, stamp.read_text().strip())
        shutil.rmtree(dest, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            staging = Path(tmp) / "root"
            kver = _unpack(_download_deb(package, Path(tmp)), staging)
            extract_vmlinux(staging / "boot" / f"vmlinuz-{kver}", staging / "vmlinux")
            staging.rename(dest)
        stamp.write_text(kver + "\n")
        return _kernel_from(dest, kver)
